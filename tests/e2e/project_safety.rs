//! A cloned project (dev.toml, dev.lock) and other users on the machine cannot reach beyond
//! what the project is given: no shell text from dev.lock, no host file read for the tools
//! build, no write through a planted symlink, no other user's dev.toml, no real home shared,
//! and no runtime directory that a later session cannot use.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::{describe, image, push_busybox, stderr, stdout, Entry, Env, ImageBuilder};
use crate::common::{Kind, Layer, Registry};
use crate::e2e;

/// Busybox with a fake apt: enough for dev to detect apt and run a tools build without a
/// package mirror. `apt-get` does nothing, `apt-cache madison` knows only `hello` 1.0, and
/// `dpkg-query` reports every package it is asked about as 1.0.
fn push_fake_apt(reg: &Registry) -> String {
    let script = |body: &str| format!("#!/bin/sh\n{body}\n").into_bytes();
    let mut layers = image::busybox_layers();
    layers.push(Layer::new(vec![
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

fn uid_of(user: &str) -> (u32, u32) {
    let u = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("test user `{user}` is missing; run `./install.sh --dev`"));
    (u.uid.as_raw(), u.gid.as_raw())
}

fn chown(p: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).expect("chown");
}

// A version in dev.lock is shell syntax: refused before anything is built, naming the entry and
// the grammar. (The injected command would print `pwned-by-42` from inside the tools build.)
e2e!(lock_version_is_never_shell_text, |env: Env| {
    let reg = Registry::start();
    let image = push_fake_apt(&reg);
    env.write_dev_toml(&format!(
        "image = \"{image}\"\n[tools]\npackages = [\"hello\"]\n"
    ));
    let lock = format!(
        "version = 1\n[image]\nreference = \"{image}\"\n[image.manifests]\n[tools]\nhello = \"1.0$(echo pwned-by-$((6*7)) >&2)\"\n"
    );
    fs::write(env.path("project/dev.lock"), &lock).expect("write dev.lock");
    env.chown_all(&env.path("project"));
    let out = env.run(&["run", "--", "true"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{}", describe("dev run", &out));
    assert!(!err.contains("pwned-by-42"), "the lock's text ran: {err}");
    assert!(
        err.contains("dev.lock: [tools] entry `hello = ")
            && err.contains("is not a Debian package version"),
        "{err}"
    );
    assert!(err.contains("hint: a Debian version is"), "{err}");
    assert!(!err.contains("building the tools layer"), "{err}");
    assert_eq!(
        fs::read_to_string(env.path("project/dev.lock")).expect("dev.lock"),
        lock,
        "dev.lock is left as it was"
    );

    // dev.toml's own entries are checked the same way.
    env.write_dev_toml(&format!(
        "image = \"{image}\"\n[tools]\npackages = [\"hello;id\", \"x=1.0`id`\"]\n"
    ));
    fs::remove_file(env.path("project/dev.lock")).expect("rm dev.lock");
    let err = env.fails(&["run", "--", "true"]);
    assert!(
        err.contains(
            "dev.toml: [tools] packages entry `hello;id`: `hello;id` is not a Debian package name"
        ),
        "{err}"
    );
});

// A [setup] root step makes the build's report a symlink to a host file: dev does not follow it,
// and the file's content (shaped like a pin) never reaches dev.lock.
e2e!(tools_report_symlink_is_not_followed, |env: Env| {
    let reg = Registry::start();
    let image = push_fake_apt(&reg);
    let secret = env.path("outside/credentials");
    fs::write(&secret, "hello=1.0+secret42\n").expect("write secret");
    env.chown_all(&env.path("outside"));
    let target = secret.display().to_string();
    let dir = env.path("outside").display().to_string();
    // The directory is made inside (on the build's own /tmp) so that the script's write to the
    // report goes through the link there; the link stays in the captured layer.
    env.write_dev_toml(&format!(
        "image = \"{image}\"\n[tools]\npackages = [\"hello\"]\n[setup]\nroot = [\"mkdir -p {dir} && ln -s {target} /.dev-tools-resolved\"]\n"
    ));
    env.trust();
    let out = env.run(&["lock"]);
    let lock = fs::read_to_string(env.path("project/dev.lock")).unwrap_or_default();
    assert!(
        !lock.contains("secret42"),
        "a host file went into dev.lock:\n{lock}"
    );
    assert!(!out.status.success(), "{}", describe("dev lock", &out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot read `/.dev-tools-resolved`, which the tools build left"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(&secret).expect("secret"),
        "hello=1.0+secret42\n"
    );
});

// The repository plants a symlink at the temp name of dev.lock's write (here the pid is known:
// the shell that plants it execs dev): the write does not go through it.
e2e!(lock_write_ignores_planted_temp_symlinks, |env: Env| {
    let reg = Registry::start();
    let image = push_busybox(&reg);
    env.write_dev_toml(&format!("image = \"{image}\"\n"));
    let victim = env.path("outside/victim");
    fs::write(&victim, "keep\n").expect("write victim");
    env.chown_all(&env.path("outside"));
    let out = env
        .as_user(
            Path::new("/bin/sh"),
            &[
                "-c",
                "ln -s ../outside/victim .dev.lock.tmp.$$ && ln -s ../outside/victim .dev.lock.tmp && exec dev lock",
            ],
        )
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{}", describe("dev lock", &out));
    assert_eq!(
        fs::read_to_string(&victim).expect("victim"),
        "keep\n",
        "dev.lock was written through a planted symlink"
    );
    let lock = env.path("project/dev.lock");
    let st = fs::symlink_metadata(&lock).expect("dev.lock written");
    assert!(st.file_type().is_file(), "dev.lock is {:?}", st.file_type());
    assert!(
        fs::read_to_string(&lock)
            .expect("read")
            .contains("[image.manifests]"),
        "dev.lock has the lock"
    );
});

// Another user's dev.toml in a (world-writable) directory above the project is refused, naming
// the file and its owner, and its [setup] does not run; so is another user's dev.lock.
e2e!(foreign_dev_toml_above_is_refused, |env: Env| {
    let reg = Registry::start();
    let image = push_busybox(&reg);
    let other = uid_of(Kind::Sub2.user());
    let shared = env.path("shared");
    fs::create_dir(&shared).expect("mkdir");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).expect("chmod");
    chown(&shared, other);
    let planted = shared.join("dev.toml");
    fs::write(
        &planted,
        format!("image = \"{image}\"\n[setup]\nuser = [\"touch ran-setup\"]\n"),
    )
    .expect("write dev.toml");
    chown(&planted, other);
    let mine = shared.join("mine");
    fs::create_dir(&mine).expect("mkdir");
    chown(&mine, (env.uid, env.gid));
    let out = env.run_in(&mine, &["run", "--", "true"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{}", describe("dev run", &out));
    assert!(
        err.contains(&format!(
            "`{}` belongs to `devtest-sub2`",
            planted.display()
        )),
        "{err}"
    );
    assert!(
        err.starts_with("error: `") && err.lines().nth(1).is_some_and(|l| l.starts_with("hint: ")),
        "one line, then the hint: {err}"
    );
    assert!(!shared.join("ran-setup").exists(), "its [setup] ran");

    // The user's own dev.toml with another user's dev.lock beside it.
    fs::write(mine.join("dev.toml"), format!("image = \"{image}\"\n")).expect("write");
    chown(&mine.join("dev.toml"), (env.uid, env.gid));
    let lock = mine.join("dev.lock");
    fs::write(&lock, "version = 1\n[image]\nreference = \"x\"\n").expect("write");
    chown(&lock, other);
    let err = stderr(&env.run_in(&mine, &["run", "--", "true"]));
    assert!(
        err.contains(&format!("`{}` belongs to `devtest-sub2`", lock.display())),
        "{err}"
    );
});

// `dev run --image` from the home directory: the env has a home of its own; the real one is
// neither visible nor written.
e2e!(image_run_from_home_keeps_the_real_home_out, |env: Env| {
    let reg = Registry::start();
    let image = push_busybox(&reg);
    let home = env.path("home");
    fs::write(home.join(".secret-dotfile"), "token\n").expect("write");
    env.chown_all(&home);
    let out = env.ok_in(
        &home,
        &[
            "run",
            "--image",
            &image,
            "--",
            "sh",
            "-c",
            "ls -a ~; pwd; echo inside > ~/written-inside",
        ],
    );
    let listing = stdout(&out);
    assert!(
        !listing.contains(".secret-dotfile"),
        "the real home is visible inside:\n{listing}"
    );
    assert!(
        listing.contains(&home.display().to_string()),
        "the session starts in its home: {listing}"
    );
    assert!(
        !home.join("written-inside").exists(),
        "the env wrote into the real home"
    );
});

// A session with a subordinate range starts an env (its keeper runs as root inside), then a
// single-id session of the same user (no newuidmap on PATH) starts another: the runtime
// directory is the user's, so it can. One an older dev left to the subordinate root is replaced.
#[test]
fn runtime_dir_belongs_to_the_user() {
    let env = Env::new(Kind::Sub);
    let reg = Registry::start();
    let image = push_busybox(&reg);
    env.write_dev_toml(&format!("image = \"{image}\"\n"));
    // As an older dev's keeper left it: owned by the subordinate root, empty once its envs
    // stopped.
    let sub_root: u32 = fs::read_to_string("/etc/subuid")
        .expect("/etc/subuid")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{}:", Kind::Sub.user())))
        .and_then(|r| r.split(':').next()?.parse().ok())
        .expect("a subordinate range");
    let run = env.path("run/dev");
    fs::create_dir(&run).expect("mkdir");
    chown(&run, (sub_root, sub_root));
    env.ok(&["run", "--", "true"]);
    // Only dev on PATH: no newuidmap, so a single-id map.
    let path = format!("PATH={}", env.path("bin").display());
    let bin = env.bin.display().to_string();
    let out = env
        .as_user(
            Path::new("/usr/bin/env"),
            &[&path, &bin, "run", "--", "/bin/id", "-u"],
        )
        .output()
        .expect("run dev");
    assert!(
        out.status.success(),
        "{}",
        describe("dev run (single id)", &out)
    );
    assert_eq!(stdout(&out).trim(), env.uid.to_string());
    assert_eq!(
        fs::metadata(&run).expect("runtime dir").uid(),
        env.uid,
        "`{}` is not the user's",
        run.display()
    );
    let mappings: Vec<String> = env
        .env_dirs()
        .iter()
        .filter(|d| d.join("env.json").is_file())
        .filter_map(|d| {
            d.parent()?
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
        })
        .collect();
    assert!(
        mappings.len() == 2 && mappings.iter().any(|m| m.starts_with("flat-")),
        "the second session had a single-id map (and an env of its own): {mappings:?}"
    );
}
