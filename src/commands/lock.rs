//! `dev lock` and `dev update`: resolve dev.toml (image digest, tool versions, tools layer) and
//! write dev.lock; `update` first forgets what it is asked to re-resolve.

use anyhow::{bail, Result};

use crate::config::project::no_project;
use crate::session::{prepare, EnterOptions, Prepared, Update};

pub fn run(frozen: bool) -> Result<()> {
    let env = prepare(
        &EnterOptions {
            frozen,
            ..EnterOptions::default()
        },
        &Update::default(),
    )?;
    report(&env)
}

pub fn update(image: bool, packages: Vec<String>) -> Result<()> {
    let all = !image && packages.is_empty();
    let update = Update {
        image,
        packages,
        all,
    };
    let env = prepare(&EnterOptions::default(), &update)?;
    if let Some(p) = &env.project {
        let known: Vec<&str> = p
            .config
            .tools
            .packages
            .iter()
            .map(|s| crate::config::lock::split_spec(s).0)
            .collect();
        if let Some(unknown) = update
            .packages
            .iter()
            .find(|n| !known.contains(&n.as_str()))
        {
            bail!("`{unknown}` is not in dev.toml's [tools] packages");
        }
    }
    report(&env)
}

fn report(env: &Prepared) -> Result<()> {
    if env.project.is_none() {
        return Err(no_project(&env.cwd, "`dev init` writes one"));
    }
    crate::ui::out(format_args!("{} {}", env.record.name, env.fingerprint()));
    Ok(())
}
