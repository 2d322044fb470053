//! The system calls the sandbox makes, one file per kind: mounts (through the [`Sys`] trait,
//! so plans run against the recording fake [`Recorder`] in tests), namespaces, ids, processes
//! (fork, clone3, spawn), capabilities, descriptors, signals and terminals.
//! The only module of `dev` with `unsafe`, and the only one that calls `nix::sched`, the set-id
//! calls or `prctl`; each `unsafe` block says why it is sound.

use std::path::Path;

use anyhow::Result;

use super::plan::{BindKind, Flag};

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

pub use fds::{clean_for_exec, recv_fds, send_fds, take_inherited_socket};
pub use mounts::Linux;
pub use process::{
    clean_exec, fork, fork_in_new_pidns, fork_in_new_userns, new_session, spawn_clean,
    spawn_on_terminal, SpawnArgs,
};
#[cfg(test)]
pub use recorder::Recorder;
pub use signals::wait_signal;
pub use terminal::{open_ptmx, open_pty_peer, set_window_size, window_size};

/// What the helper's namespaces and root filesystem and init's mount plan need from the kernel.
pub trait Sys {
    /// A detached copy of a mount tree.
    type Tree;
    /// A running fuse-overlayfs, whose mount lasts as long as it runs.
    type Fuse;
    /// New namespaces of the kinds `flags` names for this process (see [`ns::unshare`]).
    fn unshare(&mut self, flags: ns::CloneFlags) -> Result<()>;
    /// Every mount of this (new) mount namespace private, so nothing propagates to the host.
    fn make_private(&mut self) -> Result<()>;
    /// Kernel overlayfs with `options` (its layer paths relative to `layers_dir`) at `target`.
    fn mount_overlay(&mut self, layers_dir: &Path, options: &str, target: &Path) -> Result<()>;
    /// fuse-overlayfs with `options` (relative to `layers_dir`) at `target`, once it mounted.
    fn start_fuse(&mut self, layers_dir: &Path, options: &str, target: &Path)
        -> Result<Self::Fuse>;
    /// Waits for a fuse-overlayfs whose mount was detached to exit (kills it after a while).
    fn stop_fuse(&mut self, fuse: Self::Fuse);
    /// `path` bind-mounted onto itself, so it can be the root of a pivot.
    fn bind_self(&mut self, path: &Path) -> Result<()>;
    /// Detaches the mount at `path` (lazily: it goes once nothing uses it).
    fn detach(&mut self, path: &Path) -> Result<()>;
    fn set_hostname(&mut self, name: &str) -> Result<()>;
    fn clone_tree(&mut self, source: &Path, readonly: bool) -> Result<Self::Tree>;
    fn pivot_root(&mut self, root: &Path) -> Result<()>;
    fn mkdir_all(&mut self, path: &Path, mode: u32) -> Result<()>;
    fn create_file(&mut self, path: &Path) -> Result<()>;
    fn mount(&mut self, fstype: &str, target: &Path, flags: &[Flag], data: &str) -> Result<()>;
    fn attach(&mut self, tree: &Self::Tree, target: &Path) -> Result<()>;
    fn symlink(&mut self, target: &Path, link: &Path) -> Result<()>;
    /// Mounts `tree` at `target` of the root (after the pivot): the missing components made
    /// beneath `/` (owned by `owner`), no symlink followed in any, and the mount made onto the
    /// descriptor of what was found, not onto a path.
    fn bind_beneath(
        &mut self,
        tree: &Self::Tree,
        target: &Path,
        kind: BindKind,
        owner: Option<(u32, u32)>,
    ) -> Result<()>;
}
