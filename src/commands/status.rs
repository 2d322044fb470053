//! `dev status`: the env's fingerprint (base manifest digest + tools layer digest), whether it
//! is what dev.toml and dev.lock say, and whether its writable layer has drifted. Reads only.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::lock::{self, DevLock};
use crate::config::project::{no_project, Project};
use crate::ids::Identity;
use crate::oci::{Platform, Reference};
use crate::session::check_frozen;
use crate::store::Store;

/// Paths dev itself writes into an env's layer (user entries, mount points).
const OWN: [&str; 3] = ["etc/passwd", "etc/group", "etc/.pwd.lock"];

pub fn run() -> Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let Some(project) = Project::discover(&cwd)? else {
        return Err(no_project(&cwd, "`dev init` writes one"));
    };
    let lock = DevLock::load(&project.root.join(lock::FILE_NAME))?;
    crate::ui::out(format_args!("project:     {}", project.root.display()));
    crate::ui::out(format_args!("image:       {}", project.config.image));
    let mut up_to_date = true;
    match check_frozen(&project.config, lock.as_ref()) {
        Ok(()) => crate::ui::out(format_args!("dev.lock:    matches dev.toml")),
        Err(e) => {
            up_to_date = false;
            crate::ui::out(format_args!(
                "dev.lock:    {}",
                e.to_string().trim_start_matches("--frozen: ")
            ));
        }
    }
    let store = Store::open()?;
    let identity = Identity::detect();
    let mapping = identity.store_key();
    let mut reference = Reference::parse(&project.config.image)?;
    if let Some(d) = lock
        .as_ref()
        .and_then(|l| l.image.manifests.get(&Platform::host().to_string()))
    {
        reference.digest = Some(d.clone());
    }
    let record = store.find_image(&reference.to_string())?.filter(|r| {
        reference
            .digest
            .as_ref()
            .is_none_or(|d| d == &r.manifest_digest)
    });
    let Some(record) = record else {
        crate::ui::out(format_args!("fingerprint: (image not pulled yet)"));
        crate::ui::out(format_args!(
            "state:       not built; `dev shell` pulls and builds it"
        ));
        return Ok(());
    };
    let mut fingerprint = record.manifest_digest.to_string();
    if project.config.has_tools() {
        let pins = lock.as_ref().map(|l| l.tools.clone()).unwrap_or_default();
        let manager = crate::tools::manager_of(&store, &mapping, &record, &project.config)?;
        let packages = crate::tools::packages(&project.config, &pins);
        let key = crate::tools::key(
            &record.manifest_digest,
            manager,
            &packages,
            &project.config.setup.root,
        );
        match store.tools_record(&mapping, &key) {
            Some(t) => {
                fingerprint.push_str(&format!(" + {}", t.diff_id));
                if let Some(locked) = lock.as_ref().and_then(|l| l.tools_layer.as_ref()) {
                    if locked.digest != t.diff_id {
                        crate::ui::out(format_args!("tools layer: built here as {}, dev.lock has {} (same packages, other bytes)", t.diff_id.short(), locked.digest.short()));
                    }
                }
            }
            None => {
                up_to_date = false;
                fingerprint.push_str(" + (tools layer not built yet)");
            }
        }
    }
    crate::ui::out(format_args!("fingerprint: {fingerprint}"));
    crate::ui::out(format_args!(
        "state:       {}",
        if up_to_date {
            "up to date"
        } else {
            "out of date; `dev lock` or `dev shell` brings it up to date"
        }
    ));
    let upper = store.env_dir(&mapping, &project.root).join("upper");
    let drift = drifted(&upper)?;
    if drift.is_empty() {
        crate::ui::out(format_args!(
            "drift:       none (the env's writable layer holds nothing of its own)"
        ));
    } else {
        let shown: Vec<String> = drift
            .iter()
            .take(5)
            .map(|p| format!("/{}", p.display()))
            .collect();
        crate::ui::out(format_args!(
            "drift:       {} path(s) changed outside the tools layer, e.g. {}",
            drift.len(),
            shown.join(", ")
        ));
    }
    Ok(())
}

/// Files (not directories: those are mount points) in the env's writable layer, except the
/// ones dev writes itself; walked beneath the layer's root fd (the env shapes that tree).
fn drifted(upper: &Path) -> Result<Vec<PathBuf>> {
    use rustix::fs::FileType;
    Ok(crate::store::envs::walk_env_tree(upper)?
        .into_iter()
        .filter(|e| crate::beneath::file_type(&e.stat) != FileType::Directory)
        .map(|e| e.rel)
        .filter(|rel| !OWN.iter().any(|o| rel == Path::new(o)))
        .collect())
}
