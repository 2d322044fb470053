//! The env's root filesystem, mounted by the helper in its mount namespace: kernel overlayfs,
//! `fuse-overlayfs`, or a plain copy, tried in that order when no backend is known yet.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::plan::{Backend, RootfsPlan};
use super::sys;

/// A mounted root filesystem; unmount with [`Mounted::release`].
pub struct Mounted {
    pub backend: Backend,
    fuse: Option<Child>,
}

/// The probe's answer, cached per store and kernel.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProbeCache {
    pub kernel: String,
    pub backend: Backend,
}

pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().to_string())
        .unwrap_or_default()
}

/// Mounts `plan`'s root filesystem at `plan.merged`.
pub fn mount(plan: &RootfsPlan) -> Result<Mounted> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&plan.merged)
        .with_context(|| format!("cannot create `{}`", plan.merged.display()))?;
    if let Some(backend) = plan.backend {
        return mount_with(plan, backend);
    }
    let mut errors = Vec::new();
    for backend in [Backend::Native, Backend::Fuse, Backend::Copy] {
        match mount_with(plan, backend) {
            Ok(m) => {
                let cache = ProbeCache {
                    kernel: kernel_release(),
                    backend,
                };
                if let Ok(json) = serde_json::to_vec(&cache) {
                    let _ = crate::atomic::write(
                        &plan.probe_cache,
                        &json,
                        0o644,
                        crate::atomic::Durability::Durable,
                    );
                }
                return Ok(m);
            }
            Err(e) => errors.push(format!("{}: {e:#}", backend.name())),
        }
    }
    bail!(
        "cannot mount the env's root filesystem ({})",
        errors.join("; ")
    )
}

fn mount_with(plan: &RootfsPlan, backend: Backend) -> Result<Mounted> {
    for d in [&plan.upper, &plan.work] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(d)
            .with_context(|| format!("cannot create `{}`", d.display()))?;
    }
    match backend {
        Backend::Native => {
            std::env::set_current_dir(&plan.layers_dir)
                .with_context(|| format!("cannot enter `{}`", plan.layers_dir.display()))?;
            sys::mount_overlay(&plan.overlay_options(true), &plan.merged)
                .map_err(|e| anyhow!("kernel overlayfs in a user namespace: {e}"))?;
            Ok(Mounted {
                backend,
                fuse: None,
            })
        }
        Backend::Fuse => {
            let program = which::which("fuse-overlayfs").map_err(|_| {
                anyhow!("`fuse-overlayfs` is not installed (Debian/Ubuntu: `apt install fuse-overlayfs`)")
            })?;
            let mut cmd = Command::new(program);
            cmd.arg("-f")
                .arg("-o")
                .arg(format!("{},allow_other", plan.overlay_options(false)))
                .arg(&plan.merged)
                .current_dir(&plan.layers_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            // If the helper dies, fuse-overlayfs unmounts and exits instead of keeping the mount alive.
            sys::signal_on_parent_death(&mut cmd, Signal::SIGTERM);
            if !nix::unistd::getuid().is_root() {
                sys::keep_capabilities(&mut cmd);
            }
            let mut child = cmd.spawn().context("cannot start fuse-overlayfs")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while !sys::is_mount_point(&plan.merged) {
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
            Ok(Mounted {
                backend,
                fuse: Some(child),
            })
        }
        Backend::Copy => {
            let done = plan.copy.join(".dev-complete");
            if !done.exists() {
                let staging = plan.copy.with_extension("staging");
                let _ = crate::unpack::remove_tree(&staging);
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&staging)
                    .with_context(|| format!("cannot create `{}`", staging.display()))?;
                for lower in plan.lowers.iter().rev() {
                    copy_layer(&plan.layers_dir.join(lower), &staging)?;
                }
                let _ = crate::unpack::remove_tree(&plan.copy);
                fs::rename(&staging, &plan.copy)
                    .context("cannot move the copied root into place")?;
                fs::write(&done, b"").context("cannot mark the copy complete")?;
            }
            sys::bind_self(&plan.copy)?;
            std::fs::remove_dir(&plan.merged).ok();
            Ok(Mounted {
                backend,
                fuse: None,
            })
        }
    }
}

impl Mounted {
    /// The directory the root filesystem is at.
    pub fn root(&self, plan: &RootfsPlan) -> PathBuf {
        match self.backend {
            Backend::Copy => plan.copy.clone(),
            _ => plan.merged.clone(),
        }
    }

    /// Unmounts, waits for fuse-overlayfs to exit, and removes a `--rm` scratch dir.
    pub fn release(mut self, plan: &RootfsPlan) {
        let _ = sys::detach(&self.root(plan));
        if let Some(mut child) = self.fuse.take() {
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
        if let Some(scratch) = &plan.scratch {
            let _ = crate::unpack::remove_tree(scratch);
        }
    }
}

/// Copies one layer tree onto `dest`, applying its whiteouts (char 0/0) and opaque directories.
pub fn copy_layer(src: &Path, dest: &Path) -> Result<()> {
    let opaque = xattr::get(src, "user.overlay.opaque")
        .ok()
        .flatten()
        .is_some_and(|v| v == b"y");
    if opaque {
        for e in fs::read_dir(dest).into_iter().flatten().flatten() {
            crate::unpack::remove_tree(&e.path())
                .with_context(|| format!("cannot remove `{}`", e.path().display()))?;
        }
    }
    for entry in fs::read_dir(src).with_context(|| format!("cannot read `{}`", src.display()))? {
        let entry = entry?;
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        let meta = fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            if to.symlink_metadata().is_ok() {
                crate::unpack::remove_tree(&to)
                    .with_context(|| format!("cannot remove `{}`", to.display()))?;
            }
            continue;
        }
        if ft.is_dir() {
            if !to.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                if to.symlink_metadata().is_ok() {
                    crate::unpack::remove_tree(&to)?;
                }
                fs::create_dir(&to).with_context(|| format!("cannot create `{}`", to.display()))?;
            }
            copy_layer(&from, &to)?;
        } else {
            if to.symlink_metadata().is_ok() {
                crate::unpack::remove_tree(&to)?;
            }
            if ft.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            } else if ft.is_file() {
                fs::copy(&from, &to)
                    .with_context(|| format!("cannot copy `{}`", from.display()))?;
            } else {
                continue;
            }
        }
        let _ = nix::unistd::fchownat(
            None,
            &to,
            Some(meta.uid().into()),
            Some(meta.gid().into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        if !ft.is_symlink() {
            fs::set_permissions(
                &to,
                std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
            )?;
        }
    }
    Ok(())
}
