//! Unpacked layers: one tree per (id mapping, diff id), made visible by a single rename once
//! the content digest is verified, and removed through the user namespace when their files
//! belong to subordinate ids.
//!
//! Durability: an unpacked layer is recorded at once with the `cache_epoch` it was written in
//! (its files may still be only in the page cache) and the pull flushes the file system once,
//! after all its layers are in place (`settle`), clearing the mark. A layer found marked under
//! another epoch (a power cut, a disk shut down) is not complete: it is fetched again. Not
//! re-verified instead: its diff id is of the original tar, which a tree cannot be packed back
//! into, and a per-file hash in meta.json would cost a second hash of every byte of every pull
//! for a case that needs the window of seconds between an unpack and the flush.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::FileType;
use serde::{Deserialize, Serialize};

use super::images::ImageRecord;
use super::inside;
use super::{cache_epoch, sync_dir, syncfs, write_atomic, Store};
use crate::beneath::{self, Tree};
use crate::ids::Identity;
use crate::oci::Digest;
use crate::registry::{Follow, Landing, News};
use crate::unpack::pack::PackOptions;
use crate::unpack::{self, LayerStats, UnpackOptions};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerMeta {
    pub diff_id: Digest,
    pub stats: LayerStats,
    /// The `cache_epoch` the layer's files were written in, until they are flushed to disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsynced: Option<String>,
}

impl Store {
    pub fn layer_path(&self, mapping: &str, diff_id: &Digest) -> PathBuf {
        self.layers_dir(mapping).join(diff_id.hex())
    }

    /// The layer's metadata if it is complete in this mapping: recorded, and either flushed to
    /// disk or written in this boot and mount of the store's file system.
    pub fn layer_meta(&self, mapping: &str, diff_id: &Digest) -> Option<LayerMeta> {
        let bytes = fs::read(self.layer_path(mapping, diff_id).join("meta.json")).ok()?;
        let meta: LayerMeta = serde_json::from_slice(&bytes).ok()?;
        match &meta.unsynced {
            Some(epoch) if cache_epoch(&self.layers_dir(mapping)).as_ref() != Some(epoch) => None,
            _ => Some(meta),
        }
    }

    /// Makes these layers durable: one `syncfs` of the store's file system for all of them,
    /// then their unsynced marks cleared. Called once a pull's layers are all in place, so the
    /// flush overlaps nothing the pull still has to write.
    pub fn settle(&self, identity: &Identity, diff_ids: &[Digest]) -> Result<()> {
        let dir = self.layers_dir(&identity.store_key());
        // The epoch the flush is for: a mark of another (the file system shut down and mounted
        // again meanwhile) is never cleared, its layer's files may be torn.
        let Some(epoch) = cache_epoch(&dir) else {
            return Ok(());
        };
        let pending = self.unsettled(identity, diff_ids);
        if pending.is_empty() {
            return Ok(());
        }
        syncfs(&dir)?;
        if cache_epoch(&dir).as_ref() != Some(&epoch) {
            bail!(
                "the store's file system at `{}` was mounted again during its flush",
                dir.display()
            );
        }
        if identity.has_subordinate() {
            let op = inside::Op::Settle {
                layers_dir: dir,
                diff_ids: pending,
                epoch,
            };
            inside::run(identity, &op).map(drop)
        } else {
            mark_synced(&dir, &pending, &epoch)
        }
    }

    /// Those of these layers complete in `identity`'s mapping but not yet flushed to disk.
    pub fn unsettled(&self, identity: &Identity, diff_ids: &[Digest]) -> Vec<Digest> {
        let mapping = identity.store_key();
        diff_ids
            .iter()
            .filter(|d| {
                self.layer_meta(&mapping, d)
                    .is_some_and(|m| m.unsynced.is_some())
            })
            .cloned()
            .collect()
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
        self.unpack_blob(identity, Blob::File(blob), diff_id)
    }

    /// Like [`Store::unpack_layer`], from a file or from a stream (a download as it lands).
    /// Either way nothing is made visible unless the uncompressed content hashes to `diff_id`.
    pub fn unpack_blob(
        &self,
        identity: &Identity,
        blob: Blob<'_>,
        diff_id: &Digest,
    ) -> Result<LayerStats> {
        let dir = self.layers_dir(&identity.store_key());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("tmp"))
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        let epoch = cache_epoch(&dir);
        if identity.has_subordinate() {
            // A download's unpack is fed the news of it; the helper reads the file.
            let (path, streamed, mut news) = match blob {
                Blob::File(p) => (p, None, None),
                Blob::Landing {
                    path,
                    landing,
                    size,
                } => (path, Some(size), Some(News::new(landing))),
            };
            let op = inside::Op::Unpack {
                layers_dir: dir,
                blob: path.to_path_buf(),
                streamed,
                diff_id: diff_id.clone(),
                epoch,
            };
            let fed = news.as_mut().map(|i| i as &mut dyn std::io::Read);
            match inside::run_fed(identity, &op, fed)? {
                inside::Reply::Unpacked { stats } => Ok(stats),
                other => bail!("internal error: the helper answered {other:?} to an unpack"),
            }
        } else {
            let input = match blob {
                Blob::File(p) => Input::File(p),
                Blob::Landing {
                    path,
                    landing,
                    size,
                } => Input::Stream {
                    input: Box::new(Follow::new(path.to_path_buf(), landing)),
                    size,
                },
            };
            unpack_into(
                &dir,
                input,
                diff_id,
                UnpackOptions { keep_owners: false },
                epoch,
            )
        }
    }

    /// Captures a build's writable layer (see [`capture_layer`]) as a layer of this mapping.
    pub fn capture(&self, identity: &Identity, upper: &Path) -> Result<(Digest, LayerStats)> {
        let dir = self.layers_dir(&identity.store_key());
        if identity.has_subordinate() {
            let op = inside::Op::Capture {
                upper: upper.to_path_buf(),
                layers_dir: dir,
            };
            match inside::run(identity, &op)? {
                inside::Reply::Captured { diff_id, stats } => Ok((diff_id, stats)),
                other => bail!("internal error: the helper answered {other:?} to a capture"),
            }
        } else {
            capture_layer(upper, &dir)
        }
    }

    /// Packs `tree` (an env's writable layer, or a layer's root) as an uncompressed OCI layer;
    /// returns its digest (also its diff id) and size. With `keep`, the tar is stored as a blob;
    /// without, it is only measured. Runs in the user namespace with a subordinate range, so
    /// every file is readable whoever owns it inside.
    pub fn pack_tree(&self, identity: &Identity, tree: &Path, keep: bool) -> Result<(Digest, u64)> {
        let out = keep.then(|| {
            self.root.join("blobs-v1/tmp").join(format!(
                "pack-{}-{}.tar",
                std::process::id(),
                Digest::of_bytes(tree.as_os_str().as_encoded_bytes()).short()
            ))
        });
        if let Some(o) = &out {
            let _ = fs::remove_file(o);
        }
        let result = if identity.has_subordinate() {
            let op = inside::Op::Pack {
                tree: tree.to_path_buf(),
                out: out.clone(),
                opts: PackOptions::default(),
                out_owner: Some((identity.uid, identity.gid)),
            };
            inside::run(identity, &op).and_then(|reply| match reply {
                inside::Reply::Packed { digest, size } => Ok((digest, size)),
                other => bail!("internal error: the helper answered {other:?} to a pack"),
            })
        } else {
            pack_into(tree, out.as_deref(), PackOptions::default(), None)
        };
        let (digest, size) = match result {
            Ok(r) => r,
            Err(e) => {
                if let Some(o) = &out {
                    let _ = fs::remove_file(o);
                }
                return Err(e);
            }
        };
        if let Some(o) = &out {
            let to = self.blob_path(&digest);
            fs::rename(o, &to)
                .with_context(|| format!("cannot move `{}` into the store", o.display()))?;
            sync_dir(to.parent().unwrap_or(&self.root));
        }
        Ok((digest, size))
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
            let op = inside::Op::Remove {
                paths: paths.to_vec(),
            };
            inside::run(identity, &op).map(drop)
        } else {
            remove_paths(paths)
        }
    }
}

/// Clears the unsynced mark of these layers' meta.json (after their files were flushed).
pub fn mark_synced(layers_dir: &Path, diff_ids: &[Digest], epoch: &str) -> Result<()> {
    for d in diff_ids {
        let p = layers_dir.join(d.hex()).join("meta.json");
        let Ok(bytes) = fs::read(&p) else { continue };
        let Ok(mut meta) = serde_json::from_slice::<LayerMeta>(&bytes) else {
            continue;
        };
        // Only the flush's own epoch: a layer marked under another was not flushed by it.
        if meta.unsynced.as_deref() == Some(epoch) {
            meta.unsynced = None;
            write_atomic(&p, &serde_json::to_vec(&meta)?)?;
        }
    }
    Ok(())
}

pub fn remove_paths(paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        unpack::remove_tree(p).with_context(|| format!("cannot remove `{}`", p.display()))?;
    }
    Ok(())
}

/// Writes `tree` as a layer tar to the new file `out` (or only measures it, without one),
/// then gives the file to `out_owner`.
pub fn pack_into(
    tree: &Path,
    out: Option<&Path>,
    opts: PackOptions,
    out_owner: Option<(u32, u32)>,
) -> Result<(Digest, u64)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(out) = out else {
        return unpack::pack::write_layer_with(tree, std::io::sink(), opts);
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("cannot create `{}`", out.display()))?;
    if let Some((uid, gid)) = out_owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .with_context(|| format!("cannot hand `{}` to its user", out.display()))?;
    }
    let mut w = std::io::BufWriter::new(file);
    let result = if opts.gzip {
        let mut z = unpack::pack::gzip(&mut w);
        let r = unpack::pack::write_layer_with(tree, &mut z, opts)?;
        z.try_finish()
            .with_context(|| format!("cannot write `{}`", out.display()))?;
        r
    } else {
        unpack::pack::write_layer_with(tree, &mut w, opts)?
    };
    w.flush()
        .and_then(|()| w.get_ref().sync_all())
        .with_context(|| format!("cannot write `{}`", out.display()))?;
    Ok(result)
}

/// Where a layer's compressed bytes come from, for [`Store::unpack_blob`].
pub enum Blob<'a> {
    /// A file holding all of them.
    File(&'a Path),
    /// The file at `path` as a download writes it, `landing` telling how far (`size` bytes in
    /// all). The unpack reads the file itself, in the helper too: the bytes cross no pipe.
    Landing {
        path: &'a Path,
        landing: &'a Landing,
        size: u64,
    },
}

/// What [`unpack_into`] reads, in the process that unpacks.
pub enum Input<'a> {
    /// A file holding the whole blob.
    File(&'a Path),
    /// `size` bytes read from `input` as they arrive (a download followed: `registry::Follow`
    /// in `dev`, `registry::Landed` in the helper).
    Stream {
        input: Box<dyn std::io::Read + Send + 'a>,
        size: u64,
    },
}

/// The unpack itself: staging dir → unpack → verify → meta.json → rename into place.
/// Runs in the helper process (as root inside the user namespace) or in `dev` itself. With
/// an `epoch` the layer is recorded unsynced (see `Store::settle`); without, it is flushed
/// to disk before it is recorded.
pub fn unpack_into(
    layers_dir: &Path,
    input: Input<'_>,
    diff_id: &Digest,
    opts: UnpackOptions,
    epoch: Option<String>,
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
        let root = staging.join("root");
        let stats = match input {
            Input::File(path) => unpack::unpack_layer(path, diff_id, &root, opts),
            Input::Stream { input, size } => {
                unpack::unpack_layer_from(input, size, diff_id, &root, opts)
            }
        }
        .map_err(|e| anyhow!("layer {diff_id}: {e}"))?;
        if epoch.is_none() {
            syncfs(&staging)?;
        }
        let synced = epoch.is_none();
        let meta = LayerMeta {
            diff_id: diff_id.clone(),
            stats: stats.clone(),
            unsynced: epoch,
        };
        let meta_path = staging.join("meta.json");
        let meta_json = serde_json::to_vec(&meta)?;
        if synced {
            write_atomic(&meta_path, &meta_json)?;
        } else {
            // Marked unsynced, the layer needs nothing flushed now: a meta.json lost to a power
            // cut is a layer not found, fetched again, as one found under another epoch is.
            crate::atomic::write(
                &meta_path,
                &meta_json,
                0o644,
                crate::atomic::Durability::Volatile,
            )
            .with_context(|| format!("cannot write `{}`", meta_path.display()))?;
        }
        // The caller found no readable meta.json: a tree here is damaged, so it is replaced.
        if final_dir.exists() {
            unpack::remove_tree(&final_dir)
                .with_context(|| format!("cannot replace `{}`", final_dir.display()))?;
        }
        fs::rename(&staging, &final_dir)
            .with_context(|| format!("cannot move layer into `{}`", final_dir.display()))?;
        if synced {
            sync_dir(layers_dir);
        }
        Ok(stats)
    })();
    if result.is_err() {
        let _ = unpack::remove_tree(&staging);
    }
    result
}

/// Files a package install leaves that differ from run to run (logs, backups, caches): not
/// part of a tools layer, so two builds of the same packages have the same digest.
const VOLATILE: &[&str] = &[
    ".dev-tools-resolved",
    ".dev-tools-missing-pin",
    "var/log",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/ldconfig/aux-cache",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/statoverride-old",
];

/// Turns a build's writable layer into a store layer: drops volatile files and overlay's own
/// bookkeeping xattrs, computes its diff id, and moves it to `layers_dir/<hex>/root`.
/// Runs where the tree's owners can be changed (the helper, with a subordinate range).
pub fn capture_layer(upper: &Path, layers_dir: &Path) -> Result<(Digest, LayerStats)> {
    // The build shaped this tree (`rm -rf /var && ln -s /host/dir /var` is one command away):
    // every path in it is resolved beneath its fd, no symlink followed.
    let tree = Tree::open(upper).with_context(|| format!("cannot open `{}`", upper.display()))?;
    for v in VOLATILE {
        let rel = Path::new(v);
        match tree.lstat(rel) {
            Ok(Some(st)) if beneath::file_type(&st) == FileType::Directory => {
                // Keep the directory (it may be opaque or hold a whiteout that matters); drop
                // what is in it but whiteouts.
                let Ok(names) = tree.names(rel) else { continue };
                for name in names {
                    let child = rel.join(&name);
                    if !tree
                        .lstat(&child)
                        .ok()
                        .flatten()
                        .is_some_and(|st| beneath::is_whiteout(&st))
                    {
                        let _ = tree.remove(&child);
                    }
                }
            }
            Ok(Some(_)) => {
                let _ = tree.remove(rel);
            }
            _ => {}
        }
    }
    let stats = strip_overlay_xattrs(upper)?;
    let diff_id = unpack::pack::layer_digest(upper)?;
    let final_dir = layers_dir.join(diff_id.hex());
    if final_dir.join("meta.json").exists() {
        unpack::remove_tree(upper)
            .with_context(|| format!("cannot remove `{}`", upper.display()))?;
        return Ok((diff_id, stats));
    }
    let staging = layers_dir
        .join("tmp")
        .join(format!("{}.{}", diff_id.hex(), std::process::id()));
    let _ = unpack::remove_tree(&staging);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&staging)
        .with_context(|| format!("cannot create `{}`", staging.display()))?;
    fs::rename(upper, staging.join("root"))
        .with_context(|| format!("cannot move `{}` into the store", upper.display()))?;
    // A build takes minutes; one flush before the layer is recorded is nothing next to it.
    syncfs(&staging)?;
    let meta = LayerMeta {
        diff_id: diff_id.clone(),
        stats: stats.clone(),
        unsynced: None,
    };
    write_atomic(&staging.join("meta.json"), &serde_json::to_vec(&meta)?)?;
    let _ = unpack::remove_tree(&final_dir);
    fs::rename(&staging, &final_dir)
        .with_context(|| format!("cannot move layer into `{}`", final_dir.display()))?;
    sync_dir(layers_dir);
    Ok((diff_id, stats))
}

/// Removes `user.overlay.*` xattrs but the opaque marker; counts files and bytes. Walks the
/// tree by fds (see `crate::beneath`), never following a symlink it holds.
fn strip_overlay_xattrs(root: &Path) -> Result<LayerStats> {
    let mut stats = LayerStats::default();
    let top = Tree::open(root).with_context(|| format!("cannot open `{}`", root.display()))?;
    strip_overlay_xattrs_in(&top, &mut stats)
        .with_context(|| format!("cannot clean the captured layer `{}`", root.display()))?;
    Ok(stats)
}

fn strip_overlay_xattrs_in(dir: &Tree, stats: &mut LayerStats) -> std::io::Result<()> {
    let strip = |path: &str| {
        let mut names = vec![0u8; 64 << 10];
        let Ok(n) = rustix::fs::listxattr(path, &mut names[..]) else {
            return;
        };
        for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
            if name.starts_with(b"user.overlay.") && name != b"user.overlay.opaque" {
                let _ = rustix::fs::removexattr(path, std::ffi::OsStr::from_bytes(name));
            }
        }
    };
    strip(&format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dir.fd())
    ));
    for name in dir.names(Path::new(""))? {
        let entry = dir.entry(&name)?;
        match entry.file_type() {
            FileType::Symlink => stats.files += 1,
            FileType::Directory => strip_overlay_xattrs_in(&entry.open_dir()?, stats)?,
            FileType::RegularFile => {
                strip(&entry.proc_path());
                stats.files += 1;
                stats.bytes += entry.stat.st_size.max(0) as u64;
            }
            FileType::CharacterDevice => strip(&entry.proc_path()),
            _ => {
                strip(&entry.proc_path());
                stats.files += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_marked_unsynced_under_another_epoch_is_not_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_at(dir.path().join("dev")).expect("store");
        let layers = store.layers_dir("m");
        let epoch = cache_epoch(&store.root).expect("a boot id and a unique mount id (Linux 6.8+)");
        let record = |d: &Digest, unsynced: Option<String>| {
            let p = layers.join(d.hex());
            fs::create_dir_all(p.join("root")).expect("mkdir");
            let meta = LayerMeta {
                diff_id: d.clone(),
                stats: LayerStats::default(),
                unsynced,
            };
            write_atomic(
                &p.join("meta.json"),
                &serde_json::to_vec(&meta).expect("json"),
            )
            .expect("meta");
        };
        let (synced, now, torn) = (
            Digest::of_bytes(b"synced"),
            Digest::of_bytes(b"now"),
            Digest::of_bytes(b"torn"),
        );
        record(&synced, None);
        record(&now, Some(epoch.clone()));
        record(&torn, Some(format!("{epoch}-before-the-power-cut")));
        assert!(store.layer_meta("m", &synced).is_some());
        assert!(
            store.layer_meta("m", &now).is_some(),
            "written in this epoch"
        );
        assert!(store.layer_meta("m", &torn).is_none(), "written in another");
        mark_synced(&layers, &[now.clone(), torn.clone()], &epoch).expect("mark");
        let meta = store.layer_meta("m", &now).expect("complete");
        assert_eq!(meta.unsynced, None);
        // A flush of this epoch says nothing of a layer written in another.
        assert!(store.layer_meta("m", &torn).is_none(), "still torn");
    }
}
