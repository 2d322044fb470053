//! Which image an export command means: the one named, or the project's `dev build`, or the
//! project's base image as dev.lock pins it (what every teammate's env starts from).

use anyhow::Result;

use crate::config::lock::{self, DevLock};
use crate::config::project::Project;
use crate::ids::Identity;
use crate::oci::{Platform, Reference};
use crate::store::images::ImageRecord;
use crate::store::Store;
use crate::ui::progress::PullProgress;

/// The image, as others pull it (a tag, or the locked digest), and its record in the store
/// (pulled when the store lacks it).
pub struct Target {
    pub shown: Reference,
    pub record: ImageRecord,
    /// The project's own `dev build` (not its base image).
    pub built: bool,
}

/// `reference` when given, else `project`'s built image (`dev build`), else its base image
/// pinned by its dev.lock.
pub fn target(
    store: &Store,
    identity: &Identity,
    reference: Option<&str>,
    project: Option<&Project>,
) -> Result<Option<Target>> {
    let (shown, wanted) = match (reference, project) {
        (Some(r), _) => {
            let r = Reference::parse(r)?;
            (r.clone(), r)
        }
        (None, Some(project)) => {
            // The project's `dev build`, when there is one: it has the tools layer.
            let built = super::build::default_name(&project.root);
            if let Some(record) = store.find_image(&built)? {
                return Ok(Some(Target {
                    shown: Reference::parse(&built)?,
                    record,
                    built: true,
                }));
            }
            let mut r = Reference::parse(&project.config.image)?;
            let locked = DevLock::load(&project.root.join(lock::FILE_NAME))?;
            let manifest = locked.as_ref().and_then(|l| {
                l.image
                    .manifests
                    .get(&Platform::host().to_string())
                    .cloned()
            });
            let pin = locked
                .as_ref()
                .and_then(|l| l.image.index.clone())
                .or(manifest.clone());
            let shown = match pin {
                Some(d) => Reference {
                    tag: None,
                    digest: Some(d),
                    ..r.clone()
                },
                None => r.clone(),
            };
            r.digest = manifest;
            (shown, r)
        }
        (None, None) => return Ok(None),
    };
    let found = store.find_image(&wanted.to_string())?.filter(|rec| {
        wanted
            .digest
            .as_ref()
            .is_none_or(|d| d == &rec.manifest_digest)
    });
    let record = match found {
        Some(rec) => rec,
        None => crate::pull::pull(store, identity, &wanted, &PullProgress::new(false))?,
    };
    Ok(Some(Target {
        shown,
        record,
        built: false,
    }))
}
