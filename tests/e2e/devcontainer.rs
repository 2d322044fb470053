//! devcontainer.json (issue 15): a project that has one instead of a dev.toml opens as one with
//! a dev.toml does, its lifecycle commands run when the spec says, they need trust, and what
//! dev does not do is named.

use std::fs;
use std::path::PathBuf;

use crate::common::image::ImageBuilder;
use crate::common::{describe, image, push_busybox, stderr, stdout, Env, Kind, Registry};
use crate::e2e;

/// Writes `.devcontainer/devcontainer.json` (or `rel`) in the project, owned by the user.
fn write_config(env: &Env, rel: &str, text: &str) -> PathBuf {
    let path = env.path("project").join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(&path, text).expect("write devcontainer.json");
    env.chown_all(&env.path("project"));
    path
}

fn devcontainer(env: &Env, text: &str) -> PathBuf {
    write_config(env, ".devcontainer/devcontainer.json", text)
}

/// The project's log of what ran (each command appends a word).
fn log(env: &Env) -> Vec<String> {
    let mut words: Vec<String> = fs::read_to_string(env.path("project/log"))
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    // The steps of an object run at once: their order is not fixed.
    words.sort();
    words
}

fn words(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

e2e!(
    a_jsonc_devcontainer_project_opens_like_a_dev_toml_one,
    |env: Env| {
        let reg = Registry::start();
        let image = push_busybox(&reg);
        // Comments, trailing commas, CRLF and no final newline, as real files have them.
        let text = format!(
        "// the team's container\r\n{{\r\n  \"image\": \"{image}\", /* pinned elsewhere */\r\n  \"containerEnv\": {{\"GREETING\": \"hello from ${{localWorkspaceFolderBasename}}\",}},\r\n  \"remoteEnv\": {{\"PATH\": \"${{containerEnv:PATH}}:/opt/tools\", \"WS\": \"${{containerWorkspaceFolder}}\"}},\r\n  \"remoteUser\": \"vscode\",\r\n}}"
    );
        devcontainer(&env, &text);
        let out = env.ok(&[
            "run",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING|$PATH|$WS|$(id -un)|$(id -u)|$(pwd)\"",
        ]);
        let project = env.path("project");
        assert_eq!(
        stdout(&out).trim(),
        format!(
            "hello from project|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/tools|{p}|vscode|{uid}|{p}",
            p = project.display(),
            uid = env.uid
        ),
        "{}",
        describe("dev run", &out)
    );
        // A project with only an image and env needs no trust, and files made inside are yours.
        env.ok(&["run", "--", "touch", "made-inside"]);
        let st = fs::metadata(project.join("made-inside")).expect("made");
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&st), env.uid);
        // `dev shell` opens it too (no terminal: the shell reads its commands from stdin).
        let shell = env
            .dev(&["shell"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .expect("stdin")
                    .write_all(b"echo in-shell $GREETING\n")?;
                c.wait_with_output()
            })
            .expect("dev shell");
        assert!(
            stdout(&shell).contains("in-shell hello from project"),
            "{}",
            describe("dev shell", &shell)
        );
    }
);

/// Each lifecycle command in another form: a string (shell), an array (no shell: `$X` stays as
/// written), an object (steps at once, output prefixed by name).
const LIFECYCLE: &str = r#"{
  // every form
  "onCreateCommand": "echo create >> log",
  "updateContentCommand": ["sh", "-c", "echo update >> log; echo \"$0\" > array-arg", "$NOT_EXPANDED"],
  "postCreateCommand": {
    "first": "echo post-a >> log; echo said-first",
    "second": ["sh", "-c", "echo post-b >> log; echo said-second"],
  },
  "postStartCommand": "echo start >> log",
  "postAttachCommand": "echo attach >> log",
}"#;

e2e!(lifecycle_commands_run_when_the_spec_says, |env: Env| {
    let reg = Registry::start();
    let image = push_busybox(&reg);
    devcontainer(
        &env,
        &LIFECYCLE.replacen('{', &format!("{{\n  \"image\": \"{image}\","), 1),
    );
    env.trust();
    // The first run: the env is made (onCreate, updateContent, postCreate) and started.
    let out = env.ok(&["run", "--", "true"]);
    assert_eq!(
        log(&env),
        words(&["create", "update", "post-a", "post-b", "start"])
    );
    let err = stderr(&out);
    assert!(
        err.contains("first | said-first") && err.contains("second | said-second"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(env.path("project/array-arg"))
            .expect("array-arg")
            .trim(),
        "$NOT_EXPANDED"
    );
    // The env stopped with its last session: the next one starts it again, but it is made.
    env.ok(&["run", "--", "true"]);
    assert_eq!(
        log(&env),
        words(&["create", "update", "post-a", "post-b", "start", "start"])
    );
    // `dev shell` attaches: postAttachCommand (and, starting the env, postStartCommand).
    env.ok(&["shell"]);
    assert_eq!(
        log(&env),
        words(&["create", "update", "post-a", "post-b", "start", "start", "start", "attach"])
    );
    // A running env (`dev start` starts it: postStart) is joined: nothing starts again; each
    // `dev shell` attaches once more, `dev run` does not.
    env.ok(&["start"]);
    env.ok(&["run", "--", "true"]);
    env.ok(&["shell"]);
    assert_eq!(
        log(&env),
        words(&[
            "create", "update", "post-a", "post-b", "start", "start", "start", "start", "attach",
            "attach"
        ])
    );
    env.ok(&["stop"]);
});

e2e!(
    a_failing_lifecycle_command_stops_the_session_and_runs_again,
    |env: Env| {
        let reg = Registry::start();
        let image = push_busybox(&reg);
        devcontainer(
            &env,
            &format!(
                r#"{{"image": "{image}", "postCreateCommand": {{"ok": "true", "bad": "echo bad >> log; exit 7"}}}}"#
            ),
        );
        env.trust();
        let out = env.run(&["run", "--", "touch", "command-ran"]);
        assert!(!out.status.success(), "{}", describe("dev run", &out));
        assert!(
            stderr(&out).contains("error: devcontainer.json's postCreateCommand failed (exit 7)"),
            "{}",
            describe("dev run", &out)
        );
        assert!(!env.path("project/command-ran").exists());
        // Not marked done: the next session runs it again.
        let _ = env.run(&["run", "--", "true"]);
        assert_eq!(log(&env), words(&["bad", "bad"]));
    }
);

e2e!(trust_is_asked_for_devcontainer_commands, |env: Env| {
    let reg = Registry::start();
    let image = push_busybox(&reg);
    let project = env.path("project");
    let file = devcontainer(
        &env,
        &format!(
            r#"{{"image": "{image}",
            "initializeCommand": ["sh", "-c", "test -z \"$DEV_ENV\" && echo on-host > initialized"],
            "postCreateCommand": "touch post-create-ran"}}"#
        ),
    );
    let err = env.fails(&["run", "--", "true"]);
    assert_eq!(
        err,
        format!(
            "error: devcontainer.json in `{}` runs commands you have not trusted\nhint: review them with `dev trust --show`, then run `dev trust`\n",
            project.display()
        )
    );
    assert!(
        !project.join("initialized").exists(),
        "initializeCommand ran untrusted"
    );
    assert!(
        !project.join("post-create-ran").exists(),
        "postCreateCommand ran untrusted"
    );
    let show = stdout(&env.ok(&["trust", "--show"]));
    assert!(
        show.contains("initializeCommand, run on this machine"),
        "{show}"
    );
    assert!(
        show.contains("postCreateCommand: touch post-create-ran"),
        "{show}"
    );
    env.trust();
    env.ok(&["run", "--", "true"]);
    assert_eq!(
        fs::read_to_string(project.join("initialized")).expect("initialized"),
        "on-host\n",
        "initializeCommand runs on the host, in the project"
    );
    assert!(project.join("post-create-ran").exists());
    // A change to a command revokes the trust, and says what changed.
    let text = fs::read_to_string(&file).expect("read");
    fs::write(
        &file,
        text.replace("touch post-create-ran", "touch changed"),
    )
    .expect("write");
    let err = env.fails(&["run", "--", "true"]);
    assert!(err.contains("changed what it runs or exposes"), "{err}");
    // ${localEnv:…} brings a host variable in: that needs trust too (`.devcontainer.json`, a
    // file of its own, with no record yet).
    fs::remove_dir_all(project.join(".devcontainer")).expect("rm");
    write_config(
        &env,
        ".devcontainer.json",
        &format!(r#"{{"image": "{image}", "containerEnv": {{"H": "${{localEnv:HOME}}"}}}}"#),
    );
    let err = env.fails(&["run", "--", "true"]);
    assert!(
        err.contains("asks for host environment variables, which you have not trusted"),
        "{err}"
    );
});

e2e!(unsupported_properties_are_each_named, |env: Env| {
    let reg = Registry::start();
    let image = push_busybox(&reg);
    devcontainer(
        &env,
        &format!(
            r#"{{"image": "{image}", "runArgs": ["--init"], "privileged": true, "capAdd": ["SYS_PTRACE"],
            "securityOpt": ["seccomp=unconfined"], "appPort": [3000], "forwardPorts": [8080],
            "hostRequirements": {{"cpus": 100000}}}}"#
        ),
    );
    let out = env.ok(&["run", "--", "true"]);
    let err = stderr(&out);
    for p in ["runArgs", "privileged", "capAdd", "securityOpt", "appPort"] {
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.contains(&format!("`{p}`")))
            .collect();
        assert_eq!(lines.len(), 1, "{p}: {err}");
    }
    assert!(
        err.contains("warning: hostRequirements: 100000 cpus wanted"),
        "{err}"
    );
    let config = stdout(&env.ok(&["config", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&config).expect("json");
    let ignored: Vec<&str> = v["ignored"]
        .as_array()
        .expect("ignored")
        .iter()
        .filter_map(|i| i["property"].as_str())
        .collect();
    for p in [
        "runArgs",
        "privileged",
        "capAdd",
        "securityOpt",
        "appPort",
        "forwardPorts",
    ] {
        assert!(ignored.contains(&p), "{p}: {config}");
    }
    // A Dockerfile or compose project is refused in one line (and a hint).
    for (text, what) in [
        (
            r#"{"build": {"dockerfile": "Dockerfile"}}"#,
            "build.dockerfile",
        ),
        (r#"{"dockerFile": "Dockerfile"}"#, "dockerFile"),
        (
            r#"{"dockerComposeFile": "compose.yml", "service": "app"}"#,
            "dockerComposeFile",
        ),
    ] {
        devcontainer(&env, text);
        let err = env.fails(&["run", "--", "true"]);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(what),
            "{err}"
        );
        assert!(lines[1].starts_with("hint: "), "{err}");
    }
});

e2e!(
    the_images_devcontainer_metadata_goes_under_the_file,
    |env: Env| {
        let reg = Registry::start();
        let label = serde_json::json!([
            {"id": "ghcr.io/devcontainers/features/common-utils:2"},
            {"remoteUser": "node", "containerEnv": {"FROM_LABEL": "label", "BOTH": "label"},
             "postCreateCommand": "echo label-create >> log"}
        ])
        .to_string();
        ImageBuilder::new(image::busybox_layers())
            .run_config(
                "Labels",
                serde_json::json!({ "devcontainer.metadata": label }),
            )
            .push(&reg, "fixture/labelled", Some("1"));
        let image = format!("{}/fixture/labelled:1", reg.host());
        devcontainer(
            &env,
            &format!(
                r#"{{"image": "{image}", "containerEnv": {{"BOTH": "file"}}, "postCreateCommand": "echo file-create >> log"}}"#
            ),
        );
        env.trust();
        let out = env.ok(&["run", "--", "sh", "-c", "echo $FROM_LABEL $BOTH $(id -un)"]);
        assert_eq!(stdout(&out).trim(), "label file node");
        // The label's command runs before the file's.
        assert_eq!(
            fs::read_to_string(env.path("project/log")).expect("log"),
            "label-create\nfile-create\n"
        );
    }
);

/// Plain `dev config` runs (no sandbox) as one user.
fn config_env() -> Env {
    Env::new(Kind::Sub)
}

#[test]
fn several_devcontainer_configs_are_listed_and_config_picks_one() {
    let env = config_env();
    write_config(
        &env,
        ".devcontainer/python/devcontainer.json",
        r#"{"image": "python:3"}"#,
    );
    write_config(
        &env,
        ".devcontainer/node/devcontainer.json",
        r#"{"image": "node:20"}"#,
    );
    let err = env.fails(&["config"]);
    assert!(
        err.contains("has 2 devcontainer.json files: `.devcontainer/node/devcontainer.json`, `.devcontainer/python/devcontainer.json`"),
        "{err}"
    );
    assert!(err.contains("hint: pick one with `--config"), "{err}");
    let out = env.ok(&[
        "config",
        "--format",
        "json",
        "--config",
        ".devcontainer/python/devcontainer.json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["image"], "python:3");
    // TOML is the default format.
    let out = env.ok(&[
        "config",
        "--config",
        ".devcontainer/python/devcontainer.json",
    ]);
    let t: toml::Value = toml::from_str(&stdout(&out)).expect("toml");
    assert_eq!(t["image"].as_str(), Some("python:3"));
    // From a sub-directory, the project is still the root.
    let sub = env.path("project/src");
    fs::create_dir_all(&sub).expect("mkdir");
    env.chown_all(&sub);
    let out = env.ok_in(
        &sub,
        &[
            "config",
            "--format",
            "json",
            "--config",
            "../.devcontainer/node/devcontainer.json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["workspace"], env.path("project").display().to_string());
    // A dev.toml wins over any devcontainer.json.
    env.write_dev_toml("image = \"debian:bookworm\"\n");
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&env.ok(&["config", "--format", "json"]))).expect("json");
    assert_eq!(v["image"], "debian:bookworm");
}

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let env = config_env();
    let file = devcontainer(
        &env,
        "{\n  // ok\n  \"image\": \"x\"\n  \"remoteUser\": \"a\"\n}\n",
    );
    let err = env.fails(&["config"]);
    assert!(
        err.starts_with(&format!(
            "error: {}:4:3: expected `,` or `}}`",
            file.display()
        )),
        "{err}"
    );
}

#[test]
fn init_from_devcontainer_writes_the_equivalent_dev_toml() {
    let env = config_env();
    devcontainer(
        &env,
        r#"{
        "image": "debian:bookworm",
        "containerEnv": {"A": "1", "WITH SPACE": "x\"y"},
        "onCreateCommand": ["echo", "it's"],
        "postCreateCommand": "make setup",
        "postStartCommand": "make serve",
        "remoteUser": "vscode",
    }"#,
    );
    let out = env.ok(&["init", "--from-devcontainer"]);
    let err = stderr(&out);
    assert!(
        err.contains("not carried over: postStartCommand `make serve`"),
        "{err}"
    );
    assert!(err.contains("review them with `dev trust --show`"), "{err}");
    let text = fs::read_to_string(env.path("project/dev.toml")).expect("dev.toml");
    let v: toml::Value = toml::from_str(&text).expect("toml");
    assert_eq!(v["image"].as_str(), Some("debian:bookworm"));
    assert_eq!(v["env"]["WITH SPACE"].as_str(), Some("x\"y"));
    assert_eq!(
        v["setup"]["user"]
            .as_array()
            .expect("user")
            .iter()
            .filter_map(toml::Value::as_str)
            .collect::<Vec<_>>(),
        ["echo 'it'\\''s'", "make setup"]
    );
    // Now the project is the dev.toml's, and it needs trust for those commands.
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&env.ok(&["config", "--format", "json"]))).expect("json");
    assert!(v["file"].as_str().expect("file").ends_with("/dev.toml"));
    assert!(stdout(&env.ok(&["trust", "--show"])).contains("not trusted"));
    // It never overwrites.
    assert!(env
        .fails(&["init", "--from-devcontainer"])
        .contains("already exists"));
}

/// devcontainer.json files in the shapes public repositories have (written here: files fetched
/// from other repositories are not committed to this one): comments, trailing commas, CRLF, no
/// final newline, the three command forms, `${localEnv:…}`, the old top-level `dockerFile`,
/// `build.dockerfile`, and Compose.
fn real_files() -> Vec<(String, String, String)> {
    let files: [(&str, &str, &str); 12] = [
        ("comments", "image", "// For format details, see https://aka.ms/devcontainer.json.\n{\n\t\"name\": \"Python 3\",\n\t/* the base */\n\t\"image\": \"mcr.microsoft.com/devcontainers/python:1-3.12-bullseye\",\n\t// \"forwardPorts\": [],\n\t\"postCreateCommand\": \"pip3 install --user -r requirements.txt\"\n}\n"),
        ("trailing-commas", "image", "{\n  \"image\": \"mcr.microsoft.com/devcontainers/base:bookworm\",\n  \"features\": {\n    \"ghcr.io/devcontainers/features/node:1\": {\"version\": \"lts\",},\n  },\n  \"customizations\": {\"vscode\": {\"extensions\": [\"ms-python.python\",]}},\n}\n"),
        ("crlf", "image", "{\r\n  \"image\": \"mcr.microsoft.com/devcontainers/go:1.22\",\r\n  \"remoteUser\": \"vscode\"\r\n}\r\n"),
        ("no-final-newline", "image", "{\n  \"image\": \"node:20\",\n  \"postStartCommand\": [\"npm\", \"ci\"]\n}"),
        ("object-commands", "image", "{\n  \"image\": \"mcr.microsoft.com/devcontainers/universal:2\",\n  \"postCreateCommand\": {\"server\": \"npm start\", \"db\": [\"mysql\", \"-u\", \"root\"]},\n  \"postAttachCommand\": \"git status\"\n}\n"),
        ("local-env", "image", "{\n  \"image\": \"mcr.microsoft.com/devcontainers/rust:1\",\n  \"containerEnv\": {\"GIT_USER\": \"${localEnv:USER:nobody}\"},\n  \"remoteEnv\": {\"PATH\": \"${containerEnv:PATH}:/opt/bin\"},\n  \"workspaceFolder\": \"${localWorkspaceFolder}\"\n}\n"),
        ("run-args", "image", "{\n  \"image\": \"ubuntu:22.04\",\n  \"runArgs\": [\"--cap-add=SYS_PTRACE\", \"--security-opt\", \"seccomp=unconfined\"],\n  \"forwardPorts\": [3000, 5432],\n  \"hostRequirements\": {\"cpus\": 2}\n}\n"),
        ("old-dockerfile", "dockerfile", "// old style\n{\n  \"name\": \"Go\",\n  \"dockerFile\": \"Dockerfile\",\n  \"extensions\": [\"golang.go\"],\n}\n"),
        ("build-dockerfile", "dockerfile", "{\r\n  \"build\": {\"dockerfile\": \"Dockerfile\", \"context\": \"..\", \"args\": {\"VARIANT\": \"3.11\"}},\r\n  \"postCreateCommand\": \"make\"\r\n}"),
        ("build-no-final-newline", "dockerfile", "{\"build\": {\"dockerfile\": \"../Dockerfile\"}}"),
        ("compose", "compose", "{\n  \"dockerComposeFile\": [\"../docker-compose.yml\"],\n  \"service\": \"app\",\n  \"workspaceFolder\": \"/workspace\",\n}\n"),
        ("compose-string", "compose", "// compose\n{\"dockerComposeFile\": \"docker-compose.yml\", \"service\": \"web\", \"shutdownAction\": \"stopCompose\"}"),
    ];
    files
        .iter()
        .map(|(n, k, t)| (n.to_string(), k.to_string(), t.to_string()))
        .collect()
}

#[test]
fn dev_config_reads_every_image_file_and_refuses_every_dockerfile_one() {
    let env = config_env();
    let files = real_files();

    let (mut images, mut refused) = (0, 0);
    for (name, kind, text) in &files {
        devcontainer(&env, text);
        let out = env.run(&["config", "--format", "json"]);
        match kind.as_str() {
            "image" => {
                assert!(
                    out.status.success(),
                    "{name}: {}",
                    describe("dev config", &out)
                );
                let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
                assert!(
                    !v["image"].as_str().unwrap_or_default().is_empty(),
                    "{name}: no image"
                );
                images += 1;
            }
            "dockerfile" | "compose" => {
                let err = stderr(&out);
                let lines: Vec<&str> = err.lines().collect();
                assert!(
                    !out.status.success(),
                    "{name}: {}",
                    describe("dev config", &out)
                );
                assert_eq!(lines.len(), 2, "{name}: {err}");
                let what = if kind == "compose" {
                    "Docker Compose"
                } else {
                    "Dockerfile"
                };
                assert!(
                    lines[0].contains(what) && lines[0].contains("which dev does not support"),
                    "{name}: {err}"
                );
                refused += 1;
            }
            k => panic!("SOURCE: {name} has kind `{k}`, not image, dockerfile or compose"),
        }
    }
    assert!(
        images == 7 && refused == 5,
        "{images} image files, {refused} refused"
    );
}

e2e!(
    trust_is_asked_on_a_terminal_before_lifecycle_commands_run,
    |env: Env| {
        let reg = Registry::start();
        let image = push_busybox(&reg);
        let project = env.path("project");
        devcontainer(
            &env,
            &format!(
                r#"{{"image": "{image}", "postCreateCommand": ["touch", "created"], "postStartCommand": "touch started"}}"#
            ),
        );
        let mut pty = env.pty(&["run", "--", "true"], 24, 80);
        let at = pty.expect(
            &format!(
                "devcontainer.json in `{}` runs commands you have not trusted:",
                project.display()
            ),
            0,
        );
        let at = pty.expect("    postCreateCommand: touch created", at);
        let at = pty.expect("    postStartCommand: touch started", at);
        let at = pty.expect("Trust it as it is now? [y/N] ", at);
        pty.send("n\n");
        pty.expect("nothing of it ran", at);
        assert!(!pty.wait().success(), "{}", pty.output());
        assert!(!project.join("created").exists() && !project.join("started").exists());
        let mut pty = env.pty(&["run", "--", "true"], 24, 80);
        let at = pty.expect("Trust it as it is now? [y/N] ", 0);
        pty.send("y\n");
        pty.expect("trusted devcontainer.json", at);
        assert!(pty.wait().success(), "{}", pty.output());
        assert!(project.join("created").exists() && project.join("started").exists());
        // Kept: no question the next time.
        env.ok(&["run", "--", "true"]);
    }
);

#[test]
fn another_users_devcontainer_json_above_is_refused() {
    let env = config_env();
    let other = nix::unistd::User::from_name(Kind::Sub2.user())
        .ok()
        .flatten()
        .expect("devtest-sub2");
    let shared = env.path("shared");
    fs::create_dir(&shared).expect("mkdir");
    fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let planted = shared.join(".devcontainer.json");
    fs::write(
        &planted,
        r#"{"image": "x", "initializeCommand": "touch ran"}"#,
    )
    .expect("write");
    nix::unistd::chown(&planted, Some(other.uid), Some(other.gid)).expect("chown");
    let mine = shared.join("mine");
    fs::create_dir(&mine).expect("mkdir");
    env.chown_all(&mine);
    let out = env.run_in(&mine, &["config"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{}", describe("dev config", &out));
    assert!(
        err.starts_with(&format!(
            "error: `{}` belongs to `devtest-sub2`",
            planted.display()
        )),
        "{err}"
    );
}

e2e!(
    features_and_mounts_of_a_devcontainer_json_are_installed_and_bound,
    |env: Env| {
        use crate::common::image::Compression;
        let reg = Registry::start();
        let image = push_busybox(&reg);
        env.ok(&["pull", "-q", &image]);
        let host = reg.host();
        // Two Features that would install alphabetically (`a` first), reordered by the file.
        for id in ["a", "b"] {
            let meta = serde_json::json!({"id": id, "version": "1.0.0",
                "options": {"flavor": {"type": "string", "default": "plain"}}});
            crate::features::publish(
                &reg,
                &format!("f/{id}"),
                &meta,
                &format!("#!/bin/sh\nmkdir -p /opt\necho \"{id} $FLAVOR $_REMOTE_USER $VERSION\" >> /opt/order.log\n"),
                vec![],
                Compression::Plain,
            );
        }
        // A local Feature, relative to the devcontainer.json's directory.
        let local = env.path("project/.devcontainer/local");
        fs::create_dir_all(&local).expect("mkdir");
        fs::write(
            local.join("devcontainer-feature.json"),
            r#"{"id": "local", "version": "0.1.0"}"#,
        )
        .expect("write");
        fs::write(
            local.join("install.sh"),
            "#!/bin/sh\necho local >> /opt/order.log\n",
        )
        .expect("write");
        let shared = env.path("shared");
        fs::create_dir_all(&shared).expect("mkdir");
        fs::write(shared.join("data"), "from the host\n").expect("write");
        env.chown_all(&shared);
        let file = devcontainer(
            &env,
            &format!(
                r#"{{
                // Features and mounts, as the Dev Containers CLI reads them.
                "image": "{image}",
                "remoteUser": "vscode",
                "features": {{
                    "{host}/f/a:1": {{"flavor": "spicy"}},
                    "{host}/f/b:1": "1.0",
                    "./local": {{}},
                }},
                "overrideFeatureInstallOrder": ["{host}/f/b", "./local"],
                "mounts": [
                    "source={},target=/mnt/shared,type=bind,readonly",
                    {{"source": "dc-cache", "target": "/cache", "type": "volume"}},
                ],
            }}"#,
                shared.display()
            ),
        );
        // Features run code and mounts open the host: trust first.
        let err = env.fails(&["run", "--", "true"]);
        assert!(err.contains("have not trusted"), "{err}");
        let show = stdout(&env.ok(&["trust", "--show"]));
        assert!(
            show.contains("[features]") && show.contains("[[mounts]]"),
            "{show}"
        );
        env.trust();
        let out = env.ok(&[
            "run",
            "--",
            "sh",
            "-c",
            "cat /opt/order.log /mnt/shared/data; echo x > /cache/y && cat /cache/y; touch /mnt/shared/no 2>/dev/null || echo read-only",
        ]);
        assert_eq!(
            stdout(&out),
            "b plain vscode 1.0\nlocal\na spicy vscode \nfrom the host\nx\nread-only\n"
        );
        // Pinned beside the file, as the CLI writes it.
        let lock = fs::read_to_string(file.with_file_name("devcontainer-lock.json"))
            .expect("devcontainer-lock.json");
        let lock: serde_json::Value = serde_json::from_str(&lock).expect("json");
        for id in ["a", "b"] {
            let entry = &lock["features"][format!("{host}/f/{id}:1")];
            assert!(
                entry["resolved"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(&format!("{host}/f/{id}@sha256:"))),
                "{lock}"
            );
        }
        let volumes = stdout(&env.ok(&["volume", "ls", "--format", "json"]));
        assert!(volumes.contains("dc-cache"), "{volumes}");
        // `dev config` shows them as the session binds them.
        let out = env.ok(&["config", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(
            v["mounts"],
            serde_json::json!([
                format!("`{}` at `/mnt/shared` (read-only)", shared.display()),
                "volume `dc-cache` at `/cache`"
            ])
        );
    }
);
