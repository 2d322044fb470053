//! Descriptors: passing them over a unix socket (SCM_RIGHTS), taking an inherited one, and
//! closing every other one before an exec.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::libc;

use super::caps::set_inheritable;

/// The socket a re-executed helper was given by [`spawn_helper`](crate::sandbox::parent::spawn_helper)'s
/// caller as descriptor `fd` (inherited across exec), if it is one.
pub fn take_inherited_socket(fd: std::os::fd::RawFd) -> Option<OwnedFd> {
    let st = nix::sys::stat::fstat(fd).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    // SAFETY: the parent passed this descriptor for this process to take, once, and nothing
    // else in it refers to it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// No inheritable or ambient capabilities, and every descriptor but 0, 1 and 2 closed on exec:
/// [`clean_exec`]'s steps but the signal mask. Taken by this process itself before
/// [`spawn_clean`] (which clears the child's mask), it is for a process that execs nothing
/// itself and only waits for that command. Async-signal-safe; allocates nothing.
pub fn clean_for_exec() -> io::Result<()> {
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    set_inheritable(false)?;
    // SAFETY: close_range(2) with integer arguments; CLOEXEC keeps std's own exec-error pipe
    // working until exec closes every marked descriptor at once.
    if unsafe {
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `data` and the descriptors `fds` over a unix socket (SCM_RIGHTS).
pub fn send_fds(sock: &impl AsRawFd, data: &[u8], fds: &[std::os::fd::RawFd]) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .context("cannot pass the env's namespaces")?;
    Ok(())
}

/// Receives what [`send_fds`] sent: the bytes and the descriptors.
pub fn recv_fds(sock: &impl AsRawFd) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = vec![0u8; 4096];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 8]);
    let (n, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .context("cannot receive the env's namespaces")?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().context("bad control message")? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: SCM_RIGHTS descriptors are new in this process and owned by nobody else.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (msg.bytes, fds)
    };
    buf.truncate(n);
    Ok((buf, fds))
}
