//! `dev load`: images from an image archive into the store: an OCI image layout tar
//! (`oci-layout`, `index.json`, `blobs/sha256/`, as `dev save`, `podman save --format
//! oci-archive` and `docker save` since 25 write it) or a docker-archive (`manifest.json`,
//! `<hex>.json`, layer tars, as `podman save` and `docker save` write it).
//!
//! The archive is untrusted. It is read once, front to back, by the strict tar reader of
//! `unpack::archive`; its entries are never extracted by their names: each regular file is
//! copied to a temp file of the store (created `O_EXCL|O_NOFOLLOW`) and known only by its
//! digest, names are only keys to look it up by. A name that says a digest (`blobs/sha256/<hex>`,
//! `<hex>.json`, `<hex>.tar`) must be the content's; documents are read with a size cap; layers
//! are unpacked by `Store::unpack_layer` under the rules of a pull and checked against the
//! config's `diff_ids`. The layer blobs are kept in the store (no registry has them to fetch
//! again for `dev save` or `dev push`). `load` never prints.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::ids::Identity;
use crate::oci::manifest::{from_json, Compression, ImageIndex};
use crate::oci::{
    Descriptor, Digest, Document, ImageConfig, ImageManifest, MediaType, Platform, Reference,
};
use crate::store::images::{record_name, ImageRecord, LayerRecord};
use crate::store::Store;
use crate::ui::UserError;
use crate::unpack::archive::{self, Kind};

/// The most bytes a document of the archive (index, manifest, config) may hold.
const MAX_DOCUMENT: u64 = 16 << 20;
/// The most entries an archive may have.
const MAX_ENTRIES: usize = 1 << 16;
/// How many links are followed to find one name.
const MAX_LINK_DEPTH: usize = 8;
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// An image the archive held, now in the store.
pub struct Loaded {
    /// The names it was filed under (its manifest digest when the archive names none).
    pub names: Vec<String>,
    pub record: ImageRecord,
}

/// Reads the archive at `file` and files every image in it.
pub fn load(store: &Store, identity: &Identity, file: &Path) -> Result<Vec<Loaded>> {
    let _shared = store.lock_store(false)?;
    let spool_dir = store.root().join("blobs-v1/tmp");
    let contents = read_archive(file, &spool_dir)?;
    let images = if contents.lookup("index.json").is_some() {
        oci_images(&contents)?
    } else if contents.lookup("manifest.json").is_some() {
        docker_images(&contents)?
    } else {
        return Err(UserError::with_hint(
            format!(
                "`{}` is not an image archive: it has neither `index.json` nor `manifest.json`",
                file.display()
            ),
            "make one with `dev save`, `podman save` or `docker save`",
        ));
    };
    if images.is_empty() {
        return Err(UserError::with_hint(
            format!("`{}` holds no image for this machine", file.display()),
            "save the image again on a machine of this platform",
        ));
    }
    images
        .into_iter()
        .map(|image| file_image(store, identity, file, image))
        .collect()
}

/// One regular file of the archive, copied out.
struct Spooled {
    path: PathBuf,
    digest: Digest,
    size: u64,
}

/// The archive's regular files by name, and its links (name → the name they stand for).
struct Contents {
    files: BTreeMap<String, Spooled>,
    links: BTreeMap<String, String>,
}

impl Drop for Contents {
    fn drop(&mut self) {
        for f in self.files.values() {
            let _ = fs::remove_file(&f.path);
        }
    }
}

impl Contents {
    fn lookup(&self, name: &str) -> Option<&Spooled> {
        let mut name = name.trim_start_matches("./").to_string();
        for _ in 0..MAX_LINK_DEPTH {
            if let Some(f) = self.files.get(&name) {
                return Some(f);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    fn get(&self, name: &str) -> Result<&Spooled> {
        self.lookup(name)
            .ok_or_else(|| damaged(format!("it has no entry `{name}`, which it refers to")))
    }

    /// The blob of `desc`, of the size it says.
    fn blob(&self, desc: &Descriptor) -> Result<&Spooled> {
        let f = self.get(&format!("blobs/sha256/{}", desc.digest.hex()))?;
        if f.size != desc.size {
            return Err(damaged(format!(
                "blob {} is {} bytes, but its descriptor says {}",
                desc.digest, f.size, desc.size
            )));
        }
        Ok(f)
    }

    fn document(&self, f: &Spooled, what: &str) -> Result<Vec<u8>> {
        if f.size > MAX_DOCUMENT {
            return Err(damaged(format!(
                "its {what} is {} bytes; `dev` reads at most {MAX_DOCUMENT}",
                f.size
            )));
        }
        let mut bytes = Vec::new();
        File::open(&f.path)
            .and_then(|file| file.take(MAX_DOCUMENT).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read back `{}`", f.path.display()))?;
        Ok(bytes)
    }
}

fn damaged(what: String) -> anyhow::Error {
    UserError::with_hint(
        format!("the image archive is refused: {what}"),
        "the archive is damaged or was altered; make it again with `dev save`, `podman save` or `docker save`",
    )
}

/// An archive's entry name as a key: relative, `.` components dropped; `None` for the root.
fn entry_name(raw: &[u8]) -> Result<Option<String>> {
    let name = std::str::from_utf8(raw).map_err(|_| {
        damaged(format!(
            "entry `{}` has a name that is not UTF-8",
            String::from_utf8_lossy(raw)
        ))
    })?;
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(damaged(format!(
                    "entry `{name}` points outside the archive"
                )))
            }
            p => parts.push(p),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// A symlink's target, as a name of the archive (lexically, from the link's directory).
fn link_target(link_name: &str, target: &[u8]) -> Option<String> {
    let target = std::str::from_utf8(target).ok()?;
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        link_name.split('/').collect()
    };
    if !target.starts_with('/') {
        parts.pop();
    }
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// The hex digest a name says its content has, for the names that say one.
fn named_digest(name: &str) -> Option<&str> {
    let hex = name
        .strip_prefix("blobs/sha256/")
        .or_else(|| name.strip_suffix(".json"))
        .or_else(|| name.strip_suffix(".tar"))?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Refuses to read past a limit (a compressed archive that inflates without end).
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            io::Error::other("the archive inflates to more than 100 times its size")
        })?;
        Ok(n)
    }
}

/// Reads the whole archive, copying each regular file to a temp file in `spool_dir`.
fn read_archive(file: &Path, spool_dir: &Path) -> Result<Contents> {
    let mut f = File::open(file).with_context(|| format!("cannot open `{}`", file.display()))?;
    let len = f.metadata()?.len();
    let mut head = [0u8; 4];
    let n = f.read(&mut head)?;
    let input = io::Cursor::new(head[..n].to_vec()).chain(BufReader::with_capacity(256 << 10, f));
    let decoded: Box<dyn Read> = match Compression::sniff(&head[..n]) {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
    };
    let bounded = Bounded {
        inner: decoded,
        left: crate::unpack::size_limit(len),
    };
    let mut reader = archive::Reader::new(bounded);
    let mut contents = Contents {
        files: BTreeMap::new(),
        links: BTreeMap::new(),
    };
    let mut entries = 0;
    let mut seq = 0u32;
    let read_err = |e: archive::Error| match e {
        archive::Error::Io(io) => anyhow::Error::from(io).context(format!(
            "cannot read the image archive `{}`",
            file.display()
        )),
        e => damaged(e.to_string()),
    };
    while let Some(entry) = reader.next_entry().map_err(read_err)? {
        entries += 1;
        if entries > MAX_ENTRIES {
            return Err(damaged(format!("it has more than {MAX_ENTRIES} entries")));
        }
        let Some(name) = entry_name(&entry.path)? else {
            continue;
        };
        match entry.kind {
            Kind::File if entry.sparse.is_none() => {}
            Kind::File => return Err(damaged(format!("entry `{name}` is a sparse file"))),
            Kind::Symlink => {
                if let Some(target) = link_target(&name, &entry.link) {
                    contents.links.insert(name, target);
                }
                continue;
            }
            Kind::HardLink => {
                if let Some(target) = entry_name(&entry.link)? {
                    contents.links.insert(name, target);
                }
                continue;
            }
            _ => continue,
        }
        seq += 1;
        let path = spool_dir.join(format!("load-{}-{seq}", std::process::id()));
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("cannot create `{}`", path.display()))?;
        // Known from here on, so removed with the rest whatever happens next.
        let mut spooled = Spooled {
            path: path.clone(),
            digest: Digest::of_bytes(b""),
            size: 0,
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let copied = (|| -> Result<()> {
            while let Some((_, n)) = reader.read_data(&mut buf).map_err(read_err)? {
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .with_context(|| format!("cannot write `{}`", path.display()))?;
                spooled.size += n as u64;
            }
            Ok(())
        })();
        spooled.digest = Digest::from_hasher(hasher);
        let hex = spooled.digest.hex().to_string();
        if let Some(old) = contents.files.insert(name.clone(), spooled) {
            let _ = fs::remove_file(&old.path);
        }
        copied?;
        if let Some(said) = named_digest(&name) {
            if !said.eq_ignore_ascii_case(&hex) {
                return Err(damaged(format!(
                    "entry `{name}` does not match its digest (its content is sha256:{hex})"
                )));
            }
        }
    }
    Ok(contents)
}

/// An image found in the archive, ready to be filed.
struct Found {
    names: Vec<String>,
    index: Option<(Vec<u8>, Digest)>,
    manifest_bytes: Vec<u8>,
    manifest: ImageManifest,
    config_bytes: Vec<u8>,
    /// Each layer's descriptor and the temp file holding it.
    layers: Vec<(Descriptor, PathBuf)>,
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Layout {
    #[serde(rename = "imageLayoutVersion")]
    version: String,
}

fn oci_images(contents: &Contents) -> Result<Vec<Found>> {
    if let Some(layout) = contents.lookup("oci-layout") {
        let bytes = contents.document(layout, "`oci-layout`")?;
        let layout: Layout =
            from_json(&bytes).map_err(|e| damaged(format!("its `oci-layout` is refused: {e}")))?;
        if layout.version != "1.0.0" {
            return Err(damaged(format!(
                "it is an OCI image layout of version `{}`; `dev` reads 1.0.0",
                layout.version
            )));
        }
    }
    let bytes = contents.document(contents.get("index.json")?, "`index.json`")?;
    let index: ImageIndex =
        from_json(&bytes).map_err(|e| damaged(format!("its `index.json` is refused: {e}")))?;
    let host = Platform::host();
    let mut found = Vec::new();
    for desc in &index.manifests {
        let names: Vec<String> = desc
            .annotations
            .iter()
            .flat_map(|a| [a.get(CONTAINERD_NAME), a.get(REF_NAME)])
            .flatten()
            .filter_map(|n| image_name(n))
            .take(1)
            .collect();
        let (bytes, document) = oci_document(contents, desc)?;
        let (index, manifest_bytes, manifest, platform) = match document {
            Document::Manifest { manifest, .. } => (None, bytes, manifest, desc.platform.clone()),
            Document::Index { index: child, .. } => {
                let Ok(entry) = child.entry_for(&host) else {
                    continue;
                };
                let (child_bytes, child_doc) = oci_document(contents, entry)?;
                let Document::Manifest { manifest, .. } = child_doc else {
                    return Err(damaged(format!(
                        "index {} lists index {} for {host}, and `dev` follows one index only",
                        desc.digest, entry.digest
                    )));
                };
                let digest = desc.digest.clone();
                (
                    Some((bytes, digest)),
                    child_bytes,
                    manifest,
                    entry.platform.clone(),
                )
            }
        };
        let config_bytes = contents.document(contents.blob(&manifest.config)?, "image config")?;
        let layers = manifest
            .layers
            .iter()
            .map(|l| Ok((l.clone(), contents.blob(l)?.path.clone())))
            .collect::<Result<_>>()?;
        found.push(Found {
            names,
            index,
            manifest_bytes,
            manifest,
            config_bytes,
            layers,
            platform,
        });
    }
    Ok(found)
}

fn oci_document(contents: &Contents, desc: &Descriptor) -> Result<(Vec<u8>, Document)> {
    let bytes = contents.document(contents.blob(desc)?, "manifest")?;
    let document = Document::parse(&bytes, &desc.media_type)
        .map_err(|e| damaged(format!("manifest {} is refused: {e}", desc.digest)))?;
    Ok((bytes, document))
}

/// A name from the archive, as `dev` files it; `None` for one that is not a full reference
/// (an OCI layout's `ref.name` may be a bare tag such as `latest`).
fn image_name(name: &str) -> Option<String> {
    if !name.contains('/') && !name.contains(':') {
        return None;
    }
    Reference::parse(name).ok().map(|r| record_name(&r))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn docker_images(contents: &Contents) -> Result<Vec<Found>> {
    let bytes = contents.document(contents.get("manifest.json")?, "`manifest.json`")?;
    let entries: Vec<DockerEntry> =
        from_json(&bytes).map_err(|e| damaged(format!("its `manifest.json` is refused: {e}")))?;
    let mut found = Vec::new();
    for entry in entries {
        let config = contents.get(&entry.config)?;
        let config_bytes = contents.document(config, "image config")?;
        let mut layers = Vec::new();
        for name in &entry.layers {
            let f = contents.get(name)?;
            let mut head = [0u8; 4];
            let n = File::open(&f.path)
                .and_then(|mut file| file.read(&mut head))
                .with_context(|| format!("cannot read back `{}`", f.path.display()))?;
            let media_type = match Compression::sniff(&head[..n]) {
                Compression::None => DOCKER_LAYER_TAR,
                Compression::Gzip => MediaType::DOCKER_LAYER_GZIP,
                Compression::Zstd => MediaType::OCI_LAYER_ZSTD,
            };
            layers.push((
                Descriptor::new(media_type, &f.digest, f.size),
                f.path.clone(),
            ));
        }
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(MediaType::DOCKER_MANIFEST.to_string()),
            config: Descriptor::new(
                MediaType::DOCKER_CONFIG,
                &config.digest,
                config_bytes.len() as u64,
            ),
            layers: layers.iter().map(|(d, _)| d.clone()).collect(),
        };
        found.push(Found {
            names: entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .filter_map(|n| image_name(n))
                .collect(),
            index: None,
            manifest_bytes: serde_json::to_vec(&manifest)?,
            manifest,
            config_bytes,
            layers,
            platform: None,
        });
    }
    Ok(found)
}

/// Unpacks the image's layers (those the store lacks) and records it under its names.
fn file_image(store: &Store, identity: &Identity, file: &Path, image: Found) -> Result<Loaded> {
    let config = ImageConfig::parse(&image.config_bytes).map_err(|e| {
        damaged(format!(
            "image config {} is refused: {e}",
            image.manifest.config.digest
        ))
    })?;
    if config.rootfs.diff_ids.len() != image.layers.len() {
        return Err(damaged(format!(
            "its manifest lists {} layers but its config {} content digests",
            image.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    let host = Platform::host();
    let platform = image.platform.clone().unwrap_or(Platform {
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        variant: config.variant.clone(),
    });
    if !platform.os.is_empty() && !host.accepts(&platform) {
        return Err(UserError::with_hint(
            format!(
                "the image in `{}` is for {}/{}, not for this machine ({host})",
                file.display(),
                platform.os,
                platform.architecture
            ),
            "save an image built for this machine's platform",
        ));
    }
    let mapping = identity.store_key();
    for ((desc, path), diff_id) in image.layers.iter().zip(&config.rootfs.diff_ids) {
        if Compression::from_media_type(&desc.media_type).is_none() {
            bail!(
                "layer {} in `{}` has media type `{}`, which is not a layer `dev` can unpack",
                desc.digest,
                file.display(),
                desc.media_type
            );
        }
        if store.layer_meta(&mapping, diff_id).is_some() {
            continue;
        }
        let _lock = store.lock_layer(diff_id)?;
        if store.layer_meta(&mapping, diff_id).is_some() {
            continue;
        }
        store
            .unpack_layer(identity, path, diff_id)
            .with_context(|| format!("cannot unpack layer {}", desc.digest))?;
    }
    // Kept, verified: no registry has these blobs for `dev save` or `dev push` to fetch again.
    for (desc, path) in &image.layers {
        if !store.has_blob(&desc.digest)
            && fs::hard_link(path, store.blob_path(&desc.digest)).is_ok()
        {
            crate::store::sync_dir(&store.root().join("blobs-v1/sha256"));
        }
    }
    store.settle(identity, &config.rootfs.diff_ids)?;
    if let Some((bytes, digest)) = &image.index {
        store.write_blob(digest, bytes)?;
    }
    let manifest_digest = Digest::of_bytes(&image.manifest_bytes);
    store.write_blob(&manifest_digest, &image.manifest_bytes)?;
    store.write_blob(&image.manifest.config.digest, &image.config_bytes)?;
    let mut names = image.names;
    if names.is_empty() {
        names.push(manifest_digest.to_string());
    }
    let mut record = None;
    for name in &names {
        let rec = ImageRecord {
            name: name.clone(),
            index_digest: image.index.as_ref().map(|(_, d)| d.clone()),
            manifest_digest: manifest_digest.clone(),
            config_digest: image.manifest.config.digest.clone(),
            platform: platform.clone(),
            created: config.created.clone(),
            pulled: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            layers: image
                .layers
                .iter()
                .zip(&config.rootfs.diff_ids)
                .map(|((d, _), diff)| LayerRecord {
                    digest: d.digest.clone(),
                    diff_id: diff.clone(),
                    size: d.size,
                    media_type: d.media_type.clone(),
                    source: None,
                })
                .collect(),
        };
        store.save_image(&rec)?;
        record = Some(rec);
    }
    let record = record.context("internal error: an image with no name")?;
    Ok(Loaded { names, record })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_keys_never_paths() {
        assert_eq!(
            entry_name(b"./blobs/sha256/ab").ok().flatten().as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(
            entry_name(b"/index.json").ok().flatten().as_deref(),
            Some("index.json")
        );
        assert!(entry_name(b"./").ok().flatten().is_none());
        assert!(entry_name(b"blobs/../../etc/passwd").is_err());
        assert!(entry_name(b"\xff").is_err());
    }

    #[test]
    fn links_resolve_inside_the_archive_or_not_at_all() {
        assert_eq!(
            link_target("abc/layer.tar", b"../1234.tar").as_deref(),
            Some("1234.tar")
        );
        assert_eq!(link_target("a/b", b"/c").as_deref(), Some("c"));
        assert_eq!(link_target("a", b"../../etc/passwd"), None);
    }

    #[test]
    fn names_that_say_a_digest() {
        let hex = "a".repeat(64);
        assert_eq!(named_digest(&format!("blobs/sha256/{hex}")), Some(&*hex));
        assert_eq!(named_digest(&format!("{hex}.json")), Some(&*hex));
        assert_eq!(named_digest(&format!("{hex}.tar")), Some(&*hex));
        assert_eq!(named_digest(&format!("{hex}/layer.tar")), None);
        assert_eq!(named_digest("manifest.json"), None);
    }

    #[test]
    fn bare_tags_are_not_names() {
        assert_eq!(image_name("latest"), None);
        assert_eq!(
            image_name("localhost/x:1").as_deref(),
            Some("localhost/x:1")
        );
    }
}

#[cfg(test)]
mod archive_tests {
    use std::io::Write as _;

    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).expect("path");
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            if !link.is_empty() {
                h.set_link_name(link).expect("link");
            }
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    /// Reads `bytes` as an archive and hands the result to `check` while its spool exists.
    fn read(bytes: &[u8], check: impl FnOnce(&Result<Contents>)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.tar");
        fs::File::create(&file)
            .and_then(|mut f| f.write_all(bytes))
            .expect("write");
        let spool = dir.path().join("spool");
        fs::create_dir(&spool).expect("mkdir");
        let contents = read_archive(&file, &spool);
        // The spool holds exactly the regular files (none after a refusal).
        let held = contents.as_ref().map_or(0, |c| c.files.len());
        assert_eq!(fs::read_dir(&spool).expect("ls").count(), held);
        check(&contents);
        drop(contents);
        assert_eq!(fs::read_dir(&spool).expect("ls").count(), 0);
    }

    #[test]
    fn files_are_known_by_digest_and_links_by_name() {
        use tar::EntryType as T;
        let hex = Digest::of_bytes(b"layer").hex().to_string();
        let layer_name = format!("{hex}.tar");
        let link = format!("../{layer_name}");
        let archive = tar_of(&[
            (&layer_name, T::Regular, b"layer", ""),
            ("abc/layer.tar", T::Symlink, b"", &link),
            ("def/layer.tar", T::Link, b"", &layer_name),
            ("abc/", T::Directory, b"", ""),
        ]);
        read(&archive, |c| {
            let c = c.as_ref().expect("read");
            for name in ["abc/layer.tar", "def/layer.tar", layer_name.as_str()] {
                let f = c.lookup(name).expect(name);
                assert_eq!(f.digest, Digest::of_bytes(b"layer"));
                assert_eq!(f.size, 5);
                assert_eq!(fs::read(&f.path).expect("spooled"), b"layer");
            }
            assert!(c.lookup("abc").is_none());
        });
    }

    #[test]
    fn a_name_that_says_another_digest_is_refused_and_nothing_is_kept() {
        use tar::EntryType as T;
        let hex = Digest::of_bytes(b"other").hex().to_string();
        let name = format!("blobs/sha256/{hex}");
        let archive = tar_of(&[
            ("index.json", T::Regular, b"{}", ""),
            (&name, T::Regular, b"layer", ""),
        ]);
        read(&archive, |c| {
            let err = c.as_ref().err().expect("refused");
            assert!(
                err.to_string()
                    .contains(&format!("entry `{name}` does not match its digest")),
                "{err}"
            );
        });
    }
}
