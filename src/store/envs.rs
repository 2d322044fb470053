//! Environments: one persistent writable layer and home per project (and id mapping), plus
//! throwaway ones for `--rm` and for `--image` runs outside a project.

use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{write_atomic, Store};
use crate::oci::Digest;
use crate::ui::UserError;

/// An env's directories.
#[derive(Clone, Debug)]
pub struct EnvDirs {
    pub dir: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    pub copy: PathBuf,
    pub home: PathBuf,
}

impl EnvDirs {
    fn at(dir: PathBuf) -> Self {
        EnvDirs {
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            copy: dir.join("rootfs"),
            home: dir.join("home"),
            dir,
        }
    }
}

/// What an env was made from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnvRecord {
    pub project: PathBuf,
    pub image: String,
    pub manifest_digest: Digest,
}

/// A persistent env, locked for one session.
pub struct Env {
    pub dirs: EnvDirs,
    _lock: Flock<File>,
}

fn mkdir(p: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .with_context(|| format!("cannot create `{}`", p.display()))
}

impl Store {
    pub fn envs_dir(&self, mapping: &str) -> PathBuf {
        self.root.join("envs-v1").join(mapping)
    }

    /// The probe result for the overlay backend.
    pub fn overlay_probe_path(&self) -> PathBuf {
        self.root.join("overlay-v1.json")
    }

    /// The directory of the project's env (whether or not it exists yet).
    pub fn env_dir(&self, mapping: &str, project: &Path) -> PathBuf {
        let name = crate::sandbox::plan::hostname(project);
        let hash = Digest::of_bytes(project.as_os_str().as_encoded_bytes());
        self.envs_dir(mapping)
            .join(format!("{name}-{}", &hash.hex()[..12]))
    }

    /// The project's env without locking it, if it exists and was made from `manifest`.
    pub fn env_dirs_if_current(
        &self,
        mapping: &str,
        project: &Path,
        manifest: &Digest,
    ) -> Option<EnvDirs> {
        let dirs = EnvDirs::at(self.env_dir(mapping, project));
        let rec: EnvRecord =
            serde_json::from_slice(&fs::read(dirs.dir.join("env.json")).ok()?).ok()?;
        (&rec.manifest_digest == manifest).then_some(dirs)
    }

    /// The project's env, created if new and locked for this session. An env made from another
    /// image than `manifest` is set aside (kept until `dev system prune`) and a fresh one made.
    pub fn open_env(
        &self,
        mapping: &str,
        project: &Path,
        image: &str,
        manifest: &Digest,
    ) -> Result<Env> {
        let dir = self.env_dir(mapping, project);
        mkdir(&dir)?;
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .with_context(|| format!("cannot open the lock of `{}`", dir.display()))?;
        let mut lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            UserError::with_hint(
                format!(
                    "the env of `{}` is in use by another `dev` session",
                    project.display()
                ),
                "finish the other session first, or start a throwaway one with `--rm`",
            )
        })?;
        let dirs = EnvDirs::at(dir);
        let record_path = dirs.dir.join("env.json");
        let record: Option<EnvRecord> = fs::read(&record_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(old) = record.filter(|r| &r.manifest_digest != manifest) {
            let trash = self.envs_dir(mapping).join("tmp").join(format!(
                "{}.{}",
                dirs.dir
                    .file_name()
                    .map_or("env".into(), |n| n.to_string_lossy()),
                std::process::id()
            ));
            // The layer's top directories belong to ids inside the env: they cannot change
            // parent from here, but the env directory (the user's) can; the home comes back.
            mkdir(trash.parent().unwrap_or(&dirs.dir))?;
            fs::rename(&dirs.dir, &trash)
                .with_context(|| format!("cannot set `{}` aside", dirs.dir.display()))?;
            mkdir(&dirs.dir)?;
            if trash.join("home").exists() {
                fs::rename(trash.join("home"), &dirs.home)
                    .with_context(|| format!("cannot keep `{}`", dirs.home.display()))?;
            }
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dirs.dir.join("lock"))
                .with_context(|| format!("cannot open the lock of `{}`", dirs.dir.display()))?;
            lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
                .map_err(|_| anyhow::anyhow!("the env of `{}` is in use", project.display()))?;
            eprintln!(
                "note: the env was made from {} ({}); starting a fresh one for {image} (the old changes are kept until `dev system prune`)",
                old.image,
                old.manifest_digest.short()
            );
        }
        mkdir(&dirs.home)?;
        let rec = EnvRecord {
            project: project.to_path_buf(),
            image: image.to_string(),
            manifest_digest: manifest.clone(),
        };
        let json = serde_json::to_vec_pretty(&rec)?;
        // Written only when it changes: a warm start makes no write that must reach the disk.
        if fs::read(&record_path).ok().as_deref() != Some(&json[..]) {
            write_atomic(&record_path, &json)?;
        }
        Ok(Env { dirs, _lock: lock })
    }

    /// A throwaway env under `envs-v1/<mapping>/tmp/`, removed when the session ends.
    pub fn scratch_env(&self, mapping: &str) -> Result<EnvDirs> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = self
            .envs_dir(mapping)
            .join("tmp")
            .join(format!("rm-{}-{nanos:08x}", std::process::id()));
        mkdir(&dir)?;
        let dirs = EnvDirs::at(dir);
        mkdir(&dirs.home)?;
        Ok(dirs)
    }
}
