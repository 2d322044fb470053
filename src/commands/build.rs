//! `dev build [--tag REF]`: the project's image from dev.toml and dev.lock, filed in the store
//! (`dev push` sends it); prints its manifest digest.

use anyhow::Result;

use crate::export::build::{build, default_name, BuildInput};
use crate::oci::Reference;
use crate::session::{prepare, EnterOptions, Update};
use crate::store::images::record_name;
use crate::ui::UserError;

pub fn run(tag: Option<&str>, quiet: bool) -> Result<()> {
    let name = match tag {
        Some(t) => {
            let r = Reference::parse(t)?;
            if r.digest.is_some() {
                return Err(UserError::with_hint(
                    format!("`{t}` has a digest; a build's digest is computed"),
                    "give a name with an optional tag: `dev build --tag REGISTRY/NAME:TAG`",
                ));
            }
            Some(record_name(&r))
        }
        None => None,
    };
    let prepared = prepare(&EnterOptions::default(), &Update::default())?;
    let Some(project) = &prepared.project else {
        return Err(UserError::with_hint(
            "`dev build` makes a project's image, and this is not a project",
            "run it where a dev.toml is, or create one with `dev init`",
        ));
    };
    let name = name.unwrap_or_else(|| default_name(&project.root));
    let record = build(&BuildInput {
        store: &prepared.store,
        identity: &prepared.identity,
        root: &project.root,
        config: &project.config,
        base: &prepared.record,
        tools: prepared.tools.as_ref().map(|t| &t.diff_id),
        // As `dev status` shows it: whole digests.
        fingerprint: match &prepared.tools {
            Some(t) => format!("{} + {}", prepared.record.manifest_digest, t.diff_id),
            None => prepared.record.manifest_digest.to_string(),
        },
        name,
    })?;
    if !quiet {
        crate::ui::note(format_args!(
            "built {} ({} layers)",
            record.name,
            record.layers.len()
        ));
    }
    crate::ui::out(format_args!("{}", record.manifest_digest));
    Ok(())
}
