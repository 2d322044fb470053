//! Before a session: find the project, pass the trust gate, pull the image (the digest
//! dev.lock pins), build the tools layer, write dev.lock when what was resolved differs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::plan::check_shared_path;
use super::{EnterOptions, Update};
use crate::config::lock::{self, DevLock, LockedFeature, LockedImage, LockedLayer};
use crate::config::project::{no_project, DevToml, Project};
use crate::features::lockfile::DevcontainerLock;
use crate::features::{Features, Resolved};
use crate::ids::Identity;
use crate::oci::{ImageConfig, Reference};
use crate::sandbox::plan::{check_working_dir, Backend};
use crate::sandbox::rootfs::{kernel_release, ProbeCache};
use crate::store::images::ImageRecord;
use crate::store::stack::LayerStack;
use crate::store::Store;
use crate::tools::ToolsLayer;
use crate::ui::progress::PullProgress;
use crate::ui::UserError;

/// Everything resolved before a session: project, image, tools layer, lock.
pub struct Prepared {
    pub cwd: PathBuf,
    pub project: Option<Project>,
    /// The project root (the current directory for `--image` runs outside a project).
    pub root: PathBuf,
    /// The image as named (dev.toml or `--image`).
    pub image: String,
    pub store: Store,
    pub identity: Identity,
    pub record: ImageRecord,
    pub config: ImageConfig,
    pub tools: Option<ToolsLayer>,
    /// dev.toml's Features: their layers over the tools layer, their env.
    pub features: Features,
    pub backend: Option<Backend>,
}

impl Prepared {
    /// Base manifest digest and tools layer digest: what makes two envs the same.
    pub fn fingerprint(&self) -> String {
        env_fingerprint(&self.record, self.tools.as_ref(), &self.features.layers)
    }
}

/// Finds the project, pulls the image (the digest dev.lock pins, if any), builds the tools
/// layer if dev.toml has one, and writes dev.lock when what was resolved differs from it.
pub fn prepare(opts: &EnterOptions, update: &Update) -> Result<Prepared> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut project = Project::discover(&cwd)?;
    if let Some(p) = &project {
        // Refused: the helper `speculate` started goes first, so it says nothing after us.
        super::gate::gate(p)?;
    }
    if let Some(dc) = project.as_ref().and_then(|p| p.devcontainer.as_ref()) {
        for line in dc.unsupported_lines() {
            crate::ui::note(format_args!("{line}"));
        }
        if dc.host_requirements != Default::default() {
            for line in crate::config::devcontainer::check_host(&dc.host_requirements, &cwd) {
                crate::ui::note(format_args!("warning: {line}"));
            }
        }
    }
    let image =
        match (&opts.image, &project) {
            (Some(i), _) => i.clone(),
            (None, Some(p)) => p.config.image.clone(),
            (None, None) => return Err(no_project(
                &cwd,
                "create one with `dev init`, or name an image: `dev shell --image debian:bookworm`",
            )),
        };
    let root = project
        .as_ref()
        .map_or_else(|| cwd.clone(), |p| p.root.clone());
    check_shared_path(&root, "the project directory")?;
    // dev.lock belongs to dev.toml: an `--image` run ignores it.
    let locked = project.as_ref().filter(|_| opts.image.is_none());
    let lock_path = root.join(lock::FILE_NAME);
    let old_lock = match locked {
        Some(_) => DevLock::load(&lock_path)?,
        None => None,
    };
    if let (true, Some(p)) = (opts.frozen, locked) {
        check_frozen(&p.config, old_lock.as_ref())?;
    }
    let mut reference = Reference::parse(&image)?;
    let host = crate::oci::Platform::host().to_string();
    let pinned = old_lock
        .as_ref()
        .filter(|l| l.image.reference == image && !update.image && !update.all)
        .and_then(|l| l.image.manifests.get(&host).cloned());
    if opts.frozen && locked.is_some() && pinned.is_none() {
        return Err(UserError::with_hint(
            format!("dev.lock pins no image for this platform ({host})"),
            "run `dev lock` on this platform and commit dev.lock",
        ));
    }
    if let Some(d) = pinned {
        reference.digest = Some(d);
    }
    let store = Store::open()?;
    let identity = Identity::detect();
    if let Some(p) = project.as_ref().filter(|_| opts.image.is_none()) {
        // initializeCommand (trusted: the gate passed) runs on the host as the env starts.
        if let Some(init) = p
            .devcontainer
            .as_ref()
            .and_then(|d| d.initialize_command.as_ref())
        {
            if store
                .running(&store.run_dir(&identity.store_key(), &p.root))
                .is_none()
            {
                super::hooks::initialize_on_host(init, &p.root)?;
            }
        }
    }
    let record = image_in_store(&store, &identity, &reference, update.image || update.all)?;
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(&record.config_digest)?)
        .with_context(|| format!("the config of image `{image}` in the store is not valid JSON"))?;
    if let Some(dir) = &config.config.working_dir {
        check_working_dir(dir).map_err(|e| {
            UserError::with_hint(
                format!("image `{image}` is not usable: {e}"),
                "use another image, or fix the image's config",
            )
        })?;
    }
    // The image's devcontainer.metadata goes under the project's devcontainer.json.
    if let (Some(dc), Some(label)) = (
        project.as_mut().and_then(|p| p.devcontainer.as_mut()),
        config
            .config
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::config::devcontainer::METADATA_LABEL)),
    ) {
        dc.merge_image_metadata(label);
    }
    let locked = project.as_ref().filter(|_| opts.image.is_none());
    let backend = backend(&store)?;
    crate::pull::notice_flat(&store, &identity);
    let mut tools = None;
    // The tools layer is dev.toml's, built on dev.toml's image: an `--image` session has none.
    if let Some(p) = locked {
        let mut pins = old_lock
            .as_ref()
            .map(|l| l.tools.clone())
            .unwrap_or_default();
        if update.all {
            pins.clear();
        }
        for name in &update.packages {
            pins.remove(name);
        }
        tools = crate::tools::ensure(
            &store,
            &identity,
            &record,
            config.config.env.as_deref().unwrap_or_default(),
            &p.config,
            &pins,
            backend,
        )?;
    }
    let mut features = Features::default();
    if let Some(p) = locked {
        // `dev update` re-resolves the Features' tags too.
        let mut pins: BTreeMap<String, Resolved> = match (&old_lock, update.all) {
            (Some(l), false) => feature_pins(l),
            _ => BTreeMap::new(),
        };
        // A devcontainer.json's Features: `./dir` relative to it, its install order, its
        // remoteUser, and devcontainer-lock.json beside it (dev.lock's pins win).
        let dc = p.devcontainer.as_deref();
        let dc_lock = match (dc, update.all) {
            (Some(_), false) => DevcontainerLock::load(&p.file)?,
            _ => None,
        };
        if let Some(l) = &dc_lock {
            for (r, pin) in l.pins() {
                pins.entry(r).or_insert(pin);
            }
        }
        let mut users = crate::features::Users::of_image(config.config.user.as_deref());
        if let Some(u) = dc.and_then(|d| d.remote_user.clone()) {
            users = crate::features::Users {
                remote: u,
                container: users.container,
            };
        }
        let below = LayerStack::new(&record, tools.as_ref().map(|t| &t.diff_id));
        features = crate::features::ensure(
            &store,
            &identity,
            &record,
            config.config.env.as_deref().unwrap_or_default(),
            &below,
            &crate::features::Request {
                features: &p.config.features,
                base: p.file.parent().unwrap_or(&p.root),
                pins: &pins,
                overrides: dc.map_or(&[][..], |d| &d.override_feature_install_order[..]),
                users,
            },
            backend,
        )?;
        if dc.is_some() && !p.config.features.is_empty() {
            let now = DevcontainerLock::of(&features.resolved);
            if opts.frozen && dc_lock.as_ref() != Some(&now) {
                return Err(UserError::with_hint(
                    format!(
                        "{} is not what devcontainer.json resolves to here (--frozen)",
                        crate::features::lockfile::path_for(&p.file).display()
                    ),
                    "run `dev lock` and commit it",
                ));
            }
            if now.save(&p.file)? {
                crate::ui::note(format_args!(
                    "wrote {}",
                    crate::features::lockfile::path_for(&p.file).display()
                ));
            }
        }
    }
    if let Some(p) = locked {
        let mut new = new_lock(
            &image,
            &record,
            &p.config,
            tools.as_ref(),
            old_lock.as_ref(),
        );
        new.features = features
            .resolved
            .iter()
            .map(|r| {
                (
                    r.reference.clone(),
                    LockedFeature {
                        version: r.version.clone(),
                        resolved: r.resolved.clone(),
                        integrity: r.integrity.clone(),
                    },
                )
            })
            .collect();
        if old_lock.as_ref() != Some(&new) {
            if opts.frozen {
                return Err(UserError::with_hint(
                    "dev.lock is not what dev.toml resolves to here (--frozen)",
                    "run `dev lock` and commit dev.lock",
                ));
            }
            new.save(&lock_path)?;
            crate::ui::note(format_args!("wrote {}", lock_path.display()));
        }
    }
    Ok(Prepared {
        cwd,
        project,
        root,
        image,
        store,
        identity,
        record,
        config,
        tools,
        features,
        backend,
    })
}

/// dev.lock's Features as pins for [`crate::features::ensure`].
fn feature_pins(lock: &DevLock) -> BTreeMap<String, Resolved> {
    lock.features
        .iter()
        .map(|(r, f)| {
            (
                r.clone(),
                Resolved {
                    reference: r.clone(),
                    version: f.version.clone(),
                    resolved: f.resolved.clone(),
                    integrity: f.integrity.clone(),
                },
            )
        })
        .collect()
}

/// With `--frozen`, dev.toml and dev.lock must name the same image and the same packages.
pub fn check_frozen(config: &DevToml, lock: Option<&DevLock>) -> Result<()> {
    let hint = "run `dev lock` (without --frozen) and commit dev.lock";
    let Some(lock) = lock else {
        return Err(UserError::with_hint("--frozen: there is no dev.lock", hint));
    };
    if lock.image.reference != config.image {
        return Err(UserError::with_hint(
            format!(
                "--frozen: dev.toml's image is `{}` but dev.lock's is `{}`",
                config.image, lock.image.reference
            ),
            hint,
        ));
    }
    let wanted: BTreeMap<&str, Option<&str>> = config
        .tools
        .packages
        .iter()
        .map(|s| lock::split_spec(s))
        .collect();
    for (name, version) in &wanted {
        match (lock.tools.get(*name), version) {
            (None, _) => {
                return Err(UserError::with_hint(
                    format!("--frozen: package `{name}` is in dev.toml but not in dev.lock"),
                    hint,
                ))
            }
            (Some(locked), Some(v)) if locked != v => {
                return Err(UserError::with_hint(
                    format!("--frozen: dev.toml pins {name}={v} but dev.lock has {name}={locked}"),
                    hint,
                ))
            }
            _ => {}
        }
    }
    if let Some(extra) = lock.tools.keys().find(|k| !wanted.contains_key(k.as_str())) {
        return Err(UserError::with_hint(
            format!("--frozen: package `{extra}` is in dev.lock but not in dev.toml"),
            hint,
        ));
    }
    if let Some(missing) = config
        .features
        .keys()
        .find(|f| !lock.features.contains_key(*f))
    {
        return Err(UserError::with_hint(
            format!("--frozen: the Feature `{missing}` is in dev.toml but not in dev.lock"),
            hint,
        ));
    }
    Ok(())
}

/// The lock for what was resolved: other platforms' pins are kept.
fn new_lock(
    image: &str,
    record: &ImageRecord,
    config: &DevToml,
    tools: Option<&ToolsLayer>,
    old: Option<&DevLock>,
) -> DevLock {
    let mut manifests = old
        .filter(|l| l.image.reference == image && l.image.index == record.index_digest)
        .map(|l| l.image.manifests.clone())
        .unwrap_or_default();
    manifests.insert(
        crate::oci::Platform::host().to_string(),
        record.manifest_digest.clone(),
    );
    let names: Vec<&str> = config
        .tools
        .packages
        .iter()
        .map(|s| lock::split_spec(s).0)
        .collect();
    DevLock {
        features: BTreeMap::new(),
        version: DevLock::VERSION,
        image: LockedImage {
            reference: image.to_string(),
            index: record.index_digest.clone(),
            manifests,
        },
        tools: tools
            .map(|t| {
                t.resolved
                    .iter()
                    .filter(|(n, _)| names.contains(&n.as_str()))
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        tools_layer: tools.map(|t| LockedLayer {
            digest: t.diff_id.clone(),
        }),
    }
}

/// Base manifest digest and tools layer digest, short.
/// With Features, the top one's digest after them.
pub(super) fn env_fingerprint(
    record: &ImageRecord,
    tools: Option<&ToolsLayer>,
    features: &[crate::oci::Digest],
) -> String {
    let mut print = match tools {
        Some(t) => format!("{}+{}", record.manifest_digest.short(), t.diff_id.short()),
        None => record.manifest_digest.short().to_string(),
    };
    if let Some(top) = features.last() {
        print.push('+');
        print.push_str(top.short());
    }
    print
}

/// The image's record, pulled first when the store does not have it (or lacks a layer).
fn image_in_store(
    store: &Store,
    identity: &Identity,
    reference: &Reference,
    refresh: bool,
) -> Result<ImageRecord> {
    let mapping = identity.store_key();
    if let Some(rec) = store
        .find_image(&reference.to_string())?
        .filter(|_| !refresh)
    {
        let pinned_ok = reference
            .digest
            .as_ref()
            .is_none_or(|d| d == &rec.manifest_digest);
        if pinned_ok
            && rec
                .layers
                .iter()
                .all(|l| store.layer_meta(&mapping, &l.diff_id).is_some())
        {
            return Ok(rec);
        }
    }
    crate::pull::pull(store, identity, reference, &PullProgress::new(false))
}

/// `DEV_OVERLAY` when set, else the cached probe for this kernel, else `None` (probe now).
fn backend(store: &Store) -> Result<Option<Backend>> {
    if let Some(v) = std::env::var_os("DEV_OVERLAY") {
        let v = v.to_string_lossy();
        return Backend::parse(&v).map(Some).ok_or_else(|| {
            UserError::with_hint(
                format!("DEV_OVERLAY is `{v}`"),
                "set DEV_OVERLAY to `native`, `fuse` or `copy`, or unset it to let dev choose",
            )
        });
    }
    let cache: Option<ProbeCache> = std::fs::read(store.overlay_probe_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    Ok(cache
        .filter(|c| c.kernel == kernel_release())
        .map(|c| c.backend))
}
