//! Image records: which manifest, config and layers a name stands for.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{write_atomic, Store};
use crate::oci::{Digest, Platform, Reference};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `registry/repo:tag`, or `registry/repo@sha256:…` when pulled by digest only.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub platform: Platform,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub pulled: u64,
    pub layers: Vec<LayerRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
    /// Where the compressed blob can be fetched again (`registry/repository`), when that is
    /// not the image's own name: a built or committed image's base layers name their base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl LayerRecord {
    /// The `registry/repository` its compressed blob can be fetched from: its own source, or
    /// the repository of `image`, the image it belongs to.
    pub fn fetched_from(&self, image: &ImageRecord) -> String {
        match &self.source {
            Some(s) => s.clone(),
            None => image.repository(),
        }
    }
}

impl ImageRecord {
    /// `registry/repository` of the name it is filed under.
    pub fn repository(&self) -> String {
        match Reference::parse(&self.name) {
            Ok(r) => format!("{}/{}", r.registry, r.repository),
            Err(_) => self.name.clone(),
        }
    }
}

/// The name an image is filed under.
pub fn record_name(r: &Reference) -> String {
    match (&r.tag, &r.digest) {
        (Some(_), _) => r.name(),
        (None, Some(d)) => format!("{}/{}@{d}", r.registry, r.repository),
        (None, None) => r.name(),
    }
}

impl Store {
    fn record_path(&self, name: &str) -> PathBuf {
        self.root
            .join("images-v1")
            .join(format!("{}.json", Digest::of_bytes(name.as_bytes()).hex()))
    }

    pub fn save_image(&self, rec: &ImageRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(rec)?;
        write_atomic(&self.record_path(&rec.name), &json)
    }

    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>> {
        let p = self.record_path(name);
        match fs::read(&p) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
                format!(
                    "image record `{}` is corrupt; `dev rmi {name}` and pull again",
                    p.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read `{}`", p.display())),
        }
    }

    /// Finds an image by reference, or by a prefix of its manifest digest (as `docker` does).
    pub fn find_image(&self, query: &str) -> Result<Option<ImageRecord>> {
        if let Ok(r) = Reference::parse(query) {
            if let Some(rec) = self.image(&record_name(&r))? {
                return Ok(Some(rec));
            }
        }
        let hex = query.strip_prefix("sha256:").unwrap_or(query);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<_> = self
                .images()?
                .into_iter()
                .filter(|i| i.manifest_digest.hex().starts_with(hex))
                .collect();
            if matches.len() == 1 {
                return Ok(matches.into_iter().next());
            }
        }
        Ok(None)
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("images-v1");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).with_context(|| format!("cannot list `{}`", dir.display()))? {
            let e = e?;
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let bytes = fs::read(&p).with_context(|| format!("cannot read `{}`", p.display()))?;
            match serde_json::from_slice(&bytes) {
                Ok(rec) => out.push(rec),
                Err(_) => crate::ui::note(format_args!(
                    "warning: skipping corrupt image record `{}`",
                    p.display()
                )),
            }
        }
        out.sort_by(|a: &ImageRecord, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn remove_image(&self, name: &str) -> Result<bool> {
        let p = self.record_path(name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot remove `{}`", p.display())),
        }
    }
}
