//! `dev system df` and `dev system prune`.

use anyhow::Result;

use crate::cli::Format;
use crate::ids::Identity;
use crate::store::gc::EnvPrune;
use crate::store::Store;
use crate::ui::{human_bytes, Table};

pub fn df(format: Format) -> Result<()> {
    let store = Store::open()?;
    let u = store.usage(&Identity::detect())?;
    match format {
        Format::Json => crate::ui::json(&u)?,
        Format::Table => {
            let mut t = Table::new(&["TYPE", ">COUNT", ">SIZE"]);
            let mut row = |name: &str, count: String, bytes: u64| {
                t.row(vec![name.to_string(), count, human_bytes(bytes)]);
            };
            row("Images", u.images.to_string(), u.images_bytes);
            row("Layers", u.layers.to_string(), u.layers_bytes);
            row("  shared", u.shared_layers.to_string(), u.shared_bytes);
            row("  unique", u.unique_layers.to_string(), u.unique_bytes);
            row("  tools", u.tools_layers.to_string(), u.tools_bytes);
            row("  unused", u.unused_layers.to_string(), u.unused_bytes);
            row("Envs", u.envs.to_string(), u.envs_bytes);
            row("Volumes", u.volumes.to_string(), u.volumes_bytes);
            row("Reclaimable", String::new(), u.reclaimable_bytes);
            t.print();
        }
    }
    Ok(())
}

pub fn prune(all_envs: bool, volumes: bool) -> Result<()> {
    let store = Store::open()?;
    let envs = if all_envs {
        EnvPrune::Stopped
    } else {
        EnvPrune::Orphaned
    };
    let identity = Identity::detect();
    let g = store.prune(&identity, true, envs)?;
    for dir in &g.envs {
        crate::ui::note(format_args!("deleted env {}", dir.display()));
    }
    if volumes {
        // As `podman system prune --volumes`: the volumes no env (running or stopped) uses.
        let unused: Vec<_> = store
            .volumes(&identity.store_key())
            .into_iter()
            .filter(|v| v.env_dirs.is_empty())
            .collect();
        store.remove_volumes(
            &identity,
            &unused.iter().map(|v| v.dir.clone()).collect::<Vec<_>>(),
        )?;
        for v in &unused {
            crate::ui::note(format_args!(
                "deleted volume {} ({})",
                v.name,
                human_bytes(v.size_bytes)
            ));
        }
    }
    crate::ui::out(format_args!(
        "Deleted {} env(s), {} layer(s), {} blob(s), {} leftover(s) of interrupted runs; reclaimed {}",
        g.envs.len(),
        g.layers.len(),
        g.blobs.len(),
        g.leftovers.len(),
        human_bytes(g.bytes)
    ));
    Ok(())
}
