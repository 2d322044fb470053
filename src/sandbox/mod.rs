//! Rootless sandboxing: id maps and the sandbox plan (pure), the user-namespace helper process,
//! the root filesystem, init (pid 1), and the one module that makes the system calls.
//! Everything that enters a namespace happens in a re-executed, single-threaded `dev` helper.

pub mod helper;
pub mod init;
pub mod keeper;
pub mod plan;
pub mod pty;
pub mod rootfs;
pub mod spawn;
pub mod sys;
