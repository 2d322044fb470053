//! One session: `dev shell`/`dev run` prepare the env, run `[setup] user` once, then run the
//! command in a throwaway env, or start the project's env (a keeper and its init) or join it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::plan::{id_mode, kept_entries, layer_stack, plan, EnvPlace, Host};
use super::prepare::{env_fingerprint, prepare, Prepared};
use super::{EnterOptions, Update};
use crate::config::settings::{Linger, Settings};
use crate::ids::Identity;
use crate::oci::Digest;
use crate::sandbox::join::{join, KeeperGone, Session};
use crate::sandbox::keeper::{request, PERSIST, RETIRE};
use crate::sandbox::parent::{keep_speculative, run_sandbox, start_env, take_speculative, Helper};
use crate::sandbox::plan::KeepPlan;
use crate::store::Store;
use crate::ui::{ExitCode, UserError};

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

/// Kills the helper `speculate` forked, if no session took it (before an error is printed).
pub fn forget_speculation() {
    drop(take_speculative());
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
            "--name" | "--mount" | "--volume" | "-v" => {
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
    let Ok(helper) = Helper::fork(&identity, id_mode(&identity, root)) else {
        return;
    };
    keep_speculative(helper);
}

/// The mounts of config.toml, then dev.toml's (trusted by now), then `--mount`, resolved.
fn resolve_mounts(
    env: &Prepared,
    opts: &EnterOptions,
    host: &Host,
) -> Result<Vec<super::mounts::Resolved>> {
    use super::mounts::{resolve, Context, Origin};
    let settings = crate::config::Settings::load()?;
    let project = env
        .project
        .as_ref()
        .map_or(&[][..], |p| &p.config.mounts[..]);
    let asked: Vec<(Origin, &crate::config::mounts::MountSpec)> = settings
        .mounts
        .iter()
        .map(|m| (Origin::Settings, m))
        .chain(project.iter().map(|m| (Origin::Project, m)))
        .chain(opts.mounts.iter().map(|m| (Origin::CommandLine, m)))
        .collect();
    if asked.is_empty() {
        return Ok(Vec::new());
    }
    let mapping = env.identity.store_key();
    let volume = |name: &str| env.store.volume_data(&mapping, name);
    resolve(
        &asked,
        &Context {
            home: &host.user.home,
            vars: &host.vars,
            project: &env.root,
            cwd: &env.cwd,
            volume: &volume,
        },
    )
}

/// How long the project's env lingers after its last session: dev.toml's `linger`, else
/// config.toml's, else the default.
fn linger(project: Option<&crate::config::project::Project>) -> Result<Linger> {
    if let Some(l) = project.and_then(|p| p.config.linger) {
        return Ok(l);
    }
    Ok(Settings::load()?.linger.unwrap_or(Linger::DEFAULT))
}

/// dev.toml's `[setup] user` commands, run as the user in the project once per env and
/// tools layer (again when either changes, or the Features do).
fn run_user_setup(env: &Prepared, opts: &EnterOptions) -> Result<()> {
    let Some(p) = &env.project else {
        return Ok(());
    };
    if p.config.setup.user.is_empty() || opts.rm || opts.image.is_some() {
        return Ok(());
    }
    let mut key = serde_json::json!({
        "tools": env.tools.as_ref().map(|t| t.diff_id.to_string()),
        "base": env.record.manifest_digest.to_string(),
        "user": p.config.setup.user,
    });
    if !env.features.layers.is_empty() {
        // Again when the Features change, as for the tools layer.
        key["features"] = serde_json::json!(env
            .features
            .layers
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>());
    }
    let key = Digest::of_bytes(key.to_string().as_bytes());
    let marker = env
        .store
        .env_dir(&env.identity.store_key(), &env.root)
        .join("setup-user.done");
    let key = key.to_string();
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(key.as_str()) {
        return Ok(());
    }
    crate::ui::note(format_args!(
        "running [setup] user in {}",
        env.root.display()
    ));
    let script = format!(
        "exec </dev/null 1>&2\nset -e\n{}\n",
        p.config.setup.user.join("\n")
    );
    let setup_opts = EnterOptions {
        root: false,
        ..opts.clone()
    };
    let argv = vec!["/bin/sh".to_string(), "-c".to_string(), script];
    let code = session_with(env, &setup_opts, argv, env.root.clone(), false, false)?;
    if code != 0 {
        return Err(UserError::with_hint(
            format!("dev.toml's [setup] user commands failed (exit {code})"),
            "their error is above; they run again at the next start",
        ));
    }
    std::fs::write(&marker, key.as_str())
        .with_context(|| format!("cannot write `{}`", marker.display()))
}

/// A devcontainer.json's onCreateCommand, updateContentCommand and postCreateCommand, when
/// they have not run in this env yet (for its image and tools layer): the commands, and the
/// marker to write once they ran.
struct PendingCreate {
    commands: Vec<(String, crate::config::devcontainer::Command)>,
    marker: PathBuf,
    key: String,
}

fn pending_create(env: &Prepared) -> Option<PendingCreate> {
    let dc = env.project.as_ref()?.devcontainer.as_ref()?;
    let commands = dc.hooks.create();
    if commands.is_empty() {
        return None;
    }
    let key = Digest::of_bytes(
        serde_json::json!({
            "tools": env.tools.as_ref().map(|t| t.diff_id.to_string()),
            "base": env.record.manifest_digest.to_string(),
            "create": commands,
        })
        .to_string()
        .as_bytes(),
    )
    .to_string();
    let marker = env
        .store
        .env_dir(&env.identity.store_key(), &env.root)
        .join("devcontainer-create.done");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(key.as_str()) {
        return None;
    }
    Some(PendingCreate {
        commands,
        marker,
        key,
    })
}

/// Runs the pending create commands in the running env and marks them done.
fn run_create(
    env: &Prepared,
    sandbox: &crate::sandbox::plan::SandboxPlan,
    run_dir: &Path,
    pending: Option<PendingCreate>,
) -> Result<()> {
    let Some(p) = pending else {
        return Ok(());
    };
    crate::ui::note(format_args!(
        "running {} in {}",
        labels(&p.commands),
        env.root.display()
    ));
    run_in_env(env, sandbox, run_dir, &p.commands)?;
    std::fs::write(&p.marker, p.key.as_str())
        .with_context(|| format!("cannot write `{}`", p.marker.display()))
}

/// `onCreateCommand, postCreateCommand`: the kinds of lifecycle command in `commands`.
fn labels(commands: &[(String, crate::config::devcontainer::Command)]) -> String {
    let mut labels: Vec<&str> = commands.iter().map(|(l, _)| l.as_str()).collect();
    labels.dedup();
    labels.join(", ")
}

/// A devcontainer.json's `commands` (postStartCommand, postAttachCommand) in the running env,
/// as a session of their own that the session holding `run_dir`'s env waits for.
fn run_in_env(
    env: &Prepared,
    sandbox: &crate::sandbox::plan::SandboxPlan,
    run_dir: &Path,
    commands: &[(String, crate::config::devcontainer::Command)],
) -> Result<()> {
    if commands.is_empty() {
        return Ok(());
    }
    let plan = super::hooks::plan_for(sandbox, commands, &env.root);
    let code = join(Session::connect(run_dir)?, &plan, false)?;
    if code != 0 {
        return Err(super::hooks::failed(&labels(commands), code));
    }
    Ok(())
}

/// Makes the files of what a starting env opens of the host, records it for the sessions that
/// join a kept env (`keep`), and says in a line what was opened.
fn open_host(dir: &Path, opening: &crate::host::Opening, keep: bool) -> Result<()> {
    if opening.binds.is_empty() && opening.env.is_empty() {
        if keep {
            // What an earlier start of the env opened is not open now.
            let _ = std::fs::remove_file(crate::host::opened_record(dir));
        }
    } else {
        crate::host::write_files(dir, opening)?;
        if keep {
            crate::host::save_opened(dir, opening)?;
        }
    }
    for n in &opening.notes {
        crate::ui::note(format_args!("note: {n}"));
    }
    if !opening.opened.is_empty() {
        crate::ui::note(format_args!(
            "opened for the env: {}",
            opening.opened.join(", ")
        ));
    }
    Ok(())
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
    session_with(env, opts, argv, cwd, last, true)
}

/// [`session`]; with `hooks`, in the project's env, a devcontainer.json's create commands run
/// once per env (before anything else of the session), its postStartCommand when this session
/// starts the env, and its postAttachCommand before a `dev shell`'s shell (the setup's own
/// session runs none of them).
fn session_with(
    env: &Prepared,
    opts: &EnterOptions,
    argv: Vec<String>,
    cwd: PathBuf,
    last: bool,
    hooks: bool,
) -> Result<i32> {
    let devcontainer = env
        .project
        .as_ref()
        .and_then(|p| p.devcontainer.as_ref())
        .filter(|_| hooks);
    let post_start = devcontainer.map(|d| d.hooks.start()).unwrap_or_default();
    let post_attach = devcontainer
        .filter(|_| argv.is_empty() && !opts.start_only)
        .map(|d| d.hooks.attach())
        .unwrap_or_default();
    let prepared = env;
    let (store, identity, record, root) = (&env.store, &env.identity, &env.record, &env.root);
    let project = &env.project;
    let image = &env.image;
    let mapping = identity.store_key();

    // The env: this project's persistent layer (run by a keeper that every session joins), or
    // a throwaway one for this session only.
    let persistent = project.is_some() && !opts.rm && opts.image.is_none();
    let mut create = pending_create(env).filter(|_| hooks && persistent);
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
    let current = (project.is_some() && opts.rm)
        .then(|| store.env_dirs_if_current(&mapping, root, &record.manifest_digest))
        .flatten();
    let env_name = match (&opts.name, persistent) {
        (Some(n), _) => n.clone(),
        (None, true) => store.env_name(&mapping, root),
        (None, false) => crate::config::project::hostname(root),
    };
    let layers_dir = store.layers_dir(&mapping);
    // Only a start mounts the env's /tmp and /run (a join finds them made): a throwaway env
    // always starts; the project's env walks the image's layers below, once it knows it starts.
    let kept = if persistent {
        Vec::new()
    } else {
        kept_entries(&layers_dir, &layer_stack(env, opts).lowers())
    };
    let mut place = EnvPlace {
        dirs,
        scratch,
        current,
        layers_dir,
        probe_cache: store.overlay_probe_path(),
        name: env_name.clone(),
        kept,
    };
    let ssh_agent = crate::config::trust::ssh_agent_socket(
        opts.ssh_agent,
        project.as_ref().map(|p| &p.config),
    )?;
    let asked = crate::config::trust::openings_asked(
        opts.gui,
        opts.gpu,
        project.as_ref().map(|p| &p.config),
    )?;
    // The files dev makes for what the session opens: in the env's runtime directory, or in
    // the throwaway env's, removed with it.
    let opened_dir = match &place.scratch {
        Some(scratch) => scratch.join("host"),
        None => store.run_dir(&mapping, root).join("host"),
    };
    // What a joining session cannot change (see `RunState::shape`).
    let env_tools = env.tools.as_ref().filter(|_| opts.image.is_none());
    let env_features = match opts.image {
        None => env.features.layers.as_slice(),
        Some(_) => &[],
    };
    let fingerprint = env_fingerprint(record, env_tools, env_features);
    let shape = match &ssh_agent {
        Some(sock) => format!("{fingerprint}, ssh agent {}", sock.display()),
        None => fingerprint.clone(),
    };
    let mut host = Host::read(identity, ssh_agent, asked, &opened_dir, opts.root)?;
    let mounts = resolve_mounts(env, opts, &host)?;
    host.mounts = mounts.iter().map(|m| m.bind.clone()).collect();
    // The env's home is always its own: run from the home directory itself, it takes the
    // project's place rather than the real home (dotfiles, keys) being bound read-write.
    if &host.user.home == root && last {
        crate::ui::note(format_args!("note: your home directory is not shared with the env, which has a home of its own; run dev in a project directory to share that"));
    }
    let mut sandbox = plan(env, opts, &host, &place, argv.clone(), cwd.clone());
    if !persistent {
        open_host(&opened_dir, &host.opening, false)?;
        return run_sandbox(identity, &sandbox);
    }
    let run_dir = store.run_dir(&mapping, root);
    // Read on every session, so that a mistake in it shows before the env has to start.
    let linger_ms = linger(project.as_ref())?.0.as_millis() as u64;
    // A keeper that is stopping (its last session just left) turns a session away before
    // anything ran: wait for it to go, and start the env again.
    for attempt in 0.. {
        let starting = store.lock_env_start(&mapping, root)?;
        let session = match store.running(&run_dir) {
            Some(state) => {
                // Started from another dev.toml, dev.lock or image, or for other ids or
                // another name: a lingering env (no session in it) is stopped and started
                // anew; one in use is joined as it is (below, said or refused).
                // What this session opens of the host (--gui, --gpu) that the env lacks.
                let had = crate::host::load_opened(&opened_dir);
                let lacks = host
                    .opening
                    .binds
                    .iter()
                    .find(|b| !had.contains(&b.target))
                    .cloned();
                let differs = state.shape != shape
                    || state.mounts != super::mounts::key(&host.mounts)
                    || lacks.is_some()
                    || state.ids != sandbox.ids
                    || opts.name.as_ref().is_some_and(|n| *n != state.name);
                if differs && request(&run_dir, RETIRE).is_ok_and(|a| a == "ok") {
                    drop(starting);
                    continue;
                }
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
                if state.shape != shape && !state.shape.is_empty() {
                    crate::ui::note(format_args!(
                        "note: the env `{}` runs as it was started ({}), not as this session asks ({shape}); it is in use (a session, or `dev start`), so this one joins it as it is: `dev stop {}` starts it anew",
                        state.name, state.shape, state.name
                    ));
                }
                if last && state.mounts != super::mounts::key(&host.mounts) {
                    crate::ui::note(format_args!(
                        "note: the env `{}` runs with other mounts than this session asks for; they apply when it starts again (`dev stop`, then a new session)",
                        state.name
                    ));
                }
                if opts.start_only {
                    // `dev start`: the env keeps running without sessions until `dev stop`. A
                    // keeper that is stopping (its last session just left) does not say "ok",
                    // or resets the connection: it is waited for below, and the env started anew.
                    match request(&run_dir, PERSIST) {
                        Ok(answer) if answer == "ok" => return Ok(0),
                        _ => Err(anyhow::Error::new(KeeperGone)),
                    }
                } else {
                    let session = Session::connect(&run_dir);
                    // (A keeper that is stopping turns the session away first: the env then
                    // starts again below, with what this session opens.)
                    if session.is_ok() {
                        if let Some(missing) = lacks {
                            return Err(UserError::with_hint(
                                format!(
                                    "the env `{}` runs without `{}`, which this session opens (--gui, --gpu or the config ask for it)",
                                    state.name,
                                    missing.target.display()
                                ),
                                format!("the env opens the host only when it starts: `dev stop {}`, then run this again", state.name),
                            ));
                        }
                    }
                    session
                }
            }
            None => {
                let stack = layer_stack(env, opts);
                if place.kept.is_empty() {
                    place.kept = kept_entries(&place.layers_dir, &stack.lowers());
                    sandbox.steps = plan(env, opts, &host, &place, argv.clone(), cwd.clone()).steps;
                }
                let env = store.open_env(
                    &mapping,
                    root,
                    image,
                    &record.manifest_digest,
                    stack.top_first(),
                    opts.name.as_deref(),
                )?;
                open_host(&opened_dir, &host.opening, true)?;
                sandbox.keep = Some(KeepPlan {
                    run_dir: run_dir.clone(),
                    name: env_name.clone(),
                    project: root.clone(),
                    image: image.clone(),
                    fingerprint: fingerprint.clone(),
                    shape: shape.clone(),
                    persist: opts.start_only,
                    mounts: super::mounts::key(&host.mounts),
                    linger_ms,
                });
                for name in mounts.iter().filter_map(|m| m.volume.as_deref()) {
                    store.note_volume_user(&mapping, name, &store.env_dir(&mapping, root))?;
                }
                let session = match start_env(identity, &sandbox, env.lock_fd())? {
                    Ok(session) => session,
                    Err(code) => return Ok(code),
                };
                // The keeper holds the env's lock (the same open file) for as long as it runs.
                env.hand_over_lock();
                drop(starting);
                run_create(prepared, &sandbox, &run_dir, create.take())?;
                run_in_env(prepared, &sandbox, &run_dir, &post_start)?;
                if opts.start_only {
                    return Ok(0);
                }
                Ok(session)
            }
        };
        match session {
            Ok(session) => {
                run_create(prepared, &sandbox, &run_dir, create.take())?;
                run_in_env(prepared, &sandbox, &run_dir, &post_attach)?;
                return join(session, &sandbox, last);
            }
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
