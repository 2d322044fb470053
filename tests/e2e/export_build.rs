//! `dev build` and `dev push` against real clients: the image dev builds from dev.toml and
//! dev.lock is pushed to a local registry, then podman pulls and runs it and skopeo reads its
//! labels; teammates with separate stores get the same digest; a second push sends nothing;
//! credentials come from ~/.docker/config.json; a `dev commit` image pushes too.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::common::{
    describe, image, push_busybox, push_debian, stderr, stdout, Entry, Env, ImageBuilder, Kind,
    Layer, Registry,
};
use crate::e2e;

const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";
/// `htpasswd -nbB alice s3cret-push`
const HTPASSWD: &str = "alice:$2y$05$DRKbkzbEomczx63XBochK.TMMIpfJ/EpRNmXoGjyp5U8XSifbRiny\n";

/// `dev ARGS` with more environment variables.
fn dev_with(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = env.dev(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    let out = c.output().expect("run dev");
    assert!(
        out.status.success(),
        "{}",
        describe(&format!("dev {}", args.join(" ")), &out)
    );
    out
}

/// A program of the host, run as the test user; it must succeed.
fn tool(env: &Env, program: &str, args: &[&str]) -> Output {
    let out = env
        .as_user(Path::new(program), args)
        .output()
        .expect("run tool");
    assert!(
        out.status.success(),
        "{}",
        describe(&format!("{program} {}", args.join(" ")), &out)
    );
    out
}

/// Rootless podman for the test user (runc, cgroupfs, host network), its store in the test's
/// directory.
fn podman(env: &Env, args: &[&str]) -> Output {
    let conf = env.path("config/containers");
    if !conf.exists() {
        fs::create_dir_all(&conf).expect("mkdir");
        fs::write(
            conf.join("containers.conf"),
            "[containers]\nnetns = \"host\"\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .expect("containers.conf");
        fs::write(
            conf.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                env.path("podman").display(),
                env.path("run/containers").display()
            ),
        )
        .expect("storage.conf");
        env.chown_all(&env.path("config"));
    }
    tool(env, "/usr/bin/podman", args)
}

fn skopeo_labels(env: &Env, reference: &str, creds: Option<&str>) -> serde_json::Value {
    let target = format!("docker://{reference}");
    let mut args = vec!["inspect", "--tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    }
    args.push(&target);
    let out = tool(env, "/usr/bin/skopeo", &args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("skopeo json");
    v["Labels"].clone()
}

/// Upload requests (POST, PATCH, PUT on `/blobs/uploads/`) in the registry's access log.
fn uploads(reg: &Registry) -> Vec<String> {
    reg.log()
        .lines()
        .filter(|l| l.contains("/blobs/uploads/"))
        .filter(|l| {
            ["\"POST /v2/", "\"PATCH /v2/", "\"PUT /v2/"]
                .iter()
                .any(|m| l.contains(m))
        })
        .map(str::to_string)
        .collect()
}

/// A checkout's metadata, as git leaves it (no git is run, by the test or by dev).
fn fake_git(env: &Env) {
    let git = env.path("project/.git");
    fs::create_dir_all(git.join("refs/heads")).expect("mkdir .git");
    fs::write(git.join("HEAD"), "ref: refs/heads/main\n").expect("HEAD");
    fs::write(git.join("refs/heads/main"), format!("{REVISION}\n")).expect("ref");
    fs::write(
        git.join("config"),
        "[core]\n\tbare = false\n[remote \"origin\"]\n\turl = git@example.org:team/app.git\n",
    )
    .expect("config");
    env.chown_all(&env.path("project"));
}

// The image dev builds runs in podman with the tools installed and the [env] values set, and
// skopeo shows its labels; the base layer is mounted from its repository on the same registry,
// never uploaded; a second push uploads nothing.
#[test]
fn built_image_runs_in_podman_and_a_second_push_sends_nothing() {
    let env = Env::new(Kind::Sub);
    let reg = Registry::start();
    let base = push_debian(&reg);
    env.write_dev_toml(&format!(
        "image = \"{base}\"\n[env]\nGREETING = \"hello from dev.toml\"\n[tools]\npackages = [\"hello\"]\n"
    ));
    fake_git(&env);
    let target = format!("{}/team/app:1", reg.host());
    let built = stdout(&dev_with(&env, &[], &["build", "-q", "--tag", &target]));
    let built = built.trim().to_string();
    assert!(built.starts_with("sha256:"), "{built}");

    let before = uploads(&reg).len();
    let out = dev_with(&env, &[], &["push", &target]);
    assert_eq!(stdout(&out).trim(), built, "push prints the pushed digest");
    assert!(stderr(&out).contains("mounted"), "{}", stderr(&out));
    let log = reg.log();
    assert!(
        log.contains("mount=sha256:") && log.contains("from=library/debian"),
        "the base layer is mounted from its repository:\n{log}"
    );
    let first = uploads(&reg).len() - before;
    assert!(
        first > 0,
        "the first push uploads the tools layer and config"
    );

    let out = dev_with(&env, &[], &["push", "-q", &target]);
    assert_eq!(
        stdout(&out),
        format!("{built}\n"),
        "-q prints only the digest"
    );
    assert_eq!(
        uploads(&reg).len() - before,
        first,
        "the second push uploads nothing"
    );

    podman(&env, &["pull", "-q", "--tls-verify=false", &target]);
    let out = podman(
        &env,
        &[
            "run",
            "--rm",
            &target,
            "sh",
            "-c",
            "hello; echo \"$GREETING\"",
        ],
    );
    assert_eq!(stdout(&out), "Hello, world!\nhello from dev.toml\n");

    // A teammate with its own store, the same checkout: the same image, real packages and all.
    let mate = Env::new(Kind::Sub2);
    fs::copy(env.path("project/dev.toml"), mate.path("project/dev.toml")).expect("dev.toml");
    fs::copy(env.path("project/dev.lock"), mate.path("project/dev.lock")).expect("dev.lock");
    fake_git(&mate);
    let theirs = stdout(&dev_with(&mate, &[], &["build", "-q", "--tag", &target]));
    assert_eq!(theirs.trim(), built, "the teammate builds the same digest");

    let labels = skopeo_labels(&env, &target, None);
    assert_eq!(labels["org.opencontainers.image.revision"], REVISION);
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://example.org/team/app"
    );
    let lock = fs::read(env.path("project/dev.lock")).expect("dev.lock");
    let lock_digest = format!("sha256:{}", sha256_hex(&lock));
    assert_eq!(labels["dev.lock.digest"], lock_digest.as_str());
    let status = stdout(&env.ok(&["status"]));
    let fingerprint = labels["dev.fingerprint"]
        .as_str()
        .expect("fingerprint label");
    assert!(status.contains(fingerprint), "{status}\n{labels}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Busybox with a fake apt (see project_safety.rs): a tools build without a package mirror.
fn push_fake_apt(reg: &Registry) -> String {
    let script = |body: &str| format!("#!/bin/sh\n{body}\n").into_bytes();
    let mut layers = image::busybox_layers();
    layers.push(Layer::new(vec![
        Entry::File("etc/motd".into(), b"hi\n".to_vec(), 0o644),
        Entry::Dir("etc/old/".into(), 0o755),
        Entry::File("etc/old/a".into(), b"a\n".to_vec(), 0o644),
        Entry::File("usr/bin/apt-get".into(), script("exit 0"), 0o755),
        Entry::File("usr/bin/dpkg".into(), script("exit 0"), 0o755),
        Entry::File(
            "usr/bin/apt-cache".into(),
            script(
                "[ \"$1\" = madison ] && [ \"$2\" = hello ] && echo ' hello | 1.0 | fake'\nexit 0",
            ),
            0o755,
        ),
        Entry::File(
            "usr/bin/dpkg-query".into(),
            script("shift 3\nfor n in \"$@\"; do echo \"$n=1.0\"; done"),
            0o755,
        ),
    ]));
    ImageBuilder::new(layers).push(reg, "fixture/fake-apt", Some("1"));
    format!("{}/fixture/fake-apt:1", reg.host())
}

/// The tools layer (the manifest's last) of a built image, listed by `tar`: mode, owner,
/// time and name, one line per entry.
fn tools_listing(env: &Env, manifest: &str) -> String {
    let blob = |d: &str| {
        env.store()
            .join("blobs-v1/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(manifest)).expect("manifest blob")).expect("json");
    let layers = m["layers"].as_array().expect("layers");
    let last = layers.last().expect("a layer");
    assert_eq!(
        last["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
        "{m}"
    );
    let out = std::process::Command::new("tar")
        .env("TZ", "UTC")
        .args(["--numeric-owner", "--full-time", "-tvzf"])
        .arg(blob(last["digest"].as_str().expect("digest")))
        .output()
        .expect("tar");
    assert!(out.status.success(), "{}", describe("tar -tvzf", &out));
    stdout(&out)
}

const SETUP_OWNED: &str = "mkdir -p /opt/app && echo v1 > /opt/app/version && chown 123:456 /opt/app/version && chmod 640 /opt/app/version && rm /etc/motd && rm -r /etc/old && mkdir /etc/old";

// Teammates with separate stores, the same dev.toml and dev.lock, get the same image digest,
// with SOURCE_DATE_EPOCH and without; the tools layer's owners are as inside the image and its
// times are clamped to SOURCE_DATE_EPOCH.
#[test]
fn teammates_get_the_same_digest() {
    let reg = Registry::start();
    let base = push_fake_apt(&reg);
    let toml = format!(
        "image = \"{base}\"\n[env]\nA = \"1\"\n[tools]\npackages = [\"hello\"]\n[setup]\nroot = [\"{SETUP_OWNED}\"]\n"
    );
    let (one, two) = (Env::new(Kind::Sub), Env::new(Kind::Sub2));
    one.write_dev_toml(&toml);
    one.trust();
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];
    let a = stdout(&dev_with(&one, &sde, &["build", "-q"]));
    // The teammate gets dev.toml and dev.lock from the checkout.
    fs::copy(one.path("project/dev.lock"), two.path("project/dev.lock")).expect("copy lock");
    two.write_dev_toml(&toml);
    two.trust();
    let b = stdout(&dev_with(&two, &sde, &["build", "-q"]));
    assert_eq!(a, b, "same dev.toml and dev.lock, same digest");

    let listing = tools_listing(&one, a.trim());
    let version = listing
        .lines()
        .find(|l| l.ends_with("opt/app/version"))
        .unwrap_or_else(|| panic!("no opt/app/version in the tools layer:\n{listing}"));
    assert!(
        version.starts_with("-rw-r----- 123/456 ") && version.contains("2023-11-14 22:13:20"),
        "owner as inside the image, mtime clamped to SOURCE_DATE_EPOCH: {version}"
    );
    // What the setup deleted is a whiteout; the directory it made again is opaque.
    assert!(
        listing.lines().any(|l| l.ends_with(" etc/.wh.motd"))
            && listing
                .lines()
                .any(|l| l.ends_with(" etc/old/.wh..wh..opq")),
        "{listing}"
    );
    let labels_time = stdout(&one.ok(&["inspect", "localhost/project:latest"]));
    assert!(
        labels_time.contains("2023-11-14T22:13:20Z"),
        "created is SOURCE_DATE_EPOCH: {labels_time}"
    );

    // Without SOURCE_DATE_EPOCH: the base image's time, still the same for both.
    let c = stdout(&one.ok(&["build", "-q"]));
    let d = stdout(&two.ok(&["build", "-q"]));
    assert_eq!(c, d);
    assert_ne!(a, c, "SOURCE_DATE_EPOCH is the image's time");
}

// Without a subordinate range the build says in one line what is lost: every owner is root.
#[test]
fn without_a_range_owners_are_root_and_it_says_so() {
    let env = Env::new(Kind::NoSub);
    let reg = Registry::start();
    let base = push_fake_apt(&reg);
    env.write_dev_toml(&format!(
        "image = \"{base}\"\n[tools]\npackages = [\"hello\"]\n[setup]\nroot = [\"mkdir -p /opt/app && echo v1 > /opt/app/version\"]\n"
    ));
    env.trust();
    let out = dev_with(&env, &[], &["build"]);
    let err = stderr(&out);
    assert!(
        err.contains(
            "without a subordinate id range every file of the exported layers is owned by root"
        ),
        "{err}"
    );
    let listing = tools_listing(&env, stdout(&out).trim());
    let version = listing
        .lines()
        .find(|l| l.ends_with("opt/app/version"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(version.contains(" 0/0 "), "{version}");
}

// A push to a registry that demands credentials works with those of ~/.docker/config.json, and
// without them fails in one line that says how to log in. The base layers, on another
// registry, are streamed from there into this one.
e2e!(push_uses_the_registrys_credentials, |env: Env| {
    let open = Registry::start();
    let base = push_busybox(&open);
    let locked = Registry::start_htpasswd(HTPASSWD);
    env.write_dev_toml(&format!("image = \"{base}\"\n[env]\nK = \"v\"\n"));
    let target = format!("{}/team/box:1", locked.host());
    env.ok(&["build", "-q", "--tag", &target]);

    let err = env.fails(&["push", &target]);
    assert!(
        err.contains("refused access") && err.contains("HTTP 401"),
        "{err}"
    );
    assert!(err.contains("docker login"), "{err}");

    let docker = env.path("home/.docker");
    fs::create_dir_all(&docker).expect("mkdir");
    // alice:s3cret-push
    fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0LXB1c2g="}}}}}}"#,
            locked.host()
        ),
    )
    .expect("config.json");
    env.chown_all(&env.path("home"));
    let digest = stdout(&env.ok(&["push", "-q", &target]));
    let labels = skopeo_labels(&env, &target, Some("alice:s3cret-push"));
    assert!(labels["dev.fingerprint"].is_string(), "{labels}");
    let inspect = tool(
        &env,
        "/usr/bin/skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "alice:s3cret-push",
            &format!("docker://{target}"),
        ],
    );
    assert_eq!(
        format!("sha256:{}\n", sha256_hex(&inspect.stdout)),
        digest,
        "the registry serves the manifest dev pushed"
    );
});

// A `dev commit` image pushes like a built one, and a pulled copy has the committed file; a
// base layer whose registry is gone cannot be sent, and the error says so in one line.
e2e!(
    commit_image_pushes_and_a_gone_source_is_named,
    |env: Env| {
        let reg = Registry::start();
        let base = push_busybox(&reg);
        env.write_dev_toml(&format!("image = \"{base}\"\n"));
        env.ok(&["run", "--root", "--", "sh", "-c", "echo kept > /committed"]);
        let snap = format!("{}/team/snap:1", reg.host());
        env.ok(&["commit", "--tag", &snap]);
        let pushed = stdout(&env.ok(&["push", "-q", &snap]));
        env.ok(&["rmi", &snap]);
        let pulled = stdout(&env.ok(&["pull", "-q", &snap]));
        assert_eq!(pushed, pulled);
        let out = env.ok(&["run", "--rm", "--image", &snap, "--", "cat", "/committed"]);
        assert_eq!(stdout(&out), "kept\n");

        // The base's registry goes away; its layers were kept only unpacked.
        env.ok(&["build"]);
        let err = env.fails(&["push"]);
        assert!(
            err.contains("`localhost/project:latest` names no registry")
                && err.contains("dev push REGISTRY/NAME:TAG"),
            "{err}"
        );
        let other = Registry::start();
        let gone = reg.host();
        drop(reg);
        let err = env.fails(&["push", &format!("{}/team/app:1", other.host())]);
        assert!(
            err.contains("is not in the store")
                && err.contains(&format!("`{gone}` cannot be reached")),
            "{err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
    }
);

/// A registry that takes uploads only in chunks (`OCI-Chunk-Min-Length`), as some do: it
/// keeps what is sent in memory and accepts a blob only when its bytes match the digest. With
/// `bearer`, every request needs a token from its `/token`, whose queries it logs too.
fn chunked_registry(
    bearer: bool,
) -> (
    crate::common::http::Server,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    chunked_registry_asking(bearer, "1024")
}

/// A registry that asks for chunks of at least `min_length` bytes (`OCI-Chunk-Min-Length`)
/// and takes a blob in PATCHes closed by an empty PUT, or in one monolithic PUT.
fn chunked_registry_asking(
    bearer: bool,
    min_length: &'static str,
) -> (
    crate::common::http::Server,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use crate::common::http::{Response, Server};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    let blobs: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    // Upload id -> what its PATCHes sent (dev sends blobs in parallel).
    let uploads: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let port = crate::common::free_port();
    let server = Server::start_at(port, move |req| {
        log.lock()
            .expect("log")
            .push(format!("{} {} {}", req.method, req.path, req.body.len()));
        if bearer && req.path.starts_with("/token") {
            return Response::new(200, "{\"token\":\"push-token\"}")
                .header("Content-Type", "application/json");
        }
        let authorized =
            req.headers.get("authorization").map(String::as_str) == Some("Bearer push-token");
        if bearer && !authorized {
            let challenge = format!(
                "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test\",scope=\"repository:team/chunked:pull\""
            );
            return Response::new(401, "").header("WWW-Authenticate", &challenge);
        }
        let path = req.path.split('?').next().unwrap_or("");
        let digest = |p: &str| p.rsplit('/').next().unwrap_or("").to_string();
        match req.method.as_str() {
            "GET" if path == "/v2/" => Response::new(200, "{}"),
            "HEAD" if path.contains("/blobs/sha256:") => {
                let have = blobs.lock().expect("blobs").contains_key(&digest(path));
                Response::new(if have { 200 } else { 404 }, "")
            }
            "POST" if path.ends_with("/blobs/uploads/") => {
                let mut all = uploads.lock().expect("uploads");
                let id = format!("u{}", all.len());
                all.insert(id.clone(), Vec::new());
                Response::new(202, "")
                    .header("Location", &format!("/v2/team/chunked/blobs/uploads/{id}"))
                    .header("OCI-Chunk-Min-Length", min_length)
            }
            "PATCH" => {
                let mut all = uploads.lock().expect("uploads");
                let Some(sent) = all.get_mut(&digest(path)) else {
                    return Response::new(404, "BLOB_UPLOAD_UNKNOWN");
                };
                sent.extend_from_slice(&req.body);
                Response::new(202, "").header("Location", path)
            }
            "PUT" if path.contains("/blobs/uploads/") => {
                let want = req.path.split("digest=").nth(1).unwrap_or("").to_string();
                let patched = uploads
                    .lock()
                    .expect("uploads")
                    .get_mut(&digest(path))
                    .map(std::mem::take)
                    .unwrap_or_default();
                // PATCHes then an empty PUT, or everything in the PUT.
                let got = match (patched.is_empty(), req.body.is_empty()) {
                    (_, true) => patched,
                    (true, false) => req.body.clone(),
                    (false, false) => return Response::new(400, "BLOB_UPLOAD_INVALID"),
                };
                if format!("sha256:{}", sha256_hex(&got)) != want {
                    return Response::new(400, "DIGEST_INVALID");
                }
                blobs.lock().expect("blobs").insert(want, got);
                Response::new(201, "")
            }
            "PUT" if path.contains("/manifests/") => Response::new(201, ""),
            _ => Response::new(404, ""),
        }
    });
    (server, seen)
}

// A registry that asks for chunks gets PATCHes and a final PUT with only the digest; every
// blob it accepts matched its digest.
e2e!(push_in_chunks_when_the_registry_asks, |env: Env| {
    let reg = Registry::start();
    let base = push_busybox(&reg);
    env.write_dev_toml(&format!("image = \"{base}\"\n"));
    env.ok(&["build", "-q"]);
    let (server, seen) = chunked_registry(false);
    let target = format!("127.0.0.1:{}/team/chunked:1", server.port);
    env.ok(&["push", "-q", &target]);
    let seen = seen.lock().expect("log").clone();
    let patches = seen.iter().filter(|l| l.starts_with("PATCH ")).count();
    assert!(
        patches >= 2,
        "the layer and the config go up in PATCHes: {seen:#?}"
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.starts_with("PUT /v2/team/chunked/blobs/") && !l.ends_with(" 0")),
        "the closing PUT carries no bytes: {seen:#?}"
    );
    assert!(
        seen.last()
            .is_some_and(|l| l.starts_with("PUT /v2/team/chunked/manifests/1 ")),
        "the manifest goes last: {seen:#?}"
    );
});

// A registry that asks for chunks too large to hold in memory gets the blob in one PUT.
e2e!(a_registry_asking_huge_chunks_gets_one_put, |env: Env| {
    let reg = Registry::start();
    let base = push_busybox(&reg);
    env.write_dev_toml(&format!("image = \"{base}\"\n"));
    env.ok(&["build", "-q"]);
    let (server, seen) = chunked_registry_asking(false, "18446744073709551615");
    let target = format!("127.0.0.1:{}/team/chunked:1", server.port);
    env.ok(&["push", "-q", &target]);
    let seen = seen.lock().expect("log").clone();
    assert!(
        !seen.iter().any(|l| l.starts_with("PATCH ")),
        "no chunk of a size the registry chose is held: {seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("PUT /v2/team/chunked/blobs/") && !l.ends_with(" 0")),
        "the blobs go up in monolithic PUTs: {seen:#?}"
    );
});

// A push asks its token for `pull,push` on the repository, in the first scope (some registries
// read only that one), not for the challenge's `pull`.
e2e!(push_asks_for_a_push_token_first, |env: Env| {
    let reg = Registry::start();
    let base = push_busybox(&reg);
    env.write_dev_toml(&format!("image = \"{base}\"\n"));
    env.ok(&["build", "-q"]);
    let (server, seen) = chunked_registry(true);
    let target = format!("127.0.0.1:{}/team/chunked:1", server.port);
    env.ok(&["push", "-q", &target]);
    let seen = seen.lock().expect("log").clone();
    let token = seen
        .iter()
        .find(|l| l.starts_with("GET /token"))
        .unwrap_or_else(|| panic!("no token asked for: {seen:#?}"));
    let query = token.split_once('?').map_or("", |(_, q)| q);
    let first_scope = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("scope="))
        .unwrap_or_default();
    assert_eq!(
        first_scope, "repository%3Ateam%2Fchunked%3Apull%2Cpush",
        "{token}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("PUT /v2/team/chunked/manifests/1 ")),
        "{seen:#?}"
    );
});
