//! Image records: which manifest, config and layers a name stands for.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Store;
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

/// The most of an image record that is read (a record of a thousand layers is ~0.5 MB); a
/// longer one does not parse.
const RECORD_LIMIT: u64 = 4 << 20;

fn read_record(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(RECORD_LIMIT + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
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

    /// Writes the record, flushed to the disk before it returns.
    pub fn save_image(&self, rec: &ImageRecord) -> Result<()> {
        self.save_image_with(rec, crate::atomic::Durability::Durable)
    }

    /// Writes the record; `Volatile` leaves its flush to a later `syncfs` (a pull's, by `dev
    /// __settle` with its layers). A power cut before it may leave the record torn (renamed
    /// into place, its content never written): [`Store::image`] then finds no record, and the
    /// image is pulled again, as its layers, marked unsynced, are fetched again.
    pub fn save_image_with(
        &self,
        rec: &ImageRecord,
        durability: crate::atomic::Durability,
    ) -> Result<()> {
        let json = serde_json::to_vec_pretty(rec)?;
        let path = self.record_path(&rec.name);
        crate::atomic::write(&path, &json, 0o644, durability)
            .with_context(|| format!("cannot write `{}`", path.display()))
    }

    /// The record filed under `name`. One that does not parse (a power cut tore it before
    /// its flush) is no record: the next pull writes it anew. Read bounded: a record is small.
    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>> {
        let p = self.record_path(name);
        match read_record(&p) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
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
            let bytes =
                read_record(&p).with_context(|| format!("cannot read `{}`", p.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> ImageRecord {
        let d = Digest::of_bytes(b"x");
        ImageRecord {
            name: name.to_string(),
            index_digest: None,
            manifest_digest: d.clone(),
            config_digest: d.clone(),
            platform: Platform::host(),
            created: None,
            pulled: 1,
            layers: vec![LayerRecord {
                digest: d.clone(),
                diff_id: d,
                size: 1,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                source: None,
            }],
        }
    }

    // What a power cut leaves of a record written unflushed (renamed into place, none or part
    // of its content on the disk) is no record: the image is pulled again, not refused.
    #[test]
    fn a_torn_record_is_no_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_at(dir.path().join("store")).expect("store");
        let name = "registry.test/a/b:1";
        store
            .save_image_with(&record(name), crate::atomic::Durability::Volatile)
            .expect("save");
        let found = store
            .image(name)
            .expect("read")
            .expect("a whole record is found");
        assert_eq!(found.layers.len(), 1);
        let json = serde_json::to_vec_pretty(&record(name)).expect("json");
        for torn in [&json[..0], &json[..json.len() / 2], &json[..json.len() - 1]] {
            fs::write(store.record_path(name), torn).expect("tear");
            assert!(
                store.image(name).expect("read").is_none(),
                "a record torn to {} bytes was taken",
                torn.len()
            );
        }
        // The next pull writes it whole again.
        store.save_image(&record(name)).expect("save");
        assert!(store.image(name).expect("read").is_some());
    }
}
