//! Envs by name: the env a command names (`dev stop NAME`), or the current project's.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::config::project::{no_project, Project};
use crate::store::Store;
use crate::ui::UserError;

/// The project of the env `name`, or the current project when `name` is `None`.
pub fn project_of(store: &Store, mapping: &str, name: Option<&str>) -> Result<PathBuf> {
    match name {
        Some(name) => store
            .env_records(mapping)
            .into_iter()
            .find(|(_, r)| r.name.as_deref() == Some(name))
            .map(|(_, r)| r.project)
            .ok_or_else(|| {
                UserError::with_hint(
                    format!("there is no env named `{name}`"),
                    "`dev ps -a` lists the envs",
                )
            }),
        None => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            Project::discover(&cwd)?
                .map(|p| p.root)
                .ok_or_else(|| no_project(&cwd, "name the env: `dev stop NAME`"))
        }
    }
}

/// The env (directory and record) named `name`, or the current project's.
pub fn env_of(
    store: &Store,
    mapping: &str,
    name: Option<&str>,
) -> Result<(PathBuf, crate::store::envs::EnvRecord)> {
    let project = project_of(store, mapping, name)?;
    store
        .env_records(mapping)
        .into_iter()
        .find(|(_, r)| r.project == project)
        .ok_or_else(|| {
            UserError::with_hint(
                format!("`{}` has no env yet", project.display()),
                "`dev shell` there creates it",
            )
        })
}
