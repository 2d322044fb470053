//! `dev volume ls` and `dev volume rm`: the named volumes envs mount (`[[mounts]] volume = …`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;

use crate::cli::Format;
use crate::config::mounts::check_volume_name;
use crate::ids::Identity;
use crate::store::envs::EnvRecord;
use crate::store::Store;
use crate::ui::{human_bytes, Table, UserError};

#[derive(serde::Serialize)]
struct Row {
    name: String,
    size_bytes: u64,
    /// The envs (by name) that mount it.
    envs: Vec<String>,
}

/// The envs of this mapping by their directory.
fn records(store: &Store, mapping: &str) -> BTreeMap<PathBuf, EnvRecord> {
    store.env_records(mapping).into_iter().collect()
}

fn env_name(records: &BTreeMap<PathBuf, EnvRecord>, dir: &PathBuf) -> String {
    records
        .get(dir)
        .and_then(|r| r.name.clone())
        .unwrap_or_else(|| {
            dir.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        })
}

pub fn ls(format: Format) -> Result<()> {
    let store = Store::open()?;
    let mapping = Identity::detect().store_key();
    let records = records(&store, &mapping);
    let rows: Vec<Row> = store
        .volumes(&mapping)
        .into_iter()
        .map(|v| Row {
            envs: v.env_dirs.iter().map(|d| env_name(&records, d)).collect(),
            name: v.name,
            size_bytes: v.size_bytes,
        })
        .collect();
    if format == Format::Json {
        return crate::ui::json(&rows);
    }
    let mut t = Table::new(&["NAME", ">SIZE", "ENVS"]);
    for r in rows {
        t.row(vec![r.name, human_bytes(r.size_bytes), r.envs.join(",")]);
    }
    t.print();
    Ok(())
}

pub fn rm(names: &[String], force: bool) -> Result<()> {
    let store = Store::open()?;
    let identity = Identity::detect();
    let mapping = identity.store_key();
    let records = records(&store, &mapping);
    let volumes = store.volumes(&mapping);
    let mut doomed = Vec::new();
    for name in names {
        check_volume_name(name)
            .map_err(|e| UserError::with_hint(e, "`dev volume ls` lists the volumes"))?;
        let Some(v) = volumes.iter().find(|v| &v.name == name) else {
            return Err(UserError::with_hint(
                format!("there is no volume `{name}`"),
                "`dev volume ls` lists the volumes",
            ));
        };
        let running: Vec<String> = v
            .env_dirs
            .iter()
            .filter(|d| {
                records.get(*d).is_some_and(|r| {
                    store
                        .running(&store.run_dir(&mapping, &r.project))
                        .is_some()
                })
            })
            .map(|d| env_name(&records, d))
            .collect();
        if !running.is_empty() && !force {
            return Err(UserError::with_hint(
                format!(
                    "the volume `{name}` is mounted by the running env(s) {}",
                    running.join(", ")
                ),
                format!(
                    "stop them first (`dev stop {}`), or use `--force`",
                    running[0]
                ),
            ));
        }
        doomed.push(v);
    }
    store.remove_volumes(
        &identity,
        &doomed.iter().map(|v| v.dir.clone()).collect::<Vec<_>>(),
    )?;
    for v in doomed {
        crate::ui::note(format_args!(
            "removed volume {} ({})",
            v.name,
            human_bytes(v.size_bytes)
        ));
    }
    Ok(())
}
