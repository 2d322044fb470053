//! Namespaces: creating them (unshare) and joining them (setns).

use std::os::fd::AsFd;

pub use nix::sched::CloneFlags;

/// Moves this process into new namespaces of the kinds `flags` names (a new pid namespace is
/// its next child's). A user namespace needs a single-threaded process.
pub fn unshare(flags: CloneFlags) -> nix::Result<()> {
    nix::sched::unshare(flags)
}

/// Joins the namespace `fd` refers to, of kind `flag`.
pub fn setns(fd: impl AsFd, flag: CloneFlags) -> nix::Result<()> {
    nix::sched::setns(fd, flag)
}
