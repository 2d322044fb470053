//! What the store holds and what nothing references: `dev system df` and `dev system prune`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use anyhow::Result;
use nix::fcntl::Flock;
use serde::Serialize;

use super::Store;
use crate::ids::Identity;

#[derive(Debug, Default, Serialize)]
pub struct Usage {
    pub images: usize,
    pub images_bytes: u64,
    pub layers: usize,
    pub layers_bytes: u64,
    pub shared_layers: usize,
    pub shared_bytes: u64,
    pub unique_layers: usize,
    pub unique_bytes: u64,
    /// Layers no image has but an env or a tools build uses: tools layers, commits' own.
    pub tools_layers: usize,
    pub tools_bytes: u64,
    /// Layers nothing uses (prune deletes them).
    pub unused_layers: usize,
    pub unused_bytes: u64,
    pub envs: usize,
    pub envs_bytes: u64,
    /// Named volumes (`dev volume ls`); prune keeps them unless asked (`--volumes`).
    pub volumes: usize,
    pub volumes_bytes: u64,
    pub reclaimable_bytes: u64,
}

/// Which envs a prune deletes. A running env is never deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvPrune {
    /// None (after `dev rmi`).
    Keep,
    /// Those whose project no longer points at them: its directory or dev.toml is gone.
    Orphaned,
    /// Every stopped env (`dev system prune --envs`).
    Stopped,
}

/// Everything prune would delete.
#[derive(Debug, Default)]
pub struct Garbage {
    pub envs: Vec<PathBuf>,
    env_locks: Vec<Flock<fs::File>>,
    pub layers: Vec<PathBuf>,
    pub blobs: Vec<PathBuf>,
    pub leftovers: Vec<PathBuf>,
    pub bytes: u64,
}

impl Store {
    pub fn usage(&self, identity: &Identity) -> Result<Usage> {
        let key = identity.store_key();
        let images = self.images()?;
        let mut users: BTreeMap<String, usize> = BTreeMap::new();
        for img in &images {
            let unique: BTreeSet<_> = img
                .layers
                .iter()
                .map(|l| l.diff_id.hex().to_string())
                .collect();
            for hex in unique {
                *users.entry(hex).or_default() += 1;
            }
        }
        let mut u = Usage {
            images: images.len(),
            ..Usage::default()
        };
        u.images_bytes = images.iter().map(|img| self.image_bytes(&key, img)).sum();
        // Layers envs stand on (their tools layer among them) and tools builds made.
        let mut tools: BTreeSet<String> = self
            .tools_records(&key)
            .into_iter()
            .map(|t| t.diff_id.hex().to_string())
            .collect();
        for (_, env) in self.env_records(&key) {
            tools.extend(env.layers.iter().map(|d| d.hex().to_string()));
        }
        for (hex, meta_bytes) in self.layer_sizes(&key) {
            u.layers += 1;
            u.layers_bytes += meta_bytes;
            match users.get(&hex).copied().unwrap_or(0) {
                0 if tools.contains(&hex) => {
                    u.tools_layers += 1;
                    u.tools_bytes += meta_bytes;
                }
                0 => {
                    u.unused_layers += 1;
                    u.unused_bytes += meta_bytes;
                }
                1 => {
                    u.unique_layers += 1;
                    u.unique_bytes += meta_bytes;
                }
                _ => {
                    u.shared_layers += 1;
                    u.shared_bytes += meta_bytes;
                }
            }
        }
        for (dir, _) in self.env_records(&key) {
            u.envs += 1;
            u.envs_bytes += super::envs::tree_bytes(&dir.join("upper"))
                + super::envs::tree_bytes(&dir.join("home"));
        }
        for v in self.volumes(&key) {
            u.volumes += 1;
            u.volumes_bytes += v.size_bytes;
        }
        let g = self.garbage(identity, EnvPrune::Orphaned)?;
        u.reclaimable_bytes = g.bytes;
        Ok(u)
    }

    /// (diff-id hex, content bytes) of every complete layer in a mapping.
    fn layer_sizes(&self, key: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(self.layers_dir(key)) else {
            return out;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name == "tmp" {
                continue;
            }
            let bytes = fs::read(e.path().join("meta.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<super::layers::LayerMeta>(&b).ok())
                .map_or(0, |m| m.stats.bytes);
            out.push((name, bytes));
        }
        out
    }

    /// Envs `envs` selects, layers and blobs no image or remaining env references, and
    /// leftovers of interrupted runs. Call with the store lock held exclusively, so no pull
    /// is in progress.
    pub fn garbage(&self, identity: &Identity, envs: EnvPrune) -> Result<Garbage> {
        let key = identity.store_key();
        let images = self.images()?;
        let mut g = Garbage::default();
        let mut live_layers = BTreeSet::new();
        for (dir, rec) in self.env_records(&key) {
            let run_dir = self.run_dir(&key, &rec.project);
            let mut running = self.running(&run_dir).is_some();
            // An env whose last session just left is stopping: its keeper withdraws state.json
            // within milliseconds. `prune --envs` right after `dev run` waits for that (up to
            // 200 ms) rather than keep the env as running.
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
            while running && envs == EnvPrune::Stopped && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
                running = self.running(&run_dir).is_some();
            }
            let pointed_at = rec
                .project
                .join(crate::config::project::FILE_NAME)
                .is_file()
                && self.env_dir(&key, &rec.project) == dir;
            let wanted = !running
                && match envs {
                    EnvPrune::Keep => false,
                    EnvPrune::Orphaned => !pointed_at,
                    EnvPrune::Stopped => true,
                };
            // Held until the env is deleted: a session starting it meanwhile waits, and then
            // makes it afresh. One that is stopping is waited for; one starting is in use.
            let lock = wanted
                .then(|| self.lock_stopped_env(&dir, &run_dir))
                .flatten();
            if wanted && (lock.is_some() || !dir.join("lock").exists()) {
                g.env_locks.extend(lock);
                g.bytes += super::envs::tree_bytes(&dir.join("upper"))
                    + super::envs::tree_bytes(&dir.join("home"));
                g.envs.push(dir);
            } else {
                live_layers.extend(rec.layers.iter().map(|d| d.hex().to_string()));
            }
        }
        let mut live_blobs = BTreeSet::new();
        for img in &images {
            live_blobs.insert(img.manifest_digest.hex().to_string());
            live_blobs.insert(img.config_digest.hex().to_string());
            if let Some(i) = &img.index_digest {
                live_blobs.insert(i.hex().to_string());
            }
            for l in &img.layers {
                live_layers.insert(l.diff_id.hex().to_string());
                // The blobs of layers dev made (built, committed): nothing else has them.
                live_blobs.insert(l.digest.hex().to_string());
            }
        }
        for t in self.tools_records(&key) {
            live_layers.insert(t.diff_id.hex().to_string());
        }
        for (hex, bytes) in self.layer_sizes(&key) {
            if !live_layers.contains(&hex) {
                g.layers.push(self.layers_dir(&key).join(&hex));
                g.bytes += bytes;
            }
        }
        // Unfinished unpacks, and envs of killed `--rm` sessions or set aside by an image change.
        for tmp in [
            self.layers_dir(&key).join("tmp"),
            self.envs_dir(&key).join("tmp"),
        ] {
            if let Ok(rd) = fs::read_dir(&tmp) {
                for e in rd.flatten() {
                    if !in_use(&e.file_name().to_string_lossy()) {
                        g.leftovers.push(e.path());
                    }
                }
            }
        }
        for (dir, is_tmp) in [("blobs-v1/sha256", false), ("blobs-v1/tmp", true)] {
            let Ok(rd) = fs::read_dir(self.root.join(dir)) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let size = e.metadata().map_or(0, |m| m.len());
                if is_tmp {
                    g.leftovers.push(e.path());
                    g.bytes += size;
                } else if !live_blobs.contains(&name) {
                    g.blobs.push(e.path());
                    g.bytes += size;
                }
            }
        }
        for dir in ["images-v1", "blobs-v1/sha256"] {
            if let Ok(rd) = fs::read_dir(self.root.join(dir)) {
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().to_string();
                    // `atomic::write`'s temp files (`.NAME.RANDOM.tmp`), and older ones.
                    if n.contains(".tmp.") || (n.starts_with('.') && n.ends_with(".tmp")) {
                        g.leftovers.push(e.path());
                    }
                }
            }
        }
        Ok(g)
    }

    /// Deletes what `garbage` found: after `dev rmi` the layers and blobs no image uses any
    /// more (every layer another image still uses stays); with `leftovers`, also what
    /// interrupted runs left behind and the envs `envs` selects, as `dev system prune` does.
    pub fn prune(&self, identity: &Identity, leftovers: bool, envs: EnvPrune) -> Result<Garbage> {
        let _lock = self.lock_store(true)?;
        let mut g = self.garbage(identity, envs)?;
        if !leftovers {
            g.leftovers.clear();
        }
        let (in_layers, plain): (Vec<PathBuf>, Vec<PathBuf>) = g
            .envs
            .iter()
            .chain(&g.layers)
            .chain(&g.leftovers)
            .chain(&g.blobs)
            .cloned()
            .partition(|p| {
                p.starts_with(self.root.join("layers-v1"))
                    || p.starts_with(self.root.join("envs-v1"))
            });
        self.remove_trees(identity, &in_layers)?;
        super::layers::remove_paths(&plain)?;
        Ok(g)
    }
}

/// Whether a `rm-PID-…` scratch env belongs to a session that is still running.
fn in_use(name: &str) -> bool {
    name.strip_prefix("rm-")
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}
