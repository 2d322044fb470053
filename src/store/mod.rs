//! The on-disk store under `$XDG_DATA_HOME/dev` (mode 0700). Every write goes to a temporary
//! name (random, created `O_EXCL|O_NOFOLLOW`: see `atomic`), is fsynced and renamed into place,
//! so a killed `dev` leaves nothing half-written visible.
//!
//! ```text
//! $XDG_DATA_HOME/dev/
//! ├── CACHEDIR.TAG
//! ├── store.lock                        shared by pulls, exclusive for prune
//! ├── blobs-v1/
//! │   ├── sha256/<hex>                  verified blobs: manifests, configs, packed layers (the
//! │   │                                 layers dev made: `dev build`, `dev commit`, `dev load`)
//! │   └── tmp/<hex>.partial             layer downloads, until unpacked (never synced: a torn
//! │                                     one fails to verify and is fetched again);
//! │                                     <hex>.<pid>.gone once unpacked, for `dev __settle` to delete
//! ├── layers-v1/<mapping>/              one tree per id mapping: owners on disk depend on it
//! │   ├── <diff-id hex>/root/           an unpacked layer, shared by every image that has it
//! │   ├── <diff-id hex>/meta.json       its file count and size; while its files may still be
//! │   │                                 only in the page cache, the `cache_epoch` they were
//! │   │                                 written in (not complete in any other: a crash lost them)
//! │   └── tmp/<hex>.<pid>               an unpack in progress
//! ├── images-v1/<sha256(name)>.json     one record per image name: manifest, config, layers
//! ├── envs-v1/<mapping>/                one env per project (and mapping)
//! │   ├── <name>-<sha256(path)>/        upper/ work/ merged/ (or rootfs/ for the copy backend),
//! │   │                                 home/, env.json (project, image), lock (held by a session)
//! │   └── tmp/                          `--rm` envs in use, and envs set aside for prune
//! ├── tools-v1/<mapping>/<key>.json     which layer a tools key was built into, and the versions
//! ├── volumes-v1/<mapping>/<name>/      a named volume: data/ (what envs mount), envs/<env> (one
//! │                                     empty file per env that mounted it); kept by `dev reset`
//! │                                     and by prune (but `--volumes`: those no env uses)
//! ├── overlay-v1.json                   which overlay backend works here (per kernel)
//! └── locks/<hex>.lock                  one per layer being fetched
//! ```

pub mod commit;
pub mod envs;
pub mod gc;
pub mod images;
pub mod inside;
pub mod layers;
pub mod stack;
pub mod tools;
pub mod volumes;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::oci::Digest;

pub struct Store {
    root: PathBuf,
}

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by dev.\n# For information about cache directory tags, see https://bford.info/cachedir/\n";

impl Store {
    /// The user's store: `$XDG_DATA_HOME/dev`.
    pub fn open() -> Result<Self> {
        let base = dirs::data_dir()
            .context("cannot find the data directory; set $XDG_DATA_HOME or $HOME")?;
        Self::open_at(base.join("dev"))
    }

    /// Where the store is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn open_at(root: PathBuf) -> Result<Self> {
        let store = Store { root };
        // The tag is written last: with it, the directories below exist (one stat per start
        // instead of six mkdirs).
        if store.root.join("CACHEDIR.TAG").is_file() {
            return Ok(store);
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&store.root)
            .with_context(|| format!("cannot create the store at `{}`", store.root.display()))?;
        for dir in [
            "blobs-v1/sha256",
            "blobs-v1/tmp",
            "layers-v1",
            "images-v1",
            "locks",
        ] {
            let p = store.root.join(dir);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .with_context(|| format!("cannot create `{}`", p.display()))?;
        }
        let tag = store.root.join("CACHEDIR.TAG");
        if !tag.exists() {
            // A hint for backup tools, written again if a power cut loses it: not flushed.
            crate::atomic::write(
                &tag,
                CACHEDIR_TAG.as_bytes(),
                0o644,
                crate::atomic::Durability::Volatile,
            )
            .with_context(|| format!("cannot write `{}`", tag.display()))?;
        }
        Ok(store)
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs-v1/sha256").join(d.hex())
    }

    pub fn partial_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs-v1/tmp")
            .join(format!("{}.partial", d.hex()))
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        fs::read(&p).with_context(|| {
            format!("cannot read blob `{d}` from the store; `dev pull` the image again")
        })
    }

    /// Sets a download whose layer is unpacked aside for [`Store::remove_set_aside`]: renamed
    /// `<hex>.<pid>.gone` beside it (deleting it frees its pages for ~15 ms: not on the pull's
    /// path). Deleted now if it cannot be renamed. Where it is now, if anywhere.
    pub fn set_aside(&self, download: &Path) -> Option<PathBuf> {
        let gone = download.with_extension(format!("{}.{SET_ASIDE}", std::process::id()));
        match fs::rename(download, &gone) {
            Ok(()) => Some(gone),
            Err(_) => {
                let _ = fs::remove_file(download);
                None
            }
        }
    }

    /// Deletes the downloads pulls set aside (`blobs-v1/tmp/*.gone`), what is left of them.
    pub fn remove_set_aside(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("blobs-v1/tmp")) else {
            return;
        };
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == SET_ASIDE) {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Stores a verified blob, flushed to the disk before it returns.
    pub fn write_blob(&self, d: &Digest, bytes: &[u8]) -> Result<()> {
        self.write_blob_with(d, bytes, crate::atomic::Durability::Durable)
    }

    /// Stores a verified blob; `Volatile` leaves its flush to a later `syncfs` (a pull's
    /// documents: `dev __settle` flushes them with its layers).
    pub fn write_blob_with(
        &self,
        d: &Digest,
        bytes: &[u8],
        durability: crate::atomic::Durability,
    ) -> Result<()> {
        anyhow::ensure!(
            &Digest::of_bytes(bytes) == d,
            "internal error: blob does not match {d}"
        );
        let path = self.blob_path(d);
        crate::atomic::write(&path, bytes, 0o644, durability)
            .with_context(|| format!("cannot write `{}`", path.display()))
    }

    pub fn layers_dir(&self, mapping: &str) -> PathBuf {
        self.root.join("layers-v1").join(mapping)
    }

    /// Held (shared) by every pull and (exclusive) by prune, so prune never deletes work in progress.
    pub fn lock_store(&self, exclusive: bool) -> Result<Flock<File>> {
        self.lock_file(&self.root.join("store.lock"), exclusive)
    }

    /// Serializes work on one layer across processes.
    pub fn lock_layer(&self, diff_id: &Digest) -> Result<Flock<File>> {
        self.lock_file(
            &self
                .root
                .join("locks")
                .join(format!("{}.lock", diff_id.hex())),
            true,
        )
    }

    pub(super) fn lock_file(&self, path: &Path, exclusive: bool) -> Result<Flock<File>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open lock `{}`", path.display()))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(file, arg)
            .map_err(|(_, e)| anyhow::anyhow!("cannot lock `{}`: {e}", path.display()))
    }
}

/// The extension of a download set aside for deletion (see [`Store::set_aside`]).
const SET_ASIDE: &str = "gone";

/// Replaces `path` whole (temp file created `O_EXCL|O_NOFOLLOW` with a random name, fsync,
/// rename): the store's name for [`crate::atomic::write`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::atomic::write(path, bytes, 0o644, crate::atomic::Durability::Durable)
        .with_context(|| format!("cannot write `{}`", path.display()))
}

/// Flushes the whole file system that holds `dir` to the disk.
pub fn syncfs(dir: &Path) -> Result<()> {
    let d = File::open(dir).with_context(|| format!("cannot open `{}`", dir.display()))?;
    rustix::fs::syncfs(&d)
        .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
        .with_context(|| {
            format!(
                "cannot flush the file system of `{}` to disk",
                dir.display()
            )
        })
}

/// What survives exactly as long as the page cache of `dir`'s file system: this boot and this
/// mount of it (a disk shut down and mounted again, or a reboot, gives another). A write made
/// under one epoch and found under another was lost if it was never synced. `None` where the
/// kernel cannot tell a mount apart (before Linux 6.8, mount ids are reused): then every
/// record is synced before it is written.
pub fn cache_epoch(dir: &Path) -> Option<String> {
    use std::sync::OnceLock;
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    // Never reused, unlike STATX_MNT_ID (rustix does not name it yet).
    const STATX_MNT_ID_UNIQUE: u32 = 0x4000;
    let boot = BOOT
        .get_or_init(|| {
            fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|b| b.trim().to_string())
                .filter(|b| !b.is_empty())
        })
        .as_ref()?;
    let st = rustix::fs::statx(
        rustix::fs::CWD,
        dir,
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE),
    )
    .ok()?;
    (st.stx_mask & STATX_MNT_ID_UNIQUE != 0).then(|| format!("{boot}/{}", st.stx_mnt_id))
}

pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
