//! Atomic file replacement, the one way `dev` writes a file that must be whole or absent
//! (dev.lock, store records, runtime state): a temp file with a random name, created
//! `O_EXCL | O_NOFOLLOW` in the same directory (a planted symlink or file at any name is never
//! written through), written, optionally fsynced, then renamed over the destination.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// How much a write must survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its directory: it survives a power cut (store records, dev.lock).
    Durable,
    /// Whole or absent while the machine runs (runtime state, meaningless after a reboot).
    Volatile,
}

fn random_suffix() -> io::Result<String> {
    let mut buf = [0u8; 8];
    let mut filled = 0;
    while filled < buf.len() {
        filled +=
            rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())
                .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))?;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Replaces `path` with `bytes` (file mode `mode`), atomically.
pub fn write(path: &Path, bytes: &[u8], mode: u32, durability: Durability) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` names no file", path.display()),
        )
    })?;
    let dir_path = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = rustix::fs::open(
        dir_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))?;
    write_in(dir.as_fd(), name, bytes, mode, durability)
}

/// Replaces the file `name` in the open directory `dir` with `bytes`, atomically: for a
/// directory resolved beneath an untrusted tree (`beneath::Tree`), so its path is never walked.
pub fn write_in(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> io::Result<()> {
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", random_suffix()?));
    let fd = rustix::fs::openat(
        dir,
        &tmp_name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))?;
    let mut file = std::fs::File::from(fd);
    let written = file
        .write_all(bytes)
        .and_then(|()| {
            // The umask narrowed the mode at creation; the caller's mode is what is meant.
            rustix::fs::fchmod(file.as_fd(), Mode::from_raw_mode(mode))
                .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))
        })
        .and_then(|()| match durability {
            Durability::Durable => file.sync_all(),
            Durability::Volatile => Ok(()),
        })
        .and_then(|()| {
            rustix::fs::renameat(dir, &tmp_name, dir, name)
                .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))
        });
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(dir, &tmp_name, rustix::fs::AtFlags::empty());
        return Err(e);
    }
    if durability == Durability::Durable {
        rustix::fs::fsync(dir).map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_writes_through_a_planted_symlink() {
        let d = tempfile::tempdir().expect("tempdir");
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").expect("write");
        // Every predictable temp name an attacker could plant, and the destination itself.
        for n in [".dev.lock.tmp", "dev.lock.tmp", ".dev.lock.tmp.1"] {
            std::os::unix::fs::symlink(&victim, d.path().join(n)).expect("symlink");
        }
        std::os::unix::fs::symlink(&victim, d.path().join("dev.lock")).expect("symlink");
        write(
            &d.path().join("dev.lock"),
            b"new",
            0o644,
            Durability::Durable,
        )
        .expect("write");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep");
        let lock = d.path().join("dev.lock");
        assert!(!lock
            .symlink_metadata()
            .expect("stat")
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&lock).expect("read"), "new");
        let left: Vec<_> = std::fs::read_dir(d.path())
            .expect("ls")
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().ends_with(".tmp") && e.file_name().len() > 20
            })
            .collect();
        assert!(left.is_empty(), "temp files left: {left:?}");
    }
}
