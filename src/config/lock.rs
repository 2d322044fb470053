//! `dev.lock`: the exact image digests and tool versions a project resolved to, checked in so
//! every teammate gets the same env. Stable formatting and ordering, so diffs read well.
//! Parsing and formatting only.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::oci::Digest;

pub const FILE_NAME: &str = "dev.lock";
const HEADER: &str =
    "# dev.lock: written by `dev lock` and `dev update`; check it in, do not edit it.\n";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevLock {
    pub version: u32,
    pub image: LockedImage,
    /// Package → the exact version the package manager installed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, String>,
    #[serde(
        default,
        rename = "tools-layer",
        skip_serializing_if = "Option::is_none"
    )]
    pub tools_layer: Option<LockedLayer>,
    /// Feature reference → what it resolved to (dependencies included).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, LockedFeature>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedFeature {
    /// The Feature's own version (its devcontainer-feature.json's), when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `registry/path@sha256:…` (a tarball's URL, a local Feature's path).
    pub resolved: String,
    /// The digest of what was fetched: the manifest's, the tarball's, the local tree's.
    pub integrity: Digest,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// The reference dev.toml names, as written there.
    pub reference: String,
    /// The index (multi-platform list) digest, when the reference points at one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
    /// Platform (`linux/amd64`) → its manifest digest, for each platform resolved so far.
    #[serde(default)]
    pub manifests: BTreeMap<String, Digest>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedLayer {
    /// The tools layer's content digest (diff id) on this platform.
    pub digest: Digest,
}

impl DevLock {
    pub const VERSION: u32 = 1;

    /// The project's dev.lock (see `project::read_project_file` for what is refused).
    pub fn load(path: &Path) -> Result<Option<DevLock>> {
        match super::project::read_project_file(path)? {
            Some(text) => Self::parse(path, &text).map(Some),
            None => Ok(None),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<DevLock> {
        let lock: DevLock = toml::from_str(text).map_err(|e| {
            anyhow!(
                "{}; run `dev update` to rewrite it",
                super::toml_error(path, text, &e)
            )
        })?;
        if lock.version != Self::VERSION {
            return Err(anyhow!(
                "{}: lock format version {} is not one this dev reads ({}); update dev, or run `dev update`",
                path.display(),
                lock.version,
                Self::VERSION
            ));
        }
        Ok(lock)
    }

    /// The file's text: a header, then TOML with keys in a fixed order.
    pub fn render(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!("{HEADER}\n{body}")
    }

    /// Replaces dev.lock whole. The project directory is the repository's: a symlink planted
    /// at dev.lock or at any temp name is replaced or never opened, not written through.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::atomic::write(
            path,
            self.render().as_bytes(),
            0o644,
            crate::atomic::Durability::Durable,
        )
        .with_context(|| format!("cannot write `{}`", path.display()))
    }
}

/// A package spec split into its name and an optional version (`name=version`).
pub fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (spec.trim(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DevLock {
        let d = |c: char| {
            Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).expect("digest")
        };
        DevLock {
            version: 1,
            image: LockedImage {
                reference: "debian:bookworm".into(),
                index: Some(d('a')),
                manifests: [
                    ("linux/arm64".to_string(), d('c')),
                    ("linux/amd64".to_string(), d('b')),
                ]
                .into(),
            },
            tools: [
                ("python3".to_string(), "3.11.2-1+b1".to_string()),
                ("git".to_string(), "1:2.39.5-0+deb12u2".to_string()),
            ]
            .into(),
            tools_layer: Some(LockedLayer { digest: d('e') }),
            features: [(
                "r.io/f/node:1".to_string(),
                LockedFeature {
                    version: Some("1.2.0".into()),
                    resolved: format!("r.io/f/node@{}", d('f')),
                    integrity: d('f'),
                },
            )]
            .into(),
        }
    }

    #[test]
    fn round_trips_with_stable_order() {
        let lock = sample();
        let text = lock.render();
        assert!(text.starts_with("# dev.lock"));
        let expected_order = [
            "version = 1",
            "[image]",
            "reference = ",
            "index = ",
            "[image.manifests]",
            "\"linux/amd64\"",
            "\"linux/arm64\"",
            "[tools]",
            "git = ",
            "python3 = ",
            "[tools-layer]",
            "digest = ",
            "[features.\"r.io/f/node:1\"]",
            "version = ",
            "resolved = ",
            "integrity = ",
        ];
        let mut at = 0;
        for needle in expected_order {
            let i = text[at..]
                .find(needle)
                .unwrap_or_else(|| panic!("`{needle}` out of order in:\n{text}"));
            at += i;
        }
        let back = DevLock::parse(Path::new("dev.lock"), &text).expect("parses");
        assert_eq!(back, lock);
        assert_eq!(back.render(), text, "rendering is stable");
    }

    #[test]
    fn rejects_bad_files_with_the_fix() {
        let e = DevLock::parse(
            Path::new("dev.lock"),
            "version = 1\n[image]\nreference = 3\n",
        )
        .expect_err("bad");
        assert!(
            e.to_string().contains("dev.lock:3:13") && e.to_string().contains("dev update"),
            "{e}"
        );
        let e = DevLock::parse(
            Path::new("dev.lock"),
            "version = 9\n[image]\nreference = \"x\"\n",
        )
        .expect_err("bad");
        assert!(e.to_string().contains("version 9"), "{e}");
        let e = DevLock::parse(Path::new("dev.lock"), "version = 1\n[image]\nreference = \"x\"\nmanifests = { \"linux/amd64\" = \"sha256:zz\" }\n").expect_err("bad digest");
        assert!(e.to_string().contains("dev.lock:4"), "{e}");
    }

    #[test]
    fn specs() {
        assert_eq!(split_spec("git"), ("git", None));
        assert_eq!(
            split_spec("build-essential=12.9"),
            ("build-essential", Some("12.9"))
        );
    }
}
