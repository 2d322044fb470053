//! Rootless sandboxing. The sandbox plan (pure); one file per process that runs the code:
//! `parent` (dev's side of starting), `helper` (the user-namespace helper), `init` (pid 1),
//! `keeper` (a running env's), `holder` (the user namespace kept between starts), `join` (a
//! session entering a running env); the root filesystem and the terminal; and `sys/`, the one
//! module that makes the system calls.
//! Everything that creates a namespace happens in a single-threaded helper (a fork or a
//! re-exec of `dev`); a session joins a running env's from `dev` or its child (`join`).

pub mod helper;
pub mod holder;
pub mod init;
pub mod join;
pub mod keeper;
pub mod parent;
pub mod plan;
pub mod pty;
pub mod rootfs;
pub mod sys;
