//! Dev Container Features in dev.toml: test Features built here as the spec lays them out
//! (install.sh + devcontainer-feature.json), published to the local registry as OCI artifacts
//! (config `application/vnd.devcontainers`, one `application/vnd.devcontainers.layer.v1+tar`
//! layer), installed on the busybox image.

use std::fs;

use crate::common::http::{Response, Server};
use crate::common::image::{push_blob, put_manifest, sha256, Compression, OCI_MANIFEST};
use crate::common::{
    describe, push_busybox, snapshot, stderr, stdout, Entry, Env, Layer, Registry,
};
use crate::e2e;

/// Publishes a Feature (its devcontainer-feature.json, install.sh and more files) at
/// `repo:tag`; returns the manifest digest.
pub fn publish(
    reg: &Registry,
    repo: &str,
    meta: &serde_json::Value,
    install: &str,
    more: Vec<Entry>,
    c: Compression,
) -> String {
    let mut entries = vec![
        Entry::File(
            "./devcontainer-feature.json".into(),
            serde_json::to_vec(meta).expect("json"),
            0o644,
        ),
        Entry::File("./install.sh".into(), install.as_bytes().to_vec(), 0o644),
    ];
    entries.extend(more);
    publish_tar(reg, repo, meta, Layer::new(entries).with(c))
}

fn publish_tar(reg: &Registry, repo: &str, meta: &serde_json::Value, layer: Layer) -> String {
    let (blob, _) = layer.blob();
    let layer_digest = push_blob(reg, repo, &blob);
    let config = b"{}".to_vec();
    let config_digest = push_blob(reg, repo, &config);
    let id = meta["id"].as_str().unwrap_or("x");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.devcontainers", "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.devcontainers.layer.v1+tar",
            "digest": layer_digest, "size": blob.len(),
            "annotations": {"org.opencontainers.image.title": format!("devcontainer-feature-{id}.tgz")},
        }],
        "annotations": {"dev.containers.metadata": meta.to_string()},
    });
    let bytes = serde_json::to_vec(&manifest).expect("json");
    put_manifest(reg, repo, "1", OCI_MANIFEST, &bytes);
    sha256(&bytes)
}

/// Three Features: `app` dependsOn `base` (and installs before it alphabetically otherwise),
/// `aaa-late` installsAfter `app` (likewise); `base` puts a tool on PATH with containerEnv.
fn publish_set(reg: &Registry) -> (String, String, String) {
    let host = reg.host();
    let base = serde_json::json!({
        "id": "base", "version": "1.0.0",
        "options": {"greeting": {"type": "string", "default": "hello"}},
        "containerEnv": {"BASE_HOME": "/opt/base", "PATH": "/opt/base/bin:${PATH}"},
    });
    publish(reg, "f/base", &base, "#!/bin/sh\nset -e\nmkdir -p /opt/base/bin\necho \"base $GREETING\" >> /opt/order.log\nprintf '#!/bin/sh\\necho base-tool\\n' > /opt/base/bin/base-tool\nchmod +x /opt/base/bin/base-tool\necho \"$_REMOTE_USER $_REMOTE_USER_HOME $_CONTAINER_USER $_CONTAINER_USER_HOME\" > /opt/base/users\n", vec![], Compression::Plain);
    let app = serde_json::json!({
        "id": "app", "version": "2.1.0",
        "options": {"version": {"type": "string", "default": "1.0"}, "install-color": {"type": "string", "default": "red"}},
        "dependsOn": {format!("{host}/f/base:1"): {}},
    });
    let app_digest = publish(reg, "f/app", &app, "#!/bin/sh\nset -e\necho \"app $VERSION $INSTALL_COLOR $BASE_HOME $(cat ./extra.txt)\" >> /opt/order.log\nbase-tool >> /opt/order.log\n", vec![Entry::File("./extra.txt".into(), b"extra".to_vec(), 0o644)], Compression::Plain);
    // Named `tgz`, and gzip for once: the layer is detected, not taken from its name.
    let late = serde_json::json!({"id": "aaa-late", "version": "0.1.0", "installsAfter": [format!("{host}/f/app")]});
    publish(
        reg,
        "f/aaa-late",
        &late,
        "#!/bin/sh\necho late >> /opt/order.log\n",
        vec![],
        Compression::Gzip,
    );
    (
        format!("{host}/f/app:1"),
        format!("{host}/f/aaa-late:1"),
        app_digest,
    )
}

/// The busybox image, pushed and already pulled (so a failing start prints only its error).
fn pulled_busybox(env: &Env, reg: &Registry) -> String {
    let image = push_busybox(reg);
    env.ok(&["pull", "-q", &image]);
    image
}

/// stderr from its `error:` line on (the single-id note may come first).
fn error_of(err: &str) -> String {
    err.lines()
        .skip_while(|l| !l.starts_with("error: "))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn write_project(env: &Env, image: &str, features: &str) {
    env.write_dev_toml(&format!(
        "image = \"{image}\"\n[env]\nMINE = \"x\"\n[features]\n{features}"
    ));
}

const LOCAL_META: &str = r#"{"id": "local", "version": "0.0.1", "options": {"version": {"type": "string", "default": "0"}}}"#;

e2e!(
    features_install_in_order_with_options_env_and_cache,
    |env: Env| {
        let reg = Registry::start();
        let image = push_busybox(&reg);
        let (app, late, app_digest) = publish_set(&reg);
        // A local Feature next to dev.toml; a string is its `version`.
        let local = env.path("project/features/local");
        fs::create_dir_all(&local).expect("mkdir");
        fs::write(local.join("devcontainer-feature.json"), LOCAL_META).expect("write");
        fs::write(
            local.join("install.sh"),
            "#!/bin/sh\nmkdir -p /opt\necho \"local $VERSION\" >> /opt/order.log\n",
        )
        .expect("write");
        write_project(&env, &image, &format!("\"{app}\" = {{ version = \"2.0\" }}\n\"{late}\" = {{}}\n\"./features/local\" = \"3.1\"\n"));
        env.trust();

        let script = "cat /opt/order.log; echo \"$BASE_HOME $MINE\"; echo \"$PATH\"; base-tool; cat /opt/base/users";
        let out = env.run(&["run", "--", "sh", "-c", script]);
        assert!(out.status.success(), "{}", describe("dev run", &out));
        let expected = "local 3.1\nbase hello\napp 2.0 red /opt/base extra\nbase-tool\nlate\n/opt/base x\n/opt/base/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nbase-tool\nroot /root root /root\n";
        assert_eq!(stdout(&out), expected, "{}", describe("dev run", &out));
        let err = stderr(&out);
        for f in [&app, &late] {
            assert!(
                err.contains(&format!("installing the Feature `{f}`")),
                "{err}"
            );
        }

        // dev.lock pins each Feature's manifest digest, dependencies included.
        let lock = fs::read_to_string(env.path("project/dev.lock")).expect("dev.lock");
        let host = reg.host();
        assert!(
        lock.contains(&format!("[features.\"{app}\"]\nversion = \"2.1.0\"\nresolved = \"{host}/f/app@{app_digest}\"\nintegrity = \"{app_digest}\"")),
        "{lock}"
    );
        assert!(
            lock.contains(&format!("[features.\"{host}/f/base:1\"]")),
            "{lock}"
        );
        assert!(lock.contains("[features.\"./features/local\"]"), "{lock}");

        // Second start: every layer is a cache hit, nothing of a Feature runs again, and
        // the pinned Features are not asked of the registry.
        let asked = |reg: &Registry| reg.log().matches("GET /v2/f/").count();
        let before = asked(&reg);
        assert!(before > 0, "the first start fetched them: {}", reg.log());
        let out = env.run(&["run", "--", "sh", "-c", script]);
        assert_eq!(
            asked(&reg),
            before,
            "a warm start asks the registry nothing"
        );
        assert!(out.status.success(), "{}", describe("dev run", &out));
        assert_eq!(stdout(&out), expected);
        let err = stderr(&out);
        assert!(
            !err.contains("installing") && !err.contains("wrote"),
            "{err}"
        );

        // The tag moves; dev.lock still pins the digest it resolved, so nothing changes.
        let app_meta = serde_json::json!({"id": "app", "version": "2.2.0", "dependsOn": {format!("{host}/f/base:1"): {}}});
        publish(
            &reg,
            "f/app",
            &app_meta,
            "#!/bin/sh\necho app-v2 >> /opt/order.log\n",
            vec![],
            Compression::Plain,
        );
        let out = env.ok(&["run", "--frozen", "--", "cat", "/opt/order.log"]);
        assert!(
            !stdout(&out).contains("app-v2"),
            "{}",
            describe("dev run --frozen", &out)
        );

        // A Feature dev.lock does not pin: --frozen refuses, in one line.
        let other = serde_json::json!({"id": "other", "version": "1.0.0"});
        publish(
            &reg,
            "f/other",
            &other,
            "#!/bin/sh\ntrue\n",
            vec![],
            Compression::Plain,
        );
        write_project(&env, &image, &format!("\"{app}\" = {{ version = \"2.0\" }}\n\"{late}\" = {{}}\n\"./features/local\" = \"3.1\"\n\"{host}/f/other:1\" = {{}}\n"));
        env.trust();
        let err = env.fails(&["run", "--frozen", "--", "true"]);
        assert!(
        err.starts_with(&format!("error: --frozen: the Feature `{host}/f/other:1` is in dev.toml but not in dev.lock\n")),
        "{err}"
    );

        // `dev update` re-resolves the tags: the moved app is installed, base and local are not
        // built again (same layers below them).
        let out = env.ok(&["update"]);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("installing the Feature `{app}`")),
            "{err}"
        );
        assert!(
            !err.contains("`./features/local`") && !err.contains("f/base:1`"),
            "{err}"
        );
        let out = env.ok(&["run", "--", "cat", "/opt/order.log"]);
        assert_eq!(stdout(&out), "local 3.1\nbase hello\napp-v2\nlate\n");
    }
);

e2e!(features_need_trust, |env: Env| {
    let reg = Registry::start();
    let image = push_busybox(&reg);
    let (app, _, _) = publish_set(&reg);
    write_project(&env, &image, &format!("\"{app}\" = \"2.0\"\n"));
    let err = env.fails(&["run", "--", "true"]);
    assert!(err.contains("runs commands you have not trusted"), "{err}");
    assert!(
        !env.path("project/dev.lock").exists(),
        "nothing ran before the refusal"
    );
    let shown = stdout(&env.ok(&["trust", "--show"]));
    assert!(
        shown.contains(
            "[features], each Feature's install.sh run as root inside when its layer is built:"
        ) && shown.contains(&format!("{app} {{\"version\":\"2.0\"}}")),
        "{shown}"
    );
    env.trust();
    env.ok(&["run", "--", "true"]);
    // Another option asks again.
    write_project(&env, &image, &format!("\"{app}\" = \"2.1\"\n"));
    let err = env.fails(&["run", "--", "true"]);
    assert!(err.contains("changed what it runs or exposes"), "{err}");
    // A local Feature is trusted with its files: an edit of its install.sh asks again.
    let local = env.path("project/features/local");
    fs::create_dir_all(&local).expect("mkdir");
    fs::write(local.join("devcontainer-feature.json"), LOCAL_META).expect("write");
    fs::write(local.join("install.sh"), "#!/bin/sh\ntrue\n").expect("write");
    write_project(&env, &image, "\"./features/local\" = {}\n");
    env.trust();
    env.ok(&["run", "--", "true"]);
    fs::write(local.join("install.sh"), "#!/bin/sh\ntouch /planted\n").expect("write");
    env.chown_all(&local);
    let err = env.fails(&["run", "--", "true"]);
    assert!(err.contains("changed what it runs or exposes"), "{err}");
});

/// A tarball Feature (gzip tar): its devcontainer-feature.json and an install.sh of `script`.
fn feature_tarball(meta: &serde_json::Value, script: &str) -> Vec<u8> {
    let layer = Layer::new(vec![
        Entry::File(
            "./devcontainer-feature.json".into(),
            meta.to_string().into_bytes(),
            0o644,
        ),
        Entry::File(
            "./install.sh".into(),
            format!("#!/bin/sh\n{script}\n").into_bytes(),
            0o644,
        ),
    ]);
    layer.blob().0
}

e2e!(a_tarball_feature_over_loopback_http, |env: Env| {
    let reg = Registry::start();
    let image = push_busybox(&reg);
    let meta = serde_json::json!({"id": "tarred", "version": "3.0.0", "options": {"word": {"type": "string", "default": "tar"}}});
    let tgz = feature_tarball(&meta, "echo \"from $WORD\" > /tarred");
    let digest = sha256(&tgz);
    let server = Server::start(move |_| Response::new(200, tgz.clone()));
    let url = format!(
        "http://127.0.0.1:{}/devcontainer-feature-tarred.tgz",
        server.port
    );
    write_project(
        &env,
        &image,
        &format!("\"{url}\" = {{ word = \"http\" }}\n"),
    );
    env.trust();
    let out = env.ok(&["run", "--", "cat", "/tarred"]);
    assert_eq!(stdout(&out), "from http\n");
    let lock = fs::read_to_string(env.path("project/dev.lock")).expect("dev.lock");
    assert!(
        lock.contains(&format!("[features.\"{url}\"]\nversion = \"3.0.0\"\nresolved = \"{url}\"\nintegrity = \"{digest}\"")),
        "{lock}"
    );
    // Pinned and in the store: the next start does not download it again.
    let before = server.requests().len();
    env.ok(&["run", "--", "true"]);
    assert_eq!(
        server.requests().len(),
        before,
        "no download on a warm start"
    );
});

e2e!(a_hostile_feature_tar_is_refused, |env: Env| {
    let reg = Registry::start();
    let image = pulled_busybox(&env, &reg);
    let outside = env.path("outside");
    let before = snapshot(&outside, &env.store());
    let meta = serde_json::json!({"id": "evil", "version": "1.0.0"});
    for (repo, entries) in [
        (
            "f/through-link",
            vec![
                Entry::Symlink("./evil".into(), outside.display().to_string()),
                Entry::File("./evil/pwned".into(), b"x".to_vec(), 0o644),
            ],
        ),
        (
            "f/dot-dot",
            vec![Entry::File(
                "../../../../../../../../tmp/dev-feature-pwned".into(),
                b"x".to_vec(),
                0o644,
            )],
        ),
    ] {
        let mut all = vec![
            Entry::File(
                "./devcontainer-feature.json".into(),
                meta.to_string().into_bytes(),
                0o644,
            ),
            Entry::File(
                "./install.sh".into(),
                b"#!/bin/sh\ntouch /pwned\n".to_vec(),
                0o755,
            ),
        ];
        all.extend(entries);
        publish_tar(&reg, repo, &meta, Layer::new(all).with(Compression::Plain));
        let feature = format!("{}/{repo}:1", reg.host());
        write_project(&env, &image, &format!("\"{feature}\" = {{}}\n"));
        env.trust();
        let err = error_of(&env.fails(&["run", "--", "true"]));
        assert!(
            err.starts_with(&format!("error: the Feature `{feature}` is refused: entry")),
            "{err}"
        );
        assert_eq!(
            snapshot(&outside, &env.store()),
            before,
            "nothing written outside"
        );
        assert!(!std::path::Path::new("/tmp/dev-feature-pwned").exists());
    }
});

e2e!(a_feature_cycle_is_refused_in_one_line, |env: Env| {
    let reg = Registry::start();
    let image = pulled_busybox(&env, &reg);
    let host = reg.host();
    let a = serde_json::json!({"id": "a", "dependsOn": {format!("{host}/f/b:1"): {}}});
    let b = serde_json::json!({"id": "b", "installsAfter": [format!("{host}/f/a")]});
    publish(
        &reg,
        "f/a",
        &a,
        "#!/bin/sh\ntouch /ran\n",
        vec![],
        Compression::Plain,
    );
    publish(
        &reg,
        "f/b",
        &b,
        "#!/bin/sh\ntouch /ran\n",
        vec![],
        Compression::Plain,
    );
    write_project(&env, &image, &format!("\"{host}/f/a:1\" = {{}}\n"));
    env.trust();
    let err = error_of(&env.fails(&["run", "--", "true"]));
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("error: the Features `{host}/f/a:1`, `{host}/f/b:1` depend on each other in a cycle (dependsOn, installsAfter); none can install first").as_str()),
        "{err}"
    );
    assert!(lines.len() == 2 && lines[1].starts_with("hint: "), "{err}");
    assert!(!err.contains("installing"), "{err}");
});

e2e!(
    a_failing_feature_is_named_and_unsupported_properties_too,
    |env: Env| {
        let reg = Registry::start();
        let image = pulled_busybox(&env, &reg);
        let host = reg.host();
        let meta = serde_json::json!({
            "id": "boom", "version": "1.0.0",
            "mounts": [{"source": "x", "target": "/x", "type": "volume"}],
            "postCreateCommand": "echo hi", "init": true,
        });
        publish(
            &reg,
            "f/boom",
            &meta,
            "#!/bin/sh\necho 'boom from install.sh' >&2\nexit 3\n",
            vec![],
            Compression::Plain,
        );
        write_project(&env, &image, &format!("\"{host}/f/boom:1\" = {{}}\n"));
        env.trust();
        let err = env.fails(&["run", "--", "true"]);
        assert!(
        err.contains(&format!("the Feature `{host}/f/boom:1` asks for `mounts`, `postCreateCommand`, which dev does not support; installing it without\n")),
        "{err}"
    );
        assert!(
            err.contains("boom from install.sh\n"),
            "its output is shown: {err}"
        );
        assert!(
        error_of(&err).starts_with(&format!("error: the Feature `{host}/f/boom:1` failed: its install.sh exited with 3; the env is unchanged\nhint: ")),
        "{err}"
    );
        assert!(!env.path("project/dev.lock").exists(), "{err}");
    }
);

// The loopback rule for plain HTTP holds for where a tarball Feature's URL redirects to: a
// redirect to a plain-HTTP host that is not a loopback address (one a network can forge) is
// not followed, and nothing from it is installed.
e2e!(
    a_tarball_feature_redirected_off_loopback_is_refused,
    |env: Env| {
        let reg = Registry::start();
        let image = push_busybox(&reg);
        let meta = serde_json::json!({"id": "tarred", "version": "3.0.0"});
        let tgz = feature_tarball(&meta, "echo forged > /tarred");
        let forged = Server::start(move |_| Response::new(200, tgz.clone()));
        // The same listener, by a name the loopback rule does not take as loopback.
        let elsewhere = format!("http://[::ffff:127.0.0.1]:{}/f.tgz", forged.port);
        let redirecting =
            Server::start(move |_| Response::new(302, "").header("Location", &elsewhere));
        let url = format!(
            "http://127.0.0.1:{}/devcontainer-feature-tarred.tgz",
            redirecting.port
        );
        write_project(&env, &image, &format!("\"{url}\" = {{}}\n"));
        env.trust();
        let out = env.run(&["run", "--", "cat", "/tarred"]);
        assert!(!out.status.success(), "installed from the redirect");
        assert!(forged.requests().is_empty(), "the redirect was followed");
        let err = stderr(&out);
        assert!(err.contains("redirect"), "{err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
    }
);
