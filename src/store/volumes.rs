//! Named volumes: directories of the store that envs mount (caches for cargo, pip, npm, go),
//! made on first use, shared by every env of the id mapping that names them, kept across
//! `dev reset` and `dev system prune` (unless `--volumes`: then those no env uses go).
//!
//! ```text
//! volumes-v1/<mapping>/<name>/data/          what the env sees
//! volumes-v1/<mapping>/<name>/envs/<env>     one empty file per env that mounted it
//! ```

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::Store;
use crate::ids::Identity;

/// One volume, as `dev volume ls` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Volume {
    pub name: String,
    #[serde(skip)]
    pub dir: PathBuf,
    pub size_bytes: u64,
    /// The env directories (that still exist) which mounted it.
    #[serde(skip)]
    pub env_dirs: Vec<PathBuf>,
}

impl Store {
    pub fn volumes_dir(&self, mapping: &str) -> PathBuf {
        self.root.join("volumes-v1").join(mapping)
    }

    /// The directory of volume `name` (checked by the caller), made on first use.
    pub fn volume_data(&self, mapping: &str, name: &str) -> Result<PathBuf> {
        let data = self.volumes_dir(mapping).join(name).join("data");
        if data.is_dir() {
            return Ok(data);
        }
        for (dir, mode) in [
            (self.root.join("volumes-v1"), 0o700),
            (self.volumes_dir(mapping), 0o700),
            (self.volumes_dir(mapping).join(name), 0o700),
            (data.clone(), 0o755),
        ] {
            match fs::DirBuilder::new().mode(mode).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot create the volume `{}`", dir.display()))
                }
            }
        }
        Ok(data)
    }

    /// Notes that the env in `env_dir` mounts volume `name`.
    pub fn note_volume_user(&self, mapping: &str, name: &str, env_dir: &Path) -> Result<()> {
        let envs = self.volumes_dir(mapping).join(name).join("envs");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&envs)
            .with_context(|| format!("cannot create `{}`", envs.display()))?;
        let Some(env) = env_dir.file_name() else {
            return Ok(());
        };
        let mark = envs.join(env);
        if !mark.exists() {
            super::write_atomic(&mark, b"")?;
        }
        Ok(())
    }

    /// Every volume of this mapping, by name.
    pub fn volumes(&self, mapping: &str) -> Vec<Volume> {
        let mut out: Vec<Volume> = fs::read_dir(self.volumes_dir(mapping))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("data").is_dir())
            .map(|e| {
                let dir = e.path();
                let env_dirs = fs::read_dir(dir.join("envs"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|m| self.envs_dir(mapping).join(m.file_name()))
                    .filter(|d| d.join("env.json").is_file())
                    .collect();
                Volume {
                    name: e.file_name().to_string_lossy().into_owned(),
                    size_bytes: super::envs::tree_bytes(&dir.join("data")),
                    dir,
                    env_dirs,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Removes volumes (their data may hold files of ids inside the env).
    pub fn remove_volumes(&self, identity: &Identity, dirs: &[PathBuf]) -> Result<()> {
        self.remove_trees(identity, dirs)
    }
}
