//! `dev shell`: find the project, make sure its image is in the store, plan the sandbox and
//! enter it. `dev run` is the same with a command instead of the shell.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::ExitCode;
use crate::config::project::{Project, FILE_NAME};
use crate::oci::{ImageConfig, Reference};
use crate::sandbox::plan::{
    self, check_working_dir, environment, mount_plan, Backend, IdMode, Layout, ProcessPlan,
    RootfsPlan, SandboxPlan, UserPlan, RESERVED,
};
use crate::sandbox::rootfs::{kernel_release, ProbeCache};
use crate::sandbox::spawn::{run_sandbox, Ownership};
use crate::sandbox::Identity;
use crate::store::images::ImageRecord;
use crate::store::Store;
use crate::ui::progress::PullProgress;
use crate::ui::UserError;

/// Options `dev shell` and `dev run` share.
#[derive(Clone, Debug, Default)]
pub struct EnterOptions {
    pub image: Option<String>,
    pub root: bool,
    pub rm: bool,
}

pub fn run(opts: &EnterOptions) -> Result<()> {
    enter(opts, Vec::new())
}

/// Enters the env with `argv` (the shell when empty); the command's exit code becomes ours.
pub fn enter(opts: &EnterOptions, argv: Vec<String>) -> Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let project = Project::discover(&cwd)?;
    let image =
        match (&opts.image, &project) {
            (Some(i), _) => i.clone(),
            (None, Some(p)) => p.config.image.clone(),
            (None, None) => return Err(UserError::with_hint(
                format!(
                    "no {FILE_NAME} in `{}` or any directory above it",
                    cwd.display()
                ),
                "create one with `dev init`, or name an image: `dev shell --image debian:bookworm`",
            )),
        };
    let root = project
        .as_ref()
        .map_or_else(|| cwd.clone(), |p| p.root.clone());
    check_shared_path(&root, "the project directory")?;
    let reference = Reference::parse(&image)?;
    let store = Store::open()?;
    let identity = Identity::detect();
    let record = image_in_store(&store, &identity, &reference)?;
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
    let mapping = identity.store_key();
    let backend = backend(&store)?;
    super::pull::notice_flat(&store, &identity);

    // The env: this project's persistent layer, or a throwaway one.
    let persistent = project.is_some() && !opts.rm;
    let mut lock = None;
    let (dirs, scratch) = if persistent {
        let env = store.open_env(&mapping, &root, &image, &record.manifest_digest)?;
        let dirs = env.dirs.clone();
        lock = Some(env);
        (dirs, None)
    } else {
        let dirs = store.scratch_env(&mapping)?;
        let scratch = dirs.dir.clone();
        (dirs, Some(scratch))
    };
    let layers_dir = store.layers_dir(&mapping);
    let mut lowers: Vec<PathBuf> = record
        .layers
        .iter()
        .rev()
        .map(|l| Path::new(l.diff_id.hex()).join("root"))
        .collect();
    // `--rm` in a project starts from the env as it is; its changes go to the throwaway layer.
    let mut home_source = dirs.home.clone();
    if project.is_some() && opts.rm {
        if let Some(env) = store.env_dirs_if_current(&mapping, &root, &record.manifest_digest) {
            if env.upper.is_dir() && backend != Some(Backend::Copy) {
                lowers.insert(0, env.upper.clone());
            }
            home_source = env.home;
        }
    }

    let (user, home) = user_plan(&identity, opts.root)?;
    let home_source = if home == root {
        root.clone()
    } else {
        home_source
    };
    let hostname = plan::hostname(&root);
    let ssh_agent = std::env::var_os("SSH_AUTH_SOCK")
        .map(PathBuf::from)
        .filter(|p| p.metadata().is_ok_and(|m| m.file_type().is_socket()));
    let layout = Layout {
        root: dirs.merged.clone(),
        project: root.clone(),
        home_source,
        home,
        ssh_agent: ssh_agent.clone(),
        etc_files: ["/etc/resolv.conf", "/etc/hosts"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect(),
    };
    let host_env: BTreeMap<String, String> = std::env::vars().collect();
    let extra = project
        .as_ref()
        .map(|p| p.config.env.clone())
        .unwrap_or_default();
    let env = environment(
        config.config.env.as_deref().unwrap_or_default(),
        &host_env,
        &user,
        &hostname,
        ssh_agent.is_some(),
        &extra,
    );
    let mut fallbacks = Vec::new();
    if let Ok(shell) = std::env::var("SHELL") {
        if shell.starts_with('/') {
            fallbacks.push(shell);
        }
    }
    for s in ["/bin/bash", "/bin/sh"] {
        if !fallbacks.iter().any(|f| f == s) {
            fallbacks.push(s.to_string());
        }
    }
    let ids = match (&identity.ownership, opts.root) {
        (Ownership::Subordinate { .. }, _) => IdMode::Subordinate,
        (Ownership::Flat { .. }, false) => IdMode::FlatUser,
        (Ownership::Flat { .. }, true) => IdMode::FlatRoot,
    };
    let sandbox = SandboxPlan {
        ids,
        rootfs: RootfsPlan {
            backend,
            probe_cache: store.overlay_probe_path(),
            layers_dir,
            lowers,
            upper: dirs.upper.clone(),
            work: dirs.work.clone(),
            copy: dirs.copy.clone(),
            merged: dirs.merged.clone(),
            scratch,
        },
        steps: mount_plan(&layout),
        user,
        process: ProcessPlan {
            argv,
            shell: project.as_ref().and_then(|p| p.config.shell.clone()),
            shell_fallbacks: fallbacks,
            env,
            cwd,
        },
        hostname,
        image_user: config.config.user.clone(),
        image: image.clone(),
    };
    let code = run_sandbox(&identity, &sandbox)?;
    drop(lock);
    if code == 0 {
        Ok(())
    } else {
        Err(ExitCode(code).into())
    }
}

/// The image's record, pulled first when the store does not have it (or lacks a layer).
fn image_in_store(
    store: &Store,
    identity: &Identity,
    reference: &Reference,
) -> Result<ImageRecord> {
    let mapping = identity.store_key();
    if let Some(rec) = store.find_image(&reference.to_string())? {
        if rec
            .layers
            .iter()
            .all(|l| store.layer_meta(&mapping, &l.diff_id).is_some())
        {
            return Ok(rec);
        }
    }
    super::pull::pull(store, identity, reference, &PullProgress::new(false))
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

/// The user as the env knows them, and their home path.
fn user_plan(identity: &Identity, root: bool) -> Result<(UserPlan, PathBuf)> {
    let pw = nix::unistd::User::from_uid(identity.uid.into())
        .ok()
        .flatten();
    let name = pw
        .as_ref()
        .map(|u| u.name.clone())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| format!("u{}", identity.uid));
    let group = nix::unistd::Group::from_gid(identity.gid.into())
        .ok()
        .flatten()
        .map_or_else(|| name.clone(), |g| g.name);
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
        .or_else(|| pw.map(|u| u.dir))
        .context("cannot find your home directory; set $HOME")?;
    check_shared_path(&home, "your home directory ($HOME)")?;
    Ok((
        UserPlan {
            name,
            uid: identity.uid,
            group,
            gid: identity.gid,
            home: home.clone(),
            root,
        },
        home,
    ))
}

/// A host path mounted at the same place inside must not be `/` or one of the sandbox's own.
fn check_shared_path(path: &Path, what: &str) -> Result<()> {
    if path == Path::new("/") || RESERVED.iter().any(|r| path.starts_with(r)) {
        return Err(UserError::with_hint(
            format!("{what} `{}` cannot be shared with the env", path.display()),
            "move the project under your home directory (the env provides / , /proc, /sys, /dev and /run itself)",
        ));
    }
    Ok(())
}
