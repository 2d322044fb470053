//! A project's env lingers after its last session (config.toml's or dev.toml's `linger`), so
//! that back-to-back `dev run`s join it instead of starting it; it still stops on its own, and
//! `dev stop`, `rm` and `reset` stop it at once.

use std::fs;
use std::time::{Duration, Instant};

use crate::common::{describe, image, spawn_ready, stderr, stdout, Env, ImageBuilder, Registry};
use crate::e2e;

fn ps(env: &Env) -> Vec<serde_json::Value> {
    serde_json::from_slice(&env.ok(&["ps", "--format", "json"]).stdout).expect("ps json")
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Waits up to `limit` for nothing to run; how long that took.
fn stops_within(env: &Env, limit: Duration) -> Duration {
    let start = Instant::now();
    while !ps(env).is_empty() {
        assert!(
            start.elapsed() < limit,
            "the env still runs after {limit:?}: {:?}",
            ps(env)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// The env's pid namespace and a file in its /tmp, as a session sees them.
fn mark_and_look(env: &Env) -> String {
    let out = env.ok(&[
        "run",
        "--",
        "sh",
        "-c",
        "cat /tmp/mark 2>/dev/null || echo none; echo here > /tmp/mark",
    ]);
    stdout(&out)
}

e2e!(back_to_back_runs_join_the_lingering_env, |env: Env| {
    let reg = Registry::start();
    crate::shell::busybox_project(&env, &reg, "");
    env.settings("linger = 30\n");
    assert_eq!(
        mark_and_look(&env),
        "none\n",
        "the first run starts the env"
    );
    let before = now();
    let running = ps(&env);
    assert_eq!(running.len(), 1, "it lingers: {running:?}");
    assert_eq!(running[0]["state"], "lingering", "{running:?}");
    assert_eq!(running[0]["sessions"], 0, "{running:?}");
    let until = running[0]["lingers_until"].as_f64().expect("lingers_until");
    assert!(
        until > before + 25.0 && until < before + 31.0,
        "stops about 30 s after its last session: {until} vs now {before}"
    );
    let table = stdout(&env.ok(&["ps"]));
    assert!(table.contains("lingering, stops in"), "{table}");
    // The next run joins it: the same /tmp.
    assert_eq!(mark_and_look(&env), "here\n", "the second run joins it");
    // Joined while a session is in it, it is running, not lingering.
    let mut long = spawn_ready(&mut env.dev(&["run", "--", "sh", "-c", "echo ready; sleep 30"]));
    let running = ps(&env);
    assert_eq!(running[0]["state"], "running", "{running:?}");
    assert_eq!(running[0]["sessions"], 1, "{running:?}");
    assert!(running[0].get("lingers_until").is_none(), "{running:?}");
    // `dev stop` stops it at once, sessions and all.
    let start = Instant::now();
    env.ok(&["stop"]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "dev stop took {:?}",
        start.elapsed()
    );
    assert!(ps(&env).is_empty(), "{:?}", ps(&env));
    assert!(!long.wait().expect("wait").success());
    assert_eq!(
        mark_and_look(&env),
        "none\n",
        "stopped: the next run starts it"
    );
    env.ok(&["stop"]);
    crate::shell::assert_no_leftovers(&env);
});

e2e!(a_lingering_env_stops_on_its_own, |env: Env| {
    let reg = Registry::start();
    crate::shell::busybox_project(&env, &reg, "");
    env.settings("linger = 1.5\n");
    env.ok(&["run", "--", "true"]);
    assert_eq!(ps(&env)[0]["state"], "lingering");
    let took = stops_within(&env, Duration::from_secs(6));
    assert!(
        took > Duration::from_millis(1000),
        "stopped {took:?} after its last session, before its linger time of 1.5 s"
    );
    crate::shell::assert_no_leftovers(&env);
    assert_eq!(mark_and_look(&env), "none\n");
});

e2e!(
    linger_0_stops_with_the_last_session_and_dev_toml_wins,
    |env: Env| {
        let reg = Registry::start();
        let image = crate::shell::busybox_project(&env, &reg, "");
        // 0 in config.toml: stopped with its session, as before lingering.
        env.settings("linger = 0\n");
        env.ok(&["run", "--", "true"]);
        assert!(ps(&env).is_empty(), "{:?}", ps(&env));
        // The project's own setting wins over the user's.
        env.write_dev_toml(&format!("image = \"{image}\"\nlinger = 30\n"));
        env.ok(&["run", "--", "true"]);
        assert_eq!(ps(&env)[0]["state"], "lingering");
        env.ok(&["stop"]);
        env.settings("linger = 30\n");
        env.write_dev_toml(&format!("image = \"{image}\"\nlinger = 0\n"));
        env.ok(&["run", "--", "true"]);
        assert!(ps(&env).is_empty(), "{:?}", ps(&env));
        // Set nowhere: the default, a few seconds.
        env.write_dev_toml(&format!("image = \"{image}\"\n"));
        fs::remove_file(env.path("config/dev/config.toml")).expect("rm config.toml");
        let before = now();
        env.ok(&["run", "--", "true"]);
        let until = ps(&env)[0]["lingers_until"].as_f64().expect("lingers");
        assert!(
            until > before + 2.0 && until < before + 11.0,
            "the default linger is a few seconds: {}",
            until - before
        );
        stops_within(&env, Duration::from_secs(15));
        crate::shell::assert_no_leftovers(&env);
    }
);

e2e!(rm_and_reset_stop_a_lingering_env_at_once, |env: Env| {
    let reg = Registry::start();
    crate::shell::busybox_project(&env, &reg, "");
    env.settings("linger = 60\n");
    env.ok(&["run", "--", "sh", "-c", "echo kept > $HOME/kept"]);
    assert_eq!(ps(&env)[0]["state"], "lingering");
    // No -f needed: no session is in it.
    let start = Instant::now();
    let out = env.ok(&["rm"]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "dev rm took {:?}",
        start.elapsed()
    );
    assert!(stderr(&out).contains("removed the env"), "{}", stderr(&out));
    assert!(ps(&env).is_empty());
    let out = env.run(&["run", "--", "sh", "-c", "cat $HOME/kept"]);
    assert!(!out.status.success(), "{}", describe("dev run", &out));
    env.ok(&["run", "--", "sh", "-c", "echo kept > $HOME/kept"]);
    let start = Instant::now();
    env.ok(&["reset"]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "dev reset took {:?}",
        start.elapsed()
    );
    assert!(ps(&env).is_empty());
    let out = env.run(&["run", "--", "sh", "-c", "cat $HOME/kept"]);
    assert!(!out.status.success(), "{}", describe("dev run", &out));
    // With a session in it, `dev rm` still asks for -f.
    let mut long = spawn_ready(&mut env.dev(&["run", "--", "sh", "-c", "echo ready; sleep 30"]));
    let err = env.fails(&["rm"]);
    assert!(err.contains("is running") && err.contains("-f"), "{err}");
    env.ok(&["rm", "-f"]);
    assert!(!long.wait().expect("wait").success());
    crate::shell::assert_no_leftovers(&env);
});

e2e!(a_changed_image_does_not_join_a_stale_env, |env: Env| {
    let reg = Registry::start();
    let one = crate::shell::busybox_project(&env, &reg, "");
    ImageBuilder::new(image::busybox_layers())
        .run_config("Env", serde_json::json!(["MARK=two"]))
        .push(&reg, "fixture/busybox", Some("2"));
    let two = format!("{}/fixture/busybox:2", reg.host());
    env.settings("linger = 60\n");
    let look = "echo ${MARK:-one}; cat /tmp/mark 2>/dev/null || echo none; echo here > /tmp/mark";
    assert_eq!(
        stdout(&env.ok(&["run", "--", "sh", "-c", look])),
        "one\nnone\n"
    );
    // Lingering, with nobody in it: the next run starts it anew from the new image.
    env.write_dev_toml(&format!("image = \"{two}\"\n"));
    let out = env.ok(&["run", "--", "sh", "-c", look]);
    assert_eq!(stdout(&out), "two\nnone\n", "{}", describe("dev run", &out));
    assert!(
        stderr(&out).contains("the env was made from"),
        "{}",
        stderr(&out)
    );
    // In use by another session: joined as it is, and said so.
    let mut long = spawn_ready(&mut env.dev(&["run", "--", "sh", "-c", "echo ready; sleep 30"]));
    env.write_dev_toml(&format!("image = \"{one}\"\n"));
    let out = env.ok(&["run", "--", "sh", "-c", look]);
    assert_eq!(stdout(&out), "one\nhere\n", "{}", describe("dev run", &out));
    assert!(
        stderr(&out)
            .contains("it is in use (a session, or `dev start`), so this one joins it as it is")
            && stderr(&out).contains("`dev stop project` starts it anew"),
        "{}",
        stderr(&out)
    );
    env.ok(&["stop"]);
    assert!(!long.wait().expect("wait").success());
    // A `--root` session of the user without a range needs other ids: a lingering env is
    // started anew for it, not refused.
    env.ok(&["run", "--", "true"]);
    let out = env.ok(&["run", "--root", "--", "id", "-u"]);
    assert_eq!(stdout(&out), "0\n", "{}", describe("dev run --root", &out));
    env.ok(&["stop"]);
    crate::shell::assert_no_leftovers(&env);
});

// config.toml as it is, nothing added (the harness puts `linger = 0` first otherwise).
e2e!(linger_setting_errors_say_where_and_what, |env: Env| {
    let reg = Registry::start();
    let image = crate::shell::busybox_project(&env, &reg, "");
    let config = env.path("config/dev/config.toml");
    env.settings_exactly("lingr = 5\n");
    let err = env.fails(&["run", "--", "true"]);
    assert_eq!(
        err,
        format!(
            "error: {}:1:1: unknown key `lingr`; did you mean `linger`?\nhint: the keys of config.toml are listed in the README, under \"Registries, credentials and your settings\"\n",
            config.display()
        )
    );
    env.settings_exactly("ssh-agent = false\nlinger = \"soon\"\n");
    let err = env.fails(&["run", "--", "true"]);
    assert!(
        err.starts_with(&format!(
            "error: {}:2:10: invalid type: string \"soon\", expected seconds, a number from 0 to 3600",
            config.display()
        )) && err.contains("hint: fix the value at that place in config.toml"),
        "{err}"
    );
    env.settings_exactly("linger = -1\n");
    let err = env.fails(&["run", "--", "true"]);
    assert!(
        err.contains(":1:10: invalid value: floating point `-1.0`, expected seconds"),
        "{err}"
    );
    env.settings_exactly("linger = 5\n");
    env.write_dev_toml(&format!("image = \"{image}\"\nlingr = 5\n"));
    let err = env.fails(&["run", "--", "true"]);
    assert!(
        err.contains("dev.toml:2:1: unknown key `lingr`; did you mean `linger`?"),
        "{err}"
    );
    env.write_dev_toml(&format!("image = \"{image}\"\nlinger = 7200\n"));
    let err = env.fails(&["run", "--", "true"]);
    assert!(
        err.contains("dev.toml:2:10: invalid value: floating point `7200.0`, expected seconds, a number from 0 to 3600"),
        "{err}"
    );
    assert!(ps(&env).is_empty(), "nothing started");
});
