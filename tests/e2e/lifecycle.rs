//! One running env per project, joined by every session: start, stop, ps, exec, recovery.

use std::fs;
use std::process::Stdio;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::{describe, stdout, Env, Registry};
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
    let out = env
        .dev(&["exec", "project", "--", "sh", "-c", "cat /tmp/kept; pwd"])
        .current_dir(env.path("outside"))
        .output()
        .expect("exec");
    assert!(out.status.success(), "{}", describe("dev exec", &out));
    assert_eq!(
        stdout(&out),
        format!("kept\n{}\n", env.path("project").display())
    );
    let err = env.fails(&["exec", "nope", "--", "true"]);
    assert!(err.contains("there is no env named `nope`"), "{err}");
    // A session counts while it runs.
    let mut long = env
        .dev(&["run", "--", "sh", "-c", "echo ready; sleep 30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut long.stdout.take().expect("stdout"), &mut buf).expect("ready");
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
