//! `dev save`: an image of the store as one tar file, in either format `podman load` and
//! `docker load` read: an OCI image layout (`oci-layout`, `index.json` naming the image in its
//! `org.opencontainers.image.ref.name` annotation, `blobs/sha256/<hex>`) or a docker-archive
//! (`manifest.json`, `repositories`, `<config hex>.json`, one uncompressed `<diff id hex>.tar`
//! per layer).
//!
//! Blobs come from `source::open_blob` (the store's copy, else the layer's registry), verified
//! while they are copied. OCI layouts keep every blob as it is (base layers keep their
//! digests); a docker-archive holds layers uncompressed, as `docker save` writes them, each
//! checked against its diff id on the way. Entries carry fixed owners, modes and times, so the
//! same image saves to the same bytes. The file appears whole or not at all (a temp file
//! created `O_EXCL|O_NOFOLLOW` beside it, renamed over it at the end). It never prints.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::source::open_blob;
use crate::oci::manifest::Compression;
use crate::oci::{Digest, ImageConfig, MediaType, Reference};
use crate::store::images::ImageRecord;
use crate::store::Store;
use crate::ui::UserError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

/// Writes `image` to `out` in `format`.
pub fn save(
    store: &Store,
    mapping: &str,
    image: &ImageRecord,
    format: Format,
    out: &Path,
) -> Result<()> {
    let (tmp, file) = temp_beside(out)?;
    let written = (|| -> Result<()> {
        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, &file));
        match format {
            Format::Oci => write_oci(store, image, &mut tar)?,
            Format::Docker => write_docker(store, mapping, image, &mut tar)?,
        }
        let mut w = tar.into_inner()?;
        w.flush()?;
        drop(w);
        file.sync_all()
            .with_context(|| format!("cannot write `{}`", tmp.display()))?;
        fs::rename(&tmp, out).with_context(|| format!("cannot write `{}`", out.display()))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// A new temp file in `out`'s directory, never a name that already exists.
fn temp_beside(out: &Path) -> Result<(PathBuf, File)> {
    let name = out.file_name().ok_or_else(|| {
        UserError::with_hint(
            format!("`{}` names no file", out.display()),
            "give the archive's file name: `dev save -o image.tar`",
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    // Random: the directory may be one others write to (a planted name only fails O_EXCL).
    let mut random = [0u8; 8];
    rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))?;
    tmp_name.push(format!(".{}.tmp", crate::oci::digest::hex(&random)));
    let tmp = out.with_file_name(tmp_name);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&tmp)
        .with_context(|| format!("cannot create `{}`", tmp.display()))?;
    Ok((tmp, file))
}

/// A fixed header: root-owned, 0644, time 0.
fn header(path: &str, size: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    tar.append(&header(path, bytes.len() as u64)?, bytes)
        .with_context(|| format!("cannot write `{path}` into the archive"))
}

/// The names the archive gives the image: its name when it has a tag (a name by digest only
/// is no tag a client could file it under).
fn tagged_name(image: &ImageRecord) -> Option<String> {
    Reference::parse(&image.name)
        .ok()
        .filter(|r| r.tag.is_some() && !image.name.contains('@'))
        .map(|r| r.name())
}

fn write_oci<W: Write>(
    store: &Store,
    image: &ImageRecord,
    tar: &mut tar::Builder<W>,
) -> Result<()> {
    let manifest_bytes = store.read_blob(&image.manifest_digest)?;
    let config_bytes = store.read_blob(&image.config_digest)?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&manifest_bytes)
        .ok()
        .and_then(|m| m["mediaType"].as_str().map(str::to_string))
        .unwrap_or_else(|| MediaType::OCI_MANIFEST.to_string());
    let mut entry = json!({
        "mediaType": media_type,
        "digest": image.manifest_digest.to_string(),
        "size": manifest_bytes.len(),
    });
    if let Some(name) = tagged_name(image) {
        entry["annotations"] = json!({
            "org.opencontainers.image.ref.name": name,
            "io.containerd.image.name": name,
        });
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_INDEX,
        "manifests": [entry],
    });
    append_bytes(tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append_bytes(tar, "index.json", &serde_json::to_vec(&index)?)?;
    let blob_name = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    append_bytes(tar, &blob_name(&image.manifest_digest), &manifest_bytes)?;
    append_bytes(tar, &blob_name(&image.config_digest), &config_bytes)?;
    let mut written = std::collections::BTreeSet::new();
    for layer in &image.layers {
        if !written.insert(layer.digest.clone()) {
            continue;
        }
        let reader = open_blob(store, image, &layer.digest, layer.size)?;
        tar.append(&header(&blob_name(&layer.digest), layer.size)?, reader)
            .with_context(|| format!("cannot write layer {} into the archive", layer.digest))?;
    }
    Ok(())
}

fn write_docker<W: Write>(
    store: &Store,
    mapping: &str,
    image: &ImageRecord,
    tar: &mut tar::Builder<W>,
) -> Result<()> {
    let config_bytes = store.read_blob(&image.config_digest)?;
    let config = ImageConfig::parse(&config_bytes)
        .with_context(|| format!("the config of `{}` in the store is refused", image.name))?;
    anyhow::ensure!(
        config.rootfs.diff_ids.len() == image.layers.len(),
        "the image `{}` in the store has {} layers but its config {} content digests; pull it again",
        image.name,
        image.layers.len(),
        config.rootfs.diff_ids.len()
    );
    let config_name = format!("{}.json", image.config_digest.hex());
    let layer_names: Vec<String> = image
        .layers
        .iter()
        .map(|l| format!("{}.tar", l.diff_id.hex()))
        .collect();
    let tags: Vec<String> = tagged_name(image).into_iter().collect();
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": tags,
        "Layers": layer_names,
    }]);
    let mut repositories = BTreeMap::new();
    if let (Some(name), Some(top)) = (tags.first(), image.layers.last()) {
        if let Some((repo, tag)) = name.rsplit_once(':') {
            repositories.insert(
                repo.to_string(),
                BTreeMap::from([(tag.to_string(), top.diff_id.hex().to_string())]),
            );
        }
    }
    append_bytes(tar, &config_name, &config_bytes)?;
    let mut written = std::collections::BTreeSet::new();
    for (layer, name) in image.layers.iter().zip(&layer_names) {
        if !written.insert(layer.diff_id.clone()) {
            continue;
        }
        let blob = open_blob(store, image, &layer.digest, layer.size)?;
        let compression = Compression::from_media_type(&layer.media_type);
        let (size, reader): (u64, Box<dyn Read>) = match compression {
            Some(Compression::None) => (layer.size, blob),
            _ => {
                // The tar's length goes in the header before its bytes: the unpack measured it.
                let size = store
                    .layer_meta(mapping, &layer.diff_id)
                    .map(|m| m.stats.tar_bytes)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        UserError::with_hint(
                            format!(
                                "layer {} of `{}` is not unpacked in this store",
                                layer.digest.short(),
                                image.name
                            ),
                            format!("`dev pull {}` unpacks it", image.name),
                        )
                    })?;
                (size, Box::new(Inflated::new(blob)?))
            }
        };
        let checked = DiffIdCheck {
            inner: reader,
            hash: Sha256::new(),
            read: 0,
            size,
            diff_id: layer.diff_id.clone(),
            checked: false,
        };
        tar.append(&header(name, size)?, checked)
            .with_context(|| format!("cannot write layer {} into the archive", layer.digest))?;
    }
    append_bytes(tar, "manifest.json", &serde_json::to_vec(&manifest)?)?;
    append_bytes(tar, "repositories", &serde_json::to_vec(&repositories)?)?;
    Ok(())
}

/// A compressed layer, decompressed; its compressed stream read to its end, so the blob's own
/// check (`source::Verified`) runs.
struct Inflated {
    decoder: Option<Box<dyn Read>>,
}

impl Inflated {
    fn new(mut blob: Box<dyn Read + Send>) -> Result<Self> {
        let mut head = [0u8; 4];
        let mut n = 0;
        while n < head.len() {
            match blob.read(&mut head[n..])? {
                0 => break,
                k => n += k,
            }
        }
        let input = io::Cursor::new(head[..n].to_vec()).chain(blob);
        let decoder: Box<dyn Read> = match Compression::sniff(&head[..n]) {
            Compression::Gzip => Box::new(Drained(
                Some(flate2::read::MultiGzDecoder::new(input)),
                |d| d.into_inner(),
            )),
            Compression::Zstd => Box::new(Drained(
                Some(zstd::stream::read::Decoder::new(input)?),
                |d| d.finish(),
            )),
            Compression::None => Box::new(input),
        };
        Ok(Inflated {
            decoder: Some(decoder),
        })
    }
}

impl Read for Inflated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.decoder {
            Some(d) => d.read(buf),
            None => Ok(0),
        }
    }
}

/// A decoder that, at its end, reads what is left of its input (to the input's own checks).
struct Drained<D, I>(Option<D>, fn(D) -> I);

impl<D: Read, I: Read> Read for Drained<D, I> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(d) = &mut self.0 else {
            return Ok(0);
        };
        let n = d.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(d) = self.0.take() {
                io::copy(&mut (self.1)(d), &mut io::sink())?;
            }
        }
        Ok(n)
    }
}

/// Fails past `size` bytes, and at the end unless the bytes hash to `diff_id`.
struct DiffIdCheck {
    inner: Box<dyn Read>,
    hash: Sha256,
    read: u64,
    size: u64,
    diff_id: Digest,
    checked: bool,
}

impl Read for DiffIdCheck {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.checked {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        let bad = |what: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("layer {} {what}", self.diff_id),
            )
        };
        if self.read > self.size {
            return Err(bad(format!("is longer than its {} bytes", self.size)));
        }
        if n == 0 && !buf.is_empty() {
            if self.read != self.size {
                return Err(bad(format!(
                    "ended after {} of {} bytes",
                    self.read, self.size
                )));
            }
            let actual = Digest::from_hasher(std::mem::take(&mut self.hash));
            if actual != self.diff_id {
                return Err(bad(format!("has the content of {actual}")));
            }
            self.checked = true;
            return Ok(0);
        }
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Platform;
    use crate::store::images::LayerRecord;

    /// A store holding one image whose layer is an uncompressed tar (kept as a blob, as a
    /// loaded or committed image's are).
    fn store_with_image(dir: &Path) -> (Store, ImageRecord) {
        let store = Store::open_at(dir.join("store")).expect("store");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("etc/marker").expect("path");
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"hi\n"[..]).expect("append");
        let layer = b.into_inner().expect("tar");
        let layer_digest = Digest::of_bytes(&layer);
        store.write_blob(&layer_digest, &layer).expect("layer");
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
        }))
        .expect("json");
        let config_digest = Digest::of_bytes(&config);
        store.write_blob(&config_digest, &config).expect("config");
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": MediaType::OCI_MANIFEST,
            "config": {"mediaType": MediaType::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": MediaType::OCI_LAYER_TAR, "digest": layer_digest.to_string(), "size": layer.len()}],
        }))
        .expect("json");
        let manifest_digest = Digest::of_bytes(&manifest);
        store
            .write_blob(&manifest_digest, &manifest)
            .expect("manifest");
        let record = ImageRecord {
            name: "localhost/saved:1".into(),
            index_digest: None,
            manifest_digest,
            config_digest,
            platform: Platform::host(),
            created: None,
            pulled: 0,
            layers: vec![LayerRecord {
                digest: layer_digest.clone(),
                diff_id: layer_digest,
                size: layer.len() as u64,
                media_type: MediaType::OCI_LAYER_TAR.into(),
                source: None,
            }],
        };
        (store, record)
    }

    fn names(archive: &Path) -> Vec<String> {
        let mut a = tar::Archive::new(File::open(archive).expect("open"));
        a.entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn saves_the_same_bytes_twice_in_each_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, image) = store_with_image(dir.path());
        for (format, expected) in [
            (Format::Oci, vec!["oci-layout", "index.json"]),
            (Format::Docker, vec!["manifest.json", "repositories"]),
        ] {
            let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
            save(&store, "m", &image, format, &a).expect("save");
            save(&store, "m", &image, format, &b).expect("save again");
            assert_eq!(
                fs::read(&a).expect("a"),
                fs::read(&b).expect("b"),
                "{format:?}"
            );
            let listed = names(&a);
            for name in expected {
                assert!(listed.iter().any(|n| n == name), "{format:?}: {listed:?}");
            }
            let layer = image.layers[0].digest.hex().to_string();
            assert!(listed.iter().any(|n| n.contains(&layer)), "{listed:?}");
        }
        // Only the two archives: no temp file is left beside them.
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 3);
    }

    #[test]
    fn a_blob_that_is_not_what_the_store_says_fails_the_save_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, image) = store_with_image(dir.path());
        let blob = store.blob_path(&image.layers[0].digest);
        let mut bytes = fs::read(&blob).expect("read");
        bytes[600] ^= 1;
        fs::write(&blob, bytes).expect("write");
        for format in [Format::Oci, Format::Docker] {
            let out = dir.path().join("out.tar");
            let err = save(&store, "m", &image, format, &out).expect_err("refused");
            assert!(format!("{err:#}").contains("has the content of"), "{err:#}");
            assert!(!out.exists());
        }
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
