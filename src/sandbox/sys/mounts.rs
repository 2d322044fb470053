//! Mounts: the [`Sys`] trait's Linux side (open_tree, move_mount, mount_setattr, mount,
//! pivot_root; the helper's overlay, fuse-overlayfs, bind, detach, private propagation).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::libc;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::Signal;
use nix::unistd::{chdir, pivot_root};

use super::ns::CloneFlags;
use super::Sys;
use crate::sandbox::plan::{BindKind, Flag};

/// The real kernel.
pub struct Linux;

// From <linux/mount.h>; the libc crate does not export them on every target yet.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const MOUNT_ATTR_RDONLY: u64 = 1;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| anyhow!("path `{}` has a NUL byte", p.display()))
}

fn ms_flags(flags: &[Flag]) -> MsFlags {
    flags.iter().fold(MsFlags::empty(), |acc, f| {
        acc | match f {
            Flag::NoSuid => MsFlags::MS_NOSUID,
            Flag::NoDev => MsFlags::MS_NODEV,
            Flag::NoExec => MsFlags::MS_NOEXEC,
            Flag::ReadOnly => MsFlags::MS_RDONLY,
        }
    })
}

impl Sys for Linux {
    type Tree = OwnedFd;
    type Fuse = Child;

    fn unshare(&mut self, flags: CloneFlags) -> Result<()> {
        Ok(super::ns::unshare(flags)?)
    }

    fn make_private(&mut self) -> Result<()> {
        make_private()
    }

    fn mount_overlay(&mut self, layers_dir: &Path, options: &str, target: &Path) -> Result<()> {
        std::env::set_current_dir(layers_dir)
            .with_context(|| format!("cannot enter `{}`", layers_dir.display()))?;
        mount_overlay(options, target)
            .map_err(|e| anyhow!("kernel overlayfs in a user namespace: {e}"))
    }

    fn start_fuse(&mut self, layers_dir: &Path, options: &str, target: &Path) -> Result<Child> {
        let program = which::which("fuse-overlayfs").map_err(|_| {
            anyhow!(
                "`fuse-overlayfs` is not installed (Debian/Ubuntu: `apt install fuse-overlayfs`)"
            )
        })?;
        let mut cmd = Command::new(program);
        cmd.arg("-f")
            .arg("-o")
            .arg(format!("{options},allow_other"))
            .arg(target)
            .current_dir(layers_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // If the helper dies, fuse-overlayfs unmounts and exits instead of keeping the mount alive.
        super::process::signal_on_parent_death(&mut cmd, Signal::SIGTERM);
        if !nix::unistd::getuid().is_root() {
            super::caps::keep_capabilities(&mut cmd);
        }
        let mut child = cmd.spawn().context("cannot start fuse-overlayfs")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mount_point(target) {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                bail!("fuse-overlayfs failed ({status}): {}", err.trim());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("fuse-overlayfs did not mount within 10 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(child)
    }

    fn stop_fuse(&mut self, mut child: Child) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    fn bind_self(&mut self, path: &Path) -> Result<()> {
        bind_self(path)
    }

    fn detach(&mut self, path: &Path) -> Result<()> {
        Ok(detach(path)?)
    }

    fn set_hostname(&mut self, name: &str) -> Result<()> {
        nix::unistd::sethostname(name).context("cannot set the hostname")
    }

    fn clone_tree(&mut self, source: &Path, readonly: bool) -> Result<OwnedFd> {
        let path = cpath(source)?;
        let flags =
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
        // SAFETY: open_tree(2) reads a NUL-terminated path that outlives the call and returns a
        // new file descriptor, or -1, which is checked before the fd is owned.
        let fd =
            unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("cannot clone the mount of `{}`", source.display()));
        }
        // SAFETY: fd is a fresh descriptor returned by the kernel and owned by nobody else.
        let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        if readonly {
            let attr = MountAttr {
                attr_set: MOUNT_ATTR_RDONLY,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            let empty = c"";
            // SAFETY: mount_setattr(2) reads `attr` (size passed) and an empty path, both live
            // for the call; the fd is valid because `tree` owns it.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_mount_setattr,
                    tree.as_raw_fd(),
                    empty.as_ptr(),
                    (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
                    &attr as *const MountAttr,
                    std::mem::size_of::<MountAttr>(),
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("cannot make `{}` read-only", source.display()));
            }
        }
        Ok(tree)
    }

    fn pivot_root(&mut self, root: &Path) -> Result<()> {
        // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the
        // new root, with no directory of the old one to reach it through (as runc does).
        chdir(root).with_context(|| format!("cannot enter `{}`", root.display()))?;
        pivot_root(".", ".").context("cannot pivot into the root filesystem")?;
        umount2(".", MntFlags::MNT_DETACH).context("cannot detach the host's root")?;
        chdir("/").context("cannot enter the new root")?;
        Ok(())
    }

    fn mkdir_all(&mut self, path: &Path, mode: u32) -> Result<()> {
        // Most mount points are in the image: one lookup, not a failed mkdir and then a lookup
        // (each a walk through an overlay whose caches are cold).
        if path.is_dir() {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .with_context(|| {
                format!(
                    "cannot create the mount point `{}` in the image",
                    path.display()
                )
            })?;
        // The mode asked for, not the umask's cut of it (an image's /run/lock is 1777).
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .with_context(|| format!("cannot set the mode of `{}`", path.display()))
    }

    fn create_file(&mut self, path: &Path) -> Result<()> {
        use nix::sys::stat::{mknod, Mode, SFlag};
        if path.exists() {
            return Ok(());
        }
        let make = || mknod(path, SFlag::S_IFREG, Mode::from_bits_truncate(0o644), 0);
        let made = match make() {
            // A dangling symlink (`/etc/resolv.conf` → `/run/...`): replace it by a file to
            // mount on.
            Err(nix::errno::Errno::EEXIST) => {
                std::fs::remove_file(path).ok();
                make()
            }
            Err(nix::errno::Errno::ENOENT) => {
                if let Some(parent) = path.parent() {
                    self.mkdir_all(parent, 0o755)?;
                }
                make()
            }
            r => r,
        };
        made.with_context(|| {
            format!(
                "cannot create the mount point `{}` in the image",
                path.display()
            )
        })
    }

    fn mount(&mut self, fstype: &str, target: &Path, flags: &[Flag], data: &str) -> Result<()> {
        // Before the pivot a symlink in the image would point the mount at the host's tree.
        if target
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            anyhow::bail!(
                "the image's `{}` is a symlink; cannot mount {fstype} there",
                target.display()
            );
        }
        mount(
            Some(fstype),
            target,
            Some(fstype),
            ms_flags(flags),
            Some(data),
        )
        .with_context(|| format!("cannot mount {fstype} on `{}`", target.display()))
    }

    fn attach(&mut self, tree: &OwnedFd, target: &Path) -> Result<()> {
        let to = cpath(target)?;
        let empty = c"";
        // SAFETY: move_mount(2) reads two NUL-terminated paths that live for the call; `tree` is
        // a valid descriptor from open_tree.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("cannot mount onto `{}`", target.display()));
        }
        Ok(())
    }

    fn bind_beneath(
        &mut self,
        tree: &OwnedFd,
        target: &Path,
        kind: BindKind,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        let rel = target.strip_prefix("/").unwrap_or(target);
        let root =
            crate::beneath::Tree::open(Path::new("/")).context("cannot open the env's root")?;
        let place = root
            .mount_point(rel, kind == BindKind::Dir, owner)
            .map_err(|e| match e {
                crate::beneath::MountPointError::Symlink(_)
                | crate::beneath::MountPointError::NotDir(_) => crate::ui::UserError::with_hint(
                    format!("cannot mount onto `{}` in the env: {e} there", target.display()),
                    "dev follows no symlink to place a mount (the image shapes that tree); choose a target whose every directory is a real one in the image",
                ),
                e => anyhow!("cannot make the mount point `{}` in the env: {e}", target.display()),
            })?;
        let empty = c"";
        // SAFETY: move_mount(2) reads two empty NUL-terminated paths that live for the call;
        // `tree` is a valid descriptor from open_tree and `place` one from the walk above, so
        // the mount lands on the inode that walk found, with no path resolved again.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                empty.as_ptr(),
                place.as_raw_fd(),
                empty.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("cannot mount onto `{}`", target.display()));
        }
        Ok(())
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> Result<()> {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                Err(e).with_context(|| format!("cannot create `{}`", link.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Whether `path` is a mount point: its device differs from its parent's.
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (path.metadata(), path.join("..").metadata()) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Makes every mount in this (new) mount namespace private, so nothing propagates to the host.
fn make_private() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("cannot make the mount namespace private")
}

/// Mounts overlayfs with `options` at `target`; relative layer paths resolve from the cwd.
fn mount_overlay(options: &str, target: &Path) -> nix::Result<()> {
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options),
    )
}

/// Bind-mounts `path` onto itself, so it can be the root of a pivot.
fn bind_self(path: &Path) -> Result<()> {
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("cannot bind `{}`", path.display()))
}

fn detach(path: &Path) -> nix::Result<()> {
    umount2(path, MntFlags::MNT_DETACH)
}
