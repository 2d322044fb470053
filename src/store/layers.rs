//! Unpacked layers: one tree per (id mapping, diff id), made visible by a single rename once
//! the content digest is verified, and removed through the user namespace when their files
//! belong to subordinate ids.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use super::images::ImageRecord;
use super::{sync_dir, write_atomic, Store};
use crate::oci::Digest;
use crate::sandbox::spawn::{run_helper, Identity};
use crate::unpack::{self, LayerStats, UnpackOptions};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerMeta {
    pub diff_id: Digest,
    pub stats: LayerStats,
}

impl Store {
    pub fn layer_path(&self, mapping: &str, diff_id: &Digest) -> PathBuf {
        self.layers_dir(mapping).join(diff_id.hex())
    }

    /// The layer's metadata if it is complete in this mapping.
    pub fn layer_meta(&self, mapping: &str, diff_id: &Digest) -> Option<LayerMeta> {
        let bytes = fs::read(self.layer_path(mapping, diff_id).join("meta.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Bytes of file content an image's layers hold in this mapping (the compressed size for a
    /// layer not unpacked here).
    pub fn image_bytes(&self, mapping: &str, img: &ImageRecord) -> u64 {
        img.layers
            .iter()
            .map(|l| {
                self.layer_meta(mapping, &l.diff_id)
                    .map_or(l.size, |m| m.stats.bytes)
            })
            .sum()
    }

    /// Unpacks a verified blob as layer `diff_id` for `identity`'s mapping: inside the user
    /// namespace (owners kept) with a subordinate range, in this process (owners flattened) without.
    pub fn unpack_layer(
        &self,
        identity: &Identity,
        blob: &Path,
        diff_id: &Digest,
    ) -> Result<LayerStats> {
        let dir = self.layers_dir(&identity.store_key());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("tmp"))
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        if identity.has_subordinate() {
            let args: Vec<OsString> = vec![
                "unpack".into(),
                dir.into_os_string(),
                blob.as_os_str().to_owned(),
                diff_id.to_string().into(),
            ];
            let out = run_helper(identity, &args)?;
            serde_json::from_slice(&out).context("the unpack helper gave no result")
        } else {
            unpack_into(&dir, blob, diff_id, UnpackOptions { keep_owners: false })
        }
    }

    /// Removes layer trees (or staging leftovers) under this store.
    pub fn remove_trees(&self, identity: &Identity, paths: &[PathBuf]) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        for p in paths {
            anyhow::ensure!(
                p.starts_with(&self.root),
                "internal error: `{}` is not in the store",
                p.display()
            );
        }
        if identity.has_subordinate() {
            let mut args: Vec<OsString> = vec!["remove".into()];
            args.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
            run_helper(identity, &args)?;
            Ok(())
        } else {
            remove_paths(paths)
        }
    }
}

pub fn remove_paths(paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        unpack::remove_tree(p).with_context(|| format!("cannot remove `{}`", p.display()))?;
    }
    Ok(())
}

/// The unpack itself: staging dir → unpack → verify → meta.json → rename into place.
/// Runs in the helper process (as root inside the user namespace) or in `dev` itself.
pub fn unpack_into(
    layers_dir: &Path,
    blob: &Path,
    diff_id: &Digest,
    opts: UnpackOptions,
) -> Result<LayerStats> {
    let final_dir = layers_dir.join(diff_id.hex());
    let staging = layers_dir
        .join("tmp")
        .join(format!("{}.{}", diff_id.hex(), std::process::id()));
    let _ = unpack::remove_tree(&staging);
    let result = (|| -> Result<LayerStats> {
        fs::DirBuilder::new().mode(0o755).create(&staging)?;
        fs::DirBuilder::new()
            .mode(0o755)
            .create(staging.join("root"))?;
        let stats = unpack::unpack_layer(blob, diff_id, &staging.join("root"), opts)
            .map_err(|e| anyhow!("layer {diff_id}: {e}"))?;
        let meta = LayerMeta {
            diff_id: diff_id.clone(),
            stats: stats.clone(),
        };
        write_atomic(&staging.join("meta.json"), &serde_json::to_vec(&meta)?)?;
        // The caller found no readable meta.json: a tree here is damaged, so it is replaced.
        if final_dir.exists() {
            unpack::remove_tree(&final_dir)
                .with_context(|| format!("cannot replace `{}`", final_dir.display()))?;
        }
        fs::rename(&staging, &final_dir)
            .with_context(|| format!("cannot move layer into `{}`", final_dir.display()))?;
        sync_dir(layers_dir);
        Ok(stats)
    })();
    if result.is_err() {
        let _ = unpack::remove_tree(&staging);
    }
    result
}
