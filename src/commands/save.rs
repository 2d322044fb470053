//! `dev save -o FILE [--format oci|docker] [REF]`: an image of the store (REF, or the
//! project's `dev build`, or its base image as dev.lock pins it) as a tar that `podman load`, `docker load` and
//! `dev load` read.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::ArchiveFormat;
use crate::config::project::{no_project, Project};
use crate::export::archive::{save, Format};
use crate::export::image::target;
use crate::ids::Identity;
use crate::store::Store;

pub fn run(output: &Path, format: ArchiveFormat, reference: Option<&str>) -> Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let project = match reference {
        Some(_) => None,
        None => Project::discover(&cwd)?,
    };
    let store = Store::open()?;
    let identity = Identity::detect();
    let Some(t) = target(&store, &identity, reference, project.as_ref())? else {
        return Err(no_project(
            &cwd,
            "name the image: `dev save -o image.tar REF`",
        ));
    };
    let format = match format {
        ArchiveFormat::Oci => Format::Oci,
        ArchiveFormat::Docker => Format::Docker,
    };
    save(&store, &identity.store_key(), &t.record, format, output)?;
    crate::ui::note(format_args!(
        "saved {} ({}) to {}",
        t.record.name,
        t.record.manifest_digest.short(),
        output.display()
    ));
    Ok(())
}
