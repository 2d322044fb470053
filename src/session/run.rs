//! One session: `dev shell`/`dev run` prepare the env, run `[setup] user` once, then run the
//! command in a throwaway env, or start the project's env (a keeper and its init) or join it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::plan::{id_mode, kept_entries, layer_stack, plan, EnvPlace, Host};
use super::prepare::{env_fingerprint, prepare, Prepared};
use super::{EnterOptions, Update};
use crate::ids::Identity;
use crate::oci::Digest;
use crate::sandbox::join::{join, KeeperGone, Session};
use crate::sandbox::keeper::{request, PERSIST};
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
    let (store, identity, record, root) = (&env.store, &env.identity, &env.record, &env.root);
    let project = &env.project;
    let image = &env.image;
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
    let host = Host::read(identity, ssh_agent, asked, &opened_dir, opts.root)?;
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
                let session = Session::connect(&run_dir);
                // (A keeper that is stopping turns the session away first: the env then starts
                // again below, with what this session opens.)
                if session.is_ok() {
                    let had = crate::host::load_opened(&opened_dir);
                    if let Some(missing) =
                        host.opening.binds.iter().find(|b| !had.contains(&b.target))
                    {
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
            None => {
                let stack = layer_stack(env, opts);
                if place.kept.is_empty() {
                    place.kept = kept_entries(&place.layers_dir, &stack.lowers());
                    sandbox.steps = plan(env, opts, &host, &place, argv.clone(), cwd.clone()).steps;
                }
                let env_tools = env.tools.as_ref().filter(|_| opts.image.is_none());
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
