//! `dev trust`, `dev trust --show`, `dev untrust`, and the gate every command that would run
//! something of a dev.toml passes first: trusted, or asked on a terminal, or refused.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::project::{Project, FILE_NAME};
use crate::config::trust::{
    describe, dev_toml_path, printable, under_trusted_path, Parts, Standing, TrustStore,
};
use crate::config::Settings;
use crate::ui::UserError;

/// Passes when what `project` runs and exposes is trusted: by the user's record (one small
/// file read), by `trusted-paths`, by `DEV_TRUST=all`, or by the user's answer on a terminal.
/// Nothing of the project has run when it returns an error.
pub fn gate(project: &Project) -> Result<()> {
    let parts = Parts::of(&project.config);
    if parts.is_empty() {
        return Ok(());
    }
    let path = dev_toml_path(&project.root)?;
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
            eprintln!("DEV_TRUST=all: trusting dev.toml in `{root}` without asking");
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
            format!("dev.toml in `{root}` runs commands you have not trusted"),
            "review them with `dev trust --show`, then run `dev trust`",
        ),
        None => (
            format!("dev.toml in `{root}` asks for your ssh agent, which you have not trusted"),
            "review it with `dev trust --show`, then run `dev trust`",
        ),
        Some(_) => (
            format!("dev.toml in `{root}` changed what it runs or exposes since you trusted it"),
            "review the change with `dev trust --show`, then run `dev trust`",
        ),
    };
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(UserError::with_hint(message, hint));
    }
    eprintln!("{message}:");
    for line in describe(&parts, before.as_ref()) {
        eprintln!("  {line}");
    }
    eprint!("Trust it as it is now? [y/N] ");
    let answer = read_answer()?;
    if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES") {
        return Err(UserError::with_hint(
            format!("you did not trust dev.toml in `{root}`; nothing of it ran"),
            "review it with `dev trust --show`, then run `dev trust`",
        ));
    }
    store.trust(&path, &parts)?;
    eprintln!("trusted dev.toml in `{root}`; a change to what it runs or exposes asks again");
    Ok(())
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

/// The project here or above, or an error that says what `dev trust` works on.
fn project_here() -> Result<Project> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Project::discover(&cwd)?.ok_or_else(|| {
        UserError::with_hint(
            format!(
                "no {FILE_NAME} in `{}` or any directory above it",
                cwd.display()
            ),
            "run `dev trust` in a project (a directory with a dev.toml)",
        )
    })
}

/// `dev trust`: trusts what the project's dev.toml runs and exposes now; `--show` prints it
/// and whether it is trusted, and changes nothing.
pub fn run(show: bool) -> Result<()> {
    let project = project_here()?;
    let parts = Parts::of(&project.config);
    let path = dev_toml_path(&project.root)?;
    let store = TrustStore::open()?;
    let shown = printable(&path.display().to_string());
    if show {
        return print_standing(&project, &path, &parts, &store);
    }
    store.trust(&path, &parts)?;
    if parts.is_empty() {
        eprintln!("trusted `{shown}` (it runs nothing and exposes nothing now)");
    } else {
        eprintln!("trusted `{shown}`; a change to what it runs or exposes asks again");
    }
    Ok(())
}

fn print_standing(project: &Project, path: &Path, parts: &Parts, store: &TrustStore) -> Result<()> {
    let shown = printable(&path.display().to_string());
    if parts.is_empty() {
        println!("{shown}: needs no trust: it runs nothing and exposes nothing beyond the project");
        return Ok(());
    }
    let standing = store.standing(path, parts);
    let state = match &standing {
        Standing::Trusted => "trusted",
        _ if under_trusted_path(&Settings::load()?, &project.root)? => {
            "trusted (it is under `trusted-paths` in your config.toml)"
        }
        Standing::Untrusted => "not trusted; `dev trust` trusts it",
        Standing::Changed(_) => {
            "changed since you trusted it (- what you trusted, + what it is now); `dev trust` trusts it as it is now"
        }
    };
    println!("{shown}: {state}");
    let before = match &standing {
        Standing::Changed(b) => Some(b),
        _ => None,
    };
    for line in describe(parts, before) {
        println!("{line}");
    }
    Ok(())
}

/// `dev untrust`: forgets the trust in the project's dev.toml.
pub fn untrust() -> Result<()> {
    let project = project_here()?;
    let path: PathBuf = dev_toml_path(&project.root)?;
    let shown = printable(&path.display().to_string());
    if TrustStore::open()?.untrust(&path)? {
        eprintln!("untrusted `{shown}`: dev asks again before it runs anything of it");
    } else {
        eprintln!("`{shown}` was not trusted");
    }
    Ok(())
}
