//! Tools: package-manager backends, and the tools layer, built once per (base image, packages,
//! setup, pins) by running the installs as root in the sandbox and capturing what they wrote.

pub mod manager;

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use crate::config::lock::split_spec;
use crate::config::project::DevToml;
use crate::oci::Digest;
use crate::sandbox::plan::{
    self, mount_plan, Backend, IdMode, Layout, ProcessPlan, RootfsPlan, SandboxPlan, UserPlan,
};
use crate::sandbox::spawn::{run_sandbox, Ownership};
use crate::sandbox::Identity;
use crate::store::images::ImageRecord;
use crate::store::tools::ToolsRecord;
use crate::store::Store;
use crate::ui::UserError;
use manager::{parse_resolved, Manager, Package, MISSING_PIN, MISSING_PIN_STATUS, RESOLVED};

/// A built (or cached) tools layer.
#[derive(Clone, Debug)]
pub struct ToolsLayer {
    pub diff_id: Digest,
    pub resolved: BTreeMap<String, String>,
}

/// The image's package manager: dev.toml's `manager`, else found in its layers.
pub fn manager_of(
    store: &Store,
    mapping: &str,
    image: &ImageRecord,
    config: &DevToml,
) -> Result<Manager> {
    if let Some(name) = &config.tools.manager {
        return Manager::parse(name).ok_or_else(|| {
            UserError::with_hint(
                format!("dev.toml: `manager = \"{name}\"` is not a package manager dev knows"),
                "use `apt`, `apk` or `dnf`, or leave `manager` out to detect it",
            )
        });
    }
    let roots: Vec<PathBuf> = image
        .layers
        .iter()
        .map(|l| store.layer_path(mapping, &l.diff_id).join("root"))
        .collect();
    // A 0/0 character device is a whiteout: the path was deleted by that layer.
    let exists = |p: &str| {
        roots.iter().any(|r| {
            r.join(p)
                .symlink_metadata()
                .is_ok_and(|m| !m.file_type().is_char_device())
        })
    };
    Manager::detect(exists).map_err(|e| {
        UserError::with_hint(
            format!("cannot install [tools] into `{}`: {e}", image.name),
            "use an image with apt, apk or dnf, or set `manager` in [tools]",
        )
    })
}

/// The packages to install: dev.toml's own pins first, then dev.lock's.
pub fn packages(config: &DevToml, pins: &BTreeMap<String, String>) -> Vec<Package> {
    config
        .tools
        .packages
        .iter()
        .map(|spec| {
            let (name, version) = split_spec(spec);
            Package {
                name: name.to_string(),
                version: version
                    .map(str::to_string)
                    .or_else(|| pins.get(name).cloned()),
            }
        })
        .collect()
}

/// The cache key of a tools layer.
pub fn key(base: &Digest, manager: Manager, packages: &[Package], setup_root: &[String]) -> Digest {
    let specs: Vec<String> = packages.iter().map(|p| manager.spec(p)).collect();
    let text = serde_json::json!({
        "v": 1,
        "base": base.to_string(),
        "manager": manager.name(),
        "packages": specs,
        "setup-root": setup_root,
    });
    Digest::of_bytes(text.to_string().as_bytes())
}

/// The tools layer for `config` on `image`, built when the cache has none for its key.
pub fn ensure(
    store: &Store,
    identity: &Identity,
    image: &ImageRecord,
    image_env: &[String],
    config: &DevToml,
    pins: &BTreeMap<String, String>,
    backend: Option<Backend>,
) -> Result<Option<ToolsLayer>> {
    if !config.has_tools() {
        return Ok(None);
    }
    let mapping = identity.store_key();
    let manager = manager_of(store, &mapping, image, config)?;
    let packages = packages(config, pins);
    let key = key(
        &image.manifest_digest,
        manager,
        &packages,
        &config.setup.root,
    );
    if let Some(rec) = store.tools_record(&mapping, &key) {
        return Ok(Some(ToolsLayer {
            diff_id: rec.diff_id,
            resolved: rec.resolved,
        }));
    }
    let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    eprintln!(
        "building the tools layer ({} install {}) on {}",
        manager.name(),
        names.join(" "),
        image.name
    );
    let scratch = store.scratch_env(&mapping)?;
    let mut script = manager.install_script(&config.setup.root, &packages);
    if !identity.has_subordinate() && manager == Manager::Apt {
        // With a single-id map there is no `_apt` to drop to: apt runs its downloads as root.
        script = format!("echo 'APT::Sandbox::User \"root\";' > /etc/apt/apt.conf.d/00dev-sandbox\n{script}rm -f /etc/apt/apt.conf.d/00dev-sandbox\n");
    }
    // The build's output is progress, not the command's: it goes to stderr, and it reads no input.
    let script = format!("exec </dev/null 1>&2\n{script}");
    let plan = build_plan(store, identity, image, image_env, &scratch, backend, script);
    let code = run_sandbox(identity, &plan);
    let read =
        |p: &str| std::fs::read_to_string(scratch.upper.join(p.trim_start_matches('/'))).ok();
    let outcome = match code {
        Ok(0) => Ok(read(RESOLVED).unwrap_or_default()),
        Ok(code) if code == MISSING_PIN_STATUS => {
            let name = read(MISSING_PIN).unwrap_or_default().trim().to_string();
            let version = packages
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.version.clone())
                .unwrap_or_default();
            Err(UserError::with_hint(
                format!("the pinned version {name}={version} is no longer on the package mirror"),
                format!("re-resolve it with `dev update {name}` (it rewrites dev.lock), or pin another version in dev.toml"),
            ))
        }
        Ok(code) => Err(UserError::with_hint(
            format!(
                "installing the tools failed ({} exited with {code}); the env is unchanged",
                manager.name()
            ),
            "the package manager's error is above; fix [tools] or [setup] in dev.toml",
        )),
        Err(e) => Err(e),
    };
    let resolved = match outcome {
        Ok(text) => text,
        Err(e) => {
            let _ = store.remove_trees(identity, std::slice::from_ref(&scratch.dir));
            return Err(e);
        }
    };
    let captured = store.capture(identity, &scratch.upper);
    let _ = store.remove_trees(identity, std::slice::from_ref(&scratch.dir));
    let (diff_id, stats) = captured?;
    let resolved: BTreeMap<String, String> = parse_resolved(&resolved).into_iter().collect();
    check_resolved(&resolved, &packages)?;
    // Filed under its key, and under the key of the same packages pinned to what got installed:
    // the next start (with dev.lock's pins) finds it without building again.
    let pinned: Vec<Package> = packages
        .iter()
        .map(|p| Package {
            name: p.name.clone(),
            version: resolved.get(&p.name).cloned(),
        })
        .collect();
    let pinned_key = self::key(&image.manifest_digest, manager, &pinned, &config.setup.root);
    for key in [key, pinned_key] {
        store.save_tools_record(
            &mapping,
            &ToolsRecord {
                key,
                diff_id: diff_id.clone(),
                manager: manager.name().to_string(),
                resolved: resolved.clone(),
            },
        )?;
    }
    eprintln!(
        "tools layer {} ({} files, {})",
        diff_id.short(),
        stats.files,
        crate::ui::human_bytes(stats.bytes)
    );
    Ok(Some(ToolsLayer { diff_id, resolved }))
}

/// The sandbox that runs the install: root inside, the image's layers under a throwaway
/// writable layer, nothing of the user's mounted (the layer is shared by everyone).
fn build_plan(
    store: &Store,
    identity: &Identity,
    image: &ImageRecord,
    image_env: &[String],
    scratch: &crate::store::envs::EnvDirs,
    backend: Option<Backend>,
    script: String,
) -> SandboxPlan {
    let mapping = identity.store_key();
    let user = UserPlan {
        name: "root".into(),
        uid: 0,
        group: "root".into(),
        gid: 0,
        home: "/root".into(),
        root: true,
        write_entries: false,
    };
    let host: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k == "TERM").collect();
    let layout = Layout {
        root: scratch.merged.clone(),
        shares: Vec::new(),
        ssh_agent: None,
        etc_files: ["/etc/resolv.conf", "/etc/hosts"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect(),
    };
    SandboxPlan {
        ids: match identity.ownership {
            Ownership::Subordinate { .. } => IdMode::Subordinate,
            Ownership::Flat { .. } => IdMode::FlatRoot,
        },
        rootfs: RootfsPlan {
            // The copy backend would copy every layer just to throw it away.
            backend: backend.filter(|b| *b != Backend::Copy),
            probe_cache: store.overlay_probe_path(),
            layers_dir: store.layers_dir(&mapping),
            lowers: image
                .layers
                .iter()
                .rev()
                .map(|l| Path::new(l.diff_id.hex()).join("root"))
                .collect(),
            upper: scratch.upper.clone(),
            work: scratch.work.clone(),
            copy: scratch.copy.clone(),
            merged: scratch.merged.clone(),
            scratch: None,
        },
        steps: mount_plan(&layout),
        process: ProcessPlan {
            argv: vec!["/bin/sh".into(), "-c".into(), script],
            shell: None,
            shell_fallbacks: Vec::new(),
            env: plan::environment(
                image_env,
                &host,
                &user,
                "dev-tools",
                "dev-tools",
                false,
                &BTreeMap::new(),
            ),
            cwd: "/".into(),
        },
        user,
        hostname: "dev-tools".into(),
        image_user: None,
        image: image.name.clone(),
        keep: None,
    }
}

/// Fails unless every package has a resolved version (the lock must name them all).
fn check_resolved(resolved: &BTreeMap<String, String>, packages: &[Package]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|p| !resolved.contains_key(&p.name))
        .map(|p| p.name.as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "the package manager reported no installed version for {}",
            missing.join(", ")
        ))
    }
}
