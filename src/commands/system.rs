//! `dev system df` and `dev system prune`.

use anyhow::Result;

use crate::cli::Format;
use crate::sandbox::Identity;
use crate::store::gc::EnvPrune;
use crate::store::Store;
use crate::ui::human_bytes;

pub fn df(format: Format) -> Result<()> {
    let store = Store::open()?;
    let u = store.usage(&Identity::detect())?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&u)?),
        Format::Table => {
            println!("{:<14} {:>6} {:>10}", "TYPE", "COUNT", "SIZE");
            println!(
                "{:<14} {:>6} {:>10}",
                "Images",
                u.images,
                human_bytes(u.images_bytes)
            );
            println!(
                "{:<14} {:>6} {:>10}",
                "Layers",
                u.layers,
                human_bytes(u.layers_bytes)
            );
            println!(
                "{:<14} {:>6} {:>10}",
                "  shared",
                u.shared_layers,
                human_bytes(u.shared_bytes)
            );
            println!(
                "{:<14} {:>6} {:>10}",
                "  unique",
                u.unique_layers,
                human_bytes(u.unique_bytes)
            );
            println!(
                "{:<14} {:>6} {:>10}",
                "Envs",
                u.envs,
                human_bytes(u.envs_bytes)
            );
            println!(
                "{:<14} {:>6} {:>10}",
                "Reclaimable",
                "",
                human_bytes(u.reclaimable_bytes)
            );
        }
    }
    Ok(())
}

pub fn prune(all_envs: bool) -> Result<()> {
    let store = Store::open()?;
    let envs = if all_envs {
        EnvPrune::Stopped
    } else {
        EnvPrune::Orphaned
    };
    let g = store.prune(&Identity::detect(), true, envs)?;
    for dir in &g.envs {
        eprintln!("deleted env {}", dir.display());
    }
    println!(
        "Deleted {} env(s), {} layer(s), {} blob(s), {} leftover(s) of interrupted runs; reclaimed {}",
        g.envs.len(),
        g.layers.len(),
        g.blobs.len(),
        g.leftovers.len(),
        human_bytes(g.bytes)
    );
    Ok(())
}
