//! Streaming layer unpack: decompress (gzip, zstd or plain) → diff-id digest → tar entries into a
//! staging directory, with whiteouts translated to the overlay format. `unpack` never makes a byte
//! visible: the caller renames the staging directory into place only after `unpack_layer` returned
//! the verified digest.

pub mod pack;
mod path;
pub mod whiteout;

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use sha2::{Digest as _, Sha256};

use crate::beneath::{self, Tree};
use crate::oci::manifest::Compression;
use crate::oci::Digest;
use path::{normalize, SafeDirs};

/// Below this, a layer is never called a bomb.
pub const MIN_SIZE_LIMIT: u64 = 1 << 30;
/// Above `MIN_SIZE_LIMIT`, a layer may expand at most this many times its compressed size.
pub const MAX_RATIO: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("entry `{entry}` points outside the layer")]
    Escape { entry: String },
    #[error("entry `{entry}` would be written through the symlink `{link}`")]
    ThroughSymlink { entry: String, link: String },
    #[error("entry `{entry}` needs `{parent}` to be a directory, but it is not")]
    NotADirectory { entry: String, parent: String },
    #[error("hard link `{entry}` points to `{target}`, which is not a file in this layer")]
    BadHardlink { entry: String, target: String },
    #[error("whiteout `{entry}` is malformed")]
    BadWhiteout { entry: String },
    #[error("entry `{entry}`: its PAX size ({pax}) disagrees with its header size ({header})")]
    SizeMismatch {
        entry: String,
        pax: u64,
        header: u64,
    },
    #[error("the layer expands past {limit} bytes (from {compressed} compressed); refusing it as a decompression bomb")]
    TooLarge { limit: u64, compressed: u64 },
    #[error("the layer's content digest is {actual}, but the image config says {expected}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error("malformed tar stream: {0}")]
    Tar(io::Error),
    #[error("cannot write `{path}`: {source}")]
    Io { path: String, source: io::Error },
}

impl UnpackError {
    /// Whether it failed because the store's filesystem is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            UnpackError::Io { source, .. } | UnpackError::Tar(source) => matches!(
                source.raw_os_error(),
                Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT)
            ),
            _ => false,
        }
    }

    pub fn io(path: &Path, source: io::Error) -> Self {
        UnpackError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct UnpackOptions {
    /// Keep the owners recorded in the tar (inside a user namespace with a full id map);
    /// otherwise every file belongs to the unpacking user.
    pub keep_owners: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LayerStats {
    pub files: u64,
    /// Bytes of regular-file content.
    pub bytes: u64,
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
}

/// Counts and hashes everything read through it, and refuses to go past a limit.
struct MeasuredReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
}

impl<R: Read> Read for MeasuredReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(LimitExceeded));
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct LimitExceeded;
impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("size limit exceeded")
    }
}
impl std::error::Error for LimitExceeded {}

pub fn size_limit(compressed: u64) -> u64 {
    MIN_SIZE_LIMIT.max(compressed.saturating_mul(MAX_RATIO))
}

/// Unpacks the layer blob at `blob` into `dest` (an empty directory) and checks that the
/// uncompressed stream hashes to `diff_id`.
pub fn unpack_layer(
    blob: &Path,
    diff_id: &Digest,
    dest: &Path,
    opts: UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    let mut file = File::open(blob).map_err(|e| UnpackError::io(blob, e))?;
    let compressed = file.metadata().map_err(|e| UnpackError::io(blob, e))?.len();
    let mut head = [0u8; 4];
    let n = read_full(&mut file, &mut head).map_err(|e| UnpackError::io(blob, e))?;
    let compression = Compression::sniff(&head[..n]);
    let input =
        io::Cursor::new(head[..n].to_vec()).chain(BufReader::with_capacity(256 << 10, file));
    let decoded: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(input).map_err(UnpackError::Tar)?)
        }
        Compression::None => Box::new(input),
    };
    let limit = size_limit(compressed);
    let measured = MeasuredReader {
        inner: decoded,
        hasher: Sha256::new(),
        count: 0,
        limit,
    };
    let mut archive = tar::Archive::new(measured);
    let map_limit = |e: io::Error| {
        if e.get_ref().is_some_and(|i| i.is::<LimitExceeded>()) {
            UnpackError::TooLarge { limit, compressed }
        } else {
            UnpackError::Tar(e)
        }
    };
    let mut writer = LayerWriter::new(dest, opts, limit, compressed)?;
    for entry in archive.entries().map_err(map_limit)? {
        let entry = entry.map_err(map_limit)?;
        writer.entry(entry).map_err(|e| match e {
            UnpackError::Tar(io) | UnpackError::Io { source: io, .. }
                if io.get_ref().is_some_and(|i| i.is::<LimitExceeded>()) =>
            {
                UnpackError::TooLarge { limit, compressed }
            }
            other => other,
        })?;
    }
    writer.finish()?;
    let mut measured = archive.into_inner();
    io::copy(&mut measured, &mut io::sink()).map_err(map_limit)?;
    let actual = Digest::from_hasher(measured.hasher);
    if &actual != diff_id {
        return Err(UnpackError::DiffIdMismatch {
            expected: diff_id.clone(),
            actual,
        });
    }
    writer.stats.tar_bytes = measured.count;
    Ok(writer.stats)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

struct DeferredDir {
    rel: PathBuf,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
}

/// Writes a layer's entries beneath the staging directory's fd: nothing it does follows a
/// symlink the layer made (see `crate::beneath`).
struct LayerWriter {
    root: Tree,
    opts: UnpackOptions,
    dirs: SafeDirs,
    deferred: Vec<DeferredDir>,
    declared: u64,
    limit: u64,
    compressed: u64,
    stats: LayerStats,
    buf: Vec<u8>,
}

/// A tar header's mtime as seconds since the epoch; a value past what a timestamp can hold
/// (as a signed 64-bit count) is clamped rather than wrapped.
fn mtime_of(header: &tar::Header) -> i64 {
    header
        .mtime()
        .map_or(0, |m| i64::try_from(m).unwrap_or(i64::MAX))
}

fn set_fd_mtime(fd: &File, secs: i64) {
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    };
    let _ = rustix::fs::futimens(fd, &times);
}

impl LayerWriter {
    fn new(
        root: &Path,
        opts: UnpackOptions,
        limit: u64,
        compressed: u64,
    ) -> Result<Self, UnpackError> {
        Ok(LayerWriter {
            root: Tree::open(root).map_err(|e| UnpackError::io(root, e))?,
            opts,
            dirs: SafeDirs::default(),
            deferred: Vec::new(),
            declared: 0,
            limit,
            compressed,
            stats: LayerStats::default(),
            buf: vec![0; 256 << 10],
        })
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path().map_err(UnpackError::Tar)?.into_owned();
        let rel = normalize(&raw)?;
        let name = rel.display().to_string();

        let header_size = entry.header().entry_size().map_err(UnpackError::Tar)?;
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(UnpackError::Tar)? {
            for ext in exts {
                let ext = ext.map_err(UnpackError::Tar)?;
                let key = ext
                    .key()
                    .map_err(|_| UnpackError::Tar(io::Error::other("non-UTF-8 PAX key")))?;
                if key == "size" {
                    let pax: u64 = ext
                        .value()
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(|| {
                            UnpackError::Tar(io::Error::other(format!("bad PAX size for `{name}`")))
                        })?;
                    if pax != header_size && header_size != 0 {
                        return Err(UnpackError::SizeMismatch {
                            entry: name,
                            pax,
                            header: header_size,
                        });
                    }
                } else if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                    if xattr_allowed(attr) {
                        xattrs.push((attr.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
        self.declared = self.declared.saturating_add(entry.size());
        if self.declared > self.limit {
            return Err(UnpackError::TooLarge {
                limit: self.limit,
                compressed: self.compressed,
            });
        }

        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let owner = if self.opts.keep_owners {
            Some((
                header.uid().unwrap_or(0) as u32,
                header.gid().unwrap_or(0) as u32,
            ))
        } else {
            None
        };
        let mtime = mtime_of(header);
        let kind = header.entry_type();

        if rel.as_os_str().is_empty() {
            // The layer root itself (`./`).
            if kind.is_dir() {
                self.deferred.push(DeferredDir {
                    rel,
                    mode,
                    owner,
                    mtime,
                });
            }
            return Ok(());
        }

        let io_err = |e| UnpackError::io(&rel, e);
        let file_name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(target) = file_name.strip_prefix(whiteout::PREFIX) {
            self.dirs.prepare_parents(&self.root, &rel)?;
            let dir = rel.parent().unwrap_or(Path::new(""));
            return match whiteout::classify(target) {
                whiteout::Kind::Opaque => self
                    .root
                    .dir(dir)
                    .and_then(|d| whiteout::mark_opaque(&File::from(d.into_fd())))
                    .map_err(|e| UnpackError::io(dir, e)),
                whiteout::Kind::Remove(victim) => {
                    let rel_victim = dir.join(victim);
                    self.clear(&rel_victim)?;
                    self.root
                        .whiteout(&rel_victim)
                        .map_err(|e| UnpackError::io(&rel_victim, e))
                }
                whiteout::Kind::Ignore => Ok(()),
                whiteout::Kind::Malformed => Err(UnpackError::BadWhiteout { entry: name }),
            };
        }

        self.dirs.prepare_parents(&self.root, &rel)?;
        match kind {
            tar::EntryType::Directory => {
                match self.root.lstat(&rel).map_err(io_err)? {
                    Some(st) if beneath::file_type(&st) == FileType::Directory => {}
                    Some(_) => {
                        self.clear(&rel)?;
                        self.root.mkdir(&rel, 0o700).map_err(io_err)?;
                    }
                    None => self.root.mkdir(&rel, 0o700).map_err(io_err)?,
                }
                self.dirs.insert(&rel);
                if !xattrs.is_empty() {
                    if let Ok(d) = self.root.dir(&rel) {
                        set_xattrs(&File::from(d.into_fd()), &xattrs);
                    }
                }
                self.deferred.push(DeferredDir {
                    rel,
                    mode,
                    owner,
                    mtime,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&rel)?;
                let mut out = self.root.create_file(&rel, 0o600).map_err(io_err)?;
                let mut written = 0u64;
                loop {
                    let n = entry.read(&mut self.buf).map_err(UnpackError::Tar)?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&self.buf[..n]).map_err(io_err)?;
                    written += n as u64;
                }
                if let Some((u, g)) = owner {
                    std::os::unix::fs::fchown(&out, Some(u), Some(g)).map_err(io_err)?;
                }
                // After chown: chown clears setuid bits.
                out.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err)?;
                set_xattrs(&out, &xattrs);
                set_fd_mtime(&out, mtime);
                self.stats.files += 1;
                self.stats.bytes += written;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Tar)?
                    .ok_or_else(|| {
                        UnpackError::Tar(io::Error::other(format!(
                            "symlink `{name}` has no target"
                        )))
                    })?;
                self.clear(&rel)?;
                self.root.symlink(&target, &rel).map_err(io_err)?;
                if let Some((u, g)) = owner {
                    self.root.chown(&rel, u, g).map_err(io_err)?;
                }
                let _ = self.root.set_mtime(&rel, mtime, 0);
                self.stats.files += 1;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Tar)?
                    .ok_or_else(|| {
                        UnpackError::Tar(io::Error::other(format!(
                            "hard link `{name}` has no target"
                        )))
                    })?;
                let bad = || UnpackError::BadHardlink {
                    entry: name.clone(),
                    target: target.display().to_string(),
                };
                let target_rel = normalize(&target).map_err(|_| bad())?;
                if target_rel.as_os_str().is_empty() {
                    return Err(bad());
                }
                self.dirs
                    .prepare_parents(&self.root, &target_rel)
                    .map_err(|_| bad())?;
                match self.root.lstat(&target_rel) {
                    Ok(Some(st)) if beneath::file_type(&st) != FileType::Directory => {}
                    _ => return Err(bad()),
                }
                if target_rel != rel {
                    self.clear(&rel)?;
                    self.root.hard_link(&target_rel, &rel).map_err(io_err)?;
                }
                self.stats.files += 1;
            }
            // Device nodes, FIFOs and anything else are never created from a layer.
            _ => {}
        }
        Ok(())
    }

    /// Removes whatever is at `rel` so a new entry can take its place; never follows a symlink.
    fn clear(&mut self, rel: &Path) -> Result<(), UnpackError> {
        match self.root.lstat(rel).map_err(|e| UnpackError::io(rel, e))? {
            None => Ok(()),
            Some(st) => {
                if beneath::file_type(&st) == FileType::Directory {
                    self.dirs.forget(rel);
                }
                self.root.remove(rel).map_err(|e| UnpackError::io(rel, e))
            }
        }
    }

    /// Applies directory modes, owners and times last, deepest first, so that a read-only
    /// directory can still be filled. Each directory is opened again beneath the layer's root
    /// with no symlink followed in any component: a directory that a later entry replaced
    /// (itself or any directory above it) with a symlink is skipped, never followed.
    fn finish(&mut self) -> Result<(), UnpackError> {
        for d in self.deferred.iter().rev() {
            let Ok(dir) = self.root.dir(&d.rel) else {
                continue;
            };
            let dir = File::from(dir.into_fd());
            if let Some((u, g)) = d.owner {
                std::os::unix::fs::fchown(&dir, Some(u), Some(g))
                    .map_err(|e| UnpackError::io(&d.rel, e))?;
            }
            dir.set_permissions(fs::Permissions::from_mode(d.mode))
                .map_err(|e| UnpackError::io(&d.rel, e))?;
            set_fd_mtime(&dir, d.mtime);
        }
        Ok(())
    }
}

/// Xattrs a layer may carry: `user.*`, but never the overlay's own.
fn xattr_allowed(name: &str) -> bool {
    name.starts_with("user.")
        && !name.starts_with("user.overlay.")
        && !name.starts_with("user.fuseoverlayfs.")
}

fn set_xattrs(file: &File, attrs: &[(String, Vec<u8>)]) {
    for (k, v) in attrs {
        let _ = xattr::FileExt::set_xattr(file, k, v);
    }
}

/// Removes a tree even where directories lack the owner's write or search bit (as image
/// layers often have). Never follows a symlink beneath `path`.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    beneath::remove_tree(path)
}
