//! The trust gate every session of a project passes before anything of its dev.toml runs:
//! trusted (the user's record, `trusted-paths`, `DEV_TRUST=all`), or asked once on a
//! terminal, or refused in one line.

use std::io::IsTerminal;

use anyhow::{Context, Result};

use crate::config::project::Project;
use crate::config::trust::{describe, printable, under_trusted_path, Parts, Standing, TrustStore};
use crate::config::Settings;
use crate::ui::UserError;

/// Passes when what `project` runs and exposes is trusted: by the user's record (one small
/// file read), by `trusted-paths`, by `DEV_TRUST=all`, or by the user's answer on a terminal.
/// Nothing of the project has run when it returns an error.
pub fn gate(project: &Project) -> Result<()> {
    let parts = Parts::of_project(project);
    if parts.is_empty() {
        return Ok(());
    }
    let path = project.trust_path()?;
    let file = project.file_name();
    let store = TrustStore::open()?;
    let before = match store.standing(&path, &parts) {
        Standing::Trusted => return Ok(()),
        Standing::Untrusted => None,
        Standing::Changed(before) => Some(before),
    };
    if under_trusted_path(&Settings::load()?, &project.root)? {
        return Ok(());
    }
    let root = printable(&project.root.display().to_string());
    match std::env::var("DEV_TRUST").as_deref() {
        Ok("all") => {
            crate::ui::note(format_args!(
                "DEV_TRUST=all: trusting {file} in `{root}` without asking"
            ));
            return Ok(());
        }
        Ok(v) => {
            return Err(UserError::with_hint(
                format!("DEV_TRUST is `{}`", printable(v)),
                "set DEV_TRUST=all to trust every dev.toml (for CI), or unset it",
            ))
        }
        Err(_) => {}
    }
    let (message, hint) = match &before {
        None if parts.runs_commands() => (
            format!("{file} in `{root}` runs commands you have not trusted"),
            "review them with `dev trust --show`, then run `dev trust`",
        ),
        None if !parts.mounts.is_empty() => (
            format!("dev.toml in `{root}` mounts host paths or volumes you have not trusted"),
            "review them with `dev trust --show`, then run `dev trust`",
        ),
        None => (
            format!(
                "{file} in `{root}` asks for {}, which you have not trusted",
                asks_for(&parts)
            ),
            "review it with `dev trust --show`, then run `dev trust`",
        ),
        Some(_) => (
            format!("{file} in `{root}` changed what it runs or exposes since you trusted it"),
            "review the change with `dev trust --show`, then run `dev trust`",
        ),
    };
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(UserError::with_hint(message, hint));
    }
    crate::ui::note(format_args!("{message}:"));
    for line in describe(&parts, before.as_ref()) {
        crate::ui::note(format_args!("  {line}"));
    }
    crate::ui::prompt(format_args!("Trust it as it is now? [y/N] "));
    let answer = read_answer()?;
    if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES") {
        return Err(UserError::with_hint(
            format!("you did not trust {file} in `{root}`; nothing of it ran"),
            "review it with `dev trust --show`, then run `dev trust`",
        ));
    }
    store.trust(&path, &parts)?;
    crate::ui::note(format_args!(
        "trusted {file} in `{root}`; a change to what it runs or exposes asks again"
    ));
    Ok(())
}

/// What of the host a project that runs nothing asks for, in words.
fn asks_for(parts: &Parts) -> String {
    let mut what = Vec::new();
    if parts.ssh_agent {
        what.push("your ssh agent");
    }
    if parts.gui {
        what.push("your display and sound");
    }
    if parts.gpu.is_some() {
        what.push("your GPU");
    }
    if !parts.host_env.is_empty() {
        what.push("host environment variables");
    }
    if !parts.mounts.is_empty() {
        what.push("host mounts");
    }
    what.join(" and ")
}

/// One line from the terminal, read straight from fd 0 (a terminal in canonical mode hands
/// over one line per read, so nothing typed ahead for the session is taken).
fn read_answer() -> Result<String> {
    let mut line = Vec::new();
    let mut buf = [0u8; 256];
    while line.len() < 1024 && !line.contains(&b'\n') {
        match nix::unistd::read(0, &mut buf) {
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("cannot read the answer from the terminal"),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}
