//! Registries that attack (issue 12): another local user squatting a loopback port gets no
//! credentials or tokens, documents that read two ways (CVE-2021-41190) are refused, and no
//! body is read without a cap or a deadline for making progress.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::http::{forward, Response, Server};
use crate::common::image::{basic_layers, host_arch, sha256};
use crate::common::{describe, free_port, spawn_ready, Env, ImageBuilder, Kind, Registry};
use crate::e2e;

/// `alice:s3cret`, base64.
const ALICE: &str = "YWxpY2U6czNjcmV0";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A plain-HTTP "registry" that another local user (devtest-sub2) started first on a
/// loopback port. It asks for credentials and writes every request's headers to a log.
/// `basic`: every request gets a Basic challenge. `bearer`: a Bearer challenge whose realm is
/// its own `/token`, which in turn asks for Basic credentials.
const SQUATTER: &str = r#"
import http.server, json, sys
port, mode, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(log, "a") as f:
            headers = {k.lower(): v for k, v in self.headers.items()}
            f.write(json.dumps({"path": self.path, "headers": headers}) + "\n")
        if mode == "bearer" and not self.path.startswith("/token"):
            challenge = 'Bearer realm="http://127.0.0.1:%d/token",service="squat"' % port
        else:
            challenge = 'Basic realm="squat"'
        self.send_response(401)
        self.send_header("WWW-Authenticate", challenge)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
print("ready", flush=True)
server.serve_forever()
"#;

struct Squatter {
    /// The squatting user's sandbox; dropping it ends the server too.
    owner: Env,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Squatter {
    fn start(mode: &str) -> Squatter {
        let owner = Env::new(Kind::Sub2);
        let port = free_port();
        let log = owner.path("outside/requests.jsonl");
        let python = Path::new("/usr/bin/python3");
        assert!(
            python.exists(),
            "/usr/bin/python3 is needed to run the squatting listener as another user"
        );
        let log_arg = log.to_str().expect("utf-8 path").to_string();
        let child = spawn_ready(
            &mut owner.as_user(python, &["-c", SQUATTER, &port.to_string(), mode, &log_arg]),
        );
        Squatter {
            owner,
            child,
            port,
            log,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request it got: (path, headers).
    fn requests(&self) -> Vec<(String, BTreeMap<String, String>)> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("log line");
                let headers = serde_json::from_value(v["headers"].clone()).expect("headers");
                (v["path"].as_str().unwrap_or("").to_string(), headers)
            })
            .collect()
    }

    fn authorizations(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter_map(|(_, h)| h.get("authorization").cloned())
            .collect()
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.owner;
    }
}

/// Docker's config.json in the test user's home, with alice's credentials for `hosts`.
fn give_credentials(env: &Env, hosts: &[&str]) {
    let docker = env.path("home/.docker");
    fs::create_dir_all(&docker).unwrap();
    let auths: serde_json::Map<String, serde_json::Value> = hosts
        .iter()
        .map(|h| (h.to_string(), serde_json::json!({ "auth": ALICE })))
        .collect();
    fs::write(
        docker.join("config.json"),
        serde_json::to_vec(&serde_json::json!({ "auths": auths })).unwrap(),
    )
    .unwrap();
    env.chown_all(&env.path("home"));
}

/// The `error:` and `hint:` lines of dev's stderr.
fn error_and_hint(err: &str) -> (String, String) {
    let find = |p: &str| {
        err.lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no `{p}` line in:\n{err}"))
            .to_string()
    };
    (find("error:"), find("hint:"))
}

e2e!(squatted_loopback_port_gets_no_credentials, |env: Env| {
    for mode in ["basic", "bearer"] {
        let squat = Squatter::start(mode);
        let host = squat.host();
        give_credentials(&env, &[&host]);
        let image = format!("{host}/team/img:v1");
        let err = env.fails(&["pull", &image]);
        assert!(
            !squat.requests().is_empty(),
            "{mode}: dev asked the squatter"
        );
        assert_eq!(
            squat.authorizations(),
            Vec::<String>::new(),
            "{mode}: an Authorization header reached another user's listener"
        );
        let (error, hint) = error_and_hint(&err);
        assert!(
            error.contains(&format!("`{host}` asks for credentials"))
                && error.contains("sent none")
                && error.contains("devtest-sub2"),
            "{mode}: {err}"
        );
        assert!(
            hint.contains(&format!("insecure-registries = [\"{host}\"]")),
            "{mode}: {err}"
        );

        // Vouched for in insecure-registries, the same listener gets them (so the check
        // above would see a leak).
        env.settings(&format!("insecure-registries = [\"{host}\"]\n"));
        env.fails(&["pull", &image]);
        assert!(
            squat.authorizations().contains(&format!("Basic {ALICE}")),
            "{mode}: {:?}",
            squat.requests()
        );
        env.settings("");
    }

    // A registry on this machine that root runs (as the suite's registry is) gets them.
    let reg = Registry::start();
    let img = ImageBuilder::new(basic_layers()).push(&reg, "team/img", Some("v1"));
    let upstream = reg.url();
    let front = Server::start(move |req| {
        if req.headers.get("authorization").map(String::as_str) != Some(&format!("Basic {ALICE}")) {
            return Response::new(401, "").header("WWW-Authenticate", "Basic realm=\"front\"");
        }
        forward(&upstream, req)
    });
    let host = format!("127.0.0.1:{}", front.port);
    give_credentials(&env, &[&host]);
    let out = env.ok(&["pull", "-q", &format!("{host}/team/img:v1")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), img.manifest);
    assert!(front
        .requests()
        .iter()
        .any(|r| r.headers.get("authorization") == Some(&format!("Basic {ALICE}"))));
});

e2e!(
    token_realm_on_a_squatted_port_gets_no_credentials,
    |env: Env| {
        // The registry is root's, but its challenge names a realm on a port another user holds.
        let squat = Squatter::start("bearer");
        let realm = format!("http://{}/token", squat.host());
        let front = Server::start(move |_req| {
            Response::new(401, "").header(
                "WWW-Authenticate",
                &format!("Bearer realm=\"{realm}\",service=\"test\""),
            )
        });
        let host = format!("127.0.0.1:{}", front.port);
        give_credentials(&env, &[&host, &squat.host()]);
        let err = env.fails(&["pull", &format!("{host}/team/img:v1")]);
        let tokens: Vec<_> = squat
            .requests()
            .into_iter()
            .filter(|(p, _)| p.starts_with("/token"))
            .collect();
        assert!(!tokens.is_empty(), "dev asked the realm for a token");
        assert_eq!(
            squat.authorizations(),
            Vec::<String>::new(),
            "credentials reached another user's token realm"
        );
        let (error, hint) = error_and_hint(&err);
        assert!(
            error.contains(&format!("`{}`", squat.host())) && error.contains("devtest-sub2"),
            "{err}"
        );
        assert!(hint.contains("insecure-registries"), "{err}");
    }
);

/// A fake registry serving fixed documents: path -> (Content-Type, body).
fn fake_registry(docs: BTreeMap<String, (String, Vec<u8>)>) -> Server {
    Server::start(move |req| match docs.get(&req.path) {
        Some((ct, body)) => Response::new(200, body.clone()).header("Content-Type", ct),
        None => Response::new(404, "not here"),
    })
}

fn descriptor(media_type: &str, body: &[u8]) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": sha256(body), "size": body.len() })
}

fn config_bytes(run: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": host_arch(), "os": "linux", "config": run,
        "rootfs": { "type": "layers", "diff_ids": [] },
    }))
    .unwrap()
}

fn manifest_with(media_type: &str, config: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": media_type, "config": config, "layers": [],
    }))
    .unwrap()
}

fn index_with(entry: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry],
    }))
    .unwrap()
}

fn with_platform(mut entry: serde_json::Value) -> serde_json::Value {
    entry["platform"] = serde_json::json!({ "os": "linux", "architecture": host_arch() });
    entry
}

e2e!(manifest_and_index_confusion_is_refused, |env: Env| {
    let config = config_bytes(serde_json::json!({ "Cmd": ["/bin/sh"] }));
    let good_config = descriptor(OCI_CONFIG, &config);
    let manifest = manifest_with(OCI_MANIFEST, good_config.clone());
    let docker_manifest = manifest_with(
        DOCKER_MANIFEST,
        descriptor("application/vnd.docker.container.image.v1+json", &config),
    );
    let index = index_with(with_platform(descriptor(OCI_MANIFEST, &manifest)));
    let mut both: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    both["manifests"] = serde_json::json!([with_platform(descriptor(OCI_MANIFEST, &manifest))]);
    let odd = "application/vnd.oci.image.manifest.v1+jsonXXX";
    let bad_config = config_bytes(serde_json::json!({ "Env": "PATH=/bin" }));
    let schema1 = br#"{"schemaVersion":1,"name":"case/schema1","tag":"v1","architecture":"amd64","fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],"history":[{"v1Compatibility":"{}"}]}"#.to_vec();

    // (repository, Content-Type, document, what the error line must say)
    let cases: Vec<(&str, &str, Vec<u8>, String)> = vec![
        (
            "index-served-as-manifest",
            OCI_MANIFEST,
            index.clone(),
            format!("is served as `{OCI_MANIFEST}` but its `mediaType` says `{OCI_INDEX}`"),
        ),
        (
            "both",
            OCI_MANIFEST,
            serde_json::to_vec(&both).unwrap(),
            "has both `manifests` and `config`/`layers`".into(),
        ),
        (
            "unknown-type",
            odd,
            manifest_with(odd, good_config.clone()),
            format!("media type `{odd}`, which is neither an image manifest nor an image index"),
        ),
        (
            "entry-type",
            OCI_INDEX,
            index_with(with_platform(descriptor(odd, &manifest))),
            format!("has media type `{odd}`, which is not an image manifest"),
        ),
        (
            "entry-without-type",
            OCI_INDEX,
            index_with(with_platform(serde_json::json!({
                "digest": sha256(&manifest), "size": manifest.len(),
            }))),
            "has media type ``, which is not an image manifest".into(),
        ),
        (
            "entry-mismatch",
            OCI_INDEX,
            index_with(with_platform(serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": sha256(&docker_manifest),
                "size": docker_manifest.len(),
            }))),
            format!("the index lists it as `{OCI_MANIFEST}`, but the registry served `{DOCKER_MANIFEST}`"),
        ),
        (
            "config-type",
            OCI_MANIFEST,
            manifest_with(OCI_MANIFEST, descriptor("invalid", &config)),
            "its config has media type `invalid`, which is not an image config".into(),
        ),
        (
            "config-field",
            OCI_MANIFEST,
            manifest_with(OCI_MANIFEST, descriptor(OCI_CONFIG, &bad_config)),
            "the image config of `case/config-field`".into(),
        ),
        (
            "schema1",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            schema1,
            "is a Docker schema 1 manifest, which `dev` does not support".into(),
        ),
    ];
    let mut docs = BTreeMap::new();
    let good = ("good", OCI_INDEX, index.clone(), String::new());
    for (repo, ct, body, _) in cases.iter().chain([&good]) {
        for reference in ["v1".to_string(), sha256(body)] {
            docs.insert(
                format!("/v2/case/{repo}/manifests/{reference}"),
                (ct.to_string(), body.clone()),
            );
        }
        // What an index entry leads to, under each repository.
        for (ct, body) in [
            (OCI_MANIFEST, &manifest),
            (DOCKER_MANIFEST, &docker_manifest),
        ] {
            docs.insert(
                format!("/v2/case/{repo}/manifests/{}", sha256(body)),
                (ct.to_string(), body.clone()),
            );
        }
        for blob in [&config, &bad_config] {
            docs.insert(
                format!("/v2/case/{repo}/blobs/{}", sha256(blob)),
                ("application/octet-stream".into(), blob.clone()),
            );
        }
    }
    let server = fake_registry(docs);
    let host = format!("127.0.0.1:{}", server.port);

    // The well-formed documents pull (an image without layers), so the refusals below are
    // about the documents, not the fake registry.
    env.ok(&["pull", &format!("{host}/case/good@{}", sha256(&index))]);

    for (repo, _, _, says) in &cases {
        let err = env.fails(&["pull", &format!("{host}/case/{repo}:v1")]);
        let (error, hint) = error_and_hint(&err);
        assert!(error.contains(says.as_str()), "{repo}: {err}");
        assert!(
            !err.contains("caused by"),
            "{repo}: the refusal is one line: {err}"
        );
        if *repo == "config-field" {
            assert!(
                error.contains("`config.Env`: invalid type"),
                "{repo}: {err}"
            );
        }
        if *repo == "schema1" {
            assert!(hint.contains("push the image again"), "{err}");
        } else {
            assert!(hint.contains("nothing of it was used"), "{repo}: {err}");
        }
    }
    // Nothing refused was recorded as an image.
    let images = String::from_utf8_lossy(&env.ok(&["images"]).stdout).to_string();
    for (repo, _, _, _) in &cases {
        assert!(!images.contains(&format!("case/{repo}:v1")), "{images}");
    }
});

/// Runs dev as the test user with `vars`, measuring its peak RSS with /usr/bin/time -v.
/// Returns its output and the peak in KiB.
fn run_measured(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> (Output, u64) {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "/usr/bin/time (Debian package time) is needed to measure RSS"
    );
    let bin = env.bin.to_str().expect("utf-8 path").to_string();
    let mut all = vec!["-v", bin.as_str()];
    all.extend_from_slice(args);
    let mut cmd = env.as_user(time, &all);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run dev under time");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let peak = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time:\n{stderr}"));
    (out, peak)
}

e2e!(huge_token_answer_is_capped, |env: Env| {
    const SERVED: u64 = 256 << 20;
    let port = free_port();
    let server = Server::start_at(port, move |req| {
        if req.path.starts_with("/token") {
            // A token answer that never ends, with no Content-Length to refuse it by.
            return Response::streamed(200, None, |w| {
                let _ = w.write_all(b"{\"token\":\"");
                let chunk = vec![b'a'; 1 << 20];
                for _ in 0..(SERVED >> 20) {
                    if w.write_all(&chunk).is_err() {
                        return;
                    }
                }
            })
            .header("Content-Type", "application/json");
        }
        Response::new(401, "").header(
            "WWW-Authenticate",
            &format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test\""),
        )
    });
    let (out, peak_kib) = run_measured(
        &env,
        &["pull", &format!("127.0.0.1:{}/big/token:v1", server.port)],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{}", describe("dev pull", &out));
    eprintln!("peak RSS of dev reading a {SERVED}-byte token answer: {peak_kib} KiB");
    assert!(
        peak_kib < 64 << 10,
        "dev's peak RSS was {peak_kib} KiB reading a {SERVED}-byte token answer"
    );
    let error = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
    assert!(
        error.contains("the token answer") && error.contains("larger than 1 MiB"),
        "{err}"
    );
});

/// Runs dev with a 2-second stall timeout; fails the test unless dev gives up by itself
/// within `limit`. Returns its stderr and how long it took.
fn pull_with_stall_timeout(env: &Env, image: &str, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut child = env
        .dev(&["pull", image])
        .env("DEV_REGISTRY_STALL_TIMEOUT", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dev");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let took = started.elapsed();
            let err = reader.join().expect("stderr");
            eprintln!("dev gave up after {took:?} with a 2 s stall timeout");
            assert!(!status.success(), "dev pull succeeded: {err}");
            return (err, took);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "dev was still waiting on a trickling registry after {limit:?}: {}",
                reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

e2e!(trickled_manifest_gives_up_in_bounded_time, |env: Env| {
    let server = Server::start(|req| {
        if !req.path.contains("/manifests/") {
            return Response::new(404, "");
        }
        // One byte every half second of a body that claims a whole manifest's length.
        Response::streamed(200, Some(64 << 10), |w| {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(600) {
                if w.write_all(b" ").and_then(|_| w.flush()).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
        .header("Content-Type", OCI_MANIFEST)
    });
    let image = format!("127.0.0.1:{}/slow/img:v1", server.port);
    let (err, took) = pull_with_stall_timeout(&env, &image, Duration::from_secs(60));
    let (error, hint) = error_and_hint(&err);
    assert!(
        error.contains(&format!(
            "`127.0.0.1:{}` stopped sending manifest",
            server.port
        )),
        "{err}"
    );
    assert!(hint.contains("DEV_REGISTRY_STALL_TIMEOUT"), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
});

e2e!(trickled_headers_give_up_in_bounded_time, |env: Env| {
    // A raw listener: the status line comes, then one header byte every half second.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ");
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(600) {
                    if stream.write_all(b"a").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            });
        }
    });
    let image = format!("127.0.0.1:{port}/slow/img:v1");
    let (err, took) = pull_with_stall_timeout(&env, &image, Duration::from_secs(60));
    let (error, hint) = error_and_hint(&err);
    assert!(error.contains("stopped sending"), "{err}");
    assert!(hint.contains("DEV_REGISTRY_STALL_TIMEOUT"), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
});

e2e!(
    unreachable_loopback_registry_gets_the_right_hint,
    |env: Env| {
        let port = free_port();
        let err = env.fails(&["pull", &format!("127.0.0.1:{port}/x/y:v1")]);
        let (error, hint) = error_and_hint(&err);
        assert!(
            error.contains(&format!("cannot reach `127.0.0.1:{port}`")),
            "{err}"
        );
        assert!(hint.contains("nothing answers"), "{err}");
        assert!(
            !hint.contains("insecure-registries = ["),
            "a loopback registry needs no insecure-registries entry: {err}"
        );
    }
);
