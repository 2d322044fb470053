use super::*;
use serde_json::json;

fn read(text: &str) -> Result<DevContainer> {
    let host_var = |name: &str| match name {
        "HOME" => Some("/home/ann".to_string()),
        "TOKEN" => Some("s3cret".to_string()),
        _ => None,
    };
    parse(
        Path::new("/p/app/.devcontainer/devcontainer.json"),
        text,
        &Context {
            local_workspace: Path::new("/p/app"),
            host_var: &host_var,
        },
    )
}

fn ok(text: &str) -> DevContainer {
    read(text).expect("reads")
}

fn err(text: &str) -> String {
    read(text).expect_err("fails").to_string()
}

#[test]
fn image_env_user_and_variables() {
    let dc = ok(r#"{
        // comment
        "image": "mcr.microsoft.com/devcontainers/base:bookworm",
        "containerEnv": {"A": "${localEnv:TOKEN}", "B": "${localEnv:NOPE:fallback}", "N": 3},
        "remoteEnv": {"PATH": "${containerEnv:PATH}:/extra", "W": "${containerWorkspaceFolder}/x", "U": null},
        "remoteUser": "vscode",
        "containerUser": "other",
        "postCreateCommand": "echo ${localWorkspaceFolderBasename} ${devcontainerId}",
    }"#);
    assert_eq!(dc.image, "mcr.microsoft.com/devcontainers/base:bookworm");
    assert_eq!(dc.container_env["A"], "s3cret");
    assert_eq!(dc.container_env["B"], "fallback");
    assert_eq!(dc.container_env["N"], "3");
    assert_eq!(dc.remote_env["PATH"], "${containerEnv:PATH}:/extra");
    assert_eq!(dc.remote_env["W"], "/p/app/x");
    assert!(!dc.remote_env.contains_key("U"));
    assert_eq!(dc.user_name(), Some("vscode"));
    assert_eq!(dc.host_env, ["NOPE", "TOKEN"]);
    let Command::One(Step::Shell(s)) = &dc.hooks.post_create_command[0] else {
        panic!("{:?}", dc.hooks);
    };
    assert!(s.starts_with("echo app "), "{s}");
    assert_eq!(s.len(), "echo app ".len() + 32);
    let toml = dc.dev_toml();
    assert_eq!(toml.env["PATH"], "${containerEnv:PATH}:/extra");
    assert_eq!(toml.env["A"], "s3cret");
}

#[test]
fn container_env_references_resolve_against_the_image() {
    let env = BTreeMap::from([
        ("PATH".to_string(), "${containerEnv:PATH}:/x".to_string()),
        ("A".to_string(), "a".to_string()),
        (
            "B".to_string(),
            "${containerEnv:A}-${containerEnv:NONE:d}".to_string(),
        ),
    ]);
    let out = resolve_container_env(&env, &["PATH=/usr/bin".to_string()]);
    assert_eq!(out["PATH"], "/usr/bin:/x");
    assert_eq!(out["B"], "a-d");
}

#[test]
fn root_stays_yourself() {
    assert_eq!(
        ok(r#"{"image": "x", "remoteUser": "root"}"#).user_name(),
        None
    );
    assert!(
        err(r#"{"image": "x", "remoteUser": "a:b"}"#).contains("`remoteUser` is not a user name")
    );
}

#[test]
fn dockerfile_and_compose_projects_are_refused_in_one_line() {
    for (text, what) in [
        (
            r#"{"build": {"dockerfile": "Dockerfile"}}"#,
            "build.dockerfile",
        ),
        ("{\n  \"dockerFile\": \"Dockerfile\"\n}", "dockerFile"),
        (
            r#"{"dockerComposeFile": ["a.yml"], "service": "app"}"#,
            "dockerComposeFile",
        ),
    ] {
        let e = err(text);
        assert!(
            e.contains(what) && e.contains("which dev does not support"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
    // The place is named.
    assert!(err("{\n  \"dockerFile\": \"D\"\n}")
        .starts_with("/p/app/.devcontainer/devcontainer.json:2:3:"));
}

#[test]
fn every_unsupported_property_is_named() {
    let dc = ok(
        r#"{"image": "x", "runArgs": ["--init"], "privileged": true, "capAdd": ["SYS_PTRACE"],
        "securityOpt": ["seccomp=unconfined"], "appPort": [3000], "forwardPorts": [8080, "db:5432"],
        "customizations": {}, "frobnicate": 1, "workspaceFolder": "/workspaces/app",
        "mounts": ["source=${localEnv:HOME}/.ssh,target=/home/vscode/.ssh,type=bind,readonly"]}"#,
    );
    let lines = dc.unsupported_lines();
    for p in ["runArgs", "privileged", "capAdd", "securityOpt", "appPort"] {
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains(&format!("`{p}`")))
                .count(),
            1,
            "{p}: {lines:?}"
        );
    }
    let ignored: Vec<&str> = dc.ignored.iter().map(|i| i.property.as_str()).collect();
    for p in [
        "customizations",
        "frobnicate",
        "workspaceFolder",
        "forwardPorts",
    ] {
        assert!(ignored.contains(&p), "{p}: {ignored:?}");
    }
    assert_eq!(dc.forward_ports, ["8080", "db:5432"]);
    assert_eq!(
        dc.mounts,
        [Mount {
            source: Some("/home/ann/.ssh".into()),
            target: "/home/vscode/.ssh".into(),
            kind: "bind".into(),
            readonly: true,
        }]
    );
    assert_eq!(dc.host_env, ["HOME"]);
    // Bound as dev.toml's `[[mounts]]` would be, not ignored.
    assert!(!ignored.contains(&"mounts"), "{ignored:?}");
    assert_eq!(
        dc.dev_toml().mounts,
        [crate::config::mounts::MountSpec {
            from: crate::config::mounts::MountFrom::Host("/home/ann/.ssh".into()),
            target: "/home/vscode/.ssh".into(),
            readonly: true,
        }]
    );
}

#[test]
fn mounts_of_other_types_or_without_a_source_are_refused() {
    for (mounts, says) in [
        (r#"["type=tmpfs,target=/cache"]"#, "type `tmpfs`"),
        (
            r#"[{"type": "volume", "target": "/cache"}]"#,
            "without a source",
        ),
        (
            r#"[{"source": "Bad Name", "type": "volume", "target": "/c"}]"#,
            "not a volume name",
        ),
        (
            r#"["source=/x,target=relative"]"#,
            "neither an absolute path",
        ),
    ] {
        let e = err(&format!(r#"{{"image": "x", "mounts": {mounts}}}"#));
        assert!(e.contains(says), "{mounts}: {e}");
    }
}

#[test]
fn features_map_to_options() {
    let dc = ok(r#"{"image": "x", "features": {
        "ghcr.io/devcontainers/features/node:1": {"version": "20"},
        "ghcr.io/devcontainers/features/go:1": "1.22",
        "ghcr.io/devcontainers/features/git:1": {}}}"#);
    assert_eq!(
        dc.features["ghcr.io/devcontainers/features/go:1"],
        json!({"version": "1.22"})
    );
    // The session installs them as dev.toml's `[features]`.
    let toml = dc.dev_toml();
    assert_eq!(toml.features.len(), 3);
    assert_eq!(
        toml.features["ghcr.io/devcontainers/features/go:1"].canonical(),
        crate::features::FeatureOptions::Version("1.22".into()).canonical()
    );
    assert!(err(r#"{"image": "x", "features": {"a:1": {"x": [1]}}}"#).contains("`a:1`"));
}

#[test]
fn host_requirements_and_sizes() {
    let dc = ok(
        r#"{"image": "x", "hostRequirements": {"cpus": 100000, "memory": "1tb", "storage": "32gb"}}"#,
    );
    assert_eq!(dc.host_requirements.cpus, Some(100000));
    assert_eq!(dc.host_requirements.memory, Some(1 << 40));
    let lines = check_host(&dc.host_requirements, Path::new("/"));
    assert!(
        lines.iter().any(|l| l.contains("100000 cpus wanted")),
        "{lines:?}"
    );
    assert!(check_host(
        &HostRequirements {
            cpus: Some(1),
            ..Default::default()
        },
        Path::new("/")
    )
    .is_empty());
    assert_eq!(parse_size("512mb"), Some(512 << 20));
    assert_eq!(parse_size("1.5gb"), Some(3 << 29));
    assert_eq!(parse_size("lots"), None);
    assert!(
        err(r#"{"image": "x", "hostRequirements": {"memory": "lots"}}"#).contains("not a size")
    );
}

#[test]
fn wrong_types_name_the_property_and_place() {
    let e = err("{\n  \"image\": \"x\",\n  \"containerEnv\": [1]\n}");
    assert_eq!(
        e,
        "/p/app/.devcontainer/devcontainer.json:3:3: `containerEnv` is not an object"
    );
    assert!(
        err(r#"{"image": "x", "postStartCommand": 1}"#).contains("`postStartCommand` is neither")
    );
    assert!(err(r#"{"name": "no image"}"#).contains("there is no `image`"));
    assert!(err("[1]").contains("not a JSON object"));
}

#[test]
fn the_image_label_goes_under_the_file() {
    let mut dc =
        ok(r#"{"image": "x", "containerEnv": {"A": "file"}, "postCreateCommand": "file"}"#);
    dc.merge_image_metadata(
        r#"[{"id": "ghcr.io/devcontainers/features/node:1", "containerEnv": {"A": "label", "B": "label"}},
           {"remoteUser": "node", "postCreateCommand": ["label"], "privileged": true}]"#,
    );
    assert_eq!(dc.container_env["A"], "file");
    assert_eq!(dc.container_env["B"], "label");
    assert_eq!(dc.user_name(), Some("node"));
    assert_eq!(
        dc.hooks.post_create_command,
        [
            Command::One(Step::Argv(vec!["label".into()])),
            Command::One(Step::Shell("file".into()))
        ]
    );
    assert!(dc
        .ignored
        .iter()
        .any(|i| i.property == "privileged (image label)"));
    // The file's user wins.
    let mut dc = ok(r#"{"image": "x", "remoteUser": "me"}"#);
    dc.merge_image_metadata(r#"{"remoteUser": "node"}"#);
    assert_eq!(dc.user_name(), Some("me"));
}

#[test]
fn discovery_order_and_several_configs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    assert_eq!(find(root).expect("ok"), None);
    std::fs::create_dir_all(root.join(".devcontainer/a")).expect("mkdir");
    std::fs::create_dir_all(root.join(".devcontainer/b")).expect("mkdir");
    std::fs::write(root.join(".devcontainer/a/devcontainer.json"), "{}").expect("write");
    assert_eq!(
        find(root).expect("ok"),
        Some(PathBuf::from(".devcontainer/a/devcontainer.json"))
    );
    std::fs::write(root.join(".devcontainer/b/devcontainer.json"), "{}").expect("write");
    let e = find(root).expect_err("two").to_string();
    assert!(
        e.contains("`.devcontainer/a/devcontainer.json`, `.devcontainer/b/devcontainer.json`"),
        "{e}"
    );
    std::fs::write(root.join(".devcontainer.json"), "{}").expect("write");
    assert_eq!(
        find(root).expect("ok"),
        Some(PathBuf::from(".devcontainer.json"))
    );
    std::fs::write(root.join(".devcontainer/devcontainer.json"), "{}").expect("write");
    assert_eq!(
        find(root).expect("ok"),
        Some(PathBuf::from(".devcontainer/devcontainer.json"))
    );
    assert_eq!(
        root_of(&root.join(".devcontainer/a/devcontainer.json")),
        root
    );
    assert_eq!(root_of(&root.join(".devcontainer.json")), root);
}

#[test]
fn a_linked_devcontainer_directory_is_not_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::fs::write(elsewhere.join(FILE_NAME), r#"{"image": "x"}"#).expect("write");
    let root = dir.path().join("p");
    std::fs::create_dir_all(root.join(DIR)).expect("mkdir");
    std::os::unix::fs::symlink(elsewhere.join(FILE_NAME), root.join(DIR).join(FILE_NAME))
        .expect("symlink");
    // A link at the name is found (not skipped for a parent's config), and refused.
    assert_eq!(
        find(&root).expect("ok"),
        Some(Path::new(DIR).join(FILE_NAME))
    );
    let e =
        crate::config::project::read_project_file_beneath(&root, &Path::new(DIR).join(FILE_NAME))
            .expect_err("link");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    std::fs::remove_dir_all(root.join(DIR)).expect("rm");
    std::os::unix::fs::symlink(&elsewhere, root.join(DIR)).expect("symlink");
    assert_eq!(
        find(&root).expect("ok"),
        Some(Path::new(DIR).join(FILE_NAME))
    );
    let e =
        crate::config::project::read_project_file_beneath(&root, &Path::new(DIR).join(FILE_NAME))
            .expect_err("linked dir");
    assert!(e.to_string().contains("symbolic link"), "{e}");
}
