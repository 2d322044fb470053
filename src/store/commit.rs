//! `dev commit`: a new local image made of an env's image layers, its tools layer and a
//! snapshot of its own writable layer, as `docker commit` makes one from a container.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::envs::EnvRecord;
use super::images::{ImageRecord, LayerRecord};
use super::Store;
use crate::ids::Identity;
use crate::oci::{Descriptor, Digest, ImageManifest, MediaType};
use crate::ui::UserError;

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

impl Store {
    /// Snapshots the env's writable layer `upper` and files the image as `name`.
    pub fn commit_env(
        &self,
        identity: &Identity,
        env: &EnvRecord,
        upper: &Path,
        name: &str,
    ) -> Result<ImageRecord> {
        let mapping = identity.store_key();
        // A prune waits for the commit: it would take the blob being written for a leftover.
        let _store = self.lock_store(false)?;
        let base = self
            .images()?
            .into_iter()
            .find(|i| i.manifest_digest == env.manifest_digest)
            .ok_or_else(|| {
                UserError::with_hint(
                    format!(
                        "the env's image `{}` ({}) is no longer in the store",
                        env.image,
                        env.manifest_digest.short()
                    ),
                    format!(
                        "pull it again: `dev pull {}@{}`",
                        env.image.split(':').next().unwrap_or(&env.image),
                        env.manifest_digest
                    ),
                )
            })?;
        // The base's blobs are not kept (only their unpacked trees): they are fetched again
        // from where the base came from.
        let mut layers: Vec<LayerRecord> = base
            .layers
            .iter()
            .map(|l| LayerRecord {
                source: Some(l.fetched_from(&base)),
                ..l.clone()
            })
            .collect();
        // The tools layer (the env's layers the image does not have), bottom first.
        for t in env
            .layers
            .iter()
            .rev()
            .filter(|d| !base.layers.iter().any(|l| &l.diff_id == *d))
        {
            let root = self.layer_path(&mapping, t).join("root");
            // Kept: a push of the commit needs the blob.
            let (digest, size) = self.pack_tree(identity, &root, true)?;
            anyhow::ensure!(
                &digest == t,
                "the tools layer {} changed on disk (it packs as {digest}); `dev reset` rebuilds it",
                t.short()
            );
            layers.push(LayerRecord {
                digest,
                diff_id: t.clone(),
                size,
                media_type: MediaType::OCI_LAYER_TAR.to_string(),
                source: None,
            });
        }
        let (digest, size) = self.pack_tree(identity, upper, true)?;
        if self.layer_meta(&mapping, &digest).is_none() {
            let _layer = self.lock_layer(&digest)?;
            self.unpack_layer(identity, &self.blob_path(&digest), &digest)?;
        }
        layers.push(LayerRecord {
            digest: digest.clone(),
            diff_id: digest,
            size,
            media_type: MediaType::OCI_LAYER_TAR.to_string(),
            source: None,
        });
        // The image's own layers too: a session that pulled them may not have flushed them yet,
        // and a committed image is whole after a power cut.
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        self.settle(identity, &diff_ids)?;

        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let created = rfc3339(now);
        let base_config: Value = serde_json::from_slice(&self.read_blob(&base.config_digest)?)
            .context("the image's config in the store is not valid JSON")?;
        let added = &layers[base.layers.len()..];
        let config = derive_config(
            base_config,
            added.iter().map(|l| &l.diff_id),
            &created,
            "dev",
            &[(
                "comment",
                &format!("dev commit of {} ({})", env.image, env.project.display()),
            )],
        );
        let config_bytes = serde_json::to_vec(&config)?;
        let config_digest = Digest::of_bytes(&config_bytes);
        self.write_blob(&config_digest, &config_bytes)?;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(MediaType::OCI_MANIFEST.to_string()),
            config: Descriptor::new(OCI_CONFIG, &config_digest, config_bytes.len() as u64),
            layers: layers
                .iter()
                .map(|l| Descriptor::new(&l.media_type, &l.digest, l.size))
                .collect(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        let manifest_digest = Digest::of_bytes(&manifest_bytes);
        self.write_blob(&manifest_digest, &manifest_bytes)?;
        let record = ImageRecord {
            name: name.to_string(),
            index_digest: None,
            manifest_digest,
            config_digest,
            platform: base.platform.clone(),
            created: Some(created),
            pulled: now,
            layers,
        };
        self.save_image(&record)?;
        Ok(record)
    }
}

/// The base image's config with the new layers' diff ids appended, a history entry for each
/// (`{"created", "created_by"}` and `extra`, when the base keeps a history) and a new creation
/// time. Everything else (Env, User, WorkingDir, Cmd, labels) is the base's. `dev build`
/// derives its config the same way.
pub fn derive_config<'a>(
    mut config: Value,
    diff_ids: impl Iterator<Item = &'a Digest>,
    created: &str,
    created_by: &str,
    extra: &[(&str, &str)],
) -> Value {
    if !config.is_object() {
        config = json!({});
    }
    config["created"] = json!(created);
    if !config["rootfs"].is_object() {
        config["rootfs"] = json!({"type": "layers", "diff_ids": []});
    }
    if !config["rootfs"]["diff_ids"].is_array() {
        config["rootfs"]["diff_ids"] = json!([]);
    }
    let has_history = config["history"].is_array();
    for d in diff_ids {
        if let Some(ids) = config["rootfs"]["diff_ids"].as_array_mut() {
            ids.push(json!(d.to_string()));
        }
        if has_history {
            let mut entry = json!({"created": created, "created_by": created_by});
            for (k, v) in extra {
                entry[*k] = json!(v);
            }
            if let Some(h) = config["history"].as_array_mut() {
                h.push(entry);
            }
        }
    }
    config
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (the civil-from-days algorithm).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_466_895), "2026-11-23T20:48:15Z");
    }

    #[test]
    fn config_gains_layers_and_history_and_keeps_the_rest() {
        let base = json!({
            "architecture": "amd64",
            "config": {"Env": ["PATH=/bin"], "User": "1000"},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]},
            "history": [{"created_by": "base"}],
        });
        let d = Digest::of_bytes(b"layer");
        let out = derive_config(
            base,
            [&d].into_iter(),
            "2026-01-01T00:00:00Z",
            "dev",
            &[("comment", "c")],
        );
        assert_eq!(
            out["rootfs"]["diff_ids"],
            json!(["sha256:aa", d.to_string()])
        );
        assert_eq!(out["history"].as_array().map(Vec::len), Some(2));
        assert_eq!(out["config"]["User"], "1000");
        assert_eq!(out["created"], "2026-01-01T00:00:00Z");
    }
}
