//! Joining a running env: a session's connection to its keeper, the env's namespaces the
//! keeper hands over, and entering them to run the session's command.

use anyhow::{Context, Result};

use super::init::Forward;
use super::parent::single_threaded;
use super::plan::SandboxPlan;
use super::pty;
use crate::ids::IdMode;

/// A session of a running env: its connection to the keeper (open while the session lasts) and
/// the env's user, mount, uts, ipc and pid namespaces, in setns order.
pub struct Session {
    // Dropped in this order: the namespaces (and the env's mounts they hold) before the
    // keeper learns that the session left.
    namespaces: Vec<(std::os::fd::OwnedFd, super::sys::ns::CloneFlags)>,
    _keeper: std::os::unix::net::UnixStream,
}

impl Session {
    /// Connects to the keeper of the env whose runtime files are in `run_dir`.
    pub fn connect(run_dir: &std::path::Path) -> Result<Session> {
        use std::io::Write;
        let gone = |_| anyhow::Error::new(KeeperGone);
        let mut stream =
            std::os::unix::net::UnixStream::connect(run_dir.join("control.sock")).map_err(gone)?;
        stream
            .write_all(format!("{}\n", super::keeper::SESSION).as_bytes())
            .map_err(gone)?;
        Session::from_keeper(stream)
    }

    /// Reads the keeper's answer: "ok" and the namespaces, or nothing when it is stopping the
    /// env (its last session just left).
    pub(super) fn from_keeper(stream: std::os::unix::net::UnixStream) -> Result<Session> {
        use super::sys::ns::CloneFlags;
        let (answer, fds) = super::sys::recv_fds(&stream).map_err(|_| KeeperGone)?;
        if answer != b"ok" || fds.len() != 5 {
            return Err(KeeperGone.into());
        }
        let flags = [
            CloneFlags::CLONE_NEWUSER,
            CloneFlags::CLONE_NEWNS,
            CloneFlags::CLONE_NEWUTS,
            CloneFlags::CLONE_NEWIPC,
            CloneFlags::CLONE_NEWPID,
        ];
        Ok(Session {
            _keeper: stream,
            namespaces: fds.into_iter().zip(flags).collect(),
        })
    }
}

/// Runs the plan's command in a running env: joins its namespaces (as `nsenter` does) for as
/// long as the session lasts. When this is the `last` thing it does, a single-threaded `dev`
/// joins them itself and forks the command from there (afterwards it sees the env's files, not
/// the host's); otherwise a child joins them (setns into a user namespace needs one thread).
pub fn join(session: Session, plan: &SandboxPlan, last: bool) -> Result<i32> {
    use std::io::Write;
    // From the host's namespaces, while this process is still in them.
    super::holder::leave_behind();
    let enter = |session: &mut Session| -> Result<super::init::Launch> {
        for (f, flag) in &session.namespaces {
            super::sys::ns::setns(f, *flag).context("cannot enter the env's namespaces")?;
        }
        // Only this process holds the env's mount namespace now: it leaves it as it exits.
        session.namespaces.clear();
        if plan.ids == IdMode::Subordinate {
            let gid = if plan.user.root { 0 } else { plan.user.gid };
            super::sys::ids::set_groups(&[gid]).context("cannot set the groups in the env")?;
        }
        // This process only waits for the command from here on.
        super::init::command(plan, true)
    };
    let signals = super::init::block_signals()?;
    if last && single_threaded() {
        let mut session = session;
        let cmd = enter(&mut session)?;
        let code = super::init::spawn_and_wait(cmd, plan, &signals, false, None);
        // The keeper lets the env's lock go once every session has hung up (see
        // `keeper::serve`): this one hangs up as it exits. The kernel releases an exiting
        // process's files after the mounts of its namespaces (both in its deferred work, the
        // mounts queued last and run first), so the keeper hears of it once they are gone.
        std::mem::forget(session);
        return Ok(code);
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // The child relays the command's pty; were it killed, the user's terminal would stay in
    // raw mode. (The child exits without dropping its copy.)
    let terminal = pty::UserTerminal::save();
    match super::sys::fork()? {
        nix::unistd::ForkResult::Child => {
            let code = (|| -> Result<i32> {
                // The parent holds the session open: this process must not outlive it.
                super::sys::process::die_with_parent()?;
                let mut session = session;
                let cmd = enter(&mut session)?;
                Ok(super::init::spawn_and_wait(
                    cmd, plan, &signals, false, None,
                ))
            })()
            .unwrap_or_else(|e| {
                crate::ui::note(crate::ui::render(&e));
                super::init::SETUP_FAILED
            });
            std::process::exit(code)
        }
        nix::unistd::ForkResult::Parent { child } => {
            let code = super::init::supervise(child, &signals, false, Forward::Sent);
            drop((terminal, session));
            code
        }
    }
}

/// The env's keeper stopped (or is stopping) before this session got in; nothing ran yet.
#[derive(Debug, thiserror::Error)]
#[error("the env stopped while this session was joining it")]
pub struct KeeperGone;
