//! `dev kube [REF]`: print a Kubernetes Pod manifest that runs the project's image (or REF)
//! with the project mounted from a volume, its `[env]` and working directory.

use anyhow::{Context, Result};

use crate::config::lock::{self, DevLock};
use crate::config::project::{no_project, Project};
use crate::export::kube::{pod_yaml, PodSpec};
use crate::ids::Identity;
use crate::oci::{ImageConfig, Platform, Reference};
use crate::store::images::ImageRecord;
use crate::store::Store;
use crate::ui::progress::PullProgress;

pub fn run(reference: Option<&str>) -> Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let Some(project) = Project::discover(&cwd)? else {
        return Err(no_project(&cwd, "`dev kube` runs a project's image with the project mounted; `dev init` writes a dev.toml"));
    };
    let store = Store::open()?;
    let identity = Identity::detect();
    let (image, wanted) = match reference {
        Some(r) => {
            let r = Reference::parse(r)?;
            (r.to_string(), r)
        }
        None => {
            // Pinned as dev.lock pins it, so the pod runs what every teammate's env runs.
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
            (shown.to_string(), r)
        }
    };
    let record = image_record(&store, &identity, &wanted)?;
    let config = ImageConfig::parse(&store.read_blob(&record.config_digest)?)
        .with_context(|| format!("the config of `{}` in the store is refused", record.name))?;
    if reference.is_none() && project.config.has_tools() {
        crate::ui::note(format_args!(
            "warning: `{image}` is the base image: it lacks the packages of dev.toml's [tools]; give an image that has them as REF"
        ));
    }
    let yaml = pod_yaml(&PodSpec {
        image: &image,
        project: &project.root,
        image_env: config.config.env.as_deref().unwrap_or_default(),
        env: &project.config.env,
    });
    crate::ui::out(format_args!("{}", yaml.trim_end()));
    Ok(())
}

/// The image's record, pulled when the store lacks it.
fn image_record(store: &Store, identity: &Identity, r: &Reference) -> Result<ImageRecord> {
    if let Some(rec) = store
        .find_image(&r.to_string())?
        .filter(|rec| r.digest.as_ref().is_none_or(|d| d == &rec.manifest_digest))
    {
        return Ok(rec);
    }
    crate::pull::pull(store, identity, r, &PullProgress::new(false))
}
