//! `dev kube [REF]`: print a Kubernetes Pod manifest that runs the project's image (or REF)
//! with the project mounted from a volume, its `[env]` and working directory.

use anyhow::{Context, Result};

use crate::config::project::{no_project, Project};
use crate::export::image::target;
use crate::export::kube::{pod_yaml, PodSpec};
use crate::ids::Identity;
use crate::oci::ImageConfig;
use crate::store::Store;

pub fn run(reference: Option<&str>) -> Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let Some(project) = Project::discover(&cwd)? else {
        return Err(no_project(
            &cwd,
            "`dev kube` runs a project's image with the project mounted; `dev init` writes a dev.toml",
        ));
    };
    let store = Store::open()?;
    let identity = Identity::detect();
    let t = target(&store, &identity, reference, Some(&project))?
        .context("internal error: a project without an image")?;
    let config = ImageConfig::parse(&store.read_blob(&t.record.config_digest)?)
        .with_context(|| format!("the config of `{}` in the store is refused", t.record.name))?;
    if reference.is_none() && !t.built && project.config.has_tools() {
        crate::ui::note(format_args!(
            "warning: `{}` is the base image: it lacks the packages of dev.toml's [tools]; `dev build --tag REGISTRY/NAME` and `dev push` make one that has them, to give as REF",
            t.shown
        ));
    }
    let yaml = pod_yaml(&PodSpec {
        image: &t.shown.to_string(),
        project: &project.root,
        image_env: config.config.env.as_deref().unwrap_or_default(),
        env: &project.config.env,
    });
    crate::ui::out(format_args!("{}", yaml.trim_end()));
    Ok(())
}
