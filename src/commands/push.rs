//! `dev push [REF]`: send an image of the store (the project's `dev build`, a `dev commit`, a
//! pulled image) to the registry its name (or REF) says; print the pushed manifest digest.

use std::collections::VecDeque;
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};

use crate::config::Settings;
use crate::export::source::open_blob;
use crate::oci::{Descriptor, Document, Reference};
use crate::registry::{Endpoint, Pushed};
use crate::store::images::{record_name, ImageRecord};
use crate::store::Store;
use crate::ui::progress::PullProgress;
use crate::ui::UserError;

const PARALLEL_BLOBS: usize = 4;

pub fn run(reference: Option<&str>, quiet: bool) -> Result<()> {
    let store = Store::open()?;
    let (image, dest) = what_to_push(&store, reference)?;
    let progress = PullProgress::new(quiet);
    let digest = push(&store, &image, &dest, &progress)?;
    if !quiet {
        crate::ui::note(format_args!("{}: pushed {digest}", dest.name()));
    }
    crate::ui::out(format_args!("{digest}"));
    Ok(())
}

/// The image and where it goes: REF names an image of the store (pushed to where REF says),
/// or, in a project, the destination of the project's built image; no REF: the project's
/// built image, to its own name.
fn what_to_push(store: &Store, reference: Option<&str>) -> Result<(ImageRecord, Reference)> {
    let (image, dest) = find(store, reference)?;
    // `localhost/NAME` without a port is dev's own name for a build, not a registry.
    if dest.registry == "localhost" {
        return Err(UserError::with_hint(
            format!("`{}` names no registry to push to", dest.name()),
            "name the destination: `dev push REGISTRY/NAME:TAG`, or build with `dev build --tag REGISTRY/NAME:TAG`",
        ));
    }
    Ok((image, dest))
}

fn find(store: &Store, reference: Option<&str>) -> Result<(ImageRecord, Reference)> {
    let built = crate::export::build::project_image_name()?;
    let query = match (reference, &built) {
        (Some(r), _) => r.to_string(),
        (None, Some(b)) => b.clone(),
        (None, None) => {
            return Err(UserError::with_hint(
                "no image to push: this is not a project",
                "name one: `dev push REGISTRY/NAME:TAG`, or run `dev build` in a project",
            ))
        }
    };
    if let Some(image) = store.find_image(&query)? {
        // Found by name: pushed there; by a digest prefix: to its own name.
        let by_name = Reference::parse(&query)
            .ok()
            .filter(|r| record_name(r) == image.name);
        let dest = match by_name {
            Some(r) => r,
            None => Reference::parse(&image.name)?,
        };
        return Ok((image, dest));
    }
    let dest = Reference::parse(&query)?;
    let from_project = match &built {
        Some(b) => store.image(b)?,
        None => None,
    };
    match from_project {
        Some(image) => Ok((image, dest)),
        None => Err(UserError::with_hint(
            format!("no image `{query}` in the store"),
            match &built {
                Some(_) => "build the project's image first: `dev build`",
                None => "pull it, or build one with `dev build --tag REF` in a project",
            },
        )),
    }
}

/// Pushes `image` as `dest`: its blobs (a few at a time, each skipped, mounted or sent), then
/// its manifest. Returns the manifest's digest.
fn push(
    store: &Store,
    image: &ImageRecord,
    dest: &Reference,
    progress: &PullProgress,
) -> Result<crate::oci::Digest> {
    // A prune waits: it must not take a blob being sent.
    let _shared = store.lock_store(false)?;
    let manifest_bytes = store.read_blob(&image.manifest_digest)?;
    let (media_type, manifest) = match Document::parse(&manifest_bytes, "") {
        Ok(Document::Manifest {
            media_type,
            manifest,
        }) => (media_type, manifest),
        Ok(Document::Index { .. }) => {
            return Err(anyhow!(
                "internal error: the record of `{}` names an index",
                image.name
            ))
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("the manifest of `{}` in the store is refused", image.name)
            })
        }
    };
    // Blobs that came from another repository of the destination's registry are mounted.
    let mount_of = |desc: &Descriptor| -> Option<String> {
        let layer = image.layers.iter().find(|l| l.digest == desc.digest)?;
        let src = Reference::parse(&layer.fetched_from(image)).ok()?;
        (src.registry == dest.registry && src.repository != dest.repository)
            .then_some(src.repository)
    };
    let mut blobs: Vec<(Descriptor, Option<String>)> = vec![(manifest.config.clone(), None)];
    blobs.extend(manifest.layers.iter().map(|l| (l.clone(), mount_of(l))));
    let sources: Vec<String> = blobs.iter().filter_map(|(_, m)| m.clone()).collect();
    let settings = Settings::load()?;
    let endpoint = Endpoint::new(&dest.registry, dest.api_host(), &dest.repository, &settings)?
        .for_push(&sources);

    let queue: Mutex<VecDeque<&(Descriptor, Option<String>)>> = Mutex::new(blobs.iter().collect());
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_BLOBS.min(blobs.len()) {
            s.spawn(|| {
                while let Some((desc, mount)) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        break;
                    }
                    if let Err(e) =
                        push_blob(store, image, &endpoint, desc, mount.as_deref(), progress)
                    {
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    match first_error.into_inner() {
        Ok(Some(e)) => return Err(e),
        Ok(None) => {}
        Err(_) => return Err(anyhow!("internal error: an upload thread panicked")),
    }
    let tag = match (&dest.tag, &dest.digest) {
        (Some(t), _) => t.clone(),
        (None, Some(d)) => d.to_string(),
        (None, None) => "latest".to_string(),
    };
    Ok(endpoint.put_manifest(&tag, media_type, &manifest_bytes)?)
}

fn push_blob(
    store: &Store,
    image: &ImageRecord,
    endpoint: &Endpoint,
    desc: &Descriptor,
    mount: Option<&str>,
    progress: &PullProgress,
) -> Result<()> {
    let short = desc.digest.short().to_string();
    let bar = progress.upload(&short, desc.size);
    let open = || open_blob(store, image, &desc.digest, desc.size);
    let done = endpoint.push_blob(desc, mount, &open, &|n| bar.set(n))?;
    bar.finish(match done {
        Pushed::Present => "already there",
        Pushed::Mounted => "mounted",
        Pushed::Uploaded => "pushed",
    });
    Ok(())
}
