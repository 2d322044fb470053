//! A layer of the store as a blob of an image: its tree read beneath a directory fd, no
//! symlink followed (`unpack::pack`), written as a deterministic tar (sorted entries, mtimes
//! clamped to the build's time, no atime or ctime, whiteouts as `.wh.NAME`, opaque
//! directories as `.wh..wh..opq`) with owners as the image sees them, gzip-compressed with
//! fixed settings. With a subordinate range the tree is packed inside the user namespace, so
//! the subordinate ids read back as 0..65535; without one every owner is root (the store kept
//! no others). It never touches a base layer's blob: those keep their registry's bytes.

use std::fs::File;
use std::io;

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

use crate::ids::Identity;
use crate::oci::{Digest, MediaType};
use crate::store::images::LayerRecord;
use crate::store::layers::pack_into;
use crate::store::{inside, sync_dir, Store};
use crate::unpack::pack::PackOptions;

/// What a store without a subordinate range loses in an exported layer, in one line.
pub const FLAT_LOSS: &str = "note: without a subordinate id range every file of the exported layers is owned by root; owners the packages set (e.g. `_apt`) are lost";

/// Packs the store's layer `diff_id` as a gzip layer blob in `blobs-v1/sha256/`, with every
/// mtime clamped to `clamp`; returns its record (the blob's digest and size, and the diff id
/// of the tar, which differs from the store's own key when times were kept).
pub fn export_layer(
    store: &Store,
    identity: &Identity,
    diff_id: &Digest,
    clamp: u64,
) -> Result<LayerRecord> {
    let mapping = identity.store_key();
    let tree = store.layer_path(&mapping, diff_id).join("root");
    if store.layer_meta(&mapping, diff_id).is_none() {
        bail!(
            "layer {} is not in the store; run `dev shell` once to build it",
            diff_id.short()
        );
    }
    let tmp = store.root().join("blobs-v1/tmp").join(format!(
        "export-{}-{}.tar.gz",
        std::process::id(),
        diff_id.short()
    ));
    let _ = std::fs::remove_file(&tmp);
    let opts = PackOptions {
        mtime_clamp: Some(clamp),
        owner: (!identity.has_subordinate()).then_some((0, 0)),
        gzip: true,
    };
    let packed = if identity.has_subordinate() {
        let op = inside::Op::Pack {
            tree,
            out: Some(tmp.clone()),
            opts,
            out_owner: Some((identity.uid, identity.gid)),
        };
        inside::run(identity, &op).and_then(|reply| match reply {
            inside::Reply::Packed { digest, .. } => Ok(digest),
            other => bail!("internal error: the helper answered {other:?} to a pack"),
        })
    } else {
        pack_into(&tree, Some(&tmp), opts, None).map(|(d, _)| d)
    };
    let tar_digest = match packed {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let (digest, size) = hash_file(&tmp)?;
    let to = store.blob_path(&digest);
    std::fs::rename(&tmp, &to)
        .with_context(|| format!("cannot move `{}` into the store", tmp.display()))?;
    sync_dir(to.parent().unwrap_or(store.root()));
    Ok(LayerRecord {
        digest,
        diff_id: tar_digest,
        size,
        media_type: MediaType::OCI_LAYER_GZIP.to_string(),
        source: None,
    })
}

fn hash_file(path: &std::path::Path) -> Result<(Digest, u64)> {
    let mut f = File::open(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut h = Sha256::new();
    let n =
        io::copy(&mut f, &mut h).with_context(|| format!("cannot read `{}`", path.display()))?;
    Ok((Digest::from_hasher(h), n))
}
