//! `devcontainer-lock.json`, next to a devcontainer.json: each Feature's `version`, `resolved`
//! (`registry/path@sha256:…`) and `integrity`, written as the Dev Containers CLI writes it
//! (sorted, two-space JSON) so both tools read each other's. Reading and writing only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Resolved;
use crate::ui::UserError;

/// The file, as the CLI lays it out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevcontainerLock {
    #[serde(default)]
    pub features: BTreeMap<String, LockEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEntry {
    #[serde(default)]
    pub version: String,
    pub resolved: String,
    pub integrity: String,
}

/// Where the lock of the config at `config` lies: `.devcontainer-lock.json` for a config
/// whose name starts with a dot (`.devcontainer.json`), else `devcontainer-lock.json`.
pub fn path_for(config: &Path) -> PathBuf {
    let dot = config
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    config.with_file_name(if dot {
        ".devcontainer-lock.json"
    } else {
        "devcontainer-lock.json"
    })
}

impl DevcontainerLock {
    /// The lock of what was resolved (as [`super::Features::resolved`] lists it).
    pub fn of(resolved: &[Resolved]) -> DevcontainerLock {
        DevcontainerLock {
            features: resolved
                .iter()
                .map(|r| {
                    (
                        r.reference.clone(),
                        LockEntry {
                            version: r.version.clone().unwrap_or_default(),
                            resolved: r.resolved.clone(),
                            integrity: r.integrity.to_string(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The pins for [`super::ensure`]: reference → (resolved, integrity).
    pub fn pins(&self) -> BTreeMap<String, Resolved> {
        self.features
            .iter()
            .filter_map(|(k, e)| {
                Some((
                    k.clone(),
                    Resolved {
                        reference: k.clone(),
                        version: Some(e.version.clone()).filter(|v| !v.is_empty()),
                        resolved: e.resolved.clone(),
                        integrity: crate::oci::Digest::parse(&e.integrity).ok()?,
                    },
                ))
            })
            .collect()
    }

    /// Reads the lock next to `config`; `None` when there is none. Read as dev.lock is (a
    /// regular file of yours or root's, not a symlink, bounded).
    pub fn load(config: &Path) -> Result<Option<DevcontainerLock>> {
        let path = path_for(config);
        let Some(text) = crate::config::project::read_project_file(&path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            UserError::with_hint(
                format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()),
                "delete it and start again to write it anew",
            )
        })
    }

    /// The file's text: two-space JSON, keys sorted, as the CLI writes it.
    pub fn render(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes the lock next to `config` when its text differs; whether it wrote. The
    /// directory is the repository's: written through `atomic` (no planted symlink followed).
    pub fn save(&self, config: &Path) -> Result<bool> {
        let path = path_for(config);
        let text = self.render();
        if crate::config::project::read_project_file(&path)
            .ok()
            .flatten()
            .is_some_and(|old| old == text)
        {
            return Ok(false);
        }
        crate::atomic::write(
            &path,
            text.as_bytes(),
            0o644,
            crate::atomic::Durability::Durable,
        )
        .with_context(|| format!("cannot write `{}`", path.display()))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_clis_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("devcontainer.json");
        assert_eq!(path_for(&config), dir.path().join("devcontainer-lock.json"));
        assert_eq!(
            path_for(&dir.path().join(".devcontainer.json")),
            dir.path().join(".devcontainer-lock.json")
        );
        assert!(DevcontainerLock::load(&config).expect("none").is_none());
        let d = crate::oci::Digest::of_bytes(b"m");
        let lock = DevcontainerLock::of(&[Resolved {
            reference: "ghcr.io/devcontainers/features/node:1".into(),
            version: Some("1.6.1".into()),
            resolved: format!("ghcr.io/devcontainers/features/node@{d}"),
            integrity: d.clone(),
        }]);
        assert!(lock.save(&config).expect("writes"));
        assert!(
            !lock.save(&config).expect("unchanged"),
            "same text: not written"
        );
        let text = std::fs::read_to_string(path_for(&config)).expect("read");
        assert!(
            text.starts_with("{\n  \"features\": {\n    \"ghcr.io/devcontainers/features/node:1\": {\n      \"version\": \"1.6.1\",\n      \"resolved\": \"ghcr.io/devcontainers/features/node@sha256:"),
            "{text}"
        );
        let back = DevcontainerLock::load(&config)
            .expect("reads")
            .expect("some");
        assert_eq!(back, lock);
        assert_eq!(
            back.pins()["ghcr.io/devcontainers/features/node:1"].integrity,
            d
        );
        std::fs::write(path_for(&config), "{\"features\": 3}").expect("write");
        let e = DevcontainerLock::load(&config)
            .expect_err("bad")
            .to_string();
        assert!(e.contains("devcontainer-lock.json:1:"), "{e}");
    }
}
