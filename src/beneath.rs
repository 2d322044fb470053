//! Access to a tree that an untrusted party shapes — a layer being unpacked, an env's or a tools
//! build's writable layer, the project directory — through the tree's root directory fd. Every
//! path is resolved beneath that fd with no symlink followed in any component (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`; a component-by-component
//! `O_NOFOLLOW` walk where the kernel has no openat2), and every operation acts on the fd it
//! resolved or on a name within a resolved parent fd, never on a whole path again. `beneath`
//! never follows a symlink a tree holds, and never reads more than its caller allows.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// The root of an untrusted tree, as an open directory.
#[derive(Debug)]
pub struct Tree {
    fd: OwnedFd,
}

/// The status of an entry, not following a symlink.
pub type Stat = rustix::fs::Stat;

fn err(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// What an entry is, from its `st_mode`.
pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Whether `st` is an overlay whiteout: a character device 0/0.
pub fn is_whiteout(st: &Stat) -> bool {
    file_type(st) == FileType::CharacterDevice && st.st_rdev == 0
}

/// The parts of `rel`, which must be relative and free of `..`; `.` parts are dropped.
fn parts(rel: &Path) -> io::Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{}` is not a path beneath the tree", rel.display()),
                ))
            }
        }
    }
    Ok(out)
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Whether this kernel has openat2 (Linux 5.6); asked once.
fn has_openat2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        !matches!(
            rustix::fs::openat2(
                rustix::fs::CWD,
                ".",
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE
            ),
            Err(rustix::io::Errno::NOSYS)
        )
    })
}

impl Tree {
    /// Opens the root of a tree at `path`. `path` itself is the caller's (a store directory, the
    /// project root found on the host); only what lies beneath it is the tree's.
    pub fn open(path: &Path) -> io::Result<Tree> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        Ok(Tree { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Opens `rel` beneath the root with `flags`, following no symlink on the way or at its end.
    pub fn open_at(&self, rel: &Path, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(mode);
        let parts = parts(rel)?;
        if parts.is_empty() {
            return rustix::fs::openat(&self.fd, ".", flags, mode).map_err(err);
        }
        if has_openat2() {
            let joined: std::path::PathBuf = parts.iter().collect();
            return rustix::fs::openat2(&self.fd, &joined, flags, mode, RESOLVE).map_err(err);
        }
        // No openat2: walk the directories one by one, none of them a symlink.
        let (last, dirs) = parts.split_last().expect("parts is not empty");
        let mut dir: Option<OwnedFd> = None;
        for p in dirs {
            let at = dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
            let next = rustix::fs::openat(
                at,
                *p,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(err)?;
            dir = Some(next);
        }
        let at = dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
        rustix::fs::openat(at, *last, flags, mode).map_err(err)
    }

    /// The directory `rel` beneath the root, as a tree of its own (`""`: the root again).
    pub fn dir(&self, rel: &Path) -> io::Result<Tree> {
        let fd = self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
        Ok(Tree { fd })
    }

    /// The directory that holds `rel`, and `rel`'s last name in it.
    pub fn parent<'p>(&self, rel: &'p Path) -> io::Result<(Tree, &'p OsStr)> {
        let parts = parts(rel)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the tree's root has no parent in it",
            ));
        };
        let dir: std::path::PathBuf = dirs.iter().collect();
        Ok((self.dir(&dir)?, name))
    }

    /// Opens the file `rel` for reading.
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        Ok(File::from(self.open_at(rel, OFlags::RDONLY, 0)?))
    }

    /// Reads the regular file `rel`, refusing one larger than `max` bytes.
    pub fn read_bounded(&self, rel: &Path, max: u64) -> io::Result<Vec<u8>> {
        let f = self.open_file(rel)?;
        let st = rustix::fs::fstat(&f).map_err(err)?;
        if file_type(&st) != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("`{}` is not a regular file", rel.display()),
            ));
        }
        let mut out = Vec::new();
        f.take(max + 1).read_to_end(&mut out)?;
        if out.len() as u64 > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("`{}` is larger than {max} bytes", rel.display()),
            ));
        }
        Ok(out)
    }

    /// Creates the file `rel`, which must not exist yet (`O_EXCL`), for writing.
    pub fn create_file(&self, rel: &Path, mode: u32) -> io::Result<File> {
        let fd = self.open_at(rel, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, mode)?;
        Ok(File::from(fd))
    }

    /// The status of `rel`, not following a final symlink; `None` when nothing is there.
    pub fn lstat(&self, rel: &Path) -> io::Result<Option<Stat>> {
        let (dir, name) = match self.parent(rel) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    pub fn mkdir(&self, rel: &Path, mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::mkdirat(&dir.fd, name, Mode::from_raw_mode(mode)).map_err(err)
    }

    /// Makes `link` a hard link to the entry `existing` (not to what a symlink there points to).
    pub fn hard_link(&self, existing: &Path, link: &Path) -> io::Result<()> {
        let (from_dir, from) = self.parent(existing)?;
        let (to_dir, to) = self.parent(link)?;
        rustix::fs::linkat(&from_dir.fd, from, &to_dir.fd, to, AtFlags::empty()).map_err(err)
    }

    /// Makes `rel` an overlay whiteout (a 0/0 character device; unprivileged since Linux 5.8).
    pub fn whiteout(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::mknodat(
            &dir.fd,
            name,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o644),
            0,
        )
        .map_err(err)
    }

    /// Removes whatever is at `rel`, a whole directory tree included; nothing there is fine.
    pub fn remove(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = match self.parent(rel) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        remove_at(dir.fd(), name)
    }

    /// The names in the directory `rel`, sorted (bytewise).
    pub fn names(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        let dir = self.dir(rel)?;
        let mut out = Vec::new();
        for e in rustix::fs::Dir::read_from(&dir.fd).map_err(err)? {
            let e = e.map_err(err)?;
            let name = e.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Why a mount point could not be made beneath a tree.
#[derive(Debug)]
pub enum MountPointError {
    /// `rel`'s component at this path (relative to the tree) is a symbolic link.
    Symlink(std::path::PathBuf),
    /// This component is there but is not a directory.
    NotDir(std::path::PathBuf),
    Io(std::path::PathBuf, io::Error),
}

impl std::fmt::Display for MountPointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountPointError::Symlink(p) => write!(f, "`/{}` is a symbolic link", p.display()),
            MountPointError::NotDir(p) => write!(f, "`/{}` is not a directory", p.display()),
            MountPointError::Io(p, e) => write!(f, "`/{}`: {e}", p.display()),
        }
    }
}

impl std::error::Error for MountPointError {}

impl Tree {
    /// Opens `rel` as a place to mount on (an `O_PATH` descriptor), making what is missing:
    /// directories on the way, and the last component a directory (`dir`) or an empty file.
    /// Each component is looked up in the descriptor of its parent with `O_NOFOLLOW`, so no
    /// symlink is followed in any; what this makes is owned by `owner` where given (where the
    /// id map lets it be). The caller mounts onto the descriptor, not onto the path.
    pub fn mount_point(
        &self,
        rel: &Path,
        dir: bool,
        owner: Option<(u32, u32)>,
    ) -> Result<OwnedFd, MountPointError> {
        let io_err = |p: &Path, e: io::Error| MountPointError::Io(p.to_path_buf(), e);
        let parts = parts(rel).map_err(|e| io_err(rel, e))?;
        let Some(last) = parts.len().checked_sub(1) else {
            return Err(io_err(
                rel,
                io::Error::new(io::ErrorKind::InvalidInput, "the root is not a mount point"),
            ));
        };
        let chown = |at: BorrowedFd<'_>, name: &OsStr| {
            if let Some((uid, gid)) = owner {
                // Best effort: with a single-id map for root inside (`--root`), the user's own
                // id is not mapped, and what init makes stays its own.
                let _ = rustix::fs::chownat(
                    at,
                    name,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                );
            }
        };
        let mut here = std::path::PathBuf::new();
        let mut at: OwnedFd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(rel, err(e)))?;
        for (i, name) in parts.iter().enumerate() {
            here.push(name);
            let want_dir = i < last || dir;
            match rustix::fs::statat(&at, *name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if file_type(&st) == FileType::Symlink => {
                    return Err(MountPointError::Symlink(here))
                }
                Ok(st) if want_dir && file_type(&st) != FileType::Directory => {
                    return Err(MountPointError::NotDir(here))
                }
                Ok(_) => {}
                Err(rustix::io::Errno::NOENT) => {
                    let made = if want_dir {
                        rustix::fs::mkdirat(&at, *name, Mode::from_raw_mode(0o755))
                    } else {
                        rustix::fs::openat(
                            &at,
                            *name,
                            OFlags::WRONLY
                                | OFlags::CREATE
                                | OFlags::EXCL
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC,
                            Mode::from_raw_mode(0o644),
                        )
                        .map(drop)
                    };
                    match made {
                        Ok(()) => chown(at.as_fd(), name),
                        // Made meanwhile: the open below checks what it is.
                        Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(io_err(&here, err(e))),
                    }
                }
                Err(e) => return Err(io_err(&here, err(e))),
            }
            let flags = OFlags::PATH
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC
                | if want_dir {
                    OFlags::DIRECTORY
                } else {
                    OFlags::empty()
                };
            let next = match rustix::fs::openat(&at, *name, flags, Mode::empty()) {
                Ok(fd) => fd,
                // Swapped for a symlink since the look: O_NOFOLLOW|O_DIRECTORY refuses it.
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                    return Err(
                        match rustix::fs::statat(&at, *name, AtFlags::SYMLINK_NOFOLLOW) {
                            Ok(st) if file_type(&st) != FileType::Symlink => {
                                MountPointError::NotDir(here)
                            }
                            _ => MountPointError::Symlink(here),
                        },
                    )
                }
                Err(e) => return Err(io_err(&here, err(e))),
            };
            if !want_dir {
                // O_PATH|O_NOFOLLOW on a symlink opens the link itself: never mount on one.
                let st = rustix::fs::fstat(&next).map_err(|e| io_err(&here, err(e)))?;
                if file_type(&st) == FileType::Symlink {
                    return Err(MountPointError::Symlink(here));
                }
            }
            at = next;
        }
        Ok(at)
    }
}

/// One entry of a directory, held by an `O_PATH` fd: whatever the tree does to the name
/// afterwards, this is the inode that was there, and it is never a symlink's target.
#[derive(Debug)]
pub struct Entry {
    fd: OwnedFd,
    pub stat: Stat,
}

impl Tree {
    /// The entry `name` of this directory (a single name, not a path).
    pub fn entry(&self, name: &OsStr) -> io::Result<Entry> {
        if name.as_bytes().contains(&b'/') || name == ".." || name == "." || name.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "`{}` is not a name in a directory",
                    Path::new(name).display()
                ),
            ));
        }
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        let stat = rustix::fs::fstat(&fd).map_err(err)?;
        Ok(Entry { fd, stat })
    }
}

impl Entry {
    pub fn file_type(&self) -> FileType {
        file_type(&self.stat)
    }

    /// `/proc/self/fd/N` for this entry: a path the kernel resolves to this very inode (for
    /// the calls that take no fd, such as xattrs of a file that cannot be opened for reading).
    pub fn proc_path(&self) -> String {
        format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.fd)
        )
    }

    /// The directory itself, opened for reading.
    pub fn open_dir(&self) -> io::Result<Tree> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        Ok(Tree { fd })
    }

    /// The regular file itself, opened for reading (checked to be the same inode).
    pub fn open_file(&self) -> io::Result<File> {
        if self.file_type() != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let fd = rustix::fs::open(
            self.proc_path().as_str(),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        let st = rustix::fs::fstat(&fd).map_err(err)?;
        if st.st_ino != self.stat.st_ino || st.st_dev != self.stat.st_dev {
            return Err(io::Error::other("the file changed while it was opened"));
        }
        Ok(File::from(fd))
    }

    /// The target of the symlink itself, at most 4096 bytes.
    pub fn read_link(&self) -> io::Result<OsString> {
        let target = rustix::fs::readlinkat(&self.fd, "", Vec::new()).map_err(err)?;
        Ok(OsStr::from_bytes(target.as_bytes()).to_os_string())
    }
}

/// Removes `name` in `dir`, recursively when it is a directory, even where directories lack
/// their owner's write or search bit (as image layers often have). Follows no symlink.
pub fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let mut unlinked = rustix::fs::unlinkat(dir, name, AtFlags::empty());
    if unlinked == Err(rustix::io::Errno::ACCESS) {
        // The directory that holds it lacks its write bit (the recursion below gives it to
        // every directory it enters; this is the top one).
        rustix::fs::fchmod(dir, Mode::from_raw_mode(0o700)).map_err(err)?;
        unlinked = rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    match unlinked {
        Ok(()) | Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(err(e)),
    }
    let sub = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::ACCESS) => {
            // No read bit: open it by O_PATH (which needs none), make it readable through that
            // very inode, and open it again.
            let path = rustix::fs::openat(
                dir,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(err)?;
            let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&path));
            rustix::fs::chmod(proc.as_str(), Mode::from_raw_mode(0o700)).map_err(err)?;
            rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(err)?
        }
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    let _ = rustix::fs::fchmod(&sub, Mode::from_raw_mode(0o700));
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(&sub).map_err(err)? {
        let e = e.map_err(err)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    for n in &names {
        remove_at(sub.as_fd(), n)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Removes the tree at `path` (the path itself is the caller's: a store directory); nothing
/// beneath it is followed. Nothing there is fine.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to remove `{}`", path.display()),
        ));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let dir = match Tree::open(parent) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_at(dir.fd(), name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, Tree) {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(outside.path().join("victim")).expect("mkdir");
        std::fs::write(outside.path().join("victim/secret"), "s").expect("write");
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).expect("symlink");
        std::os::unix::fs::symlink("/", root.path().join("abs")).expect("symlink");
        std::fs::create_dir(root.path().join("d")).expect("mkdir");
        std::os::unix::fs::symlink("..", root.path().join("d/up")).expect("symlink");
        let t = Tree::open(root.path()).expect("open");
        (root, outside, t)
    }

    #[test]
    fn no_symlink_is_followed_in_any_component() {
        let (_root, outside, t) = setup();
        for rel in [
            "link/victim",
            "link/victim/secret",
            "abs/etc",
            "d/up/d",
            "d/up",
        ] {
            assert!(t.open_file(Path::new(rel)).is_err(), "{rel} opened");
            assert!(t.dir(Path::new(rel)).is_err(), "{rel} opened as dir");
        }
        assert!(t.mkdir(Path::new("link/victim/new"), 0o755).is_err());
        assert!(t.create_file(Path::new("link/new"), 0o644).is_err());
        assert!(t.remove(Path::new("link/victim")).is_err());
        assert!(t.open_at(Path::new("../x"), OFlags::RDONLY, 0).is_err());
        assert!(outside.path().join("victim/secret").exists());
        assert!(!outside.path().join("victim/new").exists());
        // The symlink itself is an entry of the tree: it can be looked at and removed.
        assert!(t.lstat(Path::new("link")).expect("lstat").is_some());
        t.remove(Path::new("link")).expect("remove the link");
        assert!(outside.path().join("victim/secret").exists());
    }

    #[test]
    fn remove_takes_unwritable_trees_and_never_their_symlinks_targets() {
        let (root, outside, t) = setup();
        let d = root.path().join("d");
        std::fs::create_dir_all(d.join("a/b")).expect("mkdir");
        std::fs::write(d.join("a/b/f"), "x").expect("write");
        std::os::unix::fs::symlink(outside.path().join("victim"), d.join("a/v")).expect("ln");
        std::fs::set_permissions(d.join("a/b"), std::fs::Permissions::from_mode(0o000))
            .expect("chmod");
        std::fs::set_permissions(d.join("a"), std::fs::Permissions::from_mode(0o500))
            .expect("chmod");
        t.remove(Path::new("d")).expect("remove");
        assert!(!d.exists());
        assert!(outside.path().join("victim/secret").exists());
        t.remove(Path::new("nothing/here"))
            .expect("nothing is fine");
    }

    #[test]
    fn mount_points_are_made_beneath_and_never_through_a_symlink() {
        let (root, outside, t) = setup();
        let fd = t.mount_point(Path::new("a/b/c"), true, None).expect("made");
        assert!(root.path().join("a/b/c").is_dir());
        let st = rustix::fs::fstat(&fd).expect("fstat");
        assert_eq!(file_type(&st), FileType::Directory);
        t.mount_point(Path::new("a/sock"), false, None)
            .expect("a file");
        assert!(root.path().join("a/sock").is_file());
        // Again: found, not made.
        t.mount_point(Path::new("a/b/c"), true, None)
            .expect("again");
        for (rel, bad) in [
            ("link/victim/x", "link"),
            ("abs/tmp/x", "abs"),
            ("d/up/x", "d/up"),
            ("d/up", "d/up"),
        ] {
            match t.mount_point(Path::new(rel), true, None) {
                Err(MountPointError::Symlink(p)) => assert_eq!(p, Path::new(bad), "{rel}"),
                other => panic!("{rel}: {other:?}"),
            }
        }
        assert!(matches!(
            t.mount_point(Path::new("a/sock/x"), true, None),
            Err(MountPointError::NotDir(_))
        ));
        assert!(t.mount_point(Path::new("../x"), true, None).is_err());
        assert_eq!(
            std::fs::read_dir(outside.path().join("victim"))
                .expect("victim")
                .count(),
            1,
            "nothing was made outside the tree"
        );
        assert_eq!(
            MountPointError::Symlink("home/ann/.cache".into()).to_string(),
            "`/home/ann/.cache` is a symbolic link"
        );
    }

    #[test]
    fn bounded_reads() {
        let (root, _outside, t) = setup();
        std::fs::write(root.path().join("f"), vec![b'x'; 100]).expect("write");
        assert_eq!(
            t.read_bounded(Path::new("f"), 100).expect("read").len(),
            100
        );
        assert!(t.read_bounded(Path::new("f"), 99).is_err());
        assert!(t.read_bounded(Path::new("d"), 99).is_err(), "a directory");
    }
}
