//! The system calls the sandbox makes, one file per kind: mounts (through the [`Sys`] trait,
//! so plans run against the recording fake [`Recorder`] in tests), namespaces, ids, processes
//! (fork, clone3, spawn), capabilities, descriptors, signals and terminals.
//! The only module of `dev` with `unsafe`, and the only one that calls `nix::sched`, the set-id
//! calls or `prctl`; each `unsafe` block says why it is sound.

use std::path::Path;

use anyhow::Result;

use super::plan::Flag;

pub mod caps;
pub mod fds;
pub mod ids;
pub mod mounts;
pub mod ns;
pub mod process;
#[cfg(test)]
pub mod recorder;
pub mod signals;
pub mod terminal;

pub use caps::keep_capabilities;
pub use fds::{clean_for_exec, recv_fds, send_fds, take_inherited_socket};
pub use mounts::{bind_self, detach, is_mount_point, make_private, mount_overlay, Linux};
pub use process::{
    clean_exec, fork, fork_in_new_pidns, fork_in_new_userns, new_session, signal_on_parent_death,
    spawn_clean, spawn_on_terminal, SpawnArgs,
};
#[cfg(test)]
pub use recorder::Recorder;
pub use signals::wait_signal;
pub use terminal::{open_ptmx, open_pty_peer, set_window_size, window_size};

/// What init's mount plan needs from the kernel.
pub trait Sys {
    /// A detached copy of a mount tree.
    type Tree;
    fn clone_tree(&mut self, source: &Path, readonly: bool) -> Result<Self::Tree>;
    fn pivot_root(&mut self, root: &Path) -> Result<()>;
    fn mkdir_all(&mut self, path: &Path, mode: u32) -> Result<()>;
    fn create_file(&mut self, path: &Path) -> Result<()>;
    fn mount(&mut self, fstype: &str, target: &Path, flags: &[Flag], data: &str) -> Result<()>;
    fn attach(&mut self, tree: &Self::Tree, target: &Path) -> Result<()>;
    fn symlink(&mut self, target: &Path, link: &Path) -> Result<()>;
}
