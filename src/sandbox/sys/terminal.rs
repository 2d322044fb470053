//! Terminals: the env's pseudo-terminal multiplexer, a pty's peer, window sizes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

/// Opens the pseudo-terminal multiplexer of the devpts at /dev/pts in this mount namespace (the
/// env's own instance), for reading and writing, non-blocking. No symlink is followed on the
/// way: in a running env, its root can make /dev/pts or ptmx a link, and /dev/tty there is the
/// caller's own terminal. Refused unless what opened is a ptmx device (5:2), which only a
/// devpts has (the env cannot make device nodes).
pub fn open_ptmx() -> io::Result<OwnedFd> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(libc::AT_FDCWD, "/dev/pts/ptmx", how)?;
    // SAFETY: fd is a fresh descriptor returned by the kernel and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    let rdev = st.st_rdev;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || nix::sys::stat::major(rdev) != 5
        || nix::sys::stat::minor(rdev) != 2
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "/dev/pts/ptmx is not a pseudo-terminal multiplexer",
        ));
    }
    Ok(fd)
}

/// The other side of the pseudo-terminal `master`, unlocked and opened through the master
/// (TIOCGPTPEER, Linux 4.13), not by its name under /dev/pts; close-on-exec, not a controlling
/// terminal of this process.
pub fn open_pty_peer(master: &OwnedFd) -> io::Result<OwnedFd> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int, which lives for the call (ioctl_tty(2)).
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags as its integer argument and returns a new
    // descriptor or -1 (ioctl_tty(2)).
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor returned by the kernel and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A terminal's window size (TIOCGWINSZ).
pub fn window_size(tty: std::os::fd::BorrowedFd<'_>) -> io::Result<libc::winsize> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it (ioctl_tty(2)).
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is valid for the call.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ws)
}

/// Sets a terminal's window size (TIOCSWINSZ); the kernel sends SIGWINCH to its foreground
/// process group when it changed.
pub fn set_window_size(tty: std::os::fd::BorrowedFd<'_>, ws: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads the winsize, which lives for the call (ioctl_tty(2)).
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
