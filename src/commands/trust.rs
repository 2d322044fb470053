//! `dev trust`, `dev trust --show` and `dev untrust` (the gate itself is `session::gate`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::project::{no_project, Project};
use crate::config::trust::{describe, printable, under_trusted_path, Parts, Standing, TrustStore};
use crate::config::Settings;

/// The project here or above, or an error that says what `dev trust` works on.
fn project_here() -> Result<Project> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Project::discover(&cwd)?.ok_or_else(|| {
        no_project(
            &cwd,
            "run `dev trust` in a project (a directory with a dev.toml or a devcontainer.json)",
        )
    })
}

/// `dev trust`: trusts what the project's dev.toml runs and exposes now; `--show` prints it
/// and whether it is trusted, and changes nothing.
pub fn run(show: bool) -> Result<()> {
    let project = project_here()?;
    let parts = Parts::of_project(&project);
    let path = project.trust_path()?;
    let store = TrustStore::open()?;
    let shown = printable(&path.display().to_string());
    if show {
        return print_standing(&project, &path, &parts, &store);
    }
    store.trust(&path, &parts)?;
    if parts.is_empty() {
        crate::ui::note(format_args!(
            "trusted `{shown}` (it runs nothing and exposes nothing now)"
        ));
    } else {
        crate::ui::note(format_args!(
            "trusted `{shown}`; a change to what it runs or exposes asks again"
        ));
    }
    Ok(())
}

fn print_standing(project: &Project, path: &Path, parts: &Parts, store: &TrustStore) -> Result<()> {
    let shown = printable(&path.display().to_string());
    if parts.is_empty() {
        crate::ui::out(format_args!(
            "{shown}: needs no trust: it runs nothing and exposes nothing beyond the project"
        ));
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
    crate::ui::out(format_args!("{shown}: {state}"));
    let before = match &standing {
        Standing::Changed(b) => Some(b),
        _ => None,
    };
    for line in describe(parts, before) {
        crate::ui::out(format_args!("{line}"));
    }
    Ok(())
}

/// `dev untrust`: forgets the trust in the project's dev.toml.
pub fn untrust() -> Result<()> {
    let project = project_here()?;
    let path: PathBuf = project.trust_path()?;
    let shown = printable(&path.display().to_string());
    if TrustStore::open()?.untrust(&path)? {
        crate::ui::note(format_args!(
            "untrusted `{shown}`: dev asks again before it runs anything of it"
        ));
    } else {
        crate::ui::note(format_args!("`{shown}` was not trusted"));
    }
    Ok(())
}
