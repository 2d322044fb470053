//! Tools: package-manager backends, and the tools layer, built once per (base image, packages,
//! setup, pins) by running the installs as root in the sandbox and capturing what they wrote.

pub mod manager;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::beneath::{self, Tree};
use crate::config::lock::split_spec;
use crate::config::project::DevToml;
use crate::ids::Identity;
use crate::ids::Ownership;
use crate::oci::Digest;
use crate::sandbox::parent::run_sandbox;
use crate::sandbox::plan::{
    self, mount_plan, Backend, IdMode, Layout, ProcessPlan, RootfsPlan, SandboxPlan, UserPlan,
};
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
    // The layers are the image's: looked at beneath their roots, no symlink followed.
    let roots: Vec<Tree> = image
        .layers
        .iter()
        .filter_map(|l| Tree::open(&store.layer_path(mapping, &l.diff_id).join("root")).ok())
        .collect();
    // A 0/0 character device is a whiteout: the path was deleted by that layer.
    let exists = |p: &str| {
        roots.iter().any(|r| {
            r.lstat(Path::new(p))
                .ok()
                .flatten()
                .is_some_and(|st| !beneath::is_whiteout(&st))
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

/// Checks each name and version against `manager`'s grammar, so that what reaches the build is
/// a package; the error names the entry of dev.toml (or dev.lock, for its pins) at fault.
pub fn check_packages(
    manager: Manager,
    config: &DevToml,
    pins: &BTreeMap<String, String>,
) -> Result<()> {
    for spec in &config.tools.packages {
        let (name, version) = split_spec(spec);
        let entry = || format!("dev.toml: [tools] packages entry `{}`", spec.escape_debug());
        if !manager.valid_name(name) {
            let grammar = manager.name_grammar();
            return Err(bad_entry(entry(), name, "package name", manager, grammar));
        }
        match (version, pins.get(name)) {
            (Some(v), _) if !manager.valid_version(v) => {
                let grammar = manager.version_grammar();
                return Err(bad_entry(entry(), v, "package version", manager, grammar));
            }
            (None, Some(v)) if !manager.valid_version(v) => {
                return Err(bad_entry(
                    format!(
                        "dev.lock: [tools] entry `{name} = \"{}\"`",
                        v.escape_debug()
                    ),
                    v,
                    "package version",
                    manager,
                    &format!(
                        "{}; fix the entry, or delete it and run `dev lock`",
                        manager.version_grammar()
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `ENTRY: `VALUE` is not a FAMILY WHAT`, with the grammar as the hint.
fn bad_entry(entry: String, value: &str, what: &str, m: Manager, grammar: &str) -> anyhow::Error {
    UserError::with_hint(
        format!(
            "{entry}: `{}` is not {} {} {what} ({} in this image)",
            value.escape_debug(),
            if m == Manager::Apt { "a" } else { "an" },
            m.family(),
            m.name()
        ),
        grammar.to_string(),
    )
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
    check_packages(manager, config, pins)?;
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
    crate::ui::note(format_args!(
        "building the tools layer ({} install {}) on {}",
        manager.name(),
        names.join(" "),
        image.name
    ));
    let scratch = store.scratch_env(&mapping)?;
    let mut script = manager.install_script(&config.setup.root, !packages.is_empty());
    if !identity.has_subordinate() && manager == Manager::Apt {
        // With a single-id map there is no `_apt` to drop to: apt runs its downloads as root.
        script = format!("echo 'APT::Sandbox::User \"root\";' > /etc/apt/apt.conf.d/00dev-sandbox\n{script}rm -f /etc/apt/apt.conf.d/00dev-sandbox\n");
    }
    // The build's output is progress, not the command's: it goes to stderr, and it reads no input.
    let script = format!("exec </dev/null 1>&2\n{script}");
    // The packages are the script's arguments, never part of its text.
    let mut argv = vec!["/bin/sh".into(), "-c".into(), script, "dev-tools".into()];
    argv.extend(packages.iter().map(Package::arg));
    let build = Build {
        lowers: image
            .layers
            .iter()
            .rev()
            .map(|l| Path::new(l.diff_id.hex()).join("root"))
            .collect(),
        shares: Vec::new(),
        env: BTreeMap::new(),
        argv,
    };
    let plan = build_plan(store, identity, image, image_env, &scratch, backend, build);
    let code = run_sandbox(identity, &plan);
    let outcome = match code {
        Ok(0) => read_report(&scratch.upper, RESOLVED).map(Option::unwrap_or_default),
        Ok(code) if code == MISSING_PIN_STATUS => {
            // Only a name of the list is shown: the file is the build's.
            let named = read_report(&scratch.upper, MISSING_PIN)
                .ok()
                .flatten()
                .and_then(|n| packages.iter().find(|p| p.name == n.trim()));
            Err(match named {
                Some(p) => UserError::with_hint(
                    format!(
                        "the pinned version {}={} is no longer on the package mirror",
                        p.name,
                        p.version.as_deref().unwrap_or_default()
                    ),
                    format!("re-resolve it with `dev update {}` (it rewrites dev.lock), or pin another version in dev.toml", p.name),
                ),
                None => UserError::with_hint(
                    "a pinned version is no longer on the package mirror",
                    "re-resolve the pins with `dev update` (it rewrites dev.lock), or pin other versions in dev.toml",
                ),
            })
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
    check_resolved(manager, &resolved, &packages)?;
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
    crate::ui::note(format_args!(
        "tools layer {} ({} files, {})",
        diff_id.short(),
        stats.files,
        crate::ui::human_bytes(stats.bytes)
    ));
    Ok(Some(ToolsLayer { diff_id, resolved }))
}

/// What a build in the sandbox stands on, sees and runs.
pub struct Build {
    /// The layers under the build's writable layer, relative to the store's layer directory,
    /// top first.
    pub lowers: Vec<PathBuf>,
    /// Host directories mounted inside, as (inside path, host path), made after `/tmp`.
    pub shares: Vec<(PathBuf, PathBuf)>,
    /// Variables set over the image's `Env`.
    pub env: BTreeMap<String, String>,
    pub argv: Vec<String>,
}

/// The sandbox that runs a build (the tools install, a Feature's install.sh): root inside,
/// `build.lowers` under a throwaway writable layer, nothing of the user's mounted (the layer
/// is shared by everyone).
pub fn build_plan(
    store: &Store,
    identity: &Identity,
    image: &ImageRecord,
    image_env: &[String],
    scratch: &crate::store::envs::EnvDirs,
    backend: Option<Backend>,
    build: Build,
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
        shares: build.shares,
        ssh_agent: None,
        etc_files: ["/etc/resolv.conf", "/etc/hosts"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect(),
        // A build needs none of the image's /tmp and /run.
        kept: Vec::new(),
        binds: Vec::new(),
        bind_owner: None,
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
            lowers: build.lowers,
            upper: scratch.upper.clone(),
            work: scratch.work.clone(),
            copy: scratch.copy.clone(),
            merged: scratch.merged.clone(),
            scratch: None,
        },
        steps: mount_plan(&layout),
        process: ProcessPlan {
            argv: build.argv,
            shell: None,
            shell_fallbacks: Vec::new(),
            env: plan::environment(
                image_env,
                &host,
                &user,
                "dev-tools",
                "dev-tools",
                false,
                &build.env,
            ),
            cwd: "/".into(),
        },
        user,
        hostname: "dev-tools".into(),
        image_user: None,
        image: image.name.clone(),
        keep: None,
        ldconfig: false,
    }
}

/// The most a build's report ([`RESOLVED`], [`MISSING_PIN`]) may hold.
const REPORT_MAX: u64 = 1 << 20;

/// A report the install script left at `path` in the build's writable layer; `None` when it
/// left none. The layer is the build's (a `[setup]` command or a package's script may have
/// made the name a symlink to any host file): it is read beneath the layer's root, no symlink
/// followed, and bounded.
fn read_report(upper: &Path, path: &str) -> Result<Option<String>> {
    let failed = |e: std::io::Error| {
        UserError::with_hint(
            format!("cannot read `{path}`, which the tools build left: {e}"),
            "a [setup] root command or a package replaced it; dev reads it only as a regular file",
        )
    };
    let tree = Tree::open(upper)
        .with_context(|| format!("cannot open the tools build's layer `{}`", upper.display()))?;
    match tree.read_bounded(Path::new(path.trim_start_matches('/')), REPORT_MAX) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| failed(std::io::Error::other("it is not UTF-8 text"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(failed(e)),
    }
}

/// Fails unless every package has a resolved version (the lock must name them all), and each
/// version is one of the manager's (dev.lock is fed back into the next build).
fn check_resolved(
    manager: Manager,
    resolved: &BTreeMap<String, String>,
    packages: &[Package],
) -> Result<()> {
    if let Some((n, v)) = resolved
        .iter()
        .find(|(n, v)| !manager.valid_name(n) || !manager.valid_version(v))
    {
        return Err(UserError::with_hint(
            format!(
                "the tools build reported `{}={}`, which is not {} {} package and version; dev.lock is unchanged",
                n.escape_debug(),
                v.escape_debug(),
                if manager == Manager::Apt { "a" } else { "an" },
                manager.family()
            ),
            "a [setup] root command or a package wrote it; fix [setup] in dev.toml",
        ));
    }
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
