//! `dev` against a real Debian bookworm minbase image (debootstrap, cached in
//! /var/cache/dev-tests): apt inside the env, bash at a terminal, the single-id limits.

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::common::{describe, push_debian, Env, Kind, Registry};

fn debian_project(env: &Env, reg: &Registry) -> String {
    let r = push_debian(reg);
    env.write_dev_toml(&format!("image = \"{r}\"\n"));
    r
}

#[test]
fn apt_get_install_inside_with_a_subordinate_range() {
    let env = Env::new(Kind::Sub);
    let reg = Registry::start();
    debian_project(&env, &reg);
    let out = env.run(&[
        "run",
        "--root",
        "--",
        "sh",
        "-c",
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends hello >/dev/null && stat -c '%U %G' /usr/bin/hello",
    ]);
    assert!(
        out.status.success(),
        "{}",
        describe("dev run --root apt-get install", &out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "root root");
    // The package stays in the env's layer, and the user can run it.
    let out = env.ok(&[
        "run",
        "--",
        "sh",
        "-c",
        "hello; id -un; stat -c %U /etc/passwd",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello, world!\ndevtest-sub\nroot\n"
    );
    // On the host, root's files are owned by the subordinate range, never by the user.
    let upper: Vec<_> = env
        .env_dirs()
        .into_iter()
        .map(|d| d.join("upper/usr/bin/hello"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(upper.len(), 1, "one env layer holds the package");
    let start: u32 = fs::read_to_string("/etc/subuid")
        .expect("/etc/subuid")
        .lines()
        .find_map(|l| l.strip_prefix("devtest-sub:"))
        .and_then(|r| r.split(':').next())
        .and_then(|s| s.parse().ok())
        .expect("devtest-sub's range");
    assert_eq!(
        fs::metadata(&upper[0]).expect("stat").uid(),
        start,
        "inside root is the range's first id"
    );
}

#[test]
fn single_id_mapping_says_what_it_limits() {
    let env = Env::new(Kind::NoSub);
    let reg = Registry::start();
    debian_project(&env, &reg);
    let out = env.ok(&["run", "--root", "--", "id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n");
    let err = String::from_utf8_lossy(&out.stderr);
    let notes: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("usermod --add-subuids"))
        .collect();
    assert_eq!(notes.len(), 1, "one line names the fix: {err}");
    assert!(
        notes[0].contains("_apt"),
        "and what it limits: {}",
        notes[0]
    );
    let out = env.ok(&["run", "--", "id", "-un"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "devtest-nosub\n");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("usermod"),
        "the notice is given once"
    );
}

crate::e2e!(
    bash_at_a_terminal_shows_the_env_in_its_prompt,
    |env: Env| {
        let reg = Registry::start();
        debian_project(&env, &reg);
        env.ok(&["run", "true"]);
        let mut pty = env.pty(&["shell"], 40, 120);
        let prompt = format!("{}@project:", env.kind.user());
        let at = pty.expect(&prompt, 0);
        pty.send("echo $BASH_VERSION; tput cols\r");
        let at = pty.expect("5.2", at);
        let at = pty.expect("120", at);
        pty.send("sleep 30 &\r");
        pty.send("jobs; kill %1; wait; exit 3\r");
        let _ = pty.expect("sleep 30", at);
        assert_eq!(pty.wait().code(), Some(3), "{}", pty.output());
    }
);
