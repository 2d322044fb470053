//! One running env per project, joined by every session: start, stop, ps, exec, recovery.

use std::fs;
use std::process::Stdio;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::{describe, spawn_ready, stdout, Env, Registry};
use crate::e2e;

fn busybox_project(env: &Env, reg: &Registry) {
    crate::shell::busybox_project(env, reg, "");
}

/// The runtime state files of this test's envs.
fn run_states(env: &Env) -> Vec<serde_json::Value> {
    fs::read_dir(env.path("run/dev"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read(e.path().join("state.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

fn ps(env: &Env, all: bool) -> Vec<serde_json::Value> {
    let mut args = vec!["ps", "--format", "json"];
    if all {
        args.push("-a");
    }
    serde_json::from_slice(&env.ok(&args).stdout).expect("ps json")
}

e2e!(env_stops_after_its_last_session, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg);
    env.ok(&["run", "--", "sh", "-c", "echo x > /tmp/left"]);
    // The env stopped with its only session: a new one starts with a fresh /tmp.
    let out = env.run(&["run", "--", "cat", "/tmp/left"]);
    assert!(!out.status.success(), "{}", describe("dev run", &out));
    assert!(ps(&env, false).is_empty(), "nothing runs");
    assert!(run_states(&env).is_empty(), "no runtime state left");
    let all = ps(&env, true);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["name"], "project");
    assert_eq!(all[0]["state"], "stopped");
    let df: serde_json::Value =
        serde_json::from_slice(&env.ok(&["system", "df", "--format", "json"]).stdout)
            .expect("json");
    assert_eq!(df["envs"], 1, "{df}");
});

/// Whether the env's lock is taken (by its keeper, while it runs).
fn env_locked(env: &Env) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    let locks: Vec<_> = env
        .env_dirs()
        .into_iter()
        .map(|d| d.join("lock"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(locks.len(), 1, "one env: {locks:?}");
    let file = fs::File::open(&locks[0]).expect("open the env's lock");
    Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err()
}

e2e!(starts_wait_for_the_env_stopping_before, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg);
    for round in 0..12 {
        // The env stops as this session leaves; the start right after waits until it is gone
        // (unmounted, its runtime files removed), then starts it again.
        env.ok(&["run", "--", "true"]);
        env.ok(&["start"]);
        assert!(
            env_locked(&env),
            "round {round}: the running env is not locked by its keeper"
        );
        // Still the env `start` started: nothing of the one before removed its state.
        env.ok(&["run", "--", "true"]);
        let running = ps(&env, false);
        assert_eq!(running.len(), 1, "round {round}: {running:?}");
        assert_eq!(running[0]["state"], "running", "round {round}");
        env.ok(&["stop"]);
    }
    // Removed right after its last session left: the stopping env is waited for, not deleted
    // under its keeper.
    env.ok(&["run", "--", "true"]);
    env.ok(&["rm"]);
    assert!(ps(&env, true).is_empty(), "{:?}", ps(&env, true));
    crate::shell::assert_no_leftovers(&env);
});

e2e!(start_ps_exec_stop, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg);
    env.ok(&["start"]);
    let running = ps(&env, false);
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0]["state"], "running");
    assert_eq!(running[0]["sessions"], 0);
    env.ok(&["run", "--", "sh", "-c", "echo kept > /tmp/kept"]);
    // Still running without sessions: the next session finds /tmp as it was.
    let out = env.ok(&["run", "--", "cat", "/tmp/kept"]);
    assert_eq!(stdout(&out), "kept\n");
    // By name, from anywhere.
    let out = env.ok_in(
        &env.path("outside"),
        &["exec", "project", "--", "sh", "-c", "cat /tmp/kept; pwd"],
    );
    assert_eq!(
        stdout(&out),
        format!("kept\n{}\n", env.path("project").display())
    );
    let err = env.fails(&["exec", "nope", "--", "true"]);
    assert!(err.contains("there is no env named `nope`"), "{err}");
    // A session counts while it runs.
    let mut long = spawn_ready(&mut env.dev(&["run", "--", "sh", "-c", "echo ready; sleep 30"]));
    assert_eq!(ps(&env, false)[0]["sessions"], 1);
    env.ok(&["stop"]);
    let st = long.wait().expect("wait");
    assert!(!st.success(), "the session ends with the env");
    assert_eq!(ps(&env, true)[0]["state"], "stopped");
    assert!(run_states(&env).is_empty());
    crate::shell::assert_no_leftovers(&env);
});

e2e!(killed_init_is_noticed_and_replaced, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg);
    env.ok(&["start"]);
    let states = run_states(&env);
    let init = states[0]["init"]["pid"].as_i64().expect("init pid") as i32;
    kill(Pid::from_raw(init), Signal::SIGKILL).expect("kill init");
    let out = env.ok(&["run", "--", "echo", "fresh"]);
    assert_eq!(stdout(&out), "fresh\n");
    crate::shell::assert_no_leftovers(&env);
    assert!(run_states(&env).is_empty());
});

/// Seconds on the clock the kernel log's timestamps use (CLOCK_MONOTONIC here).
fn kernel_clock() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9
}

/// The kernel log's lines that contain `what`, logged after `since` (see [`kernel_clock`]). The
/// suite runs as root, which may read the log.
fn kernel_log_since(since: f64, what: &str) -> Vec<String> {
    let out = std::process::Command::new("dmesg")
        .output()
        .expect("run dmesg");
    assert!(out.status.success(), "{}", describe("dmesg", &out));
    stdout(&out)
        .lines()
        .filter(|l| l.contains(what))
        .filter(|l| {
            l.strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .and_then(|(ts, _)| ts.trim().parse::<f64>().ok())
                .is_some_and(|ts| ts >= since)
        })
        .map(str::to_string)
        .collect()
}

e2e!(killed_keeper_is_noticed_and_replaced, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg);
    env.ok(&["start"]);
    let mut long = spawn_ready(&mut env.dev(&["run", "--", "sh", "-c", "echo ready; sleep 30"]));
    let states = run_states(&env);
    let keeper = states[0]["keeper"]["pid"].as_i64().expect("keeper pid") as i32;
    let since = kernel_clock();
    kill(Pid::from_raw(keeper), Signal::SIGKILL).expect("kill keeper");
    // At once: the next session starts a fresh env once the old one's processes are gone.
    let out = env.ok(&[
        "run",
        "--",
        "sh",
        "-c",
        "echo fresh; echo $(ps -o comm | grep -c '^sleep$')",
    ]);
    assert_eq!(
        stdout(&out),
        "fresh\n0\n",
        "a fresh env, without the old one's processes"
    );
    // Not mounted while the old env's mount still held its layer: the kernel says when it is.
    let twice = kernel_log_since(since, "upperdir is in-use");
    assert!(
        twice.is_empty(),
        "the env's layer was mounted twice: {twice:?}"
    );
    let st = long.wait().expect("wait");
    assert!(!st.success(), "the old env's session ended with it");
    crate::shell::assert_no_leftovers(&env);
    assert!(run_states(&env).is_empty());
});

e2e!(stop_waits_for_sessions_to_leave_the_env, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg);
    env.ok(&["start"]);
    // A session's `dev` joined the env's mount namespace from outside its pid namespace: the
    // env's end kills its command, not it, and so it still holds the env's mount while it
    // reaps the command and exits. Held stopped for a second, it is slow to do so (as on a
    // loaded machine, where this failed 4 times in 15 before the keeper waited for it).
    let mut long = spawn_ready(&mut env.dev(&["run", "--", "sh", "-c", "echo ready; sleep 30"]));
    let session = Pid::from_raw(long.id() as i32);
    kill(session, Signal::SIGSTOP).expect("stop the session's dev");
    let resume = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let _ = kill(session, Signal::SIGCONT);
    });
    let since = kernel_clock();
    let t = std::time::Instant::now();
    env.ok(&["stop"]);
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(900),
        "the env's end waited for the session's `dev` to reap its command: {:?}",
        t.elapsed()
    );
    // The next start does not mount the env's layer while that session's mount still holds it.
    let out = env.ok(&["run", "--", "echo", "fresh"]);
    assert_eq!(stdout(&out), "fresh\n");
    let twice = kernel_log_since(since, "upperdir is in-use");
    assert!(
        twice.is_empty(),
        "the env's layer was mounted twice: {twice:?}"
    );
    resume.join().expect("resume");
    let st = long.wait().expect("wait");
    assert!(!st.success(), "the session ended with the env");
    crate::shell::assert_no_leftovers(&env);
});

e2e!(simultaneous_starts_end_in_one_env, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg);
    env.ok(&["run", "true"]);
    let children: Vec<_> = (0..4)
        .map(|_| {
            env.dev(&[
                "run",
                "--",
                "sh",
                "-c",
                "readlink /proc/self/ns/pid; sleep 1",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn")
        })
        .collect();
    let outs: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("wait");
            assert!(out.status.success());
            stdout(&out)
        })
        .collect();
    assert!(
        outs.iter().all(|o| o == &outs[0] && o.starts_with("pid:[")),
        "{outs:?}"
    );
    crate::shell::assert_no_leftovers(&env);
});

e2e!(sessions_joining_and_leaving_leave_nothing, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg);
    for i in 0..10 {
        let out = env.ok(&["run", "--", "echo", &i.to_string()]);
        assert_eq!(stdout(&out), format!("{i}\n"));
    }
    crate::shell::assert_no_leftovers(&env);
    assert!(run_states(&env).is_empty());
});

e2e!(diff_then_rm, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg);
    env.ok(&[
        "run",
        "--root",
        "--",
        "sh",
        "-c",
        "echo new > /etc/added; echo more >> /etc/os-release; rm /bin/vi",
    ]);
    let diff = stdout(&env.ok(&["diff"]));
    for line in ["A /etc/added", "C /etc/os-release", "D /bin/vi", "C /etc"] {
        assert!(diff.lines().any(|l| l == line), "no `{line}` in:\n{diff}");
    }
    env.ok(&["start"]);
    let err = env.fails(&["rm"]);
    assert!(err.contains("is running") && err.contains("-f"), "{err}");
    env.ok(&["rm", "-f"]);
    assert!(ps(&env, true).is_empty(), "the env is gone");
    let out = env.run(&["run", "--", "cat", "/etc/added"]);
    assert!(
        !out.status.success(),
        "a fresh env: {}",
        describe("dev run", &out)
    );
    crate::shell::assert_no_leftovers(&env);
});

e2e!(commit_makes_an_image_run_image_runs, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg);
    let err = env.fails(&["commit", "--tag", "snap:1"]);
    assert!(err.contains("has no env yet"), "{err}");
    env.ok(&[
        "run",
        "--root",
        "--",
        "sh",
        "-c",
        "mkdir -p /opt/app && echo committed > /opt/app/v; rm /bin/vi",
    ]);
    let out = env.ok(&["commit", "--tag", "snap:1"]);
    let digest = stdout(&out);
    assert!(digest.starts_with("sha256:"), "{digest}");
    let images: Vec<serde_json::Value> =
        serde_json::from_slice(&env.ok(&["images", "--format", "json"]).stdout).expect("json");
    assert!(
        images
            .iter()
            .any(|i| i["reference"] == "docker.io/library/snap:1"),
        "{images:?}"
    );
    // Changes made after the commit are not in the image.
    env.ok(&["run", "--root", "--", "sh", "-c", "echo later > /opt/app/v"]);
    let out = env.ok_in(
        &env.path("outside"),
        &[
            "run",
            "--image",
            "snap:1",
            "--",
            "sh",
            "-c",
            "cat /opt/app/v; test -e /bin/vi || echo no-vi",
        ],
    );
    assert_eq!(stdout(&out), "committed\nno-vi\n");
    // Its config lists one more layer than the base image's.
    let inspect: serde_json::Value =
        serde_json::from_slice(&env.ok(&["inspect", "snap:1"]).stdout).expect("json");
    let text = inspect.to_string();
    assert!(text.contains(digest.trim()), "{text}");
    let err = env.fails(&[
        "commit",
        "--tag",
        &format!("snap@sha256:{}", "a".repeat(64)),
    ]);
    assert!(err.contains("has a digest"), "{err}");
    // Committed again under the same tag, the name moves to the new image.
    let again = stdout(&env.ok(&["commit", "--tag", "snap:1"]));
    assert_ne!(again, digest);
    crate::shell::assert_no_leftovers(&env);
});

e2e!(names_chosen_with_name, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg);
    let err = env.fails(&["start", "--name", "bad name"]);
    assert!(err.contains("letters, digits"), "{err}");
    env.ok(&["start", "--name", "web"]);
    assert_eq!(ps(&env, false)[0]["name"], "web");
    let out = env.ok(&["run", "--", "sh", "-c", "echo \"$PS1\""]);
    assert!(stdout(&out).starts_with("(web) "), "{}", stdout(&out));
    let out = env.run_in(
        &env.path("outside"),
        &["exec", "web", "--", "echo", "by-name"],
    );
    assert_eq!(stdout(&out), "by-name\n", "{}", describe("dev exec", &out));
    let err = env.fails(&["run", "--name", "other", "--", "true"]);
    assert!(err.contains("runs as `web`"), "{err}");
    let err = env.fails(&["run", "--rm", "--name", "x", "--", "true"]);
    assert!(err.contains("--name"), "{err}");
    // Another project cannot take the name.
    let other = env.path("outside/other");
    fs::create_dir_all(&other).expect("mkdir");
    fs::copy(env.path("project/dev.toml"), other.join("dev.toml")).expect("copy");
    env.chown_all(&env.path("outside"));
    let out = env.run_in(&other, &["run", "--name", "web", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        crate::common::stderr(&out).contains("the name `web` is taken"),
        "{}",
        describe("dev run --name web", &out)
    );
    env.ok(&["stop", "web"]);
    // The name stays with the env.
    assert_eq!(ps(&env, true)[0]["name"], "web");
    crate::shell::assert_no_leftovers(&env);
});

e2e!(prune_deletes_envs_only_as_asked, |env: Env| {
    let reg = Registry::start();
    let image = crate::common::push_busybox(&reg);
    let project = |name: &str| {
        let dir = env.path(&format!("outside/{name}"));
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("dev.toml"), format!("image = \"{image}\"\n")).expect("write");
        env.chown_all(&env.path("outside"));
        dir
    };
    let (kept, gone, busy) = (project("kept"), project("gone"), project("busy"));
    env.ok_in(&kept, &["run", "--", "true"]);
    env.ok_in(&gone, &["run", "--", "true"]);
    env.ok_in(&busy, &["start"]);
    fs::remove_dir_all(&gone).expect("rm project");
    fs::remove_file(busy.join("dev.toml")).expect("rm dev.toml");
    let names = |env: &Env| -> Vec<String> {
        ps(env, true)
            .iter()
            .map(|r| r["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(names(&env), ["busy", "gone", "kept"]);
    // The image goes; the layers the envs stand on stay.
    env.ok(&["rmi", &image]);
    assert!(!env.layer_dirs().is_empty(), "envs keep their layers");
    let out = env.ok(&["system", "prune"]);
    assert!(
        stdout(&out).contains("Deleted 1 env(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(names(&env), ["busy", "kept"], "only the orphan goes");
    env.ok_in(&kept, &["run", "--", "echo", "still-here"]);
    env.ok(&["system", "prune", "--envs"]);
    assert_eq!(names(&env), ["busy"], "a running env stays");
    env.ok_in(&env.path("outside"), &["stop", "busy"]);
    env.ok(&["system", "prune", "--envs"]);
    assert!(names(&env).is_empty());
    // With no env left, removing the image (pulled again by `kept`'s run) frees its layers.
    env.ok(&["rmi", &image]);
    assert!(env.layer_dirs().is_empty(), "{:?}", env.layer_dirs());
    crate::shell::assert_no_leftovers(&env);
});

// `dev commit` of a running env: the env swaps a file of its writable layer for a symlink to a
// host file over and over while the packer runs. The packer must pack what it opened (a file or
// a symlink), never the host file the name pointed to a moment later.
e2e!(
    commit_never_packs_a_host_file_through_a_swapped_name,
    |env: Env| {
        let reg = Registry::start();
        busybox_project(&env, &reg);
        let secret = env.path("outside/secret");
        let marker = "host-secret-6f1e";
        fs::write(&secret, format!("{marker}\n")).expect("write secret");
        env.chown_all(&env.path("outside"));
        env.ok(&["start"]);
        // Fifty names, each flipped between a file and a symlink to the host's secret by rename.
        let script = format!(
            "mkdir -p /swap && cd /swap && echo ready && while :; do for i in $(seq 50); do \
         echo decoy > f$i.t && mv -f f$i.t f$i; ln -sfn {} l$i && mv -f l$i f$i; done; done",
            secret.display()
        );
        // Root inside writes `/` with a subordinate range; with a single id, the user owns it.
        let mut args = vec!["run"];
        if env.kind != crate::common::Kind::NoSub {
            args.push("--root");
        }
        args.extend(["--", "sh", "-c", &script]);
        let mut swapper = spawn_ready(&mut env.dev(&args));
        for n in 0..40 {
            env.ok(&["commit", "--tag", &format!("race:{n}")]);
        }
        let _ = swapper.kill();
        let _ = swapper.wait();
        env.ok(&["stop"]);
        let mut leaked = Vec::new();
        let blobs = env.store().join("blobs-v1");
        let mut stack = vec![blobs];
        while let Some(p) = stack.pop() {
            for e in fs::read_dir(&p).into_iter().flatten().flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if fs::read(&path)
                    .unwrap_or_default()
                    .windows(marker.len())
                    .any(|w| w == marker.as_bytes())
                {
                    leaked.push(path);
                }
            }
        }
        assert!(leaked.is_empty(), "the host's file went into {leaked:?}");
    }
);
