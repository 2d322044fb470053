//! Getting a Feature's files into the store: an OCI artifact through the registry client
//! (manifest, config `application/vnd.devcontainers`, one layer
//! `application/vnd.devcontainers.layer.v1+tar`, each verified by digest), a tarball over
//! https (or http to a loopback host), or a local directory read beneath the config's
//! directory. Each ends as a verified tar blob, unpacked by the layer rules (no `..`, no write
//! through a symlink, bounded), and a record of its metadata under the digest a lock pins:
//!
//! ```text
//! $XDG_DATA_HOME/dev/features-v1/<integrity hex>.json   {resolved, version, blob, metadata}
//! $XDG_DATA_HOME/dev/features-v1/tmp/                    unpacking to read the metadata
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::metadata::{Metadata, MAX_METADATA};
use super::reference::{FeatureRef, Source};
use super::Resolved;
use crate::beneath::Tree;
use crate::config::Settings;
use crate::oci::{Digest, Document};
use crate::registry::Endpoint;
use crate::store::Store;
use crate::ui::UserError;

pub const CONFIG_TYPE: &str = "application/vnd.devcontainers";
pub const LAYER_TYPE: &str = "application/vnd.devcontainers.layer.v1+tar";
const METADATA_FILE: &str = "devcontainer-feature.json";
/// A Feature is a script and a few files: its tar may hold this much.
const MAX_FEATURE: u64 = 16 << 20;
/// A local Feature directory may hold this many entries.
const MAX_ENTRIES: usize = 10_000;

/// A Feature in the store: what it resolved to, its tar blob and its metadata.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub resolved: Resolved,
    pub blob: Digest,
    pub meta: Metadata,
    /// Where it came from, to fetch the blob again when the store lost it.
    pub source: FeatureRef,
}

#[derive(Serialize, Deserialize)]
struct Record {
    resolved: String,
    version: Option<String>,
    blob: Digest,
    /// The devcontainer-feature.json, as the Feature has it.
    metadata: String,
}

fn records_dir(store: &Store) -> PathBuf {
    store.root().join("features-v1")
}

fn record_path(store: &Store, integrity: &Digest) -> PathBuf {
    records_dir(store).join(format!("{}.json", integrity.hex()))
}

/// The Feature `fref` in the store: with a pin that the store has a record of, without any
/// network; else fetched (OCI, tarball) or read (local) now.
pub fn fetch(
    store: &Store,
    fref: &FeatureRef,
    base: &Path,
    pin: Option<&Resolved>,
) -> Result<Fetched> {
    if !matches!(fref.source, Source::Local(_)) {
        if let Some(found) = pin.and_then(|p| from_record(store, fref, &p.integrity)) {
            return Ok(found);
        }
    }
    download(store, fref, base, pin)
}

fn from_record(store: &Store, fref: &FeatureRef, integrity: &Digest) -> Option<Fetched> {
    let bytes = read_small(&record_path(store, integrity)).ok()?;
    let rec: Record = serde_json::from_slice(&bytes).ok()?;
    let meta = Metadata::parse(rec.metadata.as_bytes(), &fref.text).ok()?;
    Some(Fetched {
        resolved: Resolved {
            reference: fref.text.clone(),
            version: rec.version,
            resolved: rec.resolved,
            integrity: integrity.clone(),
        },
        blob: rec.blob,
        meta,
        source: fref.clone(),
    })
}

/// A record, bounded (a record holds one devcontainer-feature.json and a few names).
fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_METADATA * 2).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Fetches (or reads) the Feature now, stores its blob and its record.
pub fn download(
    store: &Store,
    fref: &FeatureRef,
    base: &Path,
    pin: Option<&Resolved>,
) -> Result<Fetched> {
    let what = fref.text.as_str();
    let (tar, resolved, integrity) = match &fref.source {
        Source::Oci(reference) => {
            let mut reference = reference.clone();
            if let Some(p) = pin {
                reference.digest = Some(p.integrity.clone());
            }
            let settings = Settings::load()?;
            let ep = Endpoint::new(
                &reference.registry,
                reference.api_host(),
                &reference.repository,
                &settings,
            )?;
            let fetched = ep.artifact_manifest(&reference.manifest_ref(), CONFIG_TYPE)?;
            let Document::Manifest { manifest, .. } = fetched.document else {
                return Err(not_a_feature(what, "it is an image index"));
            };
            let [layer] = manifest.layers.as_slice() else {
                return Err(not_a_feature(
                    what,
                    &format!("its manifest has {} layers, not one", manifest.layers.len()),
                ));
            };
            if layer.media_type != LAYER_TYPE {
                return Err(not_a_feature(
                    what,
                    &format!("its layer has media type `{}`", layer.media_type),
                ));
            }
            if layer.size > MAX_FEATURE {
                return Err(not_a_feature(what, "its layer is larger than 16 MiB"));
            }
            let tar = ep.small_blob(layer, &format!("the Feature `{what}`"))?;
            store.write_blob(&fetched.digest, &fetched.bytes)?;
            let resolved = format!(
                "{}/{}@{}",
                reference.registry, reference.repository, fetched.digest
            );
            (tar, resolved, fetched.digest)
        }
        Source::Tarball(url) => {
            let tar = get_tarball(url, what)?;
            let digest = Digest::of_bytes(&tar);
            (tar, url.clone(), digest)
        }
        Source::Local(rel) => {
            let tar = pack_local(base, rel, what)?;
            let digest = Digest::of_bytes(&tar);
            (tar, fref.resource(), digest)
        }
    };
    if let Some(p) = pin.filter(|_| !matches!(fref.source, Source::Local(_))) {
        if p.integrity != integrity {
            return Err(UserError::with_hint(
                format!(
                    "the Feature `{what}` is not what the lock pins: it is {integrity}, the lock says {}",
                    p.integrity
                ),
                "if the change is expected, remove its entry from the lock and start again",
            ));
        }
    }
    let blob = Digest::of_bytes(&tar);
    store.write_blob(&blob, &tar)?;
    let meta_bytes = read_metadata(store, &blob, what)?;
    let meta = Metadata::parse(&meta_bytes, what)?;
    let metadata = String::from_utf8(meta_bytes)
        .map_err(|_| not_a_feature(what, "its devcontainer-feature.json is not UTF-8"))?;
    let record = Record {
        resolved: resolved.clone(),
        version: meta.version.clone(),
        blob: blob.clone(),
        metadata,
    };
    let dir = records_dir(store);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let path = record_path(store, &integrity);
    crate::atomic::write(
        &path,
        &serde_json::to_vec(&record)?,
        0o644,
        crate::atomic::Durability::Durable,
    )
    .with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(Fetched {
        resolved: Resolved {
            reference: fref.text.clone(),
            version: meta.version.clone(),
            resolved,
            integrity,
        },
        blob,
        meta,
        source: fref.clone(),
    })
}

fn not_a_feature(what: &str, why: &str) -> anyhow::Error {
    UserError::with_hint(
        format!("`{what}` is not a Dev Container Feature: {why}"),
        "check the reference; a Feature is published with `devcontainer features publish`",
    )
}

/// Unpacks the blob into `dest` (which must not exist) by the layer rules.
pub fn unpack_blob(store: &Store, blob: &Digest, dest: &Path, what: &str) -> Result<()> {
    std::fs::create_dir(dest).with_context(|| format!("cannot create `{}`", dest.display()))?;
    crate::unpack::unpack_archive(
        &store.blob_path(blob),
        dest,
        crate::unpack::UnpackOptions { keep_owners: false },
    )
    .map_err(|e| {
        UserError::with_hint(
            format!("the Feature `{what}` is refused: {e}"),
            "its archive is malformed or hostile; nothing of it was installed",
        )
    })?;
    Ok(())
}

/// The devcontainer-feature.json of the Feature tar `blob`, read beneath a fresh unpacking of
/// it, bounded.
fn read_metadata(store: &Store, blob: &Digest, what: &str) -> Result<Vec<u8>> {
    let tmp = records_dir(store).join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create `{}`", tmp.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dest = tmp.join(format!("{}-{nanos:08x}", std::process::id()));
    let read = unpack_blob(store, blob, &dest, what).and_then(|()| {
        let tree =
            Tree::open(&dest).with_context(|| format!("cannot open `{}`", dest.display()))?;
        tree.read_bounded(Path::new(METADATA_FILE), MAX_METADATA)
            .map_err(|e| not_a_feature(what, &format!("cannot read its {METADATA_FILE}: {e}")))
    });
    let _ = crate::beneath::remove_tree(&dest);
    read
}

/// A tarball Feature over https (http only to a loopback host, as for registries), bounded.
fn get_tarball(url: &str, what: &str) -> Result<Vec<u8>> {
    if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split('/').next().unwrap_or_default();
        if !crate::config::settings::is_loopback(host) {
            return Err(UserError::with_hint(
                format!("the Feature `{what}` is on plain HTTP"),
                "use its https:// URL (plain HTTP is used only for this machine's loopback addresses)",
            ));
        }
    }
    let stall = crate::registry::stall_timeout()?;
    // The plain-HTTP rule holds for redirects too: https follows https only, and a loopback
    // URL is not redirected at all (ureq hands back the redirect, refused below).
    let https = url.starts_with("https://");
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(stall)
        .user_agent(concat!("dev/", env!("CARGO_PKG_VERSION")))
        .https_only(https)
        .redirects(if https { 5 } else { 0 })
        .build();
    let resp = agent.get(url).call().map_err(|e| {
        UserError::with_hint(
            format!("cannot download the Feature `{what}`: {e}"),
            "check the URL and the network (a redirect to plain HTTP is not followed)",
        )
    })?;
    if resp.status() != 200 {
        return Err(UserError::with_hint(
            format!(
                "cannot download the Feature `{what}`: it answered {} (a redirect from a plain-HTTP URL is not followed)",
                resp.status()
            ),
            "give the URL it redirects to, over https",
        ));
    }
    let mut tar = Vec::new();
    resp.into_reader()
        .take(MAX_FEATURE + 1)
        .read_to_end(&mut tar)
        .with_context(|| format!("cannot download the Feature `{what}`"))?;
    if tar.len() as u64 > MAX_FEATURE {
        return Err(not_a_feature(what, "it is larger than 16 MiB"));
    }
    Ok(tar)
}

/// The digest of a local Feature's files, as [`download`] packs them.
pub fn local_digest(base: &Path, rel: &Path, what: &str) -> Result<Digest> {
    pack_local(base, rel, what).map(|tar| Digest::of_bytes(&tar))
}

/// A local Feature directory as a deterministic tar: read beneath the config's directory, no
/// symlink followed in any component, regular files and directories only, bounded.
fn pack_local(base: &Path, rel: &Path, what: &str) -> Result<Vec<u8>> {
    let fail = |e: std::io::Error| {
        UserError::with_hint(
            format!("cannot read the local Feature `{what}`: {e}"),
            format!(
                "it must be a directory under `{}` (no symlink on the way) with a {METADATA_FILE} and an install.sh",
                base.display()
            ),
        )
    };
    let root = Tree::open(base).map_err(fail)?.dir(rel).map_err(fail)?;
    let mut builder = tar::Builder::new(Vec::new());
    let mut total = 0u64;
    let mut entries = 0usize;
    let mut stack: Vec<(Tree, PathBuf)> = vec![(root, PathBuf::new())];
    while let Some((dir, at)) = stack.pop() {
        for name in dir.names(Path::new("")).map_err(fail)? {
            entries += 1;
            if entries > MAX_ENTRIES {
                return Err(fail(std::io::Error::other(format!(
                    "it holds more than {MAX_ENTRIES} entries"
                ))));
            }
            let entry = dir.entry(&name).map_err(fail)?;
            let path = at.join(&name);
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            match entry.file_type() {
                rustix::fs::FileType::Directory => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, &path, std::io::empty())
                        .map_err(fail)?;
                    stack.push((entry.open_dir().map_err(fail)?, path));
                }
                rustix::fs::FileType::RegularFile => {
                    let mut data = Vec::new();
                    entry
                        .open_file()
                        .map_err(fail)?
                        .take(MAX_FEATURE + 1 - total)
                        .read_to_end(&mut data)
                        .map_err(fail)?;
                    total += data.len() as u64;
                    if total > MAX_FEATURE {
                        return Err(fail(std::io::Error::other("it is larger than 16 MiB")));
                    }
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(if entry.stat.st_mode & 0o111 != 0 {
                        0o755
                    } else {
                        0o644
                    });
                    header.set_size(data.len() as u64);
                    builder
                        .append_data(&mut header, &path, data.as_slice())
                        .map_err(fail)?;
                }
                _ => {
                    return Err(fail(std::io::Error::other(format!(
                        "`{}` is neither a file nor a directory (dev copies only those)",
                        path.display()
                    ))))
                }
            }
        }
    }
    builder.into_inner().map_err(fail)
}
