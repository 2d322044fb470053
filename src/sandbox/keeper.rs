//! The keeper of a running env: the helper process, once the env is up, outlives the `dev` that
//! started it. It counts the sessions connected to its control socket, stops the env (SIGTERM
//! to init, which passes it on) when the last one has been gone for the env's linger time
//! (at once with 0) unless `dev start` asked it to stay, and on `dev stop`. Its state file
//! tells other `dev`s where to join.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::plan::{IdMode, KeepPlan};
use crate::runtime::{ProcId, RunState};

/// The control socket's one-line requests.
pub const SESSION: &str = "session";
pub const PERSIST: &str = "persist";
pub const STOP: &str = "stop";
pub const STATUS: &str = "status";
/// Stop the env now if no session is in it and `dev start` did not keep it (it lingers):
/// answered "ok" (its runtime state is already withdrawn) or "busy".
pub const RETIRE: &str = "retire";
/// What the starter sends the keeper with the env's lock (see `parent::start_env`).
pub const LOCK: &[u8] = b"lock";

/// The keeper's side of the env before init is up: its control socket, listening (not yet
/// answered), and the namespaces it shares with init. Made while init sets up the mounts.
pub struct Listening {
    user: OwnedFd,
    uts: OwnedFd,
    ipc: OwnedFd,
    listener: UnixListener,
}

fn open_ns(name: &str) -> Result<OwnedFd> {
    std::fs::File::open(format!("/proc/self/ns/{name}"))
        .map(OwnedFd::from)
        .with_context(|| format!("cannot open the env's {name} namespace"))
}

/// Opens the keeper's namespaces, listens on the env's control socket and writes the env's
/// runtime state, all while `init` still mounts the env: a session that finds the state
/// meanwhile waits on the socket for the keeper's answer. Leaves no runtime file if it fails.
pub fn listen(keep: &KeepPlan, ids: IdMode, owner: (u32, u32), init: Pid) -> Result<Listening> {
    let listening =
        bind(keep, owner).and_then(|l| announce(keep, ids, owner, init, &l.user).map(|()| l));
    if listening.is_err() {
        withdraw(keep);
    }
    listening
}

/// Removes the env's runtime files (state.json, the control socket, their directory): from
/// here on sessions see the env as stopped.
pub fn withdraw(keep: &KeepPlan) {
    let _ = std::fs::remove_file(keep.run_dir.join("state.json"));
    let _ = std::fs::remove_file(keep.run_dir.join("control.sock"));
    let _ = std::fs::remove_dir(&keep.run_dir);
}

fn bind(keep: &KeepPlan, owner: (u32, u32)) -> Result<Listening> {
    // The directory is the user's, made by their `dev` outside the namespace before the keeper
    // started (`Store::make_run_dir`): what root inside makes belongs to the subordinate root.
    let sock = keep.run_dir.join("control.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)
        .with_context(|| format!("cannot listen on `{}`", sock.display()))?;
    listener.set_nonblocking(true)?;
    // Made by root inside (a subordinate id on the host): hand it to the user, whose `dev`s
    // connect.
    let _ = nix::unistd::chown(&sock, Some(owner.0.into()), Some(owner.1.into()));
    Ok(Listening {
        user: open_ns("user")?,
        uts: open_ns("uts")?,
        ipc: open_ns("ipc")?,
        listener,
    })
}

/// Writes the env's runtime state (state.json); `user` is the env's user namespace.
fn announce(
    keep: &KeepPlan,
    ids: IdMode,
    owner: (u32, u32),
    init: Pid,
    user: &OwnedFd,
) -> Result<()> {
    let (uid, gid) = (Some(owner.0.into()), Some(owner.1.into()));
    let me = nix::unistd::getpid().as_raw();
    let state = RunState {
        ids,
        keeper: ProcId::of(me).context("cannot read the keeper's own start time")?,
        init: ProcId::of(init.as_raw()).context("init is gone")?,
        name: keep.name.clone(),
        project: keep.project.clone(),
        image: keep.image.clone(),
        fingerprint: keep.fingerprint.clone(),
        started: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        userns: nix::sys::stat::fstat(user.as_raw_fd()).map_or(0, |st| st.st_ino),
        mounts: keep.mounts.clone(),
        shape: keep.shape.clone(),
    };
    // Runtime state: renamed into place whole, but not fsynced (it means nothing after a reboot).
    let state_file = keep.run_dir.join("state.json");
    crate::atomic::write(
        &state_file,
        &serde_json::to_vec(&state)?,
        0o644,
        crate::atomic::Durability::Volatile,
    )
    .with_context(|| format!("cannot write `{}`", state_file.display()))?;
    let _ = nix::unistd::chown(&state_file, uid, gid);
    Ok(())
}

/// Serves the env until it stops; `status` (the starter's socket) learns "ok" and the
/// namespaces once the env can be joined, and is its first session. `upper`: the env's own
/// layer, flushed while init ends (see [`flush`]).
pub fn serve(
    keep: &KeepPlan,
    listening: Listening,
    init: Pid,
    [init_mnt, init_pid]: [OwnedFd; 2],
    status: OwnedFd,
    upper: &std::path::Path,
) -> Result<()> {
    // What a session joins, in setns order: the keeper's user, uts and ipc namespaces (init
    // shares them), init's mount namespace, and the pid namespace init is pid 1 of (init sends
    // both: it is not dumpable, so only it may open them).
    let Listening {
        user,
        uts,
        ipc,
        listener,
    } = listening;
    let namespaces: Vec<OwnedFd> = vec![user, init_mnt, uts, ipc, init_pid];
    let ns_raw: Vec<std::os::fd::RawFd> = namespaces.iter().map(|f| f.as_raw_fd()).collect();
    // Up: the starter's socket becomes the first session; leave its terminal.
    let starter = UnixStream::from(status);
    let mut sessions: Vec<UnixStream> = Vec::new();
    if super::sys::send_fds(&starter, b"ok", &ns_raw).is_ok() {
        sessions.push(starter);
    }
    let _ = nix::unistd::setsid();
    detach_stdio();

    let (mut persistent, mut stopping) = (keep.persist, false);
    let linger = Duration::from_millis(keep.linger_ms);
    // Since when no session is in the env (and until when it lingers, for `dev ps`).
    let mut idle: Option<(std::time::Instant, SystemTime)> = None;
    let mut withdrawn = false;
    loop {
        let wait = idle.map_or(POLL, |(since, _)| {
            POLL.min(linger.saturating_sub(since.elapsed()))
        });
        drop_hung_up(&mut sessions, Some(&listener), poll_timeout(wait));
        // Before any request is answered: `dev ps` right after the last session left sees
        // the env lingering.
        let mark_idle = |idle: &mut Option<_>, sessions: &[UnixStream], persistent: bool| {
            if !sessions.is_empty() || persistent {
                *idle = None;
            } else if idle.is_none() {
                *idle = Some((std::time::Instant::now(), SystemTime::now() + linger));
            }
        };
        mark_idle(&mut idle, &sessions, persistent);
        while let Ok((stream, _)) = listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            let _ = reader.read_line(&mut line);
            let reply = |text: &str| {
                let _ = (&stream).write_all(text.as_bytes());
            };
            match line.trim() {
                // (A session asked for after a retire gets nothing: it starts the env anew.)
                SESSION if !stopping && super::sys::send_fds(&stream, b"ok", &ns_raw).is_ok() => {
                    sessions.push(stream);
                    idle = None;
                }
                PERSIST if !stopping => {
                    persistent = true;
                    idle = None;
                    reply("ok\n");
                }
                STOP => {
                    stopping = true;
                    reply("ok\n");
                }
                RETIRE if stopping || (sessions.is_empty() && !persistent) => {
                    // Withdrawn before the answer: the asker's next look finds the env stopped.
                    stopping = true;
                    withdraw(keep);
                    withdrawn = true;
                    reply("ok\n");
                }
                RETIRE => reply("busy\n"),
                STATUS => {
                    let until = idle.map(|(_, until)| {
                        until
                            .duration_since(UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64())
                    });
                    reply(&format!(
                        "{}\n",
                        serde_json::json!({
                            "sessions": sessions.len(),
                            "persistent": persistent,
                            "lingers_until": until,
                        })
                    ));
                }
                _ => {}
            }
        }
        let ended = !matches!(
            waitpid(init, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        );
        mark_idle(&mut idle, &sessions, persistent);
        let lingered = idle.is_some_and(|(since, _)| since.elapsed() >= linger);
        if ended || stopping || lingered {
            // No new session from here on: they see the env as stopped and start another.
            // Init is told first: it ends while the runtime files are removed (the next start
            // waits for the env's lock, which goes once init's mounts are gone).
            drop(listener);
            if !ended {
                let _ = kill(init, Signal::SIGTERM);
            }
            if !withdrawn {
                withdraw(keep);
            }
            if !ended {
                flush(upper);
                let _ = waitpid(init, None);
            }
            break;
        }
    }
    // A session's `dev` is in the env's mount namespace but not in its pid namespace: init's
    // end does not end it, and until it exits, the env's layer stays mounted there. The kernel
    // ends init only once that `dev` has reaped its command, and it exits right after, but it
    // may be slow to (a loaded machine): the env's lock, which lets the next start mount the
    // layer, goes only once it has hung up, which it does as it exits, after it has left the
    // namespace (see `join::join`).
    drop(namespaces);
    let deadline = std::time::Instant::now() + SESSIONS_LEAVE;
    while !sessions.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        drop_hung_up(&mut sessions, None, poll_timeout(left));
    }
    Ok(())
}

/// Flushes the file system of the env's layer `upper` (syncfs(2)) while init ends: overlayfs
/// flushes it as it is unmounted, and until then the env's lock, which the next start waits
/// for, is held. Done now, that flush finds little left to write.
fn flush(upper: &std::path::Path) {
    if let Ok(dir) = std::fs::File::open(upper) {
        let _ = rustix::fs::syncfs(&dir);
    }
}

/// How long the keeper of an env that ended waits for its sessions' `dev`s to leave.
const SESSIONS_LEAVE: Duration = Duration::from_secs(2);

/// How often the keeper looks whether init is still there.
const POLL: Duration = Duration::from_millis(250);

fn poll_timeout(d: Duration) -> PollTimeout {
    // At least 1 ms: 0 would not wait at all, and the deadline is checked after the poll.
    let ms = u16::try_from(d.as_millis()).unwrap_or(u16::MAX);
    PollTimeout::from(ms.max(1))
}

/// Waits up to `timeout` for a session to hang up (or, with `listener`, a connection), and
/// drops the sessions that hung up. A session sends nothing after its first line: readable
/// means it hung up.
fn drop_hung_up(
    sessions: &mut Vec<UnixStream>,
    listener: Option<&UnixListener>,
    timeout: PollTimeout,
) {
    let mut fds: Vec<PollFd> = listener
        .iter()
        .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
        .collect();
    let first = fds.len();
    fds.extend(
        sessions
            .iter()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN)),
    );
    let _ = poll(&mut fds, timeout);
    let gone: Vec<bool> = fds[first..]
        .iter()
        .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
        .collect();
    drop(fds);
    let mut i = 0;
    sessions.retain(|_| {
        i += 1;
        !gone[i - 1]
    });
}

/// The keeper's stdio no longer belongs to a terminal.
pub fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
}

/// Sends one request to a running env's keeper and returns its one-line answer.
pub fn request(run_dir: &std::path::Path, what: &str) -> Result<String> {
    let mut stream = UnixStream::connect(run_dir.join("control.sock"))
        .context("cannot reach the env's keeper")?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{what}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    Ok(line.trim().to_string())
}
