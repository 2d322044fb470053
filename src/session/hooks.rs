//! A devcontainer.json's commands around a session: `initializeCommand` on the host (trusted,
//! before the env starts), and the plans that run the lifecycle commands inside the env
//! (`config::devcontainer::lifecycle`'s runner), as the user, in the project.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};

use crate::config::devcontainer::{lifecycle, Command, Step};
use crate::sandbox::plan::SandboxPlan;
use crate::ui::UserError;

/// Runs `initializeCommand` on the host in the project `root` (the trust gate passed): a
/// string through `/bin/sh -c`, an array as argv, an object's steps at once, each line of
/// their output prefixed with the step's name. Output goes to stderr.
pub fn initialize_on_host(command: &Command, root: &Path) -> Result<()> {
    crate::ui::note(format_args!(
        "running initializeCommand on this machine in {}",
        root.display()
    ));
    let steps: Vec<(Option<&str>, &Step)> = match command {
        Command::One(s) => vec![(None, s)],
        Command::Parallel(steps) => steps.iter().map(|(n, s)| (Some(n.as_str()), s)).collect(),
    };
    let failed = std::thread::scope(|scope| -> Result<Option<(String, i32)>> {
        let mut running = Vec::new();
        for (name, step) in steps {
            let argv = step.argv();
            let mut cmd = std::process::Command::new(&argv[0]);
            cmd.args(&argv[1..]).current_dir(root).stdin(Stdio::null());
            let child = match name {
                // One step: its output is the user's, as it comes.
                None => cmd.stdout(std::io::stderr()).spawn(),
                Some(_) => cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn(),
            }
            .with_context(|| format!("cannot run initializeCommand `{}`", step.display()))?;
            running.push((name, child));
        }
        let mut relays = Vec::new();
        let mut children = Vec::new();
        for (name, mut child) in running {
            if let Some(name) = name {
                for out in [
                    child
                        .stdout
                        .take()
                        .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
                    child
                        .stderr
                        .take()
                        .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
                ]
                .into_iter()
                .flatten()
                {
                    relays.push(scope.spawn(move || {
                        for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                            crate::ui::note(format_args!(
                                "{name} | {}",
                                String::from_utf8_lossy(&line)
                            ));
                        }
                    }));
                }
            }
            children.push((name.unwrap_or("initializeCommand").to_string(), child));
        }
        let mut failed = None;
        for (name, mut child) in children {
            let status = child.wait().context("cannot wait for initializeCommand")?;
            if !status.success() && failed.is_none() {
                failed = Some((name, status.code().unwrap_or(1)));
            }
        }
        for r in relays {
            let _ = r.join();
        }
        Ok(failed)
    })?;
    match failed {
        None => Ok(()),
        Some((name, code)) => Err(UserError::with_hint(
            format!("devcontainer.json's initializeCommand (`{name}`) failed on this machine (exit {code})"),
            "its error is above; the env was not started",
        )),
    }
}

/// The plan that runs `commands` in the env (joined, or as a throwaway session) in `root`.
pub fn plan_for(sandbox: &SandboxPlan, commands: &[(String, Command)], root: &Path) -> SandboxPlan {
    let mut plan = sandbox.clone();
    plan.process.argv = lifecycle::runner_argv(commands);
    plan.process.cwd = root.to_path_buf();
    plan.keep = None;
    plan
}

/// The error for lifecycle commands that failed in the env.
pub fn failed(what: &str, code: i32) -> anyhow::Error {
    UserError::with_hint(
        format!("devcontainer.json's {what} failed (exit {code})"),
        "its error is above; fix the command in devcontainer.json (a change asks for your trust again)",
    )
}
