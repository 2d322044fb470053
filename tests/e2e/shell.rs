//! `dev shell` and `dev run`: the sandbox as a user finds it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::{
    describe, push_busybox, spawn_ready, stderr, stdout, Env, ImageBuilder, Registry,
};
use crate::e2e;

/// Pushes the busybox image and writes a dev.toml for it into the project; returns the ref.
pub fn busybox_project(env: &Env, reg: &Registry, extra: &str) -> String {
    let r = push_busybox(reg);
    env.write_dev_toml(&format!("image = \"{r}\"\n{extra}"));
    r
}

/// Nothing of the session may outlive it: no process that belongs to this test's env (its
/// environment names the test's directory: HOME inside, XDG_DATA_HOME for the helper and
/// fuse-overlayfs), no mount of its store.
pub fn assert_no_leftovers(env: &Env) {
    let mark = env.dir.path().display().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs: Vec<String> = fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter(|e| e.metadata().is_ok_and(|m| m.uid() != 0))
            .filter(|e| {
                String::from_utf8_lossy(&fs::read(e.path().join("environ")).unwrap_or_default())
                    .contains(&mark)
            })
            // The user-namespace holder stays by design (see `holder.rs`), in the host's mount
            // namespace: it holds no mount of the env's.
            .filter(|e| {
                let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
                let holder = String::from_utf8_lossy(&cmdline).contains("\0__userns-hold\0");
                if holder {
                    assert_eq!(
                        fs::read_link(e.path().join("ns/mnt")).ok(),
                        fs::read_link("/proc/self/ns/mnt").ok(),
                        "the holder is in the host's mount namespace"
                    );
                }
                !holder
            })
            .map(|e| {
                let cmdline = fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
                format!(
                    "{} {}",
                    e.file_name().to_string_lossy(),
                    cmdline.replace('\0', " ")
                )
            })
            .collect();
        let mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter(|l| l.contains(&mark))
            .map(str::to_string)
            .collect();
        if procs.is_empty() && mounts.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: processes {procs:?}, mounts {mounts:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

e2e!(run_returns_exit_codes_and_passes_stdio, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg, "");
    // The first run pulls the image.
    let out = env.run(&["run", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", describe("dev run", &out));
    assert_eq!(stdout(&out), "out\n");
    assert!(stderr(&out).contains("err\n"), "{}", stderr(&out));
    let out = env.run(&["run", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(143), "killed by SIGTERM is 128+15");
    let out = env.run(&["run", "--", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("`no-such-program` is not in the image"),
        "{}",
        stderr(&out)
    );
    let mut child = env
        .dev(&["run", "--", "sh", "-c", "tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"piped through\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(stdout(&out), "PIPED THROUGH\n");
    assert_no_leftovers(&env);
});

e2e!(the_env_runs_on_every_cpu_dev_may_use, |env: Env| {
    // `dev` moves the helper it forks off its own CPU (see `run_beside`); the helper, the
    // env's init and the command must all be free to run on every CPU again.
    let reg = Registry::start();
    busybox_project(&env, &reg, "");
    let allowed = |status: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no Cpus_allowed_list in {status}"))
    };
    let host = allowed(&fs::read_to_string("/proc/self/status").expect("status"));
    for _ in 0..3 {
        let out = env.run(&["run", "--", "cat", "/proc/self/status", "/proc/1/status"]);
        assert!(out.status.success(), "{}", describe("dev run", &out));
        let text = stdout(&out);
        let lists: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(str::trim)
            .collect();
        assert_eq!(lists, [host.as_str(), host.as_str()], "{text}");
    }
});

e2e!(signals_sent_to_dev_reach_the_command, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg, "");
    env.ok(&["run", "true"]);
    for (sig, code) in [(Signal::SIGTERM, "3"), (Signal::SIGINT, "4")] {
        let mut child = env
            .dev(&[
                "run",
                "--",
                "sh",
                "-c",
                "trap 'echo got TERM; exit 3' TERM; trap 'echo got INT; exit 4' INT; echo ready; while :; do sleep 0.05; done",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(&mut out, &mut buf).expect("ready");
        assert_eq!(&buf, b"ready\n");
        kill(Pid::from_raw(child.id() as i32), sig).expect("kill");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
        let st = child.wait().expect("wait");
        assert_eq!(
            st.code().map(|c| c.to_string()).as_deref(),
            Some(code),
            "{sig}: {rest}"
        );
        assert!(
            rest.contains(&format!("got {}", &sig.as_str()[3..])),
            "{rest}"
        );
    }
    assert_no_leftovers(&env);
});

e2e!(
    inside_the_user_is_themselves_in_their_project,
    |env: Env| {
        let reg = Registry::start();
        busybox_project(&env, &reg, "[env]\nGREETING = \"hi from dev.toml\"\n");
        let sub = env.path("project/src/deep");
        fs::create_dir_all(&sub).expect("mkdir");
        env.chown_all(&env.path("project"));
        let script =
            "id -u; id -g; id -un; id -gn; echo $HOME; pwd; hostname; echo $GREETING; echo $TERM; \
                  grep \"^$(id -un):\" /etc/passwd; touch made-inside; echo x > $HOME/.dotfile";
        let out = env
            .dev(&["run", "--", "sh", "-c", script])
            .current_dir(&sub)
            .env("TERM", "xterm-kitty")
            .env("AWS_SECRET_ACCESS_KEY", "must-not-leak")
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", describe("dev run", &out));
        let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
        let user = env.kind.user();
        assert_eq!(lines[0], env.uid.to_string());
        assert_eq!(lines[1], env.gid.to_string());
        assert_eq!(lines[2], user);
        assert_eq!(lines[3], user);
        assert_eq!(
            lines[4],
            env.path("home").display().to_string(),
            "HOME is at the host's path"
        );
        assert_eq!(
            lines[5],
            sub.display().to_string(),
            "the shell starts in the same sub-directory"
        );
        assert_eq!(lines[6], "project", "hostname is the project's name");
        assert_eq!(lines[7], "hi from dev.toml");
        assert_eq!(lines[8], "xterm-kitty");
        assert!(
            lines[9].starts_with(&format!("{user}:x:{}:{}:", env.uid, env.gid)),
            "{}",
            lines[9]
        );
        let made =
            fs::metadata(sub.join("made-inside")).expect("file created inside is on the host");
        assert_eq!(
            (made.uid(), made.gid()),
            (env.uid, env.gid),
            "owned by the user, not a subordinate id"
        );
        assert!(
            !env.path("home/.dotfile").exists(),
            "the env's home is its own, not the host's"
        );
        let out = env.ok(&[
            "run",
            "--",
            "sh",
            "-c",
            "cat $HOME/.dotfile; env | grep -c AWS_ || true",
        ]);
        assert_eq!(
            stdout(&out),
            "x\n0\n",
            "home is kept between sessions; host secrets are not passed"
        );
    }
);

e2e!(
    sandbox_has_own_proc_dev_tmp_and_no_privileges,
    |env: Env| {
        let reg = Registry::start();
        busybox_project(&env, &reg, "");
        fs::write("/tmp/dev-e2e-host-tmp-marker", "x").expect("marker");
        let script = "echo pid=$$; ls /proc | grep -c '^[0-9]'; ls /dev | tr '\\n' ' '; echo; \
                  ls /dev/pts | tr '\\n' ' '; echo; \
                  test -e /tmp/dev-e2e-host-tmp-marker && echo host-tmp-visible; \
                  touch /sys/x 2>/dev/null && echo sys-writable; \
                  grep -E '^Cap(Inh|Prm|Eff|Amb)' /proc/self/status | tr '\\t\\n' '  '; echo; \
                  for f in /proc/$$/fd/*; do [ -e \"$f\" ] && echo -n \"${f##*/} \"; done; echo; \
                  cat /proc/1/exe > /dev/null 2>&1 && echo init-readable; \
                  echo done";
        // The caller leaves fd 5 open: it must not reach the env. The shell lists its own
        // descriptors with builtins only: a pipeline's pipe is open in the shell while `ls`
        // runs, so `ls` could list it as fd 3 (CI saw it once). The glob's own directory
        // descriptor is closed again by the time `[ -e ]` looks.
        let bin = env.bin.display().to_string();
        let out = env
            .as_user(
                std::path::Path::new("/bin/sh"),
                &[
                    "-c",
                    "exec 5</etc/hostname; exec \"$0\" run -- sh -c \"$1\"",
                    &bin,
                    script,
                ],
            )
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", describe("dev run", &out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0], "pid=2",
            "the command is pid 2 under dev's init: {text}"
        );
        let procs: u32 = lines[1].trim().parse().expect("count");
        assert!(procs <= 4, "only the env's processes are in /proc: {text}");
        for dev in [
            "null", "zero", "random", "urandom", "tty", "pts", "shm", "ptmx",
        ] {
            assert!(
                lines[2].split(' ').any(|d| d == dev),
                "/dev/{dev} missing: {}",
                lines[2]
            );
        }
        assert!(
            !lines[2].contains("sda") && !lines[2].contains("fuse"),
            "minimal /dev: {}",
            lines[2]
        );
        assert_eq!(lines[3].trim(), "ptmx", "a private, empty /dev/pts");
        assert!(!text.contains("host-tmp-visible"), "/tmp is private");
        assert!(!text.contains("sys-writable"), "/sys is read-only");
        assert!(
            lines[4].contains("CapInh:\t0000000000000000")
                || lines[4].contains("CapInh: 0000000000000000"),
            "{}",
            lines[4]
        );
        assert!(
            lines[4].contains("CapAmb: 0000000000000000"),
            "{}",
            lines[4]
        );
        assert!(
            lines[4].contains("CapEff: 0000000000000000"),
            "{}",
            lines[4]
        );
        assert_eq!(
            lines[5].trim(),
            "0 1 2",
            "only fds 0-2 cross into the env: {}",
            lines[5]
        );
        assert!(
            !text.contains("init-readable"),
            "init (the host's dev binary) is not open to the env"
        );
        assert!(text.ends_with("done\n"));
        let _ = fs::remove_file("/tmp/dev-e2e-host-tmp-marker");
    }
);

e2e!(dev_binary_cannot_be_written_from_inside, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg, "");
    let before = fs::read(&env.bin).expect("read dev");
    let out = env.run(&[
        "run",
        "--root",
        "--",
        "sh",
        "-c",
        "echo pwned >> /proc/1/exe; echo pwned > /proc/1/exe; exit 0",
    ]);
    assert!(out.status.success(), "{}", describe("dev run", &out));
    assert!(
        fs::read(&env.bin).expect("read dev") == before,
        "the dev binary changed"
    );
});

e2e!(env_layer_persists_and_rm_throws_changes_away, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg, "");
    let out = env.ok(&[
        "run",
        "--root",
        "--",
        "sh",
        "-c",
        "id -u; echo kept > /etc/marker",
    ]);
    assert_eq!(stdout(&out), "0\n", "--root is root inside");
    let out = env.ok(&["run", "--", "cat", "/etc/marker"]);
    assert_eq!(
        stdout(&out),
        "kept\n",
        "the env's layer is kept between sessions"
    );
    env.ok(&[
        "run",
        "--rm",
        "--root",
        "--",
        "sh",
        "-c",
        "cat /etc/marker && echo gone > /etc/thrown && rm /etc/marker",
    ]);
    let out = env.ok(&[
        "run",
        "--",
        "sh",
        "-c",
        "cat /etc/marker; test -e /etc/thrown && echo thrown-kept; true",
    ]);
    assert_eq!(stdout(&out), "kept\n", "--rm changes are thrown away");
    assert_no_leftovers(&env);
    let tmp = env.store().join("envs-v1");
    let scratch: Vec<_> = fs::read_dir(&tmp)
        .expect("envs")
        .flatten()
        .flat_map(|m| {
            fs::read_dir(m.path().join("tmp"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .collect();
    assert!(scratch.is_empty(), "--rm left {scratch:?}");
});

e2e!(image_flag_works_without_dev_toml, |env: Env| {
    let reg = Registry::start();
    let r = push_busybox(&reg);
    let err = env.fails(&["run", "--", "true"]);
    assert!(err.contains("no dev.toml in"), "{err}");
    assert!(err.contains("dev init") && err.contains("--image"), "{err}");
    let out = env.ok(&[
        "run",
        "--image",
        &r,
        "--",
        "sh",
        "-c",
        "cat /etc/os-release; pwd",
    ]);
    assert_eq!(
        stdout(&out),
        format!("ID=busybox\n{}\n", env.path("project").display())
    );
});

e2e!(dev_toml_errors_are_one_clear_line, |env: Env| {
    env.write_dev_toml("image = \"x\"\nshell = /bin/bash\n");
    let err = env.fails(&["shell"]);
    assert!(err.contains("dev.toml:2:9:"), "{err}");
    env.write_dev_toml("imgae = \"debian\"\n");
    let err = env.fails(&["run", "true"]);
    assert!(
        err.contains("unknown key `imgae`; did you mean `image`?"),
        "{err}"
    );
    assert!(err.contains("dev.toml:1:1"), "{err}");
    // Found from a sub-directory, too.
    fs::create_dir_all(env.path("project/a/b")).expect("mkdir");
    env.chown_all(&env.path("project"));
    let out = env
        .dev(&["run", "true"])
        .current_dir(env.path("project/a/b"))
        .output()
        .expect("run");
    assert!(
        stderr(&out).contains("unknown key `imgae`"),
        "{}",
        stderr(&out)
    );
});

e2e!(bad_image_configs_are_refused_clearly, |env: Env| {
    let reg = Registry::start();
    for (tag, key, value, expect) in [
        (
            "wd",
            "WorkingDir",
            "/proc/self/fd/7",
            "WorkingDir `/proc/self/fd/7`",
        ),
        ("big", "User", "4294967295", "outside the ids"),
        (
            "ghost",
            "User",
            "ghost",
            "User `ghost` is not in the image's /etc/passwd",
        ),
    ] {
        ImageBuilder::new(crate::common::image::busybox_layers())
            .run_config(key, serde_json::json!(value))
            .push(&reg, "fixture/bad", Some(tag));
        let r = format!("{}/fixture/bad:{tag}", reg.host());
        let out = env.run(&["run", "--image", &r, "--", "true"]);
        assert!(
            !out.status.success(),
            "{tag}: {}",
            describe("dev run", &out)
        );
        let err = stderr(&out);
        assert!(
            err.lines()
                .any(|l| l.starts_with("error: ") && l.contains(expect)),
            "{tag}: {err}"
        );
    }
    // An image without any shell.
    let noshell = crate::common::Layer::new(vec![
        crate::common::Entry::Dir("etc/".into(), 0o755),
        crate::common::Entry::File(
            "etc/passwd".into(),
            b"root:x:0:0::/root:/bin/sh\n".to_vec(),
            0o644,
        ),
    ]);
    ImageBuilder::new(vec![noshell]).push(&reg, "fixture/noshell", Some("1"));
    let r = format!("{}/fixture/noshell:1", reg.host());
    let out = env.run(&["shell", "--image", &r]);
    assert!(
        stderr(&out).contains("has no shell"),
        "{}",
        describe("dev shell", &out)
    );
    // dev.toml names a shell the image lacks.
    busybox_project(&env, &reg, "shell = \"/bin/zsh\"\n");
    let out = env.run(&["shell"]);
    assert!(
        stderr(&out).contains("`/bin/zsh` that dev.toml names is not in the image"),
        "{}",
        describe("dev shell", &out)
    );
    assert_no_leftovers(&env);
});

e2e!(interactive_shell_on_a_terminal, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg, "");
    env.ok(&["run", "true"]);
    let mut pty = env.pty(&["shell"], 33, 101);
    let at = pty.expect("(project)", 0);
    pty.send("stty size; echo $((6*7))\r");
    let at = pty.expect("33 101", at);
    let at = pty.expect("42", at);
    // Job control: stop a foreground job with Ctrl-Z, bring it back, interrupt it with Ctrl-C.
    pty.send("sleep 30\r");
    std::thread::sleep(Duration::from_millis(300));
    pty.send("\x1a");
    let at = pty.expect("Stopped", at);
    pty.send("fg\r");
    std::thread::sleep(Duration::from_millis(300));
    pty.send("\x03");
    pty.send("echo after-$((1+1))\r");
    let _ = pty.expect("after-2", at);
    pty.send("exit 5\r");
    let st = pty.wait();
    assert_eq!(st.code(), Some(5), "{}", pty.output());
    assert_no_leftovers(&env);
});

e2e!(both_overlay_backends_and_copy_work, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg, "");
    // No DEV_OVERLAY: the probe picks native overlay here and caches it.
    env.ok(&["run", "true"]);
    let probe = fs::read_to_string(env.store().join("overlay-v1.json")).expect("probe cache");
    assert!(probe.contains("\"native\""), "{probe}");
    for (backend, fstype) in [
        ("native", "overlay"),
        ("fuse", "fuse.fuse-overlayfs"),
        ("copy", "ext4"),
    ] {
        let out = env
            .dev(&["run", "--root", "--", "sh", "-c", &format!("grep ' / ' /proc/mounts | cut -d' ' -f3; echo {backend} >> /etc/backends; cat /etc/backends | tr '\\n' ' '; echo; cat /proc/[0-9]*/comm | tr '\\n' ' '")])
            .env("DEV_OVERLAY", backend)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{backend}: {}",
            describe("dev run", &out)
        );
        let text = stdout(&out);
        let mut lines = text.lines();
        let fs_type = lines.next().unwrap_or_default();
        if backend == "copy" {
            assert!(!fs_type.contains("overlay"), "copy: / is {fs_type}");
        } else {
            assert_eq!(fs_type, fstype, "{backend}");
        }
        assert_no_leftovers(&env);
        let backends = lines.next().unwrap_or_default();
        if backend == "fuse" {
            assert_eq!(
                backends, "native fuse ",
                "fuse sees and keeps native's changes"
            );
        }
        // fuse-overlayfs serves the env from outside: its pid namespace has only the env's
        // processes (init and this command's).
        let procs = lines.next().unwrap_or_default();
        assert!(
            !procs.contains("fuse") && procs.split_whitespace().count() <= 4,
            "{backend}: processes in the env: {procs}"
        );
    }
    let out = env
        .dev(&["run", "true"])
        .env("DEV_OVERLAY", "zfs")
        .output()
        .expect("run");
    assert!(
        stderr(&out).contains("DEV_OVERLAY is `zfs`"),
        "{}",
        stderr(&out)
    );
});

e2e!(killed_dev_leaves_nothing_behind, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg, "");
    env.ok(&["run", "true"]);
    for backend in ["native", "fuse"] {
        let mut child = spawn_ready(
            env.dev(&["run", "--", "sh", "-c", "echo ready; sleep 30"])
                .env("DEV_OVERLAY", backend),
        );
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).expect("kill");
        let _ = child.wait();
        assert_no_leftovers(&env);
        // The env is usable again at once.
        env.ok(&["run", "true"]);
    }
});

e2e!(second_session_joins_the_running_env, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg, "");
    env.ok(&["run", "true"]);
    let mut first = spawn_ready(&mut env.dev(&[
        "run",
        "--",
        "sh",
        "-c",
        "echo shared > /tmp/from-first; echo ready; sleep 30",
    ]));
    // The second session is in the same env: it sees the first one's processes and /tmp.
    let out = env.ok(&[
        "run",
        "--",
        "sh",
        "-c",
        "cat /tmp/from-first; ps -o comm | grep -c '^sleep$'",
    ]);
    assert_eq!(stdout(&out), "shared\n1\n");
    // A `--rm` session is an env of its own.
    let out = env.ok(&[
        "run",
        "--rm",
        "--",
        "sh",
        "-c",
        "test -e /tmp/from-first && echo seen; true",
    ]);
    assert_eq!(stdout(&out), "");
    kill(Pid::from_raw(first.id() as i32), Signal::SIGTERM).expect("kill");
    let _ = first.wait();
    assert_no_leftovers(&env);
});

e2e!(ssh_agent_socket_is_reachable_inside, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg, "");
    let dir = env.path("outside/agent");
    fs::create_dir_all(&dir).expect("mkdir");
    let sock = dir.join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    env.chown_all(&env.path("outside"));
    let out = env
        .dev(&[
            "run",
            "--ssh-agent",
            "--",
            "sh",
            "-c",
            "echo $SSH_AUTH_SOCK; test -S $SSH_AUTH_SOCK && echo socket",
        ])
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", describe("dev run", &out));
    assert_eq!(stdout(&out), "/run/dev/ssh-agent.sock\nsocket\n");
    drop(listener);
});

/// A `newuidmap` that is not setuid cannot write a range: dev falls back to the single-id map
/// and says how to fix it.
#[test]
fn newuidmap_not_setuid_falls_back_with_the_fix() {
    let env = Env::new(crate::common::Kind::Sub);
    let reg = Registry::start();
    busybox_project(&env, &reg, "");
    for tool in ["newuidmap", "newgidmap"] {
        let to = env.path(&format!("bin/{tool}"));
        fs::copy(which::which(tool).expect(tool), &to).expect("copy");
        fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    let out = env.ok(&["run", "--", "id", "-u"]);
    assert_eq!(stdout(&out), format!("{}\n", env.uid));
    assert!(
        stderr(&out).contains("is not setuid root") && stderr(&out).contains("chmod u+s"),
        "{}",
        stderr(&out)
    );
}

// The env's /run and /tmp are fresh tmpfs, but what the image has there (directories such as
// /run/lock, symlinks) is made again in them, as podman shows it; a higher layer's whiteout or
// opaque directory still hides what is below.
e2e!(the_images_run_and_tmp_entries_are_there, |env: Env| {
    use crate::common::{Entry, Layer};
    let reg = Registry::start();
    let mut layers = crate::common::image::busybox_layers();
    layers.push(Layer::new(vec![
        Entry::Dir("run/".into(), 0o755),
        Entry::Dir("run/lock/".into(), 0o1777),
        Entry::Dir("run/gone/".into(), 0o755),
        Entry::Dir("run/old/".into(), 0o755),
        Entry::Dir("run/old/below/".into(), 0o755),
        Entry::Symlink("run/shm".into(), "/dev/shm".into()),
        Entry::Dir("tmp/".into(), 0o1777),
        Entry::Dir("tmp/keep/".into(), 0o700),
        Entry::File("run/app.pid".into(), b"1\n".to_vec(), 0o644),
    ]));
    layers.push(Layer::new(vec![
        Entry::File("run/.wh.gone".into(), Vec::new(), 0o644),
        Entry::Dir("run/old/".into(), 0o755),
        Entry::File("run/old/.wh..wh..opq".into(), Vec::new(), 0o644),
    ]));
    crate::common::ImageBuilder::new(layers).push(&reg, "fixture/run", Some("1"));
    env.write_dev_toml(&format!("image = \"{}/fixture/run:1\"\n", reg.host()));
    let script = "stat -c '%a' /run/lock; readlink /run/shm; stat -c '%a' /tmp/keep; \
                  test -e /run/gone || echo no-gone; test -e /run/old/below || echo no-below; \
                  test -d /run/old && echo old; test -e /run/app.pid || echo no-pid";
    let out = env.ok(&["run", "--rm", "--", "sh", "-c", script]);
    assert_eq!(
        stdout(&out),
        "1777\n/dev/shm\n700\nno-gone\nno-below\nold\nno-pid\n"
    );
    // The project's env too, when a session starts it; a second session joins what it made.
    let lock = "stat -c '%a' /run/lock; readlink /run/shm";
    env.ok(&["start"]);
    assert_eq!(
        stdout(&env.ok(&["run", "--", "sh", "-c", lock])),
        "1777\n/dev/shm\n"
    );
    env.ok(&["stop"]);
    assert_eq!(
        stdout(&env.ok(&["run", "--", "sh", "-c", lock])),
        "1777\n/dev/shm\n"
    );
});
