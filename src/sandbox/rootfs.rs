//! The env's root filesystem, mounted by the helper in its mount namespace: kernel overlayfs,
//! `fuse-overlayfs`, or a plain copy, tried in that order when no backend is known yet.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::plan::{Backend, RootfsPlan};
use super::sys::Sys;

/// A mounted root filesystem; unmount with [`Mounted::release`].
pub struct Mounted<S: Sys> {
    pub backend: Backend,
    fuse: Option<S::Fuse>,
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
pub fn mount<S: Sys>(sys: &mut S, plan: &RootfsPlan) -> Result<Mounted<S>> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&plan.merged)
        .with_context(|| format!("cannot create `{}`", plan.merged.display()))?;
    if let Some(backend) = plan.backend {
        return mount_with(sys, plan, backend);
    }
    let mut errors = Vec::new();
    for backend in [Backend::Native, Backend::Fuse, Backend::Copy] {
        match mount_with(sys, plan, backend) {
            Ok(m) => {
                let cache = ProbeCache {
                    kernel: kernel_release(),
                    backend,
                };
                if let Ok(json) = serde_json::to_vec(&cache) {
                    // A cache, probed again if a power cut loses it: not flushed (a first run's
                    // fsync here waited behind the flush of the layers it had just pulled).
                    let _ = crate::atomic::write(
                        &plan.probe_cache,
                        &json,
                        0o644,
                        crate::atomic::Durability::Volatile,
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

fn mount_with<S: Sys>(sys: &mut S, plan: &RootfsPlan, backend: Backend) -> Result<Mounted<S>> {
    for d in [&plan.upper, &plan.work] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(d)
            .with_context(|| format!("cannot create `{}`", d.display()))?;
    }
    match backend {
        Backend::Native => {
            sys.mount_overlay(&plan.layers_dir, &plan.overlay_options(true), &plan.merged)?;
            Ok(Mounted {
                backend,
                fuse: None,
            })
        }
        Backend::Fuse => {
            let fuse =
                sys.start_fuse(&plan.layers_dir, &plan.overlay_options(false), &plan.merged)?;
            Ok(Mounted {
                backend,
                fuse: Some(fuse),
            })
        }
        Backend::Copy => {
            if !copy_is_complete(&plan.copy) {
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
                mark_copy_complete(&plan.copy).context("cannot mark the copy complete")?;
            }
            sys.bind_self(&plan.copy)?;
            std::fs::remove_dir(&plan.merged).ok();
            Ok(Mounted {
                backend,
                fuse: None,
            })
        }
    }
}

impl<S: Sys> Mounted<S> {
    /// The directory the root filesystem is at.
    pub fn root(&self, plan: &RootfsPlan) -> PathBuf {
        match self.backend {
            Backend::Copy => plan.copy.clone(),
            _ => plan.merged.clone(),
        }
    }

    /// Unmounts, waits for fuse-overlayfs to exit, and removes a `--rm` scratch dir.
    pub fn release(mut self, sys: &mut S, plan: &RootfsPlan) {
        let _ = sys.detach(&self.root(plan));
        if let Some(fuse) = self.fuse.take() {
            sys.stop_fuse(fuse);
        }
        if let Some(scratch) = &plan.scratch {
            let _ = crate::unpack::remove_tree(scratch);
        }
    }
}

/// The mark of a finished copy, in the copied root. The image shaped that tree (and the env
/// writes it), so the mark is looked at and made beneath the root's fd, never through a symlink
/// a layer put at its name.
const COPY_COMPLETE: &str = ".dev-complete";

fn copy_is_complete(copy: &Path) -> bool {
    crate::beneath::Tree::open(copy)
        .and_then(|t| t.lstat(Path::new(COPY_COMPLETE)))
        .ok()
        .flatten()
        .is_some_and(|st| crate::beneath::file_type(&st) == rustix::fs::FileType::RegularFile)
}

fn mark_copy_complete(copy: &Path) -> std::io::Result<()> {
    let root = crate::beneath::Tree::open(copy)?;
    root.remove(Path::new(COPY_COMPLETE))?;
    root.create_file(Path::new(COPY_COMPLETE), 0o644)?;
    Ok(())
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::sandbox::sys::Recorder;

    /// A root filesystem plan under `dir` with one layer holding `/etc/os-release`.
    pub(in crate::sandbox) fn plan_in(dir: &Path, backend: Option<Backend>) -> RootfsPlan {
        let layers = dir.join("layers");
        fs::create_dir_all(layers.join("a/root/etc")).expect("layer");
        fs::write(layers.join("a/root/etc/os-release"), "ID=test\n").expect("layer file");
        RootfsPlan {
            backend,
            probe_cache: dir.join("overlay.json"),
            layers_dir: layers,
            lowers: vec!["a/root".into()],
            upper: dir.join("env/upper"),
            work: dir.join("env/work"),
            copy: dir.join("env/rootfs"),
            merged: dir.join("env/merged"),
            scratch: None,
        }
    }

    fn cached(plan: &RootfsPlan) -> Option<Backend> {
        let json = fs::read(&plan.probe_cache).ok()?;
        serde_json::from_slice::<ProbeCache>(&json)
            .ok()
            .map(|c| c.backend)
    }

    /// A backend the store knows already is the only one tried, and nothing is cached.
    #[test]
    fn a_known_backend_is_the_only_one_mounted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = plan_in(dir.path(), Some(Backend::Native));
        let mut rec = Recorder::default();
        let mounted = mount(&mut rec, &plan).expect("mounts");
        assert_eq!(mounted.backend, Backend::Native);
        mounted.release(&mut rec, &plan);
        let merged = plan.merged.display();
        assert_eq!(
            rec.lines(),
            [
                format!(
                    "overlay {merged} in {} {}",
                    plan.layers_dir.display(),
                    plan.overlay_options(true)
                ),
                format!("detach {merged}"),
            ]
        );
        assert!(plan.upper.is_dir() && plan.work.is_dir());
        assert_eq!(cached(&plan), None);
    }

    /// With no backend known, kernel overlayfs is tried first, then fuse-overlayfs (without
    /// the kernel-only options); the first that mounts is cached for the next start. Its mount
    /// is detached before fuse-overlayfs is waited for.
    #[test]
    fn with_no_backend_known_the_first_that_mounts_is_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = plan_in(dir.path(), None);
        let mut rec = Recorder::failing(&["overlay"]);
        let mounted = mount(&mut rec, &plan).expect("mounts");
        assert_eq!(mounted.backend, Backend::Fuse);
        assert_eq!(cached(&plan), Some(Backend::Fuse));
        mounted.release(&mut rec, &plan);
        let (merged, layers) = (plan.merged.display(), plan.layers_dir.display());
        assert_eq!(
            rec.lines(),
            [
                format!(
                    "overlay {merged} in {layers} {}",
                    plan.overlay_options(true)
                ),
                format!("fuse {merged} in {layers} {}", plan.overlay_options(false)),
                format!("detach {merged}"),
                format!("stop-fuse {merged}"),
            ]
        );
    }

    /// Neither overlay: the layers are copied once, and the copy (bound onto itself) is the
    /// root; a second start binds the finished copy without copying again.
    #[test]
    fn without_overlays_the_copy_is_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = plan_in(dir.path(), None);
        let mut rec = Recorder::failing(&["overlay", "fuse"]);
        let mounted = mount(&mut rec, &plan).expect("mounts");
        assert_eq!(mounted.backend, Backend::Copy);
        assert_eq!(mounted.root(&plan), plan.copy);
        assert_eq!(
            fs::read_to_string(plan.copy.join("etc/os-release")).expect("copied"),
            "ID=test\n"
        );
        assert_eq!(cached(&plan), Some(Backend::Copy));
        mounted.release(&mut rec, &plan);
        let copy = plan.copy.display().to_string();
        assert_eq!(
            rec.lines()[2..],
            [format!("bind {copy}"), format!("detach {copy}")]
        );

        fs::write(plan.copy.join("etc/os-release"), "ID=changed\n").expect("write");
        let plan = RootfsPlan {
            backend: Some(Backend::Copy),
            ..plan
        };
        let mut rec = Recorder::default();
        mount(&mut rec, &plan).expect("mounts again");
        assert_eq!(rec.lines(), [format!("bind {copy}")]);
        assert_eq!(
            fs::read_to_string(plan.copy.join("etc/os-release")).expect("kept"),
            "ID=changed\n"
        );
    }

    /// When nothing mounts, the error names each backend and why it failed.
    #[test]
    fn when_nothing_mounts_each_backend_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = plan_in(dir.path(), None);
        let mut rec = Recorder::failing(&["overlay", "fuse", "bind"]);
        let err = mount(&mut rec, &plan).err().expect("no backend mounts");
        let msg = format!("{err:#}");
        for name in ["native: overlay", "fuse: fuse", "copy: bind"] {
            assert!(msg.contains(name), "{msg}");
        }
        assert_eq!(cached(&plan), None);
    }
}
