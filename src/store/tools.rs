//! Tools layers: which layer a (base image, packages, setup, pins) key was built into, and the
//! versions the package manager installed. One record per key and id mapping.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{write_atomic, Store};
use crate::oci::Digest;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToolsRecord {
    pub key: Digest,
    pub diff_id: Digest,
    pub manager: String,
    /// Package → installed version.
    pub resolved: BTreeMap<String, String>,
}

impl Store {
    fn tools_dir(&self, mapping: &str) -> PathBuf {
        self.root.join("tools-v1").join(mapping)
    }

    /// The record for `key`, if its layer is complete in this mapping.
    pub fn tools_record(&self, mapping: &str, key: &Digest) -> Option<ToolsRecord> {
        let bytes = fs::read(self.tools_dir(mapping).join(format!("{}.json", key.hex()))).ok()?;
        let rec: ToolsRecord = serde_json::from_slice(&bytes).ok()?;
        self.layer_meta(mapping, &rec.diff_id).map(|_| rec)
    }

    pub fn save_tools_record(&self, mapping: &str, rec: &ToolsRecord) -> Result<()> {
        let dir = self.tools_dir(mapping);
        fs::create_dir_all(&dir)?;
        write_atomic(
            &dir.join(format!("{}.json", rec.key.hex())),
            &serde_json::to_vec_pretty(rec)?,
        )
    }

    /// Every tools record of this mapping (their layers are live for gc).
    pub fn tools_records(&self, mapping: &str) -> Vec<ToolsRecord> {
        fs::read_dir(self.tools_dir(mapping))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }
}
