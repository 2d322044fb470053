//! `dev inspect REF`: an image's record, manifest and config as JSON.

use anyhow::{Context, Result};

use crate::store::Store;
use crate::ui::UserError;

pub fn run(reference: &str) -> Result<()> {
    let store = Store::open()?;
    let Some(img) = store.find_image(reference)? else {
        return Err(UserError::with_hint(
            format!("no image `{reference}` in the store"),
            format!("pull it first with `dev pull {reference}`"),
        ));
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&img.manifest_digest)?)
            .context("stored manifest is corrupt")?;
    let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&img.config_digest)?)
        .context("stored config is corrupt")?;
    let out = serde_json::json!({
        "Name": img.name,
        "Digest": img.manifest_digest,
        "IndexDigest": img.index_digest,
        "ConfigDigest": img.config_digest,
        "Platform": img.platform,
        "Created": img.created,
        "Layers": img.layers,
        "Manifest": manifest,
        "Config": config,
    });
    crate::ui::json(&out)?;
    Ok(())
}
