//! Pid 1 of the sandbox: builds the mount tree from the plan, pivots into it, writes the user's
//! entries, starts the command as the user, reaps every orphan and returns the command's status.
//! Also the signal-forwarding wait loop the helper and `dev` itself use.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::plan::{check_image_user, merge_entry, IdMode, SandboxPlan, Step};
use super::pty;
use super::sys::{self, Sys};
use crate::beneath::Tree;
use crate::ui::UserError;

/// Exit status when the sandbox itself failed (as podman uses it).
pub const SETUP_FAILED: i32 = 125;

/// Signals passed on to the command when someone sends them to `dev` (or to a process between).
const FORWARDED: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Blocks the forwarded signals and SIGCHLD in this thread, so `supervise` can wait for them.
/// Call before starting the child; children started with `std::process::Command` get a clean mask.
pub fn block_signals() -> Result<SigSet> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set.thread_block().context("cannot block signals")?;
    Ok(set)
}

/// The exit code a shell would report for a wait status.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Which of the signals this process gets it passes on to the process it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Those a process sent (kill(2)); the kernel's (a terminal's ^C) reach the child itself,
    /// which is in this process's group.
    Sent,
    /// All of them: the child is the session's command, whose session of its own the user's
    /// terminal does not signal. `resize`: SIGWINCH too, when the command has no pty (a pty's
    /// relay resizes it, which signals the command).
    All { resize: bool },
}

/// Waits for `child`, passing signals on as `forward` says (a terminal's Ctrl-C reaches every
/// process of dev's group, so only the one that waits for the command itself passes it on).
/// With `reap_all`, also reaps other children (init's orphans). Returns the child's exit code.
pub fn supervise(child: Pid, set: &SigSet, reap_all: bool, forward: Forward) -> Result<i32> {
    loop {
        let target = if reap_all { None } else { Some(child) };
        loop {
            match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => {
                    if status.pid() == Some(child) {
                        if let Some(code) = exit_code(status) {
                            return Ok(code);
                        }
                    }
                }
                Err(Errno::ECHILD) => return Err(anyhow!("the sandbox's process disappeared")),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("cannot wait for the sandbox"),
            }
        }
        let (sig, from_process) = sys::wait_signal(set)?;
        pty::pass_on(child, sig, from_process, forward);
    }
}

/// Runs the mount plan against `sys`.
pub fn execute<S: Sys>(sys: &mut S, steps: &[Step]) -> Result<()> {
    let mut trees = Vec::new();
    for step in steps {
        match step {
            Step::Clone { source, readonly } => trees.push(sys.clone_tree(source, *readonly)?),
            Step::PivotRoot { root } => sys.pivot_root(root)?,
            Step::Mkdir { path, mode } => sys.mkdir_all(path, *mode)?,
            Step::File { path } => sys.create_file(path)?,
            Step::Mount {
                fstype,
                target,
                flags,
                data,
            } => sys.mount(fstype, target, flags, data)?,
            Step::Attach { handle, target } => {
                let tree = trees
                    .get(*handle)
                    .ok_or_else(|| anyhow!("internal error: mount plan attaches clone {handle}"))?;
                sys.attach(tree, target)?
            }
            Step::Symlink { target, link } => sys.symlink(target, link)?,
            Step::Bind {
                handle,
                target,
                kind,
                owner,
            } => {
                let tree = trees
                    .get(*handle)
                    .ok_or_else(|| anyhow!("internal error: mount plan binds clone {handle}"))?;
                sys.bind_beneath(tree, target, *kind, *owner)?
            }
        }
    }
    Ok(())
}

/// Init's body for a one-shot session: set up, run the command, return its exit code. `dev`:
/// the socket to the `dev` that relays the command's pty.
pub fn run(plan: &SandboxPlan, signals: &SigSet, dev: Option<UnixStream>) -> i32 {
    match setup(plan).and_then(|()| command(plan, false)) {
        Ok(cmd) => spawn_and_wait(cmd, plan, signals, true, dev),
        Err(e) => {
            crate::ui::note(crate::ui::render(&e));
            SETUP_FAILED
        }
    }
}

/// Init's body for a running env (issue 5's keeper): set up, say so on `ready`, then reap
/// orphans until SIGTERM, which is passed to every process of the env before init exits.
pub fn keep(
    plan: &SandboxPlan,
    signals: &SigSet,
    mut ready: std::os::unix::net::UnixStream,
) -> i32 {
    use std::os::fd::AsRawFd;
    // Sessions join init's mount and pid namespaces; only init itself may open them (it is not
    // dumpable), so it hands descriptors to the keeper.
    let answer = setup(plan).and_then(|()| {
        let open = |ns: &str| {
            std::fs::File::open(format!("/proc/self/ns/{ns}"))
                .with_context(|| format!("cannot open init's {ns} namespace"))
        };
        let (mnt, pid) = (open("mnt")?, open("pid")?);
        sys::send_fds(&ready, b"ok", &[mnt.as_raw_fd(), pid.as_raw_fd()])
    });
    if let Err(e) = answer {
        let _ = std::io::Write::write_all(&mut ready, crate::ui::render(&e).as_bytes());
        return SETUP_FAILED;
    }
    drop(ready);
    // The env outlives the `dev` that started it: its stdio is not init's to keep open.
    super::keeper::detach_stdio();
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let Ok((sig, _)) = sys::wait_signal(signals) else {
            return SETUP_FAILED;
        };
        if sig == Signal::SIGTERM {
            // Pid 1's kill(-1) reaches every other process of the pid namespace.
            let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
            let deadline = std::time::Instant::now() + crate::runtime::STOP_TIMEOUT;
            while std::time::Instant::now() < deadline {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Err(Errno::ECHILD) => break,
                    Ok(WaitStatus::StillAlive) => {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    }
                    _ => {}
                }
                // Processes of joined sessions are not init's children: look for any left.
                if only_init_left() {
                    break;
                }
            }
            // Leaving kills whatever is left (the kernel SIGKILLs a pid namespace's processes).
            return 0;
        }
    }
}

fn only_init_left() -> bool {
    std::fs::read_dir("/proc").is_ok_and(|rd| {
        rd.flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .all(|e| e.file_name() == "1")
    })
}

/// Spawns the command in a session of its own, on a pty of the env's when `dev` is at a
/// terminal (see `pty`), and waits for it, passing on signals; the exit code, or the code for a
/// command that could not be started (127 missing, 126 not executable). The pty goes to `dev`
/// over the socket `dev` (init's case), or this process relays it (a joined session's).
pub fn spawn_and_wait(
    launch: Launch,
    plan: &SandboxPlan,
    signals: &SigSet,
    reap_all: bool,
    dev: Option<UnixStream>,
) -> i32 {
    let pty = match pty::wanted().then(|| pty::Pty::open(command_ids(plan))) {
        None => None,
        Some(Ok(pty)) => Some(pty),
        Some(Err(e)) => {
            crate::ui::note(crate::ui::render(&e));
            return SETUP_FAILED;
        }
    };
    let stderr = pty::Pty::for_stderr();
    let (spawned, program) = match launch {
        Launch::Fork(mut cmd) => {
            sys::new_session(&mut cmd, pty.is_some());
            let on_pty = |cmd: &mut Command, tty: &std::os::fd::OwnedFd| -> std::io::Result<()> {
                cmd.stdin(tty.try_clone()?).stdout(tty.try_clone()?);
                if stderr {
                    cmd.stderr(tty.try_clone()?);
                }
                Ok(())
            };
            let spawned = match &pty {
                Some(p) => on_pty(&mut cmd, &p.slave),
                None => Ok(()),
            }
            .and_then(|()| cmd.spawn());
            (
                spawned.map(|c| Pid::from_raw(c.id() as i32)),
                cmd.get_program().to_string_lossy().to_string(),
            )
        }
        Launch::Spawn(args) => (
            match &pty {
                Some(p) => sys::spawn_on_terminal(&args, &p.slave, stderr),
                None => sys::spawn_clean(&args),
            },
            args.program.to_string_lossy().to_string(),
        ),
    };
    // The command's side of the pty is the command's alone from here on.
    let master = pty.map(|p| p.master);
    match spawned {
        Ok(pid) => {
            let forward = Forward::All {
                resize: master.is_none(),
            };
            let waited = match (master, dev) {
                (Some(m), Some(dev)) => {
                    use std::os::fd::AsRawFd;
                    let _ = sys::send_fds(&dev, pty::MASTER, &[m.as_raw_fd()]);
                    drop((m, dev));
                    supervise(pid, signals, reap_all, forward)
                }
                (Some(m), None) => pty::relay(pty::Master::Here(m), pid, signals, forward),
                (None, _) => supervise(pid, signals, reap_all, forward),
            };
            waited.unwrap_or_else(|e| {
                crate::ui::note(crate::ui::render(&e));
                SETUP_FAILED
            })
        }
        Err(e) => {
            let (code, err) = match e.kind() {
                ErrorKind::NotFound => (
                    127,
                    UserError::with_hint(
                        format!("`{program}` is not in the image `{}`", plan.image),
                        "check the command's name, or install it in the env (`dev shell --root`)",
                    ),
                ),
                ErrorKind::PermissionDenied => (
                    126,
                    anyhow!("cannot run `{program}` in the image `{}`: {e}", plan.image),
                ),
                _ => (
                    SETUP_FAILED,
                    anyhow!(
                        "cannot start `{program}` in the image `{}`: {e}",
                        plan.image
                    ),
                ),
            };
            crate::ui::note(crate::ui::render(&err));
            code
        }
    }
}

/// The ids the command runs as inside.
fn command_ids(plan: &SandboxPlan) -> (u32, u32) {
    if plan.user.root || plan.ids == IdMode::FlatRoot {
        (0, 0)
    } else {
        (plan.user.uid, plan.user.gid)
    }
}

/// The env's tree, hostname and user entries, as init (pid 1) sets them up.
fn setup(plan: &SandboxPlan) -> Result<()> {
    sys::process::pdeathsig(Some(Signal::SIGKILL))?;
    // The command runs as the user; init must not be open to it through /proc/1 (its exe is the
    // host's `dev` binary).
    sys::process::not_dumpable()?;
    tree(&mut sys::Linux, plan)?;
    if plan.ldconfig || forget_gpu_drop_in() {
        ldconfig(plan);
    }
    let shell = choose_shell(plan)?;
    write_user_entries(plan, shell.as_deref().unwrap_or("/bin/sh"))
}

/// Init's mount namespace, the env's tree in it (see [`execute`]) and its hostname.
pub(super) fn tree<S: Sys>(sys: &mut S, plan: &SandboxPlan) -> Result<()> {
    sys.unshare(sys::ns::CloneFlags::CLONE_NEWNS)
        .context("cannot create init's mount namespace")?;
    execute(sys, &plan.steps)?;
    sys.set_hostname(&plan.hostname)
}

/// Removes the mount point an earlier start with the GPU left of its `ld.so.conf.d` drop-in
/// (beneath the root, no symlink followed); whether there was one, so ld.so's cache is made
/// again without the GPU's libraries.
fn forget_gpu_drop_in() -> bool {
    let rel = Path::new(super::plan::GPU_DROP_IN_INSIDE.trim_start_matches('/'));
    let Ok(root) = Tree::open(Path::new("/")) else {
        return false;
    };
    matches!(root.lstat(rel), Ok(Some(_))) && root.remove(rel).is_ok()
}

/// Runs the image's `ldconfig` as root inside, so ld.so finds the GPU's libraries bound in; a
/// failure is a note (the env still starts, without them in ld.so's cache).
fn ldconfig(plan: &SandboxPlan) {
    let Some(program) = ["/sbin/ldconfig", "/usr/sbin/ldconfig", "/usr/bin/ldconfig"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        crate::ui::note(format_args!(
            "note: the image `{}` has no ldconfig; the GPU's libraries are in {} (set LD_LIBRARY_PATH)",
            plan.image,
            super::plan::GPU_LIB_INSIDE
        ));
        return;
    };
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    sys::clean_exec(&mut cmd);
    match cmd.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => crate::ui::note(format_args!(
            "note: ldconfig in the env failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(400)]).trim()
        )),
        Err(e) => crate::ui::note(format_args!("note: cannot run ldconfig in the env: {e}")),
    }
}

/// A session's command, ready to start.
pub enum Launch {
    /// Forked; the child takes the user's ids and cleans up before its exec.
    Fork(Command),
    /// posix_spawn'ed by a process that took the user's ids and cleaned up itself.
    Spawn(sys::SpawnArgs),
}

/// The command of a session, ready to spawn, inside the env's tree (init's, or a joined one).
/// `in_place`: this process takes the user's ids and drops what must not cross into the env
/// itself, so the command spawns by posix_spawn, not as a copy of this process; for a
/// process that does nothing after but wait for the command.
pub fn command(plan: &SandboxPlan, in_place: bool) -> Result<Launch> {
    // (Each look is a lookup through the overlay: none for a command given.)
    let shell = match plan.process.argv.is_empty() {
        true => choose_shell(plan)?,
        false => None,
    };
    if let Some(user) = plan.image_user.as_deref().filter(|u| !u.is_empty()) {
        // The image's file: read beneath the root, bounded (a symlink to /dev/zero there
        // would otherwise fill memory).
        let passwd = Tree::open(std::path::Path::new("/"))
            .and_then(|root| root.read_bounded(std::path::Path::new("etc/passwd"), 16 << 20))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        check_image_user(user, &passwd).map_err(|e| {
            UserError::with_hint(
                format!("image `{}` is not usable: {e}", plan.image),
                "use another image, or fix the image's config",
            )
        })?;
    }
    let p = &plan.process;
    let argv: Vec<String> = if p.argv.is_empty() {
        vec![shell.ok_or_else(|| {
            UserError::with_hint(
                format!("image `{}` has no shell (none of {} exists in it)", plan.image, p.shell_fallbacks.join(", ")),
                "set `shell` in dev.toml to a shell the image has, or run a command: `dev run -- CMD`",
            )
        })?]
    } else {
        p.argv.clone()
    };
    if !p.cwd.is_dir() {
        return Err(anyhow!(
            "the working directory `{}` does not exist in the env",
            p.cwd.display()
        ));
    }
    let path = p
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let program = find_program(&argv[0], path);
    let (uid, gid) = if plan.user.root {
        (0, 0)
    } else {
        (plan.user.uid, plan.user.gid)
    };
    if in_place {
        if plan.ids != IdMode::FlatRoot {
            sys::ids::set_gid(gid).context("cannot take the user's group")?;
            sys::ids::set_uid(uid).context("cannot take the user's id")?;
        }
        sys::clean_for_exec().context("cannot prepare the command's exec")?;
        return Ok(Launch::Spawn(sys::SpawnArgs {
            program,
            argv,
            env: p.env.clone(),
            cwd: p.cwd.clone(),
        }));
    }
    let mut cmd = Command::new(program);
    std::os::unix::process::CommandExt::arg0(&mut cmd, &argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&p.cwd);
    if plan.ids != IdMode::FlatRoot {
        cmd.uid(uid).gid(gid);
    }
    sys::clean_exec(&mut cmd);
    Ok(Launch::Fork(cmd))
}

/// `program` as the command's PATH finds it (the exec then makes no failed attempts along the
/// PATH, each a lookup through the overlay); unchanged if it has a `/` or is not found.
fn find_program(program: &str, path: Option<&str>) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return program.into();
    }
    path.unwrap_or("/usr/local/bin:/usr/bin:/bin")
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| program.into())
}

/// The shell: dev.toml's (which must exist), else the first fallback the image has.
fn choose_shell(plan: &SandboxPlan) -> Result<Option<String>> {
    let p = &plan.process;
    if let Some(shell) = &p.shell {
        if !Path::new(shell).is_file() {
            if p.argv.is_empty() {
                return Err(UserError::with_hint(
                    format!("the shell `{shell}` that dev.toml names is not in the image `{}`", plan.image),
                    "install it in the env (`dev shell --root` is not enough without a shell: use `dev run --root -- apt-get install …`), or change `shell` in dev.toml",
                ));
            }
            return Ok(None);
        }
        return Ok(Some(shell.clone()));
    }
    Ok(p.shell_fallbacks
        .iter()
        .find(|s| Path::new(s).is_file())
        .cloned())
}

/// Adds the user (and their group) to the image's `/etc/passwd` and `/etc/group`, when missing.
fn write_user_entries(plan: &SandboxPlan, shell: &str) -> Result<()> {
    if plan.ids == IdMode::FlatRoot || !plan.user.write_entries {
        return Ok(());
    }
    let u = &plan.user;
    // The image shaped this tree: `/etc` and the files in it are resolved beneath the root
    // with no symlink followed, and written through a temp file of a random name (an image
    // could plant a symlink at any fixed name, into the project or the home bound in).
    let root = Tree::open(std::path::Path::new("/")).context("cannot open the env's root")?;
    match root.lstat(std::path::Path::new("etc")) {
        Ok(None) => root
            .mkdir(std::path::Path::new("etc"), 0o755)
            .context("cannot create /etc in the env")?,
        Ok(Some(st)) if crate::beneath::file_type(&st) == rustix::fs::FileType::Directory => {}
        _ => {
            return Err(UserError::with_hint(
                format!(
                    "image `{}` is not usable: its /etc is not a directory",
                    plan.image
                ),
                "use another image, or fix the image's /etc",
            ))
        }
    }
    let etc = root
        .dir(std::path::Path::new("etc"))
        .context("cannot open /etc in the env")?;
    for (name, entry) in [
        ("passwd", u.passwd_entry(shell)),
        ("group", u.group_entry()),
    ] {
        // A symlink there (or no file) is replaced by a file of its own.
        let text = etc
            .read_bounded(std::path::Path::new(name), 16 << 20)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if let Some(new) = merge_entry(&text, &entry) {
            crate::atomic::write_in(
                etc.fd(),
                std::ffi::OsStr::new(name),
                new.as_bytes(),
                0o644,
                crate::atomic::Durability::Volatile,
            )
            .with_context(|| format!("cannot add `{}` to /etc/{name} in the env", u.name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::plan::{mount_plan, Layout};
    use crate::sandbox::sys::Recorder;

    #[test]
    fn plan_runs_in_order_against_the_fake() {
        let layout = Layout {
            root: "/s/env/merged".into(),
            shares: vec![
                ("/home/ann".into(), "/s/env/home".into()),
                ("/home/ann/app".into(), "/home/ann/app".into()),
            ],
            ssh_agent: None,
            etc_files: vec!["/etc/resolv.conf".into()],
            kept: Vec::new(),
            binds: Vec::new(),
            bind_owner: None,
        };
        let mut rec = Recorder::default();
        execute(&mut rec, &mount_plan(&layout)).expect("runs");
        let calls = rec.lines();
        let pos = |prefix: &str| {
            calls
                .iter()
                .position(|c| c.starts_with(prefix))
                .unwrap_or_else(|| panic!("no `{prefix}` in {calls:#?}"))
        };
        assert!(pos("clone /sys ro=true") < pos("pivot /s/env/merged"));
        assert!(pos("pivot") < pos("mount tmpfs /dev "));
        assert!(pos("mount tmpfs /dev ") < pos("attach /dev/null /dev/null"));
        assert!(pos("mount devpts /dev/pts") > pos("mount tmpfs /dev "));
        assert!(pos("attach /s/env/home /home/ann") < pos("attach /home/ann/app /home/ann/app"));
        assert!(pos("file /etc/resolv.conf") < pos("attach /etc/resolv.conf /etc/resolv.conf"));
        assert_eq!(
            calls.iter().filter(|c| c.starts_with("mount proc")).count(),
            1
        );
    }

    #[test]
    fn opened_binds_are_cloned_before_the_pivot_and_placed_beneath_the_root_last() {
        use crate::sandbox::plan::{Bind, BindKind};
        let layout = Layout {
            root: "/s/env/merged".into(),
            shares: vec![
                ("/home/ann".into(), "/s/env/home".into()),
                ("/home/ann/app".into(), "/home/ann/app".into()),
            ],
            ssh_agent: None,
            etc_files: Vec::new(),
            kept: Vec::new(),
            binds: vec![
                Bind {
                    source: "/s/volumes-v1/m/cargo/data".into(),
                    target: "/home/ann/.cargo/registry".into(),
                    readonly: false,
                    kind: BindKind::Dir,
                },
                Bind {
                    source: "/srv/data".into(),
                    target: "/data".into(),
                    readonly: true,
                    kind: BindKind::Dir,
                },
            ],
            bind_owner: Some((1500, 1500)),
        };
        let mut rec = Recorder::default();
        execute(&mut rec, &mount_plan(&layout)).expect("runs");
        let calls = rec.lines();
        let pos = |line: &str| {
            calls
                .iter()
                .position(|c| c == line)
                .unwrap_or_else(|| panic!("no `{line}` in {calls:#?}"))
        };
        let pivot = pos("pivot /s/env/merged");
        assert!(pos("clone /srv/data ro=true") < pivot);
        assert!(pos("clone /s/volumes-v1/m/cargo/data ro=false") < pivot);
        let cargo = pos(
            "bind-beneath /s/volumes-v1/m/cargo/data /home/ann/.cargo/registry Dir owner=1500:1500",
        );
        let data = pos("bind-beneath /srv/data /data Dir owner=1500:1500");
        // After the home and the project, in their order, and the last calls of the plan.
        assert!(pos("attach /home/ann/app /home/ann/app") < cargo && cargo < data);
        assert_eq!(data, calls.len() - 1);
        // Nothing of the binds goes through a path-based mkdir or attach.
        assert!(!calls
            .iter()
            .any(|c| c.starts_with("mkdir /home/ann/.cargo") || c.starts_with("mkdir /data")));
    }

    #[test]
    fn attach_of_unknown_clone_is_an_error() {
        let mut rec = Recorder::default();
        let err = execute(
            &mut rec,
            &[Step::Attach {
                handle: 3,
                target: "/x".into(),
            }],
        )
        .expect_err("no such clone");
        assert!(err.to_string().contains("clone 3"));
    }

    #[test]
    fn exit_codes() {
        let pid = Pid::from_raw(5);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGTERM, false)),
            Some(143)
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }
}
