//! `dev shell`: find the project, make sure its image is in the store, plan the sandbox and
//! enter it. `dev run` is the same with a command instead of the shell.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::ExitCode;
use crate::config::lock::{self, DevLock, LockedImage, LockedLayer};
use crate::config::project::{DevToml, Project, FILE_NAME};
use crate::oci::Digest;
use crate::oci::{ImageConfig, Reference};
use crate::sandbox::keeper::{request, PERSIST};
use crate::sandbox::plan::KeepPlan;
use crate::sandbox::plan::{
    self, check_working_dir, environment, mount_plan, Backend, IdMode, Layout, ProcessPlan,
    RootfsPlan, SandboxPlan, UserPlan, RESERVED,
};
use crate::sandbox::rootfs::{kernel_release, ProbeCache};
use crate::sandbox::spawn::{
    join, keep_speculative, run_sandbox, start_env, take_speculative, Helper, KeeperGone,
    Ownership, Session,
};
use crate::sandbox::Identity;
use crate::store::images::ImageRecord;
use crate::store::Store;
use crate::tools::ToolsLayer;
use crate::ui::progress::PullProgress;
use crate::ui::UserError;

/// Options `dev shell` and `dev run` share.
#[derive(Clone, Debug, Default)]
pub struct EnterOptions {
    pub image: Option<String>,
    pub root: bool,
    pub rm: bool,
    /// Fail when dev.toml and dev.lock disagree, instead of re-resolving (CI).
    pub frozen: bool,
    /// Start the env and keep it running (`dev start`) instead of entering it.
    pub start_only: bool,
    /// The env's name (`--name`).
    pub name: Option<String>,
    /// Forward the ssh agent (`--ssh-agent`).
    pub ssh_agent: bool,
}

/// What `dev update` re-resolves instead of taking from dev.lock.
#[derive(Clone, Debug, Default)]
pub struct Update {
    /// The image tag (pull it again).
    pub image: bool,
    /// These packages (all of them when `all`).
    pub packages: Vec<String>,
    pub all: bool,
}

pub fn run(opts: &EnterOptions) -> Result<()> {
    enter(opts, Vec::new())
}

/// Enters the env with `argv` (the shell when empty); the command's exit code becomes ours.
pub fn enter(opts: &EnterOptions, argv: Vec<String>) -> Result<()> {
    let env = prepare(opts, &Update::default())?;
    run_user_setup(&env, opts)?;
    let code = session(&env, opts, argv, env.cwd.clone(), true)?;
    if code == 0 {
        Ok(())
    } else {
        Err(ExitCode(code).into())
    }
}

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
    pub backend: Option<Backend>,
}

impl Prepared {
    /// Base manifest digest and tools layer digest: what makes two envs the same.
    pub fn fingerprint(&self) -> String {
        env_fingerprint(&self.record, self.tools.as_ref())
    }
}

/// Finds the project, pulls the image (the digest dev.lock pins, if any), builds the tools
/// layer if dev.toml has one, and writes dev.lock when what was resolved differs from it.
pub fn prepare(opts: &EnterOptions, update: &Update) -> Result<Prepared> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let project = Project::discover(&cwd)?;
    if let Some(p) = &project {
        // Refused: the helper `speculate` started goes first, so it says nothing after us.
        super::trust::gate(p).inspect_err(|_| drop(take_speculative()))?;
    }
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
    let backend = backend(&store)?;
    super::pull::notice_flat(&store, &identity);
    let mut tools = None;
    if let Some(p) = &project {
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
    if let Some(p) = locked {
        let new = new_lock(
            &image,
            &record,
            &p.config,
            tools.as_ref(),
            old_lock.as_ref(),
        );
        if old_lock.as_ref() != Some(&new) {
            if opts.frozen {
                return Err(UserError::with_hint(
                    "dev.lock is not what dev.toml resolves to here (--frozen)",
                    "run `dev lock` and commit dev.lock",
                ));
            }
            new.save(&lock_path)?;
            eprintln!("wrote {}", lock_path.display());
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
        backend,
    })
}

/// Called before the command line is parsed, for `dev run`, `shell` and `start`: when
/// the flags before the command already tell which env this is and that it is not running,
/// forks the sandbox helper and has newuidmap and newgidmap map it now. Mapping is the slowest
/// step of a start; parsing the command line and reading the project overlap it. A guess that
/// turns out wrong costs a helper, killed, and never changes what runs: the session checks
/// again under the env's start lock, and takes the helper only for the ids it needs.
pub fn speculate(args: &[std::ffi::OsString]) {
    let Some(command) = args.first().and_then(|a| a.to_str()) else {
        return;
    };
    // (`exec` names an env that usually runs: it is left out.)
    if !["run", "shell", "start"].contains(&command)
        || args.iter().any(|a| a == "-h" || a == "--help")
    {
        return;
    }
    // The flags before the command (`dev run --rm -- make` or `dev run make --rm`: the
    // command's own flags are its own).
    let (mut root, mut throwaway, mut rest) = (false, false, args[1..].iter());
    while let Some(a) = rest.next().and_then(|a| a.to_str()) {
        match a {
            "--root" => root = true,
            "--rm" => throwaway = true,
            "--image" => {
                throwaway = true;
                rest.next();
            }
            "--name" => {
                rest.next();
            }
            a if a.starts_with("--image=") => throwaway = true,
            "--" => break,
            a if a.starts_with('-') => {}
            _ => break,
        }
    }
    let identity = Identity::detect();
    let project = std::env::current_dir()
        .ok()
        .and_then(|cwd| crate::config::project::find_root(&cwd));
    let running = |project: &Path| {
        Store::open().is_ok_and(|store| {
            store
                .running(&store.run_dir(&identity.store_key(), project))
                .is_some()
        })
    };
    match project {
        // The session joins the running env: no helper.
        Some(p) if !throwaway && running(&p) => return,
        Some(_) => {}
        None if !throwaway => return,
        None => {}
    }
    let Ok(mut helper) = Helper::spawn() else {
        return;
    };
    if helper.ready(&identity, id_mode(&identity, root)).is_err() {
        return;
    }
    keep_speculative(helper);
}

/// How ids map for this user, as themselves or as root inside.
fn id_mode(identity: &Identity, root: bool) -> IdMode {
    match (&identity.ownership, root) {
        (Ownership::Subordinate { .. }, _) => IdMode::Subordinate,
        (Ownership::Flat { .. }, false) => IdMode::FlatUser,
        (Ownership::Flat { .. }, true) => IdMode::FlatRoot,
    }
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

/// dev.toml's `[setup] user` commands, run as the user in the project once per env and
/// tools layer (again when either changes).
fn run_user_setup(env: &Prepared, opts: &EnterOptions) -> Result<()> {
    let Some(p) = &env.project else {
        return Ok(());
    };
    if p.config.setup.user.is_empty() || opts.rm || opts.image.is_some() {
        return Ok(());
    }
    let key = Digest::of_bytes(
        serde_json::json!({
            "tools": env.tools.as_ref().map(|t| t.diff_id.to_string()),
            "base": env.record.manifest_digest.to_string(),
            "user": p.config.setup.user,
        })
        .to_string()
        .as_bytes(),
    );
    let marker = env
        .store
        .env_dir(&env.identity.store_key(), &env.root)
        .join("setup-user.done");
    let key = key.to_string();
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(key.as_str()) {
        return Ok(());
    }
    eprintln!("running [setup] user in {}", env.root.display());
    let script = format!(
        "exec </dev/null 1>&2\nset -e\n{}\n",
        p.config.setup.user.join("\n")
    );
    let setup_opts = EnterOptions {
        root: false,
        ..opts.clone()
    };
    let argv = vec!["/bin/sh".to_string(), "-c".to_string(), script];
    let code = session(env, &setup_opts, argv, env.root.clone(), false)?;
    if code != 0 {
        return Err(UserError::with_hint(
            format!("dev.toml's [setup] user commands failed (exit {code})"),
            "their error is above; they run again at the next start",
        ));
    }
    std::fs::write(&marker, key.as_str())
        .with_context(|| format!("cannot write `{}`", marker.display()))
}

/// One session in the env: plans the sandbox and runs `argv` (the shell when empty) in `cwd`.
/// The `last` thing this process does may join the env in this very process.
pub fn session(
    env: &Prepared,
    opts: &EnterOptions,
    argv: Vec<String>,
    cwd: PathBuf,
    last: bool,
) -> Result<i32> {
    let (store, identity, record, root) = (&env.store, &env.identity, &env.record, &env.root);
    let project = &env.project;
    let config = &env.config;
    let image = &env.image;
    let backend = env.backend;
    let env_tools = env.tools.as_ref().filter(|_| opts.image.is_none());
    let mapping = identity.store_key();

    // The env: this project's persistent layer (run by a keeper that every session joins), or
    // a throwaway one for this session only.
    let persistent = project.is_some() && !opts.rm && opts.image.is_none();
    if opts.name.is_some() && !persistent {
        return Err(UserError::with_hint(
            "--name names a project's env, and this session's env is thrown away",
            "drop --name, or run without --rm and --image in a project",
        ));
    }
    let (dirs, scratch) = if persistent {
        (store.env_dirs(&mapping, root), None)
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
    if let (Some(t), None) = (&env.tools, &opts.image) {
        lowers.insert(0, Path::new(t.diff_id.hex()).join("root"));
    }
    // `--rm` in a project starts from the env as it is; its changes go to the throwaway layer.
    let mut home_source = dirs.home.clone();
    if project.is_some() && opts.rm {
        if let Some(env) = store.env_dirs_if_current(&mapping, root, &record.manifest_digest) {
            if env.upper.is_dir() && backend != Some(Backend::Copy) {
                lowers.insert(0, env.upper.clone());
            }
            home_source = env.home;
        }
    }
    let (user, home) = user_plan(identity, opts.root)?;
    // The env's home is always its own: run from the home directory itself, it takes the
    // project's place rather than the real home (dotfiles, keys) being bound read-write.
    if &home == root && last {
        eprintln!("note: your home directory is not shared with the env, which has a home of its own; run dev in a project directory to share that");
    }
    let hostname = plan::hostname(root);
    let env_name = match (&opts.name, persistent) {
        (Some(n), _) => n.clone(),
        (None, true) => store.env_name(&mapping, root),
        (None, false) => hostname.clone(),
    };
    let ssh_agent = crate::config::trust::ssh_agent_socket(
        opts.ssh_agent,
        project.as_ref().map(|p| &p.config),
    )?;
    let mut shares = vec![(home, home_source)];
    if &shares[0].0 != root {
        shares.push((root.clone(), root.clone()));
    }
    let layout = Layout {
        root: dirs.merged.clone(),
        shares,
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
        &env_name,
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
    let ids = id_mode(identity, opts.root);
    let mut sandbox = SandboxPlan {
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
        keep: None,
    };
    if !persistent {
        return run_sandbox(identity, &sandbox);
    }
    let run_dir = store.run_dir(&mapping, root);
    // A keeper that is stopping (its last session just left) turns a session away before
    // anything ran: wait for it to go, and start the env again.
    for attempt in 0.. {
        let starting = store.lock_env_start(&mapping, root)?;
        let session = match store.running(&run_dir) {
            Some(state) => {
                drop(starting);
                // Mapped by `speculate` for nothing: the env started meanwhile.
                drop(take_speculative());
                if let Some(n) = opts.name.as_ref().filter(|n| **n != state.name) {
                    return Err(UserError::with_hint(
                        format!(
                            "the env runs as `{}`, so it cannot be named `{n}` now",
                            state.name
                        ),
                        format!("`dev stop {}` first, or drop --name", state.name),
                    ));
                }
                if state.ids != sandbox.ids {
                    return Err(UserError::with_hint(
                        "the env runs with a single-id map for another user inside (you, or root with --root)",
                        "stop it first (`dev stop`), or ask for a subordinate id range (`usermod --add-subuids`)",
                    ));
                }
                if opts.start_only {
                    // `dev start`: the env keeps running without sessions until `dev stop`.
                    request(&run_dir, PERSIST)?;
                    return Ok(0);
                }
                Session::connect(&run_dir)
            }
            None => {
                let mut layers: Vec<Digest> = env_tools.iter().map(|t| t.diff_id.clone()).collect();
                layers.extend(record.layers.iter().rev().map(|l| l.diff_id.clone()));
                let env = store.open_env(
                    &mapping,
                    root,
                    image,
                    &record.manifest_digest,
                    &layers,
                    opts.name.as_deref(),
                )?;
                sandbox.keep = Some(KeepPlan {
                    run_dir: run_dir.clone(),
                    name: env_name.clone(),
                    project: root.clone(),
                    image: image.clone(),
                    fingerprint: env_fingerprint(record, env_tools),
                    persist: opts.start_only,
                });
                let session = match start_env(identity, &sandbox, env.lock_fd())? {
                    Ok(session) => session,
                    Err(code) => return Ok(code),
                };
                // The keeper holds the env's lock (the same open file) for as long as it runs.
                env.hand_over_lock();
                drop(starting);
                if opts.start_only {
                    return Ok(0);
                }
                Ok(session)
            }
        };
        match session {
            Ok(session) => return join(session, &sandbox, last),
            // It removes state.json before it closes its socket, and holds the env's lock
            // until it is gone: the next attempt starts the env as soon as it can.
            Err(e) if e.is::<KeeperGone>() && attempt < 500 => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

/// Base manifest digest and tools layer digest, short.
fn env_fingerprint(record: &ImageRecord, tools: Option<&ToolsLayer>) -> String {
    match tools {
        Some(t) => format!("{}+{}", record.manifest_digest.short(), t.diff_id.short()),
        None => record.manifest_digest.short().to_string(),
    }
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
            write_entries: true,
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
