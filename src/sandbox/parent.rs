//! `dev`'s side of starting a sandbox: the user-namespace helper, re-executed (`dev
//! __userns-helper`, which unshares its user namespace and stops itself while this process
//! writes its id maps with `newuidmap`/`newgidmap`, checking their exit status) or forked
//! ahead into a user namespace of its own ([`Helper`], and the speculative one `dev shell`
//! forks first thing); then a one-shot sandbox ([`run_sandbox`]), a project's env whose keeper
//! outlives this process ([`start_env`]), or one store operation ([`run_helper`]).
//! (A stop, not a pipe, is the re-executed helper's handshake, so its stdio can be the user's
//! terminal.)

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::init::Forward;
use super::join::Session;
use super::plan::SandboxPlan;
use super::pty;
use crate::ids::{IdMap, IdMode, Identity, Ownership};
use crate::ui::UserError;

/// The hidden subcommand the helper runs as.
pub const HELPER_COMMAND: &str = "__userns-helper";

/// Starts `dev __userns-helper MODE ARGS...` and, with the full mapping, writes its id maps
/// while it waits stopped (it stops itself right after unsharing its user namespace).
/// Returns the running helper, or its exit status if it ended before it was mapped.
pub fn spawn_helper(
    identity: &Identity,
    mode: IdMode,
    args: &[OsString],
    setup: impl FnOnce(&mut Command),
) -> Result<Result<Child, (Child, i32)>> {
    map_helper(identity, mode, start_helper(mode, args, setup)?)
}

/// The first half of [`spawn_helper`]: the helper started, not yet mapped.
fn start_helper(
    mode: IdMode,
    args: &[OsString],
    setup: impl FnOnce(&mut Command),
) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the `dev` executable to re-run")?;
    let mut cmd = Command::new(exe);
    cmd.arg(HELPER_COMMAND).arg(mode.as_arg()).args(args);
    setup(&mut cmd);
    cmd.spawn().context("cannot start the `dev` helper process")
}

/// The second half of [`spawn_helper`]: maps the started helper's user namespace. It may run
/// on another thread than the one that started the helper (which the helper dies with).
fn map_helper(
    identity: &Identity,
    mode: IdMode,
    mut child: Child,
) -> Result<Result<Child, (Child, i32)>> {
    let pid = Pid::from_raw(child.id() as i32);
    if mode != IdMode::Subordinate || !identity.has_subordinate() {
        return Ok(Ok(child));
    }
    match map_stopped(identity, pid) {
        Ok(None) => Ok(Ok(child)),
        Ok(Some(code)) => Ok(Err((child, code))),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Waits for the helper `pid` to stop itself in its new user namespace, writes its maps with
/// newuidmap and newgidmap, and resumes it. `Some(code)` if it exited instead.
fn map_stopped(identity: &Identity, pid: Pid) -> Result<Option<i32>> {
    if let Some(code) = wait_stopped(pid)? {
        return Ok(Some(code));
    }
    Maps::spawn(identity, pid)?.finish()?;
    kill(pid, Signal::SIGCONT).context("cannot resume the helper process")?;
    Ok(None)
}

/// Waits for the helper to stop itself after unsharing; `Some(code)` if it exited instead.
fn wait_stopped(pid: Pid) -> Result<Option<i32>> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Stopped(..)) => return Ok(None),
            Ok(status) => {
                if let Some(code) = super::init::exit_code(status) {
                    return Ok(Some(code));
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("cannot wait for the helper process"),
        }
    }
}

/// Has newuidmap and newgidmap write the full map of process `pid`'s user namespace.
pub(super) fn map_with(identity: &Identity, pid: Pid) -> Result<()> {
    Maps::spawn(identity, pid)?.finish()
}

/// newuidmap and newgidmap writing a stopped helper's maps, side by side: each is a setuid
/// program that takes a millisecond or two.
struct Maps {
    pid: Pid,
    runs: Vec<(PathBuf, IdMap, Result<Child>)>,
}

impl Maps {
    fn spawn(identity: &Identity, pid: Pid) -> Result<Maps> {
        let Ownership::Subordinate {
            uid_map,
            gid_map,
            newuidmap,
            newgidmap,
            ..
        } = &identity.ownership
        else {
            bail!("internal error: the full id map needs a subordinate range");
        };
        let runs = [(newuidmap, uid_map), (newgidmap, gid_map)]
            .into_iter()
            .map(|(program, map)| {
                let child = Command::new(program)
                    .arg(pid.to_string())
                    .args(map.args())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .with_context(|| format!("cannot run `{}`", program.display()));
                (program.clone(), map.clone(), child)
            })
            .collect();
        Ok(Maps { pid, runs })
    }

    /// Waits for both and checks their exit status.
    fn finish(self) -> Result<()> {
        let pid = self.pid;
        let mut result = Ok(());
        for (program, map, child) in self.runs {
            let done = child.and_then(|c| {
                c.wait_with_output()
                    .with_context(|| format!("cannot run `{}`", program.display()))
            });
            let failed = match done {
                Ok(out) if out.status.success() => continue,
                Ok(out) => UserError::with_hint(
                    format!(
                        "`{} {pid} {}` failed: {}",
                        program.display(),
                        map.args().join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                    format!(
                        "check /etc/subuid and /etc/subgid, and that `{}` is setuid root (`apt install --reinstall uidmap`)",
                        program.display()
                    ),
                ),
                Err(e) => e,
            };
            if result.is_ok() {
                result = Err(failed);
            }
        }
        result
    }
}

/// Runs `dev __userns-helper sub store` as root inside a user namespace with the full mapping,
/// gives it `request` on its stdin and returns what it answers on its stdout (the store's typed
/// protocol, opaque here). A helper that dies without answering is an error with what it said.
/// A store helper being started ahead of its operation (see [`prestart_store_helper`]).
static PRESTARTED: std::sync::Mutex<Option<std::thread::JoinHandle<Option<Child>>>> =
    std::sync::Mutex::new(None);

fn spawn_store_helper(identity: &Identity) -> Result<Result<Child, (Child, i32)>> {
    map_helper(identity, IdMode::Subordinate, start_store_helper()?)
}

fn start_store_helper() -> Result<Child> {
    start_helper(IdMode::Subordinate, &["store".into()], |c| {
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    })
}

/// Starts a store helper for `identity` on a thread of its own, for the next [`run_helper`]
/// to take: its user namespace is mapped (newuidmap and newgidmap, ~10 ms) while a pull still
/// asks the registry for the image, not after. [`forget_prestarted`] ends one never taken.
pub fn prestart_store_helper(identity: &Identity) {
    if !identity.has_subordinate() {
        return;
    }
    // Started on this thread, which lives on (the helper dies with the thread that started
    // it); only the mapping, which waits for the helper, on another.
    let Ok(child) = start_store_helper() else {
        return;
    };
    let identity = identity.clone();
    let started =
        std::thread::spawn(
            move || match map_helper(&identity, IdMode::Subordinate, child) {
                Ok(Ok(child)) => Some(child),
                Ok(Err((mut child, _))) => {
                    let _ = child.wait();
                    None
                }
                Err(_) => None,
            },
        );
    if let Ok(mut slot) = PRESTARTED.lock() {
        if let Some(old) = slot.replace(started) {
            end_prestarted(old);
        }
    }
}

fn take_prestarted() -> Option<Child> {
    let started = PRESTARTED.lock().ok()?.take()?;
    started.join().ok().flatten()
}

fn end_prestarted(started: std::thread::JoinHandle<Option<Child>>) {
    if let Ok(Some(mut child)) = started.join() {
        // With its stdin closed it has no operation and exits; killed in case it waits.
        drop(child.stdin.take());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Ends the helper [`prestart_store_helper`] started, if no operation took it.
pub fn forget_prestarted() {
    let started = PRESTARTED.lock().ok().and_then(|mut s| s.take());
    if let Some(started) = started {
        end_prestarted(started);
    }
}

/// Also returns why `input` stopped before its end, if it did (the helper then saw it cut off).
pub fn run_helper(
    identity: &Identity,
    request: &[u8],
    input: Option<&mut dyn std::io::Read>,
) -> Result<(Vec<u8>, Option<std::io::Error>)> {
    use std::io::Write;
    if !identity.has_subordinate() {
        bail!("internal error: the user-namespace helper needs a subordinate id range");
    }
    let started = match take_prestarted() {
        Some(child) => Ok(child),
        None => spawn_store_helper(identity)?,
    };
    let (mut child, failed) = match started {
        Ok(child) => (child, false),
        Err((child, _)) => (child, true),
    };
    let mut cut = None;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that died already is seen below, by its status.
        if stdin.write_all(request).is_ok() {
            if let Some(input) = input {
                cut = feed(input, &mut stdin).err();
            }
        }
    }
    let out = child
        .wait_with_output()
        .context("the helper process failed")?;
    if failed || !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let msg = msg.trim().trim_start_matches("error: ");
        return Err(anyhow!(
            "{}",
            if msg.is_empty() {
                "the helper process died"
            } else {
                msg
            }
        ));
    }
    Ok((out.stdout, cut))
}

/// Copies `input` to the helper's stdin (for a download, its news: `registry::News` records;
/// the helper reads the layer's bytes from the file). A helper that stopped reading (it
/// refused the layer) ends it quietly: its reply says why.
fn feed(
    input: &mut dyn std::io::Read,
    stdin: &mut std::process::ChildStdin,
) -> std::io::Result<()> {
    use std::io::{ErrorKind, Write};
    use std::os::fd::AsRawFd;
    // Fewer wake-ups of the helper; the size is a hint (the kernel's limit for users is 1 MiB).
    let _ = nix::fcntl::fcntl(stdin.as_raw_fd(), nix::fcntl::F_SETPIPE_SZ(1 << 20));
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match stdin.write_all(&buf[..n]) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Starts the sandbox for `plan` and waits for it, passing signals on; returns the exit code.
/// The helper is a fork of this process when it has a single thread (the usual case: a fork
/// saves a re-exec of `dev`), else a re-exec (`unshare` needs a single-threaded process).
/// The helper forked ahead by `speculate` is taken when its ids fit.
/// At a terminal, this process relays the command's pty, which init sends it (see `pty`).
pub fn run_sandbox(identity: &Identity, plan: &SandboxPlan) -> Result<i32> {
    let signals = super::init::block_signals()?;
    let wait = |pid: Pid, init: Option<std::os::unix::net::UnixStream>| match init {
        Some(socket) => pty::relay(pty::Master::From(socket), pid, &signals, Forward::Sent),
        None => super::init::supervise(pid, &signals, false, Forward::Sent),
    };
    let helper = match speculative_for(plan.ids) {
        Some(h) => h,
        None if !single_threaded() => {
            use std::os::fd::AsRawFd;
            let json = serde_json::to_string(plan).context("cannot encode the sandbox plan")?;
            // The socket init sends the pty on, inherited across the helper's exec.
            let (ours, theirs) = match pty::wanted() {
                true => {
                    let (a, b) = std::os::unix::net::UnixStream::pair()
                        .context("cannot create a socket pair")?;
                    nix::fcntl::fcntl(
                        b.as_raw_fd(),
                        nix::fcntl::F_SETFD(nix::fcntl::FdFlag::empty()),
                    )
                    .context("cannot pass a socket to the helper")?;
                    (Some(a), Some(b))
                }
                false => (None, None),
            };
            let args = ["sandbox".into(), json.into()];
            let started = spawn_helper(identity, plan.ids, &args, |c| {
                // (Never one from the user's environment.)
                c.env_remove(super::helper::TERMINAL_SOCKET_ENV);
                if let Some(b) = &theirs {
                    c.env(
                        super::helper::TERMINAL_SOCKET_ENV,
                        b.as_raw_fd().to_string(),
                    );
                }
            })?;
            drop(theirs);
            return match started {
                Ok(child) => wait(Pid::from_raw(child.id() as i32), ours),
                Err((_, code)) => Ok(code),
            };
        }
        None => Helper::fork(identity, plan.ids)?,
    };
    match helper.go(plan)? {
        Ok((pid, starter)) => wait(pid, pty::wanted().then_some(starter)),
        Err(code) => Ok(code),
    }
}

/// A sandbox helper forked ahead of its plan, in a user namespace of its own from its start;
/// with the full mapping newuidmap and newgidmap write its maps while `dev` goes on preparing
/// (they are the slowest step of a start). It reads the plan as soon as it is written, then
/// waits for the word that its maps are written. Dropped unused, it is killed.
pub struct Helper {
    /// How its ids are mapped.
    ids: IdMode,
    pid: Pid,
    maps: Option<Maps>,
    plan: Option<std::fs::File>,
    /// The starter's end of the socket a keeper answers on (see [`start_env`]).
    starter: Option<std::os::unix::net::UnixStream>,
}

impl Helper {
    /// Forks the helper for `ids`; this process must have a single thread. `dev run` and `dev
    /// shell` call it first thing (see [`speculate`]), so the fork copies little and the maps
    /// are written while the command line, the project and the identity are read. With the
    /// full map, the helper joins the namespace a holder keeps and maps one of its own beneath
    /// it (`holder`); with none, it is forked into a new user namespace, which newuidmap and
    /// newgidmap map, and a holder is left behind when `dev` ends.
    pub fn fork(identity: &Identity, ids: IdMode) -> Result<Helper> {
        let held = match ids {
            IdMode::Subordinate => super::holder::find(identity),
            _ => None,
        };
        let mapped_itself = held.is_some();
        let mut helper = Helper::spawn(ids, held)?;
        if ids == IdMode::Subordinate && !mapped_itself {
            helper.maps = Some(Maps::spawn(identity, helper.pid)?);
            super::holder::wanted();
        }
        Ok(helper)
    }

    /// Forks the helper: into the holder's namespace `held` (it maps its own beneath), or into
    /// a new user namespace (mapped by [`Helper::fork`], or by itself with a single id).
    fn spawn(ids: IdMode, held: Option<super::holder::Joined>) -> Result<Helper> {
        use std::os::fd::AsRawFd;
        if !single_threaded() {
            bail!("internal error: the sandbox helper is forked from a single-threaded `dev` only");
        }
        let (plan_rx, plan_tx) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        let (starter, keepers) =
            std::os::unix::net::UnixStream::pair().context("cannot create a socket pair")?;
        {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
        }
        // Its ids on the host, which it cannot read once in its namespace, unmapped.
        let host = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let forked = match held {
            Some(_) => super::sys::fork(),
            None => super::sys::fork_in_new_userns().map_err(|e| {
                UserError::with_hint(
                    format!("cannot create a user namespace: {e}"),
                    userns_hint(),
                )
            }),
        }?;
        let pid = match forked {
            nix::unistd::ForkResult::Child => {
                // The starter's end is the starter's alone: the keeper sees the session end
                // when the starter closes it. The pipe's end is for writing the plan.
                let _ = nix::unistd::close(starter.as_raw_fd());
                let _ = nix::unistd::close(plan_tx.as_raw_fd());
                std::process::exit(super::helper::run_pending(
                    plan_rx,
                    keepers.into(),
                    host,
                    held,
                ))
            }
            nix::unistd::ForkResult::Parent { child } => child,
        };
        // It does its namespaces while this process prepares the plan: on another core.
        super::sys::process::run_beside(pid);
        drop((plan_rx, keepers));
        Ok(Helper {
            ids,
            pid,
            maps: None,
            plan: Some(std::fs::File::from(plan_tx)),
            starter: Some(starter),
        })
    }

    /// Gives the helper the plan, finishes the maps and lets it go on. Returns its pid and the
    /// starter's end of the keeper's socket, or its exit code if it ended.
    fn go(
        mut self,
        plan: &SandboxPlan,
    ) -> Result<Result<(Pid, std::os::unix::net::UnixStream), i32>> {
        use std::io::Write;
        let json = serde_json::to_vec(plan).context("cannot encode the sandbox plan")?;
        let mut tx = self
            .plan
            .take()
            .context("internal error: the helper has its plan")?;
        let starter = self
            .starter
            .take()
            .context("internal error: no starter socket")?;
        let pid = self.pid;
        // The plan first (the helper parses it while the maps are being written), then, once
        // they are, the word to go on.
        let mut sent = tx
            .write_all(&(json.len() as u64).to_le_bytes())
            .and_then(|()| tx.write_all(&json));
        if let Some(maps) = self.maps.take() {
            if let Err(e) = maps.finish() {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return Err(e);
            }
        }
        sent = sent.and_then(|()| tx.write_all(b"m"));
        drop(tx);
        if sent.is_err() {
            return Ok(Err(exit_code_of(pid)));
        }
        Ok(Ok((pid, starter)))
    }
}

/// The helper `dev run`/`dev shell` fork before anything else, for the first session to take.
static SPECULATIVE: std::sync::Mutex<Option<Helper>> = std::sync::Mutex::new(None);

/// Keeps a helper forked ahead of time (see `commands::shell::speculate`) for the first
/// session to take.
pub fn keep_speculative(helper: Helper) {
    if let Ok(mut slot) = SPECULATIVE.lock() {
        *slot = Some(helper);
    }
}

/// The helper kept by [`keep_speculative`], if any (once).
pub fn take_speculative() -> Option<Helper> {
    SPECULATIVE.lock().ok().and_then(|mut slot| slot.take())
}

/// The helper kept by [`keep_speculative`] if its ids are `ids` (else it is dropped: killed).
fn speculative_for(ids: IdMode) -> Option<Helper> {
    take_speculative().filter(|h| h.ids == ids)
}

impl Drop for Helper {
    fn drop(&mut self) {
        if self.plan.is_some() {
            // Never given a plan: it is waiting on the pipe and must not stay.
            let _ = kill(self.pid, Signal::SIGKILL);
            if let Some(maps) = self.maps.take() {
                let _ = maps.finish();
            }
            let _ = waitpid(self.pid, None);
        }
    }
}

/// Starts a project's env whose keeper outlives this process; returns this process's session
/// once the env can be joined, or the keeper's exit code (it printed why) if it did not start.
/// The keeper answers on the helper's socket with the env's namespaces, and counts it as the
/// first session: no second connection for the session that started the env. It is sent the
/// env's `lock` on that socket first and holds it until the env is gone, unmounted included:
/// the next start of the env waits for it.
pub fn start_env(
    identity: &Identity,
    plan: &SandboxPlan,
    lock: std::os::fd::BorrowedFd<'_>,
) -> Result<Result<Session, i32>> {
    let helper = match speculative_for(plan.ids) {
        Some(h) => h,
        None => Helper::fork(identity, plan.ids)?,
    };
    {
        use std::os::fd::AsRawFd;
        let starter = helper
            .starter
            .as_ref()
            .context("internal error: no starter socket")?;
        super::sys::send_fds(starter, super::keeper::LOCK, &[lock.as_raw_fd()])?;
    }
    let (pid, starter) = match helper.go(plan)? {
        Ok(started) => started,
        Err(code) => return Ok(Err(code)),
    };
    if let Ok(session) = Session::from_keeper(starter) {
        return Ok(Ok(session));
    }
    Ok(Err(exit_code_of(pid)))
}

/// Waits for a helper that ended early; its exit code (it said why).
fn exit_code_of(pid: Pid) -> i32 {
    match waitpid(pid, None) {
        Ok(status) => super::init::exit_code(status).unwrap_or(super::init::SETUP_FAILED),
        Err(_) => super::init::SETUP_FAILED,
    }
}

pub(super) fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// Why user namespaces may be off here, and what to do.
pub fn userns_hint() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return "AppArmor restricts unprivileged user namespaces here: `sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0`, or give `dev` an AppArmor profile with `userns,`".to_string();
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return "unprivileged user namespaces are disabled: `sudo sysctl kernel.unprivileged_userns_clone=1`".to_string();
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return "user namespaces are disabled: `sudo sysctl user.max_user_namespaces=15000`"
            .to_string();
    }
    "dev needs unprivileged user namespaces; check `sysctl user.max_user_namespaces` and any seccomp or container policy around this shell".to_string()
}
