//! Auth and transport: the bearer-token flow, credentials from Docker's config and credential
//! helpers, redirects to another host that must never see `Authorization`, rate limits, and
//! registries that serve hostile documents.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use crate::common::http::{fetch, Response, Server};
use crate::common::image::basic_layers;
use crate::common::{snapshot, Env, ImageBuilder, Registry};
use crate::e2e;

const TOKEN: &str = "t0k3n-for-tests";

/// A registry front that demands a bearer token (issued at its own `/token`, optionally only
/// for basic credentials) and redirects blob downloads to a second host (the "CDN").
struct Front {
    front: Server,
    cdn: Arc<Server>,
}

fn start_front(reg: &Registry, basic: Option<&'static str>) -> Front {
    let upstream_url = reg.url();
    let up = upstream_url.clone();
    let cdn = Arc::new(Server::start(move |req| {
        let (status, ct, body) = fetch(&up, req);
        Response::new(status, body).header("Content-Type", &ct)
    }));
    let cdn_port = cdn.port;
    let front_port = crate::common::free_port();
    let front = Server::start_at(front_port, move |req| {
        if req.path.starts_with("/token") {
            if let Some(expected) = basic {
                if req.headers.get("authorization").map(String::as_str) != Some(expected) {
                    return Response::new(401, "bad credentials");
                }
            }
            return Response::new(200, format!("{{\"token\":\"{TOKEN}\"}}"))
                .header("Content-Type", "application/json");
        }
        let bearer = format!("Bearer {TOKEN}");
        if req.headers.get("authorization") != Some(&bearer) {
            let realm = format!("http://127.0.0.1:{front_port}/token");
            return Response::new(401, "").header(
                "WWW-Authenticate",
                &format!(
                    "Bearer realm=\"{realm}\",service=\"test\",scope=\"repository:auth/img:pull\""
                ),
            );
        }
        if req.path.contains("/blobs/") {
            return Response::new(307, "").header(
                "Location",
                &format!("http://127.0.0.1:{cdn_port}{}", req.path),
            );
        }
        let (status, ct, body) = fetch(&upstream_url, req);
        Response::new(status, body).header("Content-Type", &ct)
    });
    Front { front, cdn }
}

fn assert_cdn_never_saw_credentials(f: &Front) {
    let cdn = f.cdn.requests();
    assert!(!cdn.is_empty(), "blobs were fetched through the redirect");
    for r in &cdn {
        assert!(
            !r.headers.contains_key("authorization"),
            "Authorization leaked to the redirect target: {r:?}"
        );
    }
}

e2e!(
    bearer_token_flow_and_redirect_without_credentials,
    |env: Env| {
        let reg = Registry::start();
        let img = ImageBuilder::new(basic_layers()).push(&reg, "auth/img", Some("v1"));
        let f = start_front(&reg, None);
        let out = env.ok(&[
            "pull",
            "-q",
            &format!("127.0.0.1:{}/auth/img:v1", f.front.port),
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), img.manifest);
        let front = f.front.requests();
        assert!(
            front.iter().any(|r| r.path.starts_with("/token")
                && r.path.contains("scope=repository%3Aauth%2Fimg%3Apull")),
            "{front:?}"
        );
        assert!(front.iter().any(|r| r
            .headers
            .get("authorization")
            .is_some_and(|a| a.starts_with("Bearer "))));
        assert_cdn_never_saw_credentials(&f);
    }
);

e2e!(credentials_from_docker_config_and_helper, |env: Env| {
    let reg = Registry::start();
    let img = ImageBuilder::new(basic_layers()).push(&reg, "auth/img", Some("v1"));
    // "alice:s3cret"
    let f = start_front(&reg, Some("Basic YWxpY2U6czNjcmV0"));
    let r = format!("127.0.0.1:{}/auth/img:v1", f.front.port);
    let err = env.fails(&["pull", &r]);
    assert!(
        err.contains("refused access") && err.contains("docker login"),
        "{err}"
    );

    let docker = env.path("home/.docker");
    fs::create_dir_all(&docker).unwrap();
    fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"127.0.0.1:{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
            f.front.port
        ),
    )
    .unwrap();
    env.chown_all(&env.path("home"));
    assert_eq!(
        String::from_utf8_lossy(&env.ok(&["pull", "-q", &r]).stdout).trim(),
        img.manifest
    );
    assert_cdn_never_saw_credentials(&f);

    // A credential helper, as `credHelpers` names it.
    let helper = env.path("bin/docker-credential-testhelper");
    fs::write(&helper, "#!/bin/sh\nread server\necho '{\"ServerURL\":\"'$server'\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}'\n").unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"credHelpers":{{"127.0.0.1:{}":"testhelper"}}}}"#,
            f.front.port
        ),
    )
    .unwrap();
    env.chown_all(&env.path("home"));
    env.ok(&["rmi", &r]);
    assert_eq!(
        String::from_utf8_lossy(&env.ok(&["pull", "-q", &r]).stdout).trim(),
        img.manifest
    );

    // podman's auth.json under $XDG_RUNTIME_DIR, with a wrong password: refused.
    fs::remove_file(docker.join("config.json")).unwrap();
    fs::create_dir_all(env.path("run/containers")).unwrap();
    fs::write(
        env.path("run/containers/auth.json"),
        format!(
            r#"{{"auths":{{"127.0.0.1:{}":{{"auth":"YWxpY2U6d3Jvbmc="}}}}}}"#,
            f.front.port
        ),
    )
    .unwrap();
    env.chown_all(&env.path("run"));
    env.ok(&["rmi", &r]);
    let err = env.fails(&["pull", &r]);
    assert!(err.contains("refused access"), "{err}");
});

e2e!(rate_limit_is_explained, |env: Env| {
    let server = Server::start(|_req| Response::new(429, "slow down"));
    let err = env.fails(&["pull", &format!("127.0.0.1:{}/x/y:v1", server.port)]);
    assert!(
        err.contains("429")
            && err.contains("hint:")
            && err.contains("login")
            && err.contains("mirror"),
        "{err}"
    );
    assert!(
        server.requests().len() > 1,
        "429 is retried with backoff before giving up"
    );
});

e2e!(mirror_is_tried_first_then_origin, |env: Env| {
    let origin = Registry::start();
    let img = ImageBuilder::new(basic_layers()).push(&origin, "mirrored/img", Some("v1"));
    let dead = Server::start(|_req| Response::new(500, "mirror down"));
    env.settings(&format!(
        "[mirrors]\n\"{}\" = [\"127.0.0.1:{}\"]\n",
        origin.host(),
        dead.port
    ));
    let out = env.ok(&["pull", "-q", &format!("{}/mirrored/img:v1", origin.host())]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), img.manifest);
    assert!(
        dead.requests()
            .iter()
            .any(|r| r.path.contains("/v2/mirrored/img/manifests/v1")),
        "mirror asked first"
    );
});

e2e!(
    hostile_digest_in_manifest_is_refused_before_use,
    |env: Env| {
        let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:../../../../outside/x","size":2},"layers":[]}"#;
        let server = Server::start(move |req| {
            if req.path.contains("/manifests/") {
                Response::new(200, manifest)
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            } else {
                Response::new(200, "")
            }
        });
        let before = snapshot(env.dir.path(), &env.store());
        let err = env.fails(&["pull", &format!("127.0.0.1:{}/evil/img:v1", server.port)]);
        assert!(err.contains("invalid digest"), "{err}");
        assert_eq!(before, snapshot(env.dir.path(), &env.store()));
    }
);
