//! Mounts and volumes (issue 16): host paths and named volumes bound into the env on request,
//! their targets placed beneath the env's root with no symlink of the image followed.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{
    image::busybox_layers, push_busybox, snapshot, stderr, stdout, Entry, Env, ImageBuilder, Layer,
    Registry,
};
use crate::e2e;

/// `dir/name` with `text` in it, owned by the test user.
fn file(env: &Env, dir: &Path, name: &str, text: &str) -> PathBuf {
    fs::create_dir_all(dir).expect("mkdir");
    let p = dir.join(name);
    fs::write(&p, text).expect("write");
    env.chown_all(dir);
    p
}

fn errors(err: &str) -> usize {
    err.lines().filter(|l| l.starts_with("error:")).count()
}

fn busybox_dev_toml(env: &Env, reg: &Registry, dir: &Path, extra: &str) {
    let image = push_busybox(reg);
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(
        dir.join("dev.toml"),
        format!("image = \"{image}\"\n{extra}"),
    )
    .expect("write");
    env.chown_all(dir);
}

e2e!(
    a_bind_mount_is_writable_or_read_only_as_asked,
    |env: Env| {
        let reg = Registry::start();
        busybox_dev_toml(&env, &reg, &env.path("project"), "");
        let data = env.path("outside/data");
        file(&env, &data, "f", "from the host\n");
        let rw = format!("{}:/data", data.display());
        // `--rm`: each session starts an env of its own, with the mounts it asks for.
        let out = env.ok(&[
            "run",
            "--rm",
            "--mount",
            &rw,
            "--",
            "sh",
            "-c",
            "cat /data/f && echo made-inside > /data/g && stat -c %u /data/g",
        ]);
        assert_eq!(stdout(&out), format!("from the host\n{}\n", env.uid));
        assert_eq!(
            fs::read_to_string(data.join("g")).expect("written through the mount"),
            "made-inside\n"
        );
        // podman's form, read-only: the write is refused and nothing lands on the host.
        let ro = format!(
            "type=bind,source={},target=/ro/data,readonly",
            data.display()
        );
        let out = env.run(&[
            "run",
            "--rm",
            "--mount",
            &ro,
            "--",
            "sh",
            "-c",
            "cat /ro/data/f; echo x > /ro/data/h",
        ]);
        assert!(!out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), "from the host\n");
        assert!(
            stderr(&out).contains("Read-only file system"),
            "{}",
            stderr(&out)
        );
        assert!(!data.join("h").exists());
        // `-v SRC:DST:ro`, as podman writes it.
        let out = env.run(&[
            "run",
            "--rm",
            "-v",
            &format!("{rw}:ro"),
            "--",
            "touch",
            "/data/i",
        ]);
        assert!(!out.status.success());
        assert!(!data.join("i").exists());
    }
);

e2e!(home_and_variables_are_expanded, |env: Env| {
    let reg = Registry::start();
    let home = env.path("home");
    file(&env, &home.join("notes"), "n", "note\n");
    file(&env, &env.path("outside/by-var"), "v", "var\n");
    busybox_dev_toml(
        &env,
        &reg,
        &env.path("project"),
        "[[mounts]]\nsource = \"${DATA_DIR}/by-var\"\ntarget = \"~/by-var\"\nreadonly = true\n",
    );
    env.trust();
    // config.toml's mounts are the user's own: no trust asked for them.
    env.settings("[[mounts]]\nsource = \"~/notes\"\ntarget = \"/notes\"\n");
    let out = env
        .dev(&[
            "run",
            "--rm",
            "--",
            "sh",
            "-c",
            "cat /notes/n ~/by-var/v; echo $HOME",
        ])
        .env("DATA_DIR", env.path("outside"))
        .output()
        .expect("run dev");
    assert!(out.status.success(), "{}", stderr(&out));
    // `~` in a target is the env's home, at the path of the user's.
    assert_eq!(stdout(&out), format!("note\nvar\n{}\n", home.display()));
    // An unset variable is named.
    let out = env.run(&["run", "--rm", "--", "true"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("the variable `DATA_DIR` in its source is not set"),
        "{err}"
    );
    assert!(err.contains("change the mount in dev.toml"), "{err}");
    assert_eq!(errors(&err), 1, "{err}");
});

e2e!(a_missing_source_is_named, |env: Env| {
    let reg = Registry::start();
    busybox_dev_toml(&env, &reg, &env.path("project"), "");
    let missing = env.path("outside/not-there");
    let err = env.fails(&[
        "run",
        "--mount",
        &format!("{}:/x", missing.display()),
        "--",
        "true",
    ]);
    assert!(
        err.ends_with(&format!(
            "error: the mount source `{}` (from --mount) does not exist\nhint: create it, or change the mount in --mount\n",
            missing.display()
        )),
        "{err}"
    );
    assert_eq!(errors(&err), 1, "{err}");
    // A target under the sandbox's own trees is refused before anything starts.
    let err = env.fails(&[
        "run",
        "--mount",
        &format!("{}:/proc/x", env.path("outside").display()),
        "--",
        "true",
    ]);
    assert!(
        err.contains("is under /proc, which the sandbox provides itself"),
        "{err}"
    );
    assert_eq!(errors(&err), 1, "{err}");
});

e2e!(doctor_names_a_missing_mount_source, |env: Env| {
    let reg = Registry::start();
    let gone = env.path("outside/gone");
    busybox_dev_toml(
        &env,
        &reg,
        &env.path("project"),
        &format!(
            "[[mounts]]\nsource = \"{}\"\ntarget = \"/g\"\n",
            gone.display()
        ),
    );
    let out = env.run(&["doctor", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let checks: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let m = checks
        .as_array()
        .and_then(|a| a.iter().find(|c| c["check"] == "mounts"))
        .unwrap_or_else(|| panic!("no mounts check: {checks}"));
    assert_eq!(m["status"], "fail", "{m}");
    assert_eq!(
        m["detail"],
        format!(
            "the mount source `{}` (from dev.toml) does not exist",
            gone.display()
        )
    );
    assert_eq!(m["fix"], "create it, or change the mount in dev.toml");
    fs::create_dir_all(&gone).expect("mkdir");
    let out = env.run(&["doctor", "--format", "json"]);
    let checks: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let m = checks
        .as_array()
        .and_then(|a| a.iter().find(|c| c["check"] == "mounts"))
        .unwrap_or_else(|| panic!("no mounts check: {checks}"));
    assert_eq!(m["status"], "ok", "{m}");
    // The missing source was all that failed.
    assert_eq!(out.status.code(), Some(0), "{checks}");
});

e2e!(a_symlink_source_is_resolved_once_on_the_host, |env: Env| {
    let reg = Registry::start();
    busybox_dev_toml(&env, &reg, &env.path("project"), "");
    let real = env.path("outside/real");
    file(&env, &real, "f", "real\n");
    file(&env, &env.path("outside/other"), "f", "other\n");
    let link = env.path("outside/link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    env.settings(&format!(
        "[[mounts]]\nsource = \"{}\"\ntarget = \"/data\"\n",
        link.display()
    ));
    env.ok(&["start"]);
    let show = "cat /data/f; grep ' /data ' /proc/self/mountinfo";
    let out = env.ok(&["run", "--", "sh", "-c", show]);
    let text = stdout(&out);
    assert!(text.starts_with("real\n"), "{text}");
    // The mount's root is the resolved directory, not the link.
    assert!(text.contains("/outside/real "), "{text}");
    assert!(!text.contains("/outside/link"), "{text}");
    // The link now points elsewhere: the running env keeps the tree it was resolved to.
    fs::remove_file(&link).expect("rm link");
    std::os::unix::fs::symlink(env.path("outside/other"), &link).expect("symlink");
    let out = env.ok(&["run", "--", "cat", "/data/f"]);
    assert_eq!(stdout(&out), "real\n");
    assert!(stderr(&out).contains("other mounts"), "{}", stderr(&out));
    env.ok(&["stop"]);
    let out = env.ok(&["run", "--", "cat", "/data/f"]);
    assert_eq!(stdout(&out), "other\n");
});

e2e!(
    a_hostile_images_symlinked_target_never_lands_outside_the_env,
    |env: Env| {
        let reg = Registry::start();
        let project = env.path("project");
        let victim = env.path("outside/victim");
        file(&env, &victim, "sentinel", "do not touch\n");
        let source = env.path("outside/source");
        file(&env, &source, "s", "s\n");
        // The image's /opt holds symlinks: into a host directory the user mounts (/srv/v), into
        // the project, and to /.
        let mut layers = busybox_layers();
        layers.push(Layer::new(vec![
            Entry::Dir("opt/".into(), 0o755),
            Entry::Symlink("opt/cache".into(), "/srv/v".into()),
            Entry::Symlink("opt/proj".into(), project.display().to_string()),
            Entry::Symlink("opt/root".into(), "/".into()),
        ]));
        ImageBuilder::new(layers).push(&reg, "hostile/mounts", Some("1"));
        fs::write(
            project.join("dev.toml"),
            format!("image = \"{}/hostile/mounts:1\"\n", reg.host()),
        )
        .expect("write");
        env.chown_all(&project);
        let legit = format!("{}:/srv/v", victim.display());
        // The image is pulled and dev.lock written once, before anything is compared.
        env.ok(&["run", "--mount", &legit, "--", "true"]);
        let world = || {
            ["outside", "project", "home"]
                .iter()
                .flat_map(|d| snapshot(&env.path(d), &env.store()))
                .collect::<Vec<_>>()
        };
        for target in [
            "/opt/cache/sub",
            "/opt/proj/sub",
            "/opt/root/srv/v/sub",
            "/opt/cache",
        ] {
            let before = world();
            let out = env.run(&[
                "run",
                "--mount",
                &legit,
                "--mount",
                &format!("{}:{target}", source.display()),
                "--",
                "true",
            ]);
            let err = stderr(&out);
            assert!(!out.status.success(), "{target}: mounted through a symlink");
            let link = target.split('/').take(3).collect::<Vec<_>>().join("/");
            assert!(
                err.contains(&format!(
                    "error: cannot mount onto `{target}` in the env: `{link}` is a symbolic link there"
                )),
                "{target}: {err}"
            );
            assert!(err.contains("hint: dev follows no symlink"), "{err}");
            assert_eq!(errors(&err), 1, "{err}");
            assert_eq!(
                before,
                world(),
                "{target}: something outside the store changed"
            );
        }
        assert_eq!(
            fs::read_dir(&victim).expect("victim").count(),
            1,
            "nothing was made in the victim directory"
        );
        assert!(!project.join("sub").exists());
    }
);

/// Two projects whose dev.toml both name the volume `shared`.
fn two_projects(env: &Env, reg: &Registry) -> (PathBuf, PathBuf) {
    let mounts = "[[mounts]]\nvolume = \"shared\"\ntarget = \"~/.cache/shared\"\n";
    let (a, b) = (env.path("project"), env.path("project2"));
    for dir in [&a, &b] {
        busybox_dev_toml(env, reg, dir, mounts);
        env.ok_in(dir, &["trust"]);
    }
    (a, b)
}

e2e!(
    a_volume_is_shared_by_projects_and_kept_across_reset,
    |env: Env| {
        let reg = Registry::start();
        let (a, b) = two_projects(&env, &reg);
        env.ok_in(
            &a,
            &[
                "run",
                "--",
                "sh",
                "-c",
                "echo cached > ~/.cache/shared/c; touch ~/.cache/mine",
            ],
        );
        let out = env.ok_in(
            &b,
            &[
                "run",
                "--",
                "sh",
                "-c",
                "cat ~/.cache/shared/c; stat -c %u ~/.cache",
            ],
        );
        // The mount point's parent the bind made is the user's, not root's.
        assert_eq!(stdout(&out), format!("cached\n{}\n", env.uid));
        env.ok_in(&a, &["reset"]);
        let out = env.ok_in(
            &a,
            &[
                "run",
                "--",
                "sh",
                "-c",
                "cat ~/.cache/shared/c; test -e ~/.cache/mine || echo reset",
            ],
        );
        assert_eq!(stdout(&out), "cached\nreset\n");
        // Prune keeps volumes (as podman does without `--volumes`).
        env.ok(&["system", "prune", "--envs"]);
        let ls = stdout(&env.ok(&["volume", "ls"]));
        assert!(ls.lines().any(|l| l.starts_with("shared ")), "{ls}");
    }
);

e2e!(volume_ls_rm_and_system_df, |env: Env| {
    let reg = Registry::start();
    let (a, b) = two_projects(&env, &reg);
    env.ok_in(
        &a,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "head -c 100000 /dev/zero > ~/.cache/shared/z",
        ],
    );
    env.ok_in(&b, &["start"]);
    let json = stdout(&env.ok(&["volume", "ls", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v[0]["name"], "shared", "{json}");
    assert!(v[0]["size_bytes"].as_u64().unwrap_or(0) >= 100000, "{json}");
    let mut envs: Vec<String> = v[0]["envs"]
        .as_array()
        .expect("envs")
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_string())
        .collect();
    envs.sort();
    assert_eq!(envs, ["project", "project2"], "{json}");
    let df = stdout(&env.ok(&["system", "df"]));
    assert!(
        df.lines()
            .any(|l| l.starts_with("Volumes") && l.split_whitespace().nth(1) == Some("1")),
        "{df}"
    );
    let df: serde_json::Value =
        serde_json::from_str(&stdout(&env.ok(&["system", "df", "--format", "json"])))
            .expect("json");
    assert!(df["volumes_bytes"].as_u64().unwrap_or(0) >= 100000, "{df}");
    // Refused while an env that mounts it runs.
    let err = env.fails(&["volume", "rm", "shared"]);
    assert!(
        err.contains("error: the volume `shared` is mounted by the running env(s) project2"),
        "{err}"
    );
    assert!(err.contains("`dev stop project2`"), "{err}");
    env.ok_in(&b, &["stop"]);
    env.ok(&["volume", "rm", "shared"]);
    assert_eq!(
        stdout(&env.ok(&["volume", "ls"])).lines().count(),
        1,
        "only the header"
    );
    let err = env.fails(&["volume", "rm", "shared"]);
    assert!(err.contains("there is no volume `shared`"), "{err}");
    // `prune --volumes` removes those no env uses (a throwaway env is none).
    env.ok(&["run", "--rm", "--mount", "lonely:/l", "--", "touch", "/l/x"]);
    env.ok(&["system", "prune"]);
    assert!(stdout(&env.ok(&["volume", "ls"])).contains("lonely"));
    env.ok(&["system", "prune", "--volumes"]);
    assert!(!stdout(&env.ok(&["volume", "ls"])).contains("lonely"));
});

e2e!(mounts_in_dev_toml_need_trust, |env: Env| {
    let reg = Registry::start();
    let secret = env.path("outside/secret");
    file(&env, &secret, "key", "s3cret\n");
    busybox_dev_toml(
        &env,
        &reg,
        &env.path("project"),
        &format!(
            "[[mounts]]\nsource = \"{}\"\ntarget = \"/keys\"\nreadonly = true\n",
            secret.display()
        ),
    );
    let err = env.fails(&["run", "--", "cat", "/keys/key"]);
    assert_eq!(
        err,
        format!(
            "error: dev.toml in `{}` mounts host paths or volumes you have not trusted\nhint: review them with `dev trust --show`, then run `dev trust`\n",
            env.path("project").display()
        )
    );
    let show = stdout(&env.ok(&["trust", "--show"]));
    assert!(
        show.contains("[[mounts]], host paths and shared volumes mounted into the env:"),
        "{show}"
    );
    assert!(
        show.contains(&format!("`{}` at `/keys` (read-only)", secret.display())),
        "{show}"
    );
    env.trust();
    let out = env.ok(&["run", "--", "cat", "/keys/key"]);
    assert_eq!(stdout(&out), "s3cret\n");
    // A change of the mount asks again; --mount on the command line never asks.
    fs::write(
        env.path("project/dev.toml"),
        fs::read_to_string(env.path("project/dev.toml"))
            .expect("read")
            .replace("/keys", "/other"),
    )
    .expect("write");
    let err = env.fails(&["run", "--", "true"]);
    assert!(err.contains("changed what it runs or exposes"), "{err}");
});

e2e!(
    a_running_env_says_its_mounts_wait_for_a_restart,
    |env: Env| {
        let reg = Registry::start();
        busybox_dev_toml(&env, &reg, &env.path("project"), "");
        let data = env.path("outside/data");
        file(&env, &data, "f", "f\n");
        env.ok(&["start"]);
        let m = format!("{}:/data", data.display());
        let out = env.ok(&[
            "run",
            "--mount",
            &m,
            "--",
            "sh",
            "-c",
            "test -e /data/f && echo yes || echo no",
        ]);
        // The session joins the running env as it is, and says in one line what to do.
        assert_eq!(stdout(&out), "no\n");
        let err = stderr(&out);
        let notes: Vec<&str> = err.lines().filter(|l| l.contains("other mounts")).collect();
        assert_eq!(
        notes,
        ["note: the env `project` runs with other mounts than this session asks for; they apply when it starts again (`dev stop`, then a new session)"]
    );
        env.ok(&["stop"]);
        let out = env.ok(&[
            "run",
            "--mount",
            &m,
            "--",
            "sh",
            "-c",
            "test -e /data/f && echo yes || echo no",
        ]);
        assert_eq!(stdout(&out), "yes\n");
        assert!(!stderr(&out).contains("other mounts"), "{}", stderr(&out));
    }
);

// A project-relative source is what the trusted dev.toml says: a symlink checked into the
// project (which a later `git pull` can point anywhere without changing dev.toml, so without
// asking for trust again) does not carry the mount out to a host path.
e2e!(a_project_source_through_a_symlink_is_refused, |env: Env| {
    let reg = Registry::start();
    let secret = env.path("outside/secret");
    file(&env, &secret, "key", "s3cret\n");
    busybox_dev_toml(
        &env,
        &reg,
        &env.path("project"),
        "[[mounts]]\nsource = \"./data\"\ntarget = \"/data\"\nreadonly = true\n",
    );
    std::os::unix::fs::symlink(&secret, env.path("project/data")).expect("symlink");
    env.trust();
    let out = env.run(&["run", "--", "cat", "/data/key"]);
    assert!(!out.status.success(), "the mount went through the symlink");
    assert!(!stdout(&out).contains("s3cret"), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("through a symlink"), "{err}");
    assert_eq!(errors(&err), 1, "{err}");
    // A real directory of the project at that name is mounted.
    fs::remove_file(env.path("project/data")).expect("rm");
    file(&env, &env.path("project/data"), "key", "mine\n");
    let out = env.ok(&["run", "--", "cat", "/data/key"]);
    assert_eq!(stdout(&out), "mine\n");
});
