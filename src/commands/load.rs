//! `dev load -i FILE`: the images of an image archive (`dev save`, `podman save`, `docker save`)
//! into the store, every digest checked and every layer unpacked as a pull unpacks it.

use std::path::Path;

use anyhow::Result;

use crate::export::load::load;
use crate::ids::Identity;
use crate::store::Store;

pub fn run(input: &Path) -> Result<()> {
    let store = Store::open()?;
    let identity = Identity::detect();
    crate::pull::notice_flat(&store, &identity);
    for loaded in load(&store, &identity, input)? {
        for name in &loaded.names {
            crate::ui::note(format_args!(
                "{name}: loaded {} ({} layers)",
                loaded.record.manifest_digest,
                loaded.record.layers.len()
            ));
            crate::ui::out(format_args!("Loaded image: {name}"));
        }
    }
    Ok(())
}
