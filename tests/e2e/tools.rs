//! Tools layers and dev.lock, against the real Debian minbase image (apt reaches Debian's
//! mirror from inside the env).

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::common::{describe, push_debian, Env, ImageBuilder, Kind, Registry};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn write_toml(env: &Env, image: &str, tools: &str) {
    env.write_dev_toml(&format!("image = \"{image}\"\n{tools}"));
}

/// The value of `key = "…"` in dev.lock's text.
fn lock_value(lock: &str, key: &str) -> Option<String> {
    lock.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .map(|v| v.trim_matches('"').to_string())
}

#[test]
fn tools_layer_lock_and_rebuilds() {
    let env = Env::new(Kind::Sub);
    let reg = Registry::start();
    let image = push_debian(&reg);
    let tools = "[tools]\npackages = [\"hello\"]\n[setup]\nroot = [\"echo built > /etc/dev-setup-root\"]\nuser = [\"id -un > setup-user.txt\"]\n";
    write_toml(&env, &image, tools);
    env.trust();

    // First start: builds the tools layer, runs the user setup, writes dev.lock.
    let out = env.run(&["run", "--", "sh", "-c", "hello; cat /etc/dev-setup-root"]);
    assert!(out.status.success(), "{}", describe("dev run", &out));
    assert_eq!(text(&out.stdout), "Hello, world!\nbuilt\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("building the tools layer (apt install hello)"),
        "{err}"
    );
    assert!(err.contains("running [setup] user"), "{err}");
    let setup = env.path("project/setup-user.txt");
    assert_eq!(
        fs::read_to_string(&setup).expect("setup ran"),
        "devtest-sub\n"
    );
    assert_eq!(
        fs::metadata(&setup).expect("stat").uid(),
        env.uid,
        "user setup runs as the user"
    );
    let lock = fs::read_to_string(env.path("project/dev.lock")).expect("dev.lock written");
    let hello = lock_value(&lock, "hello").expect("hello pinned");
    assert!(hello.starts_with("2.10"), "{lock}");
    assert!(
        lock.contains("[tools-layer]") && lock.contains("[image.manifests]"),
        "{lock}"
    );
    assert_eq!(
        lock_value(&lock, "reference").as_deref(),
        Some(image.as_str())
    );

    // Second start: nothing is built or run again.
    let out = env.ok(&["run", "--", "true"]);
    let err = text(&out.stderr);
    assert!(
        !err.contains("building") && !err.contains("[setup]") && !err.contains("wrote"),
        "{err}"
    );
    let status = text(&env.ok(&["status"]).stdout);
    assert!(status.contains("state:       up to date"), "{status}");
    assert!(status.contains("drift:       none"), "{status}");
    let tools_digest = lock_value(&lock, "digest").expect("tools digest");
    assert!(
        status.contains(&tools_digest),
        "fingerprint names the tools layer: {status}"
    );

    // A change of the env's own layer is drift, and survives a tools change.
    env.ok(&["run", "--root", "--", "touch", "/usr/local/bin/mine"]);
    let status = text(&env.ok(&["status"]).stdout);
    assert!(
        status.contains("drift:       1 path(s)") && status.contains("/usr/local/bin/mine"),
        "{status}"
    );

    // Moving the pin from dev.lock into dev.toml changes nothing.
    write_toml(
        &env,
        &image,
        &tools.replace("\"hello\"", &format!("\"hello={hello}\"")),
    );
    let out = env.ok(&["run", "--", "true"]);
    assert!(
        !text(&out.stderr).contains("building"),
        "{}",
        text(&out.stderr)
    );

    // --frozen refuses a dev.toml that no longer matches dev.lock.
    write_toml(
        &env,
        &image,
        &tools.replace("\"hello\"", "\"hello\", \"tree\""),
    );
    let err = env.fails(&["run", "--frozen", "--", "true"]);
    assert!(
        err.contains("package `tree` is in dev.toml but not in dev.lock"),
        "{err}"
    );
    assert!(err.contains("dev lock"), "{err}");

    // A failed install names the cause and leaves the working env as it was.
    write_toml(
        &env,
        &image,
        &tools.replace("\"hello\"", "\"hello\", \"no-such-package-dev\""),
    );
    let err = env.fails(&["run", "--", "true"]);
    assert!(err.contains("installing the tools failed"), "{err}");
    assert!(
        err.contains("no-such-package-dev"),
        "apt's own error is shown: {err}"
    );
    write_toml(&env, &image, tools);
    let out = env.ok(&["run", "--", "sh", "-c", "hello; ls /usr/local/bin"]);
    assert_eq!(text(&out.stdout), "Hello, world!\nmine\n");
    assert!(
        !text(&out.stderr).contains("building"),
        "the old layer is reused"
    );

    // A config change rebuilds only the tools layer; the env's own layer stays on top.
    write_toml(
        &env,
        &image,
        &tools.replace("\"hello\"", "\"hello\", \"tree\""),
    );
    let out = env.ok(&[
        "run",
        "--",
        "sh",
        "-c",
        "tree --version | head -c 4; echo; ls /usr/local/bin",
    ]);
    assert_eq!(text(&out.stdout), "tree\nmine\n");
    assert!(text(&out.stderr).contains("building the tools layer (apt install hello tree)"));
    let lock = fs::read_to_string(env.path("project/dev.lock")).expect("dev.lock");
    assert!(lock_value(&lock, "tree").is_some(), "{lock}");
    assert_eq!(
        lock_value(&lock, "hello").as_deref(),
        Some(hello.as_str()),
        "hello keeps its pin"
    );

    // A pinned version the mirror does not have: say so, suggest `dev update NAME`.
    write_toml(
        &env,
        &image,
        &tools.replace("\"hello\"", "\"hello=0.0-gone\""),
    );
    let err = env.fails(&["run", "--", "true"]);
    assert!(
        err.contains("hello=0.0-gone is no longer on the package mirror"),
        "{err}"
    );
    assert!(err.contains("dev update hello"), "{err}");

    // `dev update NAME` re-resolves it.
    write_toml(&env, &image, tools);
    fs::write(
        env.path("project/dev.lock"),
        lock.replace(&format!("hello = \"{hello}\""), "hello = \"0.0-gone\""),
    )
    .expect("edit lock");
    let err = env.fails(&["run", "--", "true"]);
    assert!(err.contains("dev update hello"), "{err}");
    env.ok(&["update", "hello"]);
    commit_keeps_the_tools(&env);
    let lock = fs::read_to_string(env.path("project/dev.lock")).expect("dev.lock");
    assert_eq!(lock_value(&lock, "hello").as_deref(), Some(hello.as_str()));
}

/// Two teammates (two users, two stores) with the same dev.toml and dev.lock end with the same
/// fingerprint and the same packages.
#[test]
fn two_teammates_get_the_same_env() {
    let reg = Registry::start();
    let image = push_debian(&reg);
    let ann = Env::new(Kind::Sub);
    let bob = Env::new(Kind::Sub2);
    write_toml(&ann, &image, "[tools]\npackages = [\"hello\"]\n");
    ann.ok(&["lock"]);
    let lock = fs::read(ann.path("project/dev.lock")).expect("lock");
    fs::copy(ann.path("project/dev.toml"), bob.path("project/dev.toml")).expect("copy");
    fs::write(bob.path("project/dev.lock"), &lock).expect("copy");
    bob.chown_all(&bob.path("project"));
    let fingerprint = |e: &Env| {
        let status = text(&e.ok(&["status"]).stdout);
        status
            .lines()
            .find(|l| l.starts_with("fingerprint:"))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let dpkg = |e: &Env| text(&e.ok(&["run", "--frozen", "--", "dpkg-query", "-W"]).stdout);
    let (a, b) = (dpkg(&ann), dpkg(&bob));
    assert!(a.contains("hello\t2.10"), "{a}");
    assert_eq!(a, b, "same packages for both");
    assert_eq!(fingerprint(&ann), fingerprint(&bob));
    assert!(
        fingerprint(&ann).contains(" + sha256:"),
        "{}",
        fingerprint(&ann)
    );
    assert_eq!(
        fs::read(bob.path("project/dev.lock")).expect("lock"),
        lock,
        "--frozen leaves dev.lock as it is"
    );
}

/// Without a subordinate range apt has no `_apt` to drop to; the tools layer still builds.
#[test]
fn tools_build_with_a_single_id_map() {
    let env = Env::new(Kind::NoSub);
    let reg = Registry::start();
    let image = push_debian(&reg);
    write_toml(&env, &image, "[tools]\npackages = [\"hello\"]\n");
    let out = env.ok(&["run", "--", "hello"]);
    assert_eq!(text(&out.stdout), "Hello, world!\n");
    commit_keeps_the_tools(&env);
}

/// `dev commit` of a project with a tools layer: the image has the tools and the env's change.
fn commit_keeps_the_tools(env: &Env) {
    env.ok(&["run", "--root", "--", "sh", "-c", "echo mine > /etc/mine"]);
    env.ok(&["commit", "--tag", "snap:tools"]);
    let out = env.ok_in(
        &env.path("outside"),
        &[
            "run",
            "--image",
            "snap:tools",
            "--",
            "sh",
            "-c",
            "hello; cat /etc/mine",
        ],
    );
    assert_eq!(text(&out.stdout), "Hello, world!\nmine\n");
}

#[test]
fn init_writes_a_template_once() {
    let env = Env::new(Kind::NoSub);
    fs::remove_dir_all(env.path("project")).ok();
    fs::create_dir_all(env.path("project")).expect("mkdir");
    env.chown_all(&env.path("project"));
    env.ok(&["init", "--template", "python"]);
    let t = fs::read_to_string(env.path("project/dev.toml")).expect("written");
    assert!(
        t.contains("image = \"docker.io/library/python:3.13-bookworm\""),
        "{t}"
    );
    let err = env.fails(&["init"]);
    assert!(err.contains("already exists"), "{err}");
    fs::remove_file(env.path("project/dev.toml")).expect("rm");
    env.ok(&["init", "--image", "ghcr.io/acme/dev:1"]);
    let t = fs::read_to_string(env.path("project/dev.toml")).expect("written");
    assert!(t.contains("image = \"ghcr.io/acme/dev:1\""), "{t}");
    fs::remove_file(env.path("project/dev.toml")).expect("rm");
    let err = env.fails(&["init", "--template", "rusty"]);
    assert!(err.contains("did you mean `rust`?"), "{err}");
}

fn push_busybox(reg: &Registry, release: &str) {
    let mut layers = crate::common::image::busybox_layers();
    layers.push(crate::common::Layer::new(vec![crate::common::Entry::File(
        "etc/os-release".into(),
        format!("ID={release}\n").into_bytes(),
        0o644,
    )]));
    ImageBuilder::new(layers).push(reg, "fixture/moving", Some("latest"));
}

// dev.lock pins the manifest digest: a tag that moves does not move the env until
// `dev update --image`.
crate::e2e!(lock_pins_the_image_digest, |env: Env| {
    let reg = Registry::start();
    push_busybox(&reg, "one");
    let image = format!("{}/fixture/moving:latest", reg.host());
    write_toml(&env, &image, "");
    let out = env.ok(&["run", "--", "cat", "/etc/os-release"]);
    assert_eq!(text(&out.stdout), "ID=one\n");
    let lock = fs::read_to_string(env.path("project/dev.lock")).expect("dev.lock written");
    assert!(
        !lock.contains("[tools"),
        "no tools, no tools entries: {lock}"
    );
    push_busybox(&reg, "two");
    let out = env.ok(&["run", "--", "cat", "/etc/os-release"]);
    assert_eq!(
        text(&out.stdout),
        "ID=one\n",
        "the pinned digest, not the moved tag"
    );
    env.ok(&["update", "--image"]);
    let out = env.ok(&["run", "--", "cat", "/etc/os-release"]);
    assert_eq!(text(&out.stdout), "ID=two\n");
    assert_ne!(
        fs::read_to_string(env.path("project/dev.lock")).expect("lock"),
        lock
    );
});

crate::e2e!(tools_need_a_package_manager, |env: Env| {
    let reg = Registry::start();
    push_busybox(&reg, "one");
    let image = format!("{}/fixture/moving:latest", reg.host());
    write_toml(&env, &image, "[tools]\npackages = [\"git\"]\n");
    let err = env.fails(&["run", "--", "true"]);
    assert!(
        err.contains("no package manager dev knows (apt, apk, dnf)"),
        "{err}"
    );
    write_toml(
        &env,
        &image,
        "[tools]\npackages = [\"git\"]\nmanager = \"pacman\"\n",
    );
    let err = env.fails(&["run", "--", "true"]);
    assert!(
        err.contains("`manager = \"pacman\"` is not a package manager dev knows"),
        "{err}"
    );
});
