//! Streaming layer unpack: decompress (gzip, zstd or plain) → diff-id digest → tar entries into a
//! staging directory, with whiteouts translated to the overlay format. `unpack` never makes a byte
//! visible: the caller renames the staging directory into place only after `unpack_layer` returned
//! the verified digest.

pub mod pack;
mod path;
pub mod whiteout;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

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
    let mut writer = LayerWriter::new(dest, opts, limit, compressed);
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
    mtime: u64,
}

struct LayerWriter<'a> {
    root: &'a Path,
    opts: UnpackOptions,
    dirs: SafeDirs,
    deferred: Vec<DeferredDir>,
    declared: u64,
    limit: u64,
    compressed: u64,
    stats: LayerStats,
    buf: Vec<u8>,
}

impl<'a> LayerWriter<'a> {
    fn new(root: &'a Path, opts: UnpackOptions, limit: u64, compressed: u64) -> Self {
        LayerWriter {
            root,
            opts,
            dirs: SafeDirs::default(),
            deferred: Vec::new(),
            declared: 0,
            limit,
            compressed,
            stats: LayerStats::default(),
            buf: vec![0; 256 << 10],
        }
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
        let mtime = header.mtime().unwrap_or(0);
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

        let file_name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(target) = file_name.strip_prefix(whiteout::PREFIX) {
            self.dirs.prepare_parents(self.root, &rel)?;
            let dir = rel.parent().unwrap_or(Path::new(""));
            return match whiteout::classify(target) {
                whiteout::Kind::Opaque => {
                    whiteout::mark_opaque(&self.root.join(dir)).map_err(|e| UnpackError::io(dir, e))
                }
                whiteout::Kind::Remove(victim) => {
                    let rel_victim = dir.join(victim);
                    let full = self.root.join(&rel_victim);
                    self.clear(&rel_victim, &full)?;
                    whiteout::make(&full).map_err(|e| UnpackError::io(&rel_victim, e))
                }
                whiteout::Kind::Ignore => Ok(()),
                whiteout::Kind::Malformed => Err(UnpackError::BadWhiteout { entry: name }),
            };
        }

        self.dirs.prepare_parents(self.root, &rel)?;
        let full = self.root.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&full) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        self.clear(&rel, &full)?;
                        fs::create_dir(&full).map_err(|e| UnpackError::io(&rel, e))?;
                    }
                    Err(_) => fs::create_dir(&full).map_err(|e| UnpackError::io(&rel, e))?,
                }
                self.dirs.insert(&rel);
                set_xattrs(&full, &xattrs);
                self.deferred.push(DeferredDir {
                    rel,
                    mode,
                    owner,
                    mtime,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&rel, &full)?;
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&full)
                    .map_err(|e| UnpackError::io(&rel, e))?;
                let mut written = 0u64;
                loop {
                    let n = entry.read(&mut self.buf).map_err(UnpackError::Tar)?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&self.buf[..n])
                        .map_err(|e| UnpackError::io(&rel, e))?;
                    written += n as u64;
                }
                if let Some((u, g)) = owner {
                    std::os::unix::fs::fchown(&out, Some(u), Some(g))
                        .map_err(|e| UnpackError::io(&rel, e))?;
                }
                // After chown: chown clears setuid bits.
                out.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|e| UnpackError::io(&rel, e))?;
                for (k, v) in &xattrs {
                    let _ = xattr::FileExt::set_xattr(&out, k, v);
                }
                let _ = out.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));
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
                self.clear(&rel, &full)?;
                std::os::unix::fs::symlink(&target, &full).map_err(|e| UnpackError::io(&rel, e))?;
                if let Some((u, g)) = owner {
                    std::os::unix::fs::lchown(&full, Some(u), Some(g))
                        .map_err(|e| UnpackError::io(&rel, e))?;
                }
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
                    .prepare_parents(self.root, &target_rel)
                    .map_err(|_| bad())?;
                let target_full = self.root.join(&target_rel);
                match fs::symlink_metadata(&target_full) {
                    Ok(m) if !m.is_dir() => {}
                    _ => return Err(bad()),
                }
                if target_rel != rel {
                    self.clear(&rel, &full)?;
                    fs::hard_link(&target_full, &full).map_err(|e| UnpackError::io(&rel, e))?;
                }
                self.stats.files += 1;
            }
            // Device nodes, FIFOs and anything else are never created from a layer.
            _ => {}
        }
        Ok(())
    }

    /// Removes whatever is at `rel` so a new entry can take its place; never follows a symlink.
    fn clear(&mut self, rel: &Path, full: &Path) -> Result<(), UnpackError> {
        match fs::symlink_metadata(full) {
            Ok(m) if m.is_dir() => {
                self.dirs.forget(rel);
                remove_tree(full).map_err(|e| UnpackError::io(rel, e))
            }
            Ok(_) => fs::remove_file(full).map_err(|e| UnpackError::io(rel, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(UnpackError::io(rel, e)),
        }
    }

    /// Applies directory modes, owners and times last, deepest first, so that a read-only
    /// directory can still be filled. Opens with `O_NOFOLLOW` so a directory that a later entry
    /// replaced with a symlink is skipped, never followed.
    fn finish(&mut self) -> Result<(), UnpackError> {
        for d in self.deferred.iter().rev() {
            let full = self.root.join(&d.rel);
            let Ok(dir) = OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY)
                .open(&full)
            else {
                continue;
            };
            if let Some((u, g)) = d.owner {
                std::os::unix::fs::fchown(&dir, Some(u), Some(g))
                    .map_err(|e| UnpackError::io(&d.rel, e))?;
            }
            dir.set_permissions(fs::Permissions::from_mode(d.mode))
                .map_err(|e| UnpackError::io(&d.rel, e))?;
            let _ = dir.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(d.mtime));
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

fn set_xattrs(path: &Path, attrs: &[(String, Vec<u8>)]) {
    for (k, v) in attrs {
        let _ = xattr::set(path, k, v);
    }
}

/// Removes a tree even where directories lack the owner's write or search bit (as image
/// layers often have). Never follows symlinks.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return fs::remove_file(path),
        Ok(_) => {}
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path)?;
            fs::remove_dir_all(path)
        }
    }
}

fn make_writable(path: &Path) -> io::Result<()> {
    let m = fs::symlink_metadata(path)?;
    if !m.is_dir() {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    for e in fs::read_dir(path)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            make_writable(&e.path())?;
        }
    }
    Ok(())
}
