//! Streaming layer unpack: decompress (gzip, zstd or plain) → diff-id digest → tar entries (read
//! by `archive` as GNU tar reads them) into a staging directory, sparse files with their holes,
//! whiteouts translated to the overlay format; the inflate and the digest run on threads of
//! their own (`pipeline`), the entries are written on the caller's. `unpack` never makes a byte
//! visible: the caller renames the staging directory into place only after `unpack_layer`
//! returned the verified digest.

pub mod archive;
#[cfg(test)]
mod fuzz;
pub mod pack;
mod path;
mod pipeline;
pub mod whiteout;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, OFlags};

use crate::beneath::{self, Tree};
use crate::oci::manifest::Compression;
use crate::oci::Digest;
use archive::Kind;
use path::{normalize, OpenDirs, SafeDirs};

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
    #[error("the layer expands past {limit} bytes (from {compressed} compressed); refusing it as a decompression bomb")]
    TooLarge { limit: u64, compressed: u64 },
    #[error("the layer's content digest is {actual}, but the image config says {expected}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error("malformed tar archive: {0}")]
    Malformed(String),
    /// A reading error while an entry's data is written; mapped to one of the others.
    #[error("{0}")]
    Archive(archive::Error),
    #[error("cannot read the layer: {0}")]
    Read(io::Error),
    #[error("entry `{entry}` is owned by {what}, beyond the ids your subordinate range maps ({mapped}); give your user a larger range in /etc/subuid and /etc/subgid (`usermod --add-subuids`, `--add-subgids`)")]
    UnmappedOwner {
        entry: String,
        what: String,
        mapped: String,
    },
    #[error("cannot write `{path}`: {source}")]
    Io { path: String, source: io::Error },
}

impl UnpackError {
    /// The I/O error it failed with, if it was one (see `store::inside::is_disk_full`).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            UnpackError::Io { source, .. } | UnpackError::Read(source) => Some(source),
            _ => None,
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

#[derive(Debug)]
struct LimitExceeded;
impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("size limit exceeded")
    }
}
impl std::error::Error for LimitExceeded {}

fn limit_exceeded() -> io::Error {
    io::Error::other(LimitExceeded)
}

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
    let (actual, stats) = unpack_archive(blob, dest, opts)?;
    check_diff_id(diff_id, actual)?;
    Ok(stats)
}

/// Like [`unpack_layer`], the blob's `compressed` bytes read from `input` (a download as it
/// arrives).
pub fn unpack_layer_from(
    input: Box<dyn Read + Send + '_>,
    compressed: u64,
    diff_id: &Digest,
    dest: &Path,
    opts: UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    // Never more than the blob is said to hold (a longer one fails its digest anyway).
    let (actual, stats) = unpack_stream(Box::new(input.take(compressed)), compressed, dest, opts)?;
    check_diff_id(diff_id, actual)?;
    Ok(stats)
}

fn check_diff_id(expected: &Digest, actual: Digest) -> Result<(), UnpackError> {
    if &actual != expected {
        return Err(UnpackError::DiffIdMismatch {
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

/// Unpacks the archive at `blob` (gzip, zstd or plain tar) into `dest` (an empty directory) by
/// the same rules as a layer; returns the digest of its uncompressed stream, for the caller to
/// check before it makes the tree visible.
pub fn unpack_archive(
    blob: &Path,
    dest: &Path,
    opts: UnpackOptions,
) -> Result<(Digest, LayerStats), UnpackError> {
    let file = File::open(blob).map_err(|e| UnpackError::io(blob, e))?;
    let compressed = file.metadata().map_err(|e| UnpackError::io(blob, e))?.len();
    unpack_stream(
        Box::new(BufReader::with_capacity(256 << 10, file)),
        compressed,
        dest,
        opts,
    )
}

/// The archive of `compressed` bytes read from `input`, unpacked into `dest`.
fn unpack_stream(
    mut input: Box<dyn Read + Send + '_>,
    compressed: u64,
    dest: &Path,
    opts: UnpackOptions,
) -> Result<(Digest, LayerStats), UnpackError> {
    let mut head = [0u8; 4];
    let n = read_full(&mut input, &mut head).map_err(UnpackError::Read)?;
    let compression = Compression::sniff(&head[..n]);
    let input = io::Cursor::new(head[..n].to_vec()).chain(input);
    let decoded: Box<dyn Read + Send + '_> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(input).map_err(UnpackError::Read)?)
        }
        Compression::None => Box::new(input),
    };
    let limit = size_limit(compressed);
    let from_archive = |e: archive::Error| match e {
        archive::Error::Io(io) if is_limit(&io) => UnpackError::TooLarge { limit, compressed },
        archive::Error::Io(io) => UnpackError::Read(io),
        e @ archive::Error::Malformed { .. } => UnpackError::Malformed(e.to_string()),
    };
    let mut writer = LayerWriter::new(dest, opts, limit, compressed)?;
    // Inflating and hashing run on threads of their own; this one parses and writes.
    let (written, measured) = pipeline::run(decoded, limit, limit_exceeded, |stream| {
        let mut reader = archive::Reader::new(stream);
        while let Some(entry) = reader.next_entry().map_err(from_archive)? {
            writer.entry(&entry, &mut reader).map_err(|e| match e {
                UnpackError::Archive(a) => from_archive(a),
                UnpackError::Io { source, .. } if is_limit(&source) => {
                    UnpackError::TooLarge { limit, compressed }
                }
                other => other,
            })?;
        }
        writer.finish()?;
        // Whatever follows the archive's end is part of the digest too.
        io::copy(reader.into_inner(), &mut io::sink()).map_err(|e| {
            if is_limit(&e) {
                UnpackError::TooLarge { limit, compressed }
            } else {
                UnpackError::Read(e)
            }
        })
    });
    written?;
    let measured = measured.map_err(UnpackError::Read)?;
    writer.stats.tar_bytes = measured.bytes;
    Ok((measured.digest, writer.stats))
}

fn is_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<LimitExceeded>())
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
    nanos: u32,
}

/// Writes a layer's entries beneath the staging directory's fd: nothing it does follows a
/// symlink the layer made (see `crate::beneath`).
struct LayerWriter {
    root: Tree,
    opts: UnpackOptions,
    dirs: SafeDirs,
    open: OpenDirs,
    /// The owner a file this process creates in the layer gets (none known: a setgid root
    /// passes its group down); an entry of that owner needs no chown.
    own_ids: Option<(u32, u32)>,
    /// This process's umask: an entry whose mode survives it needs no chmod.
    umask: u32,
    deferred: Vec<DeferredDir>,
    /// Where each directory is in `deferred`: a directory given twice takes its last entry's
    /// metadata, as with GNU tar.
    deferred_at: std::collections::HashMap<PathBuf, usize>,
    declared: u64,
    limit: u64,
    compressed: u64,
    stats: LayerStats,
}

/// Timestamps that set the modification time and leave the access time.
fn mtime_only(secs: i64, nanos: u32) -> rustix::fs::Timestamps {
    rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: i64::from(nanos),
        },
    }
}

fn set_fd_mtime(fd: &File, secs: i64, nanos: u32) {
    // A time the filesystem cannot hold is clamped by the kernel, as it is for GNU tar.
    let _ = rustix::fs::futimens(fd, &mtime_only(secs, nanos));
}

/// This process's umask, from /proc (asking `umask(2)` would change it under other threads);
/// unknown, every mode is set again after creation.
fn current_umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

/// The lines of this process's `/proc/self/uid_map` or `gid_map`: (inside, outside, count).
fn id_map(file: &str) -> Vec<(u64, u64, u64)> {
    let text = fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            (f.len() == 3).then(|| (f[0], f[1], f[2]))
        })
        .collect()
}

/// `0-1000, 1002-65535`: the ranges, merged where they touch.
fn ranges_text(mut ranges: Vec<(u64, u64)>) -> String {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, count) in ranges {
        match merged.last_mut() {
            Some(last) if last.1 == start => last.1 = start + count,
            _ => merged.push((start, start + count)),
        }
    }
    merged
        .iter()
        .map(|&(a, b)| match b - a {
            1 => a.to_string(),
            _ => format!("{a}-{}", b - 1),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `uids 0-65535 (host 1001, 100000-165534)`: what a map reaches, inside and on the host.
fn map_text(kind: &str, map: &[(u64, u64, u64)]) -> String {
    format!(
        "{kind} {} (host {})",
        ranges_text(map.iter().map(|&(i, _, c)| (i, c)).collect()),
        ranges_text(map.iter().map(|&(_, o, c)| (o, c)).collect())
    )
}

/// The error for a chown that failed with `EINVAL`: an owner this namespace does not map.
fn unmapped_owner(rel: &Path, uid: u32, gid: u32, source: io::Error) -> UnpackError {
    let (uids, gids) = (id_map("/proc/self/uid_map"), id_map("/proc/self/gid_map"));
    let maps = |m: &[(u64, u64, u64)], id: u32| {
        m.iter()
            .any(|&(i, _, c)| u64::from(id) >= i && u64::from(id) - i < c)
    };
    let (what, mapped) = match (maps(&uids, uid), maps(&gids, gid)) {
        (false, false) => (
            format!("uid {uid} and gid {gid}"),
            format!(
                "{} and {}",
                map_text("uids", &uids),
                map_text("gids", &gids)
            ),
        ),
        (false, true) => (format!("uid {uid}"), map_text("uids", &uids)),
        (true, false) => (format!("gid {gid}"), map_text("gids", &gids)),
        (true, true) => return UnpackError::io(rel, source),
    };
    UnpackError::UnmappedOwner {
        entry: rel.display().to_string(),
        what,
        mapped,
    }
}

fn chown_error(rel: &Path, uid: u32, gid: u32) -> impl Fn(io::Error) -> UnpackError + '_ {
    move |e: io::Error| {
        if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) {
            unmapped_owner(rel, uid, gid, e)
        } else {
            UnpackError::io(rel, e)
        }
    }
}

impl LayerWriter {
    fn new(
        root: &Path,
        opts: UnpackOptions,
        limit: u64,
        compressed: u64,
    ) -> Result<Self, UnpackError> {
        let tree = Tree::open(root).map_err(|e| UnpackError::io(root, e))?;
        let st = rustix::fs::fstat(tree.fd()).map_err(|e| UnpackError::io(root, e.into()))?;
        // A new file's group is this process's, or (a setgid parent, or a `grpid` mount) its
        // directory's, which for every directory made here is the root's (their own groups
        // and modes come last): only a root of this process's group, not setgid, is sure.
        let (euid, egid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let own_ids = (st.st_mode & 0o2000 == 0 && st.st_gid == egid).then_some((euid, egid));
        Ok(LayerWriter {
            root: tree,
            opts,
            dirs: SafeDirs::default(),
            open: OpenDirs::default(),
            own_ids,
            umask: current_umask(),
            deferred: Vec::new(),
            deferred_at: std::collections::HashMap::new(),
            declared: 0,
            limit,
            compressed,
            stats: LayerStats::default(),
        })
    }

    fn entry<R: io::BufRead>(
        &mut self,
        entry: &archive::Entry,
        reader: &mut archive::Reader<R>,
    ) -> Result<(), UnpackError> {
        let rel = normalize(Path::new(OsStr::from_bytes(&entry.path)))?;
        let name = rel.display().to_string();
        let xattrs: Vec<(&[u8], &[u8])> = entry
            .xattrs
            .iter()
            .filter(|(k, _)| xattr_allowed(k))
            .map(|(k, v)| (&k[..], &v[..]))
            .collect();
        let stored = entry
            .sparse
            .as_ref()
            .map_or(entry.size, |m| m.iter().map(|c| c.len).sum());
        // What the layer writes to disk (a sparse file's holes take none).
        self.declared = self.declared.saturating_add(stored);
        if self.declared > self.limit {
            return Err(UnpackError::TooLarge {
                limit: self.limit,
                compressed: self.compressed,
            });
        }

        let mode = entry.mode;
        let owner = self.opts.keep_owners.then_some((entry.uid, entry.gid));
        let (mtime, nanos) = (entry.mtime, entry.mtime_nanos);

        if rel.as_os_str().is_empty() {
            // The layer root itself (`./`).
            if entry.kind == Kind::Dir {
                self.defer(DeferredDir {
                    rel,
                    mode,
                    owner,
                    mtime,
                    nanos,
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
        match entry.kind {
            Kind::Dir => {
                let made = self.in_parent(&rel, |dir, name| {
                    rustix::fs::mkdirat(dir, name, rustix::fs::Mode::from_raw_mode(0o700))
                        .map_err(io::Error::from)
                })?;
                match made {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()) => {
                        match self.root.lstat(&rel).map_err(io_err)? {
                            Some(st) if beneath::file_type(&st) == FileType::Directory => {}
                            _ => {
                                self.clear(&rel)?;
                                self.root.mkdir(&rel, 0o700).map_err(io_err)?;
                            }
                        }
                    }
                    Err(e) => return Err(io_err(e)),
                }
                self.dirs.insert(&rel);
                if !xattrs.is_empty() {
                    if let Ok(d) = self.root.dir(&rel) {
                        set_xattrs(&File::from(d.into_fd()), &xattrs);
                    }
                }
                self.defer(DeferredDir {
                    rel,
                    mode,
                    owner,
                    mtime,
                    nanos,
                });
            }
            Kind::File => {
                // Created with its permissions (the special bits come after any chown, which
                // would clear them), beneath a staging directory only this user can enter.
                let created = mode & 0o777;
                let mut out = File::from(self.make(&rel, |dir, name| {
                    rustix::fs::openat(
                        dir,
                        name,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        rustix::fs::Mode::from_raw_mode(created),
                    )
                    .map_err(io::Error::from)
                })?);
                let mut written = 0u64;
                // Written from the inflater's own buffers (no copy between).
                while let Some((offset, data)) = reader.peek_data().map_err(UnpackError::Archive)? {
                    let n = data.len();
                    if entry.sparse.is_some() {
                        out.write_all_at(data, offset).map_err(io_err)?;
                    } else {
                        out.write_all(data).map_err(io_err)?;
                    }
                    reader.consume_data(n);
                    written += n as u64;
                }
                if entry.sparse.is_some() {
                    // The holes, a trailing one included, take no space.
                    out.set_len(entry.size).map_err(io_err)?;
                }
                if let Some((u, g)) = owner.filter(|o| Some(*o) != self.own_ids) {
                    std::os::unix::fs::fchown(&out, Some(u), Some(g))
                        .map_err(chown_error(&rel, u, g))?;
                }
                // After chown: chown clears setuid bits.
                if created & !self.umask != mode & 0o7777 {
                    out.set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(io_err)?;
                }
                set_xattrs(&out, &xattrs);
                set_fd_mtime(&out, mtime, nanos);
                self.stats.files += 1;
                self.stats.bytes += written;
            }
            Kind::Symlink => {
                if entry.link.is_empty() {
                    return Err(UnpackError::Malformed(format!(
                        "entry `{name}`: a symlink with no target"
                    )));
                }
                let target = Path::new(OsStr::from_bytes(&entry.link));
                self.make(&rel, |dir, name| {
                    rustix::fs::symlinkat(target, dir, name).map_err(io::Error::from)
                })?;
                if let Some((u, g)) = owner.filter(|o| Some(*o) != self.own_ids) {
                    self.in_parent(&rel, |dir, name| {
                        rustix::fs::chownat(
                            dir,
                            name,
                            Some(rustix::fs::Uid::from_raw(u)),
                            Some(rustix::fs::Gid::from_raw(g)),
                            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(io::Error::from)
                    })?
                    .map_err(chown_error(&rel, u, g))?;
                }
                let times = mtime_only(mtime, nanos);
                let _ = self.in_parent(&rel, |dir, name| {
                    rustix::fs::utimensat(dir, name, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(io::Error::from)
                })?;
                self.stats.files += 1;
            }
            Kind::HardLink => {
                let target = Path::new(OsStr::from_bytes(&entry.link));
                let bad = || UnpackError::BadHardlink {
                    entry: name.clone(),
                    target: target.display().to_string(),
                };
                let target_rel = normalize(target).map_err(|_| bad())?;
                if target_rel.as_os_str().is_empty() {
                    return Err(bad());
                }
                if target_rel == rel {
                    // A link to itself leaves what is there, as GNU tar does.
                    return match self.root.lstat(&rel) {
                        Ok(Some(_)) => Ok(()),
                        _ => Err(bad()),
                    };
                }
                self.dirs
                    .prepare_parents(&self.root, &target_rel)
                    .map_err(|_| bad())?;
                match self.root.lstat(&target_rel) {
                    Ok(Some(st)) if beneath::file_type(&st) != FileType::Directory => {}
                    _ => return Err(bad()),
                }
                self.clear(&rel)?;
                self.root.hard_link(&target_rel, &rel).map_err(io_err)?;
                self.stats.files += 1;
            }
            // Device nodes and FIFOs are never created from a layer.
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {}
        }
        Ok(())
    }

    fn defer(&mut self, dir: DeferredDir) {
        match self.deferred_at.get(&dir.rel) {
            Some(&i) => self.deferred[i] = dir,
            None => {
                self.deferred_at
                    .insert(dir.rel.clone(), self.deferred.len());
                self.deferred.push(dir);
            }
        }
    }

    /// Removes whatever is at `rel` so a new entry can take its place; never follows a symlink.
    fn clear(&mut self, rel: &Path) -> Result<(), UnpackError> {
        match self.root.lstat(rel).map_err(|e| UnpackError::io(rel, e))? {
            None => Ok(()),
            Some(st) => {
                if beneath::file_type(&st) == FileType::Directory {
                    self.dirs.forget(rel);
                }
                // An open directory may be (or be beneath) what goes.
                self.open.clear();
                self.root.remove(rel).map_err(|e| UnpackError::io(rel, e))
            }
        }
    }

    /// Runs `op` on `rel`'s name in its parent directory, which `prepare_parents` made sure
    /// is a real directory beneath the root; the outer error is the parent's, the inner `op`'s.
    fn in_parent<T>(
        &mut self,
        rel: &Path,
        op: impl FnOnce(std::os::fd::BorrowedFd<'_>, &OsStr) -> io::Result<T>,
    ) -> Result<io::Result<T>, UnpackError> {
        let name = rel
            .file_name()
            .ok_or_else(|| UnpackError::io(rel, io::Error::from(io::ErrorKind::InvalidInput)))?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = self
            .open
            .get(&self.root, parent)
            .map_err(|e| UnpackError::io(parent, e))?;
        Ok(op(dir.fd(), name))
    }

    /// Creates `rel` with `make` in its parent; when something is in the way (`EEXIST`, as
    /// when a layer names a path twice), removes it and makes `rel` once more.
    fn make<T>(
        &mut self,
        rel: &Path,
        mut make: impl FnMut(std::os::fd::BorrowedFd<'_>, &OsStr) -> io::Result<T>,
    ) -> Result<T, UnpackError> {
        match self.in_parent(rel, &mut make)? {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()) => {
                self.clear(rel)?;
                self.in_parent(rel, make)?
                    .map_err(|e| UnpackError::io(rel, e))
            }
            done => done.map_err(|e| UnpackError::io(rel, e)),
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
                    .map_err(chown_error(&d.rel, u, g))?;
            }
            dir.set_permissions(fs::Permissions::from_mode(d.mode))
                .map_err(|e| UnpackError::io(&d.rel, e))?;
            set_fd_mtime(&dir, d.mtime, d.nanos);
        }
        Ok(())
    }
}

/// Xattrs a layer may carry: `user.*`, but never the overlay's own.
fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        && !name.starts_with(b"user.overlay.")
        && !name.starts_with(b"user.fuseoverlayfs.")
}

fn set_xattrs(file: &File, attrs: &[(&[u8], &[u8])]) {
    for (k, v) in attrs {
        let _ = xattr::FileExt::set_xattr(file, OsStr::from_bytes(k), v);
    }
}

/// Removes a tree even where directories lack the owner's write or search bit (as image
/// layers often have). Never follows a symlink beneath `path`.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    beneath::remove_tree(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain tar of these entries: (path, symlink target or None for a file/dir).
    fn tar_of(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            match link {
                Some(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, target).unwrap();
                }
                None if path.ends_with('/') => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, path, io::empty()).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(4);
                    b.append_data(&mut h, path, &b"data"[..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_directory_written_in_then_replaced_by_a_symlink_is_never_written_through() {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        fs::create_dir_all(outside.join("b")).unwrap();
        let target = outside.display().to_string();
        // Files go into `a/b` (open in the writer's cache) before `a` becomes a symlink out;
        // the next entry under `a/b` must not land in the old directory nor in `outside/b`.
        for later in ["a/b/z", "a/c"] {
            let blob = base.path().join("blob");
            let tar = tar_of(&[
                ("a/", None),
                ("a/b/", None),
                ("a/b/x", None),
                ("a", Some(&target)),
                (later, None),
            ]);
            fs::write(&blob, &tar).unwrap();
            let stage = base.path().join("stage");
            fs::create_dir(&stage).unwrap();
            let err = unpack_layer(
                &blob,
                &Digest::of_bytes(&tar),
                &stage,
                UnpackOptions { keep_owners: false },
            )
            .unwrap_err();
            assert!(
                matches!(err, UnpackError::ThroughSymlink { .. }),
                "{later}: {err}"
            );
            assert_eq!(
                fs::read_dir(&outside).unwrap().count(),
                1,
                "{later}: written outside"
            );
            assert_eq!(fs::read_dir(outside.join("b")).unwrap().count(), 0);
            remove_tree(&stage).unwrap();
        }
    }

    /// A plain tar of regular files with these modes and owners.
    fn tar_of_files(files: &[(&str, u32, (u64, u64))]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, mode, (uid, gid)) in files {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(*mode);
            h.set_uid(*uid);
            h.set_gid(*gid);
            h.set_size(4);
            b.append_data(&mut h, path, &b"data"[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn unpack_files(
        files: &[(&str, u32, (u64, u64))],
        stage: &Path,
        keep_owners: bool,
    ) -> Vec<(u32, u32, u32)> {
        let tar = tar_of_files(files);
        let blob = stage.with_extension("tar");
        fs::write(&blob, &tar).unwrap();
        unpack_layer(
            &blob,
            &Digest::of_bytes(&tar),
            stage,
            UnpackOptions { keep_owners },
        )
        .unwrap();
        files
            .iter()
            .map(|(p, _, _)| {
                let m = fs::symlink_metadata(stage.join(p)).unwrap();
                use std::os::unix::fs::MetadataExt;
                (m.mode() & 0o7777, m.uid(), m.gid())
            })
            .collect()
    }

    #[test]
    fn files_get_their_modes_whatever_the_umask_cuts() {
        let base = tempfile::tempdir().unwrap();
        let stage = base.path().join("stage");
        fs::create_dir(&stage).unwrap();
        let modes = [
            0o666, 0o777, 0o644, 0o444, 0o000, 0o4755, 0o2755, 0o1777, 0o6711,
        ];
        let files: Vec<(String, u32)> = modes.iter().map(|m| (format!("f{m:o}"), *m)).collect();
        let spec: Vec<(&str, u32, (u64, u64))> = files
            .iter()
            .map(|(p, m)| (p.as_str(), *m, (0, 0)))
            .collect();
        let got = unpack_files(&spec, &stage, false);
        for ((path, mode), (got, _, _)) in files.iter().zip(got) {
            assert_eq!(
                got,
                *mode,
                "{path}: {got:o}, not {mode:o} (umask {:o})",
                current_umask()
            );
        }
    }

    #[test]
    fn owners_are_the_entries_even_under_a_root_that_passes_its_group_down() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test chowns: run the suite as root (as `.ci/run` does)"
        );
        let base = tempfile::tempdir().unwrap();
        let (egid, euid) = (
            nix::unistd::getegid().as_raw(),
            nix::unistd::geteuid().as_raw(),
        );
        let other = egid + 4242;
        for setgid in [false, true] {
            let stage = base.path().join(format!("stage-{setgid}"));
            fs::create_dir(&stage).unwrap();
            // A root of another group (setgid or not): a new file may take that group.
            std::os::unix::fs::chown(&stage, None, Some(other)).unwrap();
            let mode = if setgid { 0o2755 } else { 0o755 };
            fs::set_permissions(&stage, fs::Permissions::from_mode(mode)).unwrap();
            let (u, g) = (u64::from(euid), u64::from(egid));
            let got = unpack_files(
                &[("own", 0o644, (u, g)), ("theirs", 0o644, (123, 456))],
                &stage,
                true,
            );
            assert_eq!(
                got.iter().map(|(_, u, g)| (*u, *g)).collect::<Vec<_>>(),
                vec![(euid, egid), (123, 456)],
                "setgid root: {setgid}"
            );
        }
    }

    #[test]
    fn a_directory_replaced_and_made_again_is_written_in_as_the_new_one() {
        let base = tempfile::tempdir().unwrap();
        let blob = base.path().join("blob");
        let tar = tar_of(&[
            ("a/b/", None),
            ("a/b/x", None),
            ("a/b", None),
            ("a/b/", None),
            ("a/b/y", None),
        ]);
        fs::write(&blob, &tar).unwrap();
        let stage = base.path().join("stage");
        fs::create_dir(&stage).unwrap();
        unpack_layer(
            &blob,
            &Digest::of_bytes(&tar),
            &stage,
            UnpackOptions { keep_owners: false },
        )
        .unwrap();
        assert!(stage.join("a/b").is_dir());
        assert!(stage.join("a/b/y").is_file());
        assert!(!stage.join("a/b/x").exists());
    }

    #[test]
    fn id_ranges_read_as_one_line() {
        let map = [(0, 100000, 1001), (1001, 1001, 1), (1002, 101001, 64534)];
        assert_eq!(
            map_text("uids", &map),
            "uids 0-65535 (host 1001, 100000-165534)"
        );
    }
}
