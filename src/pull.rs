//! Pulling an image into the store, for `dev pull` and for every session whose image is
//! missing: resolve the reference to this platform's manifest, fetch and verify the config and
//! layers (in parallel), unpack each layer once into the shared store, record the image.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

use crate::atomic::Durability;
use crate::config::Settings;
use crate::ids::Identity;
use crate::oci::manifest::Compression;
use crate::oci::{
    Descriptor, Document, DocumentError, EntryError, ImageManifest, Platform, Reference,
};
use crate::registry::{Endpoint, Landing, RegistryError};
use crate::store::images::{record_name, ImageRecord, LayerRecord};
use crate::store::layers::Blob;
use crate::store::Store;
use crate::ui::progress::PullProgress;
use crate::ui::UserError;

const PARALLEL_LAYERS: usize = 4;

/// Once per store, for a user without a subordinate range: what the single-id mapping limits
/// and how to get a range, in one line.
pub fn flat_notice(store: &Store, identity: &Identity) -> Option<String> {
    let crate::ids::Ownership::Flat { reason } = &identity.ownership else {
        return None;
    };
    let marker = store.envs_dir(&identity.store_key()).join(".flat-noticed");
    if marker.exists() {
        return None;
    }
    let _ = std::fs::create_dir_all(marker.parent()?);
    let _ = std::fs::write(&marker, b"");
    Some(format!("note: {reason}"))
}

/// Like [`flat_notice`], printed.
pub fn notice_flat(store: &Store, identity: &Identity) {
    if let Some(note) = flat_notice(store, identity) {
        crate::ui::note(format_args!("{note}"));
    }
}

/// The hidden command that flushes a pull's layers to disk once the pull returned.
pub const SETTLE_COMMAND: &str = "__settle";

/// Pulls `reference` into the store and returns its record.
pub fn pull(
    store: &Store,
    identity: &Identity,
    reference: &Reference,
    progress: &PullProgress,
) -> Result<ImageRecord> {
    // The first layer's unpack helper is mapped while the registry is asked for the image.
    crate::sandbox::parent::prestart_store_helper(identity);
    let pulled = pull_image(store, identity, reference, progress);
    crate::sandbox::parent::forget_prestarted();
    pulled
}

fn pull_image(
    store: &Store,
    identity: &Identity,
    reference: &Reference,
    progress: &PullProgress,
) -> Result<ImageRecord> {
    let settings = Settings::load()?;
    let _shared = store.lock_store(false)?;
    if !matches!(progress, PullProgress::Quiet) {
        if let Some(note) = flat_notice(store, identity) {
            progress.message(&note);
        }
    }
    let (endpoint, resolved) = resolve_with_mirrors(reference, &settings)?;
    let Resolved {
        index,
        manifest_bytes,
        manifest_digest,
        manifest,
        platform,
    } = resolved;
    let (config_bytes, config) = endpoint.config(&manifest.config)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        bail!(
            "image `{reference}` is malformed: its manifest lists {} layers but its config {} content digests",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        );
    }
    let host = Platform::host();
    if !config.os.is_empty()
        && !host.accepts(&Platform {
            os: config.os.clone(),
            architecture: config.architecture.clone(),
            variant: config.variant.clone(),
        })
    {
        return Err(UserError::with_hint(
            format!(
                "image `{reference}` is for {}/{}, not for this machine ({host})",
                config.os, config.architecture
            ),
            "pick a tag built for this machine's platform",
        ));
    }
    for layer in &manifest.layers {
        if Compression::from_media_type(&layer.media_type).is_none() {
            bail!("layer {} of `{reference}` has media type `{}`, which is not a layer `dev` can unpack", layer.digest, layer.media_type);
        }
    }
    let platform = platform.unwrap_or(Platform {
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        variant: config.variant.clone(),
    });

    let jobs: Vec<(Descriptor, crate::oci::Digest)> = manifest
        .layers
        .iter()
        .cloned()
        .zip(config.rootfs.diff_ids.iter().cloned())
        .collect();
    let spent = Mutex::new(Vec::new());
    let fetched = fetch_layers(store, identity, &endpoint, &jobs, progress, &spent);
    let spent = spent.into_inner().unwrap_or_default();
    if let Err(e) = fetched {
        remove_downloads(&spent);
        return Err(e);
    }
    let diff_ids: Vec<_> = jobs.iter().map(|(_, d)| d.clone()).collect();
    // With layers this pull unpacked and did not flush, its documents and record are not
    // flushed either: `dev __settle`'s `syncfs` does it with the layers. (Their fsync forced
    // a journal commit of every file just unpacked: ~25 ms of a cold pull.) Until then a power
    // cut finds the layers unsynced and the record torn or gone: all of it is pulled again.
    let unsettled = store.unsettled(identity, &diff_ids);
    let durability = match unsettled.is_empty() {
        true => Durability::Durable,
        false => Durability::Volatile,
    };
    let documents = || -> Result<()> {
        if let Some((bytes, _)) = &index {
            store.write_blob_with(&crate::oci::Digest::of_bytes(bytes), bytes, durability)?;
        }
        store.write_blob_with(&manifest_digest, &manifest_bytes, durability)?;
        store.write_blob_with(&manifest.config.digest, &config_bytes, durability)
    };
    let rec = ImageRecord {
        name: record_name(reference),
        index_digest: index.as_ref().map(|(_, d)| d.clone()),
        manifest_digest: manifest_digest.clone(),
        config_digest: manifest.config.digest.clone(),
        platform,
        created: config.created.clone(),
        pulled: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        layers: jobs
            .iter()
            .map(|(d, diff)| LayerRecord {
                digest: d.digest.clone(),
                diff_id: diff.clone(),
                size: d.size,
                media_type: d.media_type.clone(),
                source: None,
            })
            .collect(),
    };
    // Deleting a download frees its pages as it goes (~15 ms for a 50 MB layer): the `dev
    // __settle` that flushes later deletes it first.
    let aside: Vec<_> = match durability {
        Durability::Durable => {
            remove_downloads(&spent);
            Vec::new()
        }
        Durability::Volatile => spent.iter().filter_map(|p| store.set_aside(p)).collect(),
    };
    if let Err(e) = documents().and_then(|()| store.save_image_with(&rec, durability)) {
        // (A full disk, say: the space goes back now.)
        remove_downloads(&aside);
        return Err(e);
    }
    // Not on the pull's critical path (a `syncfs` is most of a cold pull's time when the page
    // cache holds the layer): until `dev __settle` is done the layers stay marked unsynced, so
    // after a power cut they are fetched again instead of run on torn. Started after the
    // records above, which its `syncfs` flushes too.
    settle_in_background(&unsettled);
    Ok(rec)
}

/// Tells the unpack that the download failed, if the thread ends (a panic) before saying how
/// (`Landing::over` keeps the first word).
struct OverOnDrop<'a>(&'a Landing);

impl Drop for OverOnDrop<'_> {
    fn drop(&mut self) {
        self.0.over(false);
    }
}

/// Deletes the downloads whose layers are unpacked (the tree is what is kept).
fn remove_downloads(paths: &[std::path::PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

/// Starts `dev __settle` for these layers and does not wait for it. Nothing depends on it but
/// the layers' survival of a power cut; without it they are fetched again after one.
fn settle_in_background(diff_ids: &[crate::oci::Digest]) {
    if diff_ids.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let started = std::process::Command::new(exe)
        .arg(SETTLE_COMMAND)
        .args(diff_ids.iter().map(|d| d.to_string()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    // Not waited for: a thread that did would make this process multi-threaded when the
    // session forks its sandbox helper. A session that pulled keeps it a zombie until it ends.
    drop(started);
}

struct Resolved {
    index: Option<(Vec<u8>, crate::oci::Digest)>,
    manifest_bytes: Vec<u8>,
    manifest_digest: crate::oci::Digest,
    manifest: ImageManifest,
    platform: Option<Platform>,
}

/// Tries the user's mirrors for the registry first, then the registry itself.
fn resolve_with_mirrors(
    reference: &Reference,
    settings: &Settings,
) -> Result<(Endpoint, Resolved)> {
    let mut last_err = None;
    for mirror in settings.mirrors_for(&reference.registry) {
        let attempt = Endpoint::new(mirror, mirror, &reference.repository, settings)
            .and_then(|ep| resolve(&ep, reference).map(|r| (ep, r)));
        match attempt {
            Ok(found) => return Ok(found),
            Err(e) => last_err = Some(e),
        }
    }
    let ep = Endpoint::new(
        &reference.registry,
        reference.api_host(),
        &reference.repository,
        settings,
    )?;
    match resolve(&ep, reference) {
        Ok(r) => Ok((ep, r)),
        Err(e) => Err(match last_err {
            Some(m) => {
                anyhow::Error::from(e).context(format!("the mirrors failed too (last: {m})"))
            }
            None => e.into(),
        }),
    }
}

fn resolve(ep: &Endpoint, reference: &Reference) -> Result<Resolved, RegistryError> {
    let top = ep.manifest(&reference.manifest_ref(), None)?;
    let index = match top.document {
        Document::Manifest { manifest, .. } => {
            return Ok(Resolved {
                index: None,
                manifest_bytes: top.bytes,
                manifest_digest: top.digest,
                manifest,
                platform: None,
            })
        }
        Document::Index { index, .. } => index,
    };
    let host = Platform::host();
    let desc = index.entry_for(&host).map_err(|e| match e {
        EntryError::NoMatch(have) => RegistryError::NotFound {
            registry: ep.registry().to_string(),
            what: format!(
                "a {host} image for `{reference}` (it has: {})",
                have.join(", ")
            ),
        },
        EntryError::BadType { digest, media_type } => RegistryError::Refused {
            registry: ep.registry().to_string(),
            what: format!(
                "index `{}:{}`",
                reference.repository,
                reference.manifest_ref()
            ),
            reason: DocumentError::EntryType {
                platform: host.to_string(),
                digest: digest.to_string(),
                media_type,
            },
        },
    })?;
    let child = ep.manifest(&desc.digest.to_string(), Some(desc))?;
    let Document::Manifest { manifest, .. } = child.document else {
        // An entry's type is a manifest type and the child must be of it: unreachable.
        return Err(RegistryError::Refused {
            registry: ep.registry().to_string(),
            what: format!("manifest {}", desc.digest),
            reason: DocumentError::NotAsListed {
                expected: desc.media_type.clone(),
                served: child.document.media_type().to_string(),
            },
        });
    };
    Ok(Resolved {
        index: Some((top.bytes, top.digest)),
        manifest_bytes: child.bytes,
        manifest_digest: child.digest,
        manifest,
        platform: desc.platform.clone(),
    })
}

/// Downloads and unpacks the layers not yet in the store, a few at a time.
fn fetch_layers(
    store: &Store,
    identity: &Identity,
    endpoint: &Endpoint,
    jobs: &[(Descriptor, crate::oci::Digest)],
    progress: &PullProgress,
    spent: &Mutex<Vec<std::path::PathBuf>>,
) -> Result<()> {
    let key = identity.store_key();
    let queue: Mutex<VecDeque<&(Descriptor, crate::oci::Digest)>> =
        Mutex::new(jobs.iter().collect());
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_LAYERS.min(jobs.len()) {
            s.spawn(|| {
                while let Some((desc, diff_id)) = queue.lock().ok().and_then(|mut q| q.pop_front())
                {
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        break;
                    }
                    match fetch_layer(store, identity, &key, endpoint, desc, diff_id, progress) {
                        Ok(Some(download)) => {
                            if let Ok(mut s) = spent.lock() {
                                s.push(download);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
    });
    match first_error.into_inner() {
        Ok(Some(e)) => Err(e),
        Ok(None) => Ok(()),
        Err(_) => Err(anyhow!("internal error: a download thread panicked")),
    }
}

fn fetch_layer(
    store: &Store,
    identity: &Identity,
    key: &str,
    endpoint: &Endpoint,
    desc: &Descriptor,
    diff_id: &crate::oci::Digest,
    progress: &PullProgress,
) -> Result<Option<std::path::PathBuf>> {
    let short = desc.digest.short().to_string();
    if store.layer_meta(key, diff_id).is_some() {
        progress.message(&format!("{short}: already exists"));
        return Ok(None);
    }
    let _lock = store.lock_layer(diff_id)?;
    // Another `dev pull` may have finished it while we waited for the lock.
    if store.layer_meta(key, diff_id).is_some() {
        progress.message(&format!("{short}: already exists"));
        return Ok(None);
    }
    let bar = progress.layer(&short, desc.size);
    // A blob the store holds already is unpacked from there.
    if store.has_blob(&desc.digest) {
        let blob = store.blob_path(&desc.digest);
        bar.phase("unpacking");
        let unpacked = store.unpack_layer(identity, &blob, diff_id);
        return finish_layer(unpacked, &blob, desc, &bar);
    }
    // A download is unpacked as it lands in its partial file, which is never renamed into the
    // blobs nor flushed to disk: it is deleted once the layer is in place. What the unpack
    // reads is unverified until the end, and nothing of it is made visible unless the layer's
    // content hashes to `diff_id`, which the config (itself verified) names.
    let partial = store.partial_path(&desc.digest);
    // Made again if a power cut took it: the store's own directory, never flushed on a pull's
    // path (a clean-clone CI run's first run after a cut found it gone).
    if let Some(dir) = partial.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    let landing = Landing::default();
    let (downloaded, unpacked) = std::thread::scope(|s| {
        let download = s.spawn(|| {
            // Whatever ends this thread (a panic too) ends the download for its unpack.
            let _failed_unless_said = OverOnDrop(&landing);
            let done = endpoint.download(desc, &partial, &|done, _| {
                landing.written(done);
                bar.set(done);
            });
            landing.over(done.is_ok());
            if done.is_ok() {
                bar.phase("unpacking");
            }
            done
        });
        let unpacked = store.unpack_blob(
            identity,
            Blob::Landing {
                path: &partial,
                landing: &landing,
                size: desc.size,
            },
            diff_id,
        );
        (download.join(), unpacked)
    });
    let Ok(downloaded) = downloaded else {
        bail!("internal error: a download thread panicked");
    };
    if let Err(e) = downloaded {
        // Kept for resuming, a partial download on a full disk would make every other
        // pull fail too: the space goes back.
        if matches!(&e, RegistryError::Io { source, .. } if crate::store::inside::is_disk_full(source))
        {
            let _ = std::fs::remove_file(&partial);
        }
        return Err(e.into());
    }
    let unpacked = match unpacked {
        // The download started over under the unpack: the file is whole now.
        Err(_) if landing.rewound() => store.unpack_layer(identity, &partial, diff_id),
        other => other,
    };
    finish_layer(unpacked, &partial, desc, &bar)
}

/// After a layer's unpack: its blob is to be deleted either way (a blob whose content is
/// refused is not kept, at once; an unpacked tree is what is kept, and the caller deletes the
/// blob it returns).
fn finish_layer(
    unpacked: Result<crate::unpack::LayerStats>,
    blob: &std::path::Path,
    desc: &Descriptor,
    bar: &crate::ui::progress::LayerProgress,
) -> Result<Option<std::path::PathBuf>> {
    if let Err(e) = unpacked {
        let _ = std::fs::remove_file(blob);
        return Err(e.context(format!("cannot unpack layer {}", desc.digest)));
    }
    bar.finish("done");
    Ok(Some(blob.to_path_buf()))
}
