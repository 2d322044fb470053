//! The command's terminal. When `dev`'s stdin and stdout are a terminal, the command gets a
//! pseudo-terminal of the env's own devpts (opened in the env's mount namespace) as the
//! controlling terminal of a session of its own, and `dev` relays it to the user's terminal:
//! raw mode while it runs, the window size at the start and on SIGWINCH, every byte of output
//! before `dev` exits, the user's modes back however the session ends. Otherwise the command
//! gets a session of its own with no controlling terminal. Either way nothing in the env has
//! the user's terminal as its controlling terminal, so nothing there can push input into it
//! (TIOCSTI), and with a pty nothing there holds it at all. No `unsafe` here (see `sys`).

use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::init::{exit_code, Forward};
use super::sys;

/// What a one-shot session's init sends `dev` with the pty's master.
pub const MASTER: &[u8] = b"pty";

/// Whether a session's command gets a pseudo-terminal: `dev`'s stdin and stdout are terminals.
/// With its output piped or in a file, the command writes there itself, byte for byte, and the
/// user's terminal is not put into raw mode under a pager that reads it.
pub fn wanted() -> bool {
    io::stdin().is_terminal() && io::stdout().is_terminal()
}

/// The command's pseudo-terminal, made in the env.
pub struct Pty {
    pub master: OwnedFd,
    /// The command's side: its stdin and stdout, and its stderr where `dev`'s is a terminal.
    pub slave: OwnedFd,
}

impl Pty {
    /// Opens a pseudo-terminal of the env's devpts for a command that runs as `owner` (uid,
    /// gid: it may open its terminal by name, as `GPG_TTY` does), with the user's terminal's
    /// modes and window size.
    pub fn open(owner: (u32, u32)) -> Result<Pty> {
        let master = sys::open_ptmx().context("cannot open the env's /dev/pts/ptmx")?;
        let slave = sys::open_pty_peer(&master).context("cannot open a pseudo-terminal")?;
        if nix::unistd::geteuid().as_raw() != owner.0 {
            nix::unistd::fchown(
                slave.as_raw_fd(),
                Some(owner.0.into()),
                Some(owner.1.into()),
            )
            .context("cannot give the command its pseudo-terminal")?;
        }
        if let Ok(modes) = tcgetattr(io::stdin()) {
            let _ = tcsetattr(&slave, SetArg::TCSANOW, &modes);
        }
        copy_window_size(&master);
        Ok(Pty { master, slave })
    }

    /// Whether the command's stderr is its terminal too (else it is `dev`'s, a file or a pipe).
    pub fn for_stderr() -> bool {
        io::stderr().is_terminal()
    }
}

/// The user's terminal's size onto the command's.
fn copy_window_size(master: &OwnedFd) {
    if let Ok(ws) = sys::window_size(io::stdin().as_fd()) {
        let _ = sys::set_window_size(master.as_fd(), &ws);
    }
}

/// The user's terminal (`dev`'s stdin): its modes as the session found them, put back when
/// this is dropped if they changed (raw mode, or a relay that was killed before it restored).
pub struct UserTerminal {
    saved: Termios,
}

impl UserTerminal {
    /// The terminal's modes now; `None` when stdin is not a terminal.
    pub fn save() -> Option<UserTerminal> {
        tcgetattr(io::stdin())
            .ok()
            .map(|saved| UserTerminal { saved })
    }

    /// Raw mode: every key goes to the command's terminal as it is typed. (Where that fails,
    /// the relay goes on: keys then come line by line.)
    fn make_raw(&self) {
        let mut raw = self.saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(io::stdin(), SetArg::TCSADRAIN, &raw);
    }
}

impl Drop for UserTerminal {
    fn drop(&mut self) {
        if tcgetattr(io::stdin()).is_ok_and(|now| now != self.saved) {
            let _ = tcsetattr(io::stdin(), SetArg::TCSADRAIN, &self.saved);
        }
    }
}

/// Where the relay gets the command's pty.
pub enum Master {
    /// Opened by this process.
    Here(OwnedFd),
    /// Sent by init over this socket ([`MASTER`]) once the command runs; nothing (the socket
    /// closes) when it has none.
    From(UnixStream),
}

/// Waits for `child` (the command, or the helper whose init runs it), passing signals on as
/// `forward` says, while it relays the command's pty to the user's terminal: raw mode from the
/// moment the pty is here, keystrokes in, output out, the window size on SIGWINCH. Returns the
/// child's exit code once it ended and its output is all written; the user's terminal is as it
/// was.
pub fn relay(master: Master, child: Pid, signals: &SigSet, forward: Forward) -> Result<i32> {
    let terminal = UserTerminal::save();
    // SIGCONT too: a shell that lets a stopped `dev` go on need not give it raw mode back.
    let mut set = *signals;
    set.add(Signal::SIGCONT);
    set.thread_block().context("cannot block signals")?;
    let sigfd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("cannot wait for signals")?;
    let mut relay = Relay {
        master: None,
        incoming: None,
        input: Vec::new(),
        stdin_open: false,
        output_open: false,
    };
    match master {
        Master::Here(m) => relay.take(m, terminal.as_ref()),
        Master::From(s) => relay.incoming = Some(s),
    }
    let code = loop {
        if let Some(code) = reaped(child)? {
            break code;
        }
        let ready = relay.wait(&sigfd)?;
        if ready.signals {
            while let Some(info) = sigfd.read_signal().context("cannot read signals")? {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                match (sig, &relay.master) {
                    // The command's terminal is resized, which signals its foreground job.
                    (Signal::SIGWINCH, Some(m)) => copy_window_size(m),
                    (Signal::SIGCONT, Some(m)) => Relay::take_again(m, terminal.as_ref()),
                    (Signal::SIGWINCH | Signal::SIGCONT, None) => {}
                    _ => {
                        let sent = info.ssi_code == nix::libc::SI_USER
                            || info.ssi_code == nix::libc::SI_QUEUE;
                        pass_on(child, sig, sent, forward);
                    }
                }
            }
        }
        relay.pump(&ready, terminal.as_ref())?;
    };
    // Init sent the pty before the command ran, and the helper is gone: it is in the socket.
    if let Some(m) = relay.incoming.take().and_then(|s| receive(&s)) {
        relay.master = Some(m);
        relay.output_open = true;
    }
    relay.drain();
    drop(terminal);
    Ok(code)
}

/// The pty's master from init, or `None` once the socket closed without one.
fn receive(socket: &UnixStream) -> Option<OwnedFd> {
    match sys::recv_fds(socket) {
        Ok((word, mut fds)) if word == MASTER && fds.len() == 1 => fds.pop(),
        _ => None,
    }
}

/// `child`'s exit code once it ended.
fn reaped(child: Pid) -> Result<Option<i32>> {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(status) => {
                if let Some(code) = exit_code(status) {
                    return Ok(Some(code));
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => return Err(anyhow::anyhow!("the sandbox's process disappeared")),
            Err(e) => return Err(e).context("cannot wait for the sandbox"),
        }
    }
}

/// The relay's state: the pty's master once it is here, the socket it comes on until then,
/// keystrokes not yet written to it.
struct Relay {
    master: Option<OwnedFd>,
    incoming: Option<UnixStream>,
    input: Vec<u8>,
    /// Keystrokes are read (the pty is here and the user's terminal did not hang up).
    stdin_open: bool,
    /// The master is read (some process still has the command's terminal open).
    output_open: bool,
}

/// What [`Relay::wait`] found ready.
#[derive(Default)]
struct Ready {
    signals: bool,
    incoming: bool,
    output: bool,
    writable: bool,
    keys: bool,
}

/// How much is moved at a time.
const CHUNK: usize = 16 * 1024;
/// How long the drain after the command's exit waits for output still on its way, at most,
/// and for how long a quiet terminal ends it.
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_millis(500);
const DRAIN_QUIET: std::time::Duration = std::time::Duration::from_millis(50);

impl Relay {
    /// The pty is here: the user's terminal goes into raw mode, so every key (^C, ^Z, ^D
    /// included) goes to the command's terminal, whose line discipline acts on it.
    fn take(&mut self, master: OwnedFd, terminal: Option<&UserTerminal>) {
        // (Again the window size: a resize between init's copy and now.)
        Self::take_again(&master, terminal);
        self.master = Some(master);
        self.stdin_open = true;
        self.output_open = true;
    }

    /// Raw mode and the window size (again, after `dev` was stopped).
    fn take_again(master: &OwnedFd, terminal: Option<&UserTerminal>) {
        copy_window_size(master);
        if let Some(t) = terminal {
            t.make_raw();
        }
    }

    /// Waits until a signal comes, the pty comes, a key is pressed, the command wrote, or its
    /// terminal can take the keystrokes not yet written.
    fn wait(&self, sigfd: &SignalFd) -> Result<Ready> {
        let stdin = io::stdin();
        let readable = PollFlags::POLLIN;
        let mut fds = vec![PollFd::new(sigfd.as_fd(), readable)];
        let incoming = self.incoming.as_ref().map(|s| {
            fds.push(PollFd::new(s.as_fd(), readable));
            fds.len() - 1
        });
        let master = self.master.as_ref().and_then(|m| {
            let mut events = PollFlags::empty();
            if self.output_open {
                events |= PollFlags::POLLIN;
            }
            if !self.input.is_empty() {
                events |= PollFlags::POLLOUT;
            }
            (!events.is_empty()).then(|| {
                fds.push(PollFd::new(m.as_fd(), events));
                fds.len() - 1
            })
        });
        let keys = (self.stdin_open && self.input.is_empty()).then(|| {
            fds.push(PollFd::new(stdin.as_fd(), readable));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(Ready::default()),
            Err(e) => return Err(e).context("cannot wait for the terminal"),
        }
        let got = |i: Option<usize>, what: PollFlags| {
            i.and_then(|i| fds[i].revents())
                .is_some_and(|r| r.intersects(what))
        };
        // Hung up or in error counts as ready: the read or write says which.
        let gone = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
        Ok(Ready {
            signals: got(Some(0), readable),
            incoming: got(incoming, readable | gone),
            output: self.output_open && got(master, readable | gone),
            writable: !self.input.is_empty() && got(master, PollFlags::POLLOUT | gone),
            keys: got(keys, readable | gone),
        })
    }

    /// Moves what is ready: the pty from init, the command's output to the user, keystrokes to
    /// the command. Nothing here blocks but writing to the user's terminal.
    fn pump(&mut self, ready: &Ready, terminal: Option<&UserTerminal>) -> Result<()> {
        if ready.incoming {
            let master = self.incoming.take().and_then(|s| receive(&s));
            if let Some(m) = master {
                self.take(m, terminal);
            }
        }
        if ready.output {
            self.output();
        }
        if ready.keys {
            let mut buf = [0u8; CHUNK];
            match nix::unistd::read(io::stdin().as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => self.input.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                // The user's terminal hung up: so does the command's (its session gets SIGHUP
                // as the master closes).
                _ => self.hang_up(),
            }
        }
        if ready.writable || !self.input.is_empty() {
            self.write_keys();
        }
        Ok(())
    }

    /// Passes on what the command wrote (a chunk: the loop comes back for more).
    fn output(&mut self) {
        let Some(m) = &self.master else { return };
        let mut buf = [0u8; CHUNK];
        match nix::unistd::read(m.as_raw_fd(), &mut buf) {
            Ok(n) if n > 0 => {
                if write_out(&buf[..n]).is_err() {
                    // The user's terminal is gone.
                    self.hang_up();
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            // EIO: no process has the command's terminal open any more.
            _ => {
                self.output_open = false;
                self.stdin_open = false;
                self.input.clear();
            }
        }
    }

    /// Writes pending keystrokes to the command's terminal, as much as it takes now.
    fn write_keys(&mut self) {
        let Some(m) = &self.master else {
            self.input.clear();
            return;
        };
        match nix::unistd::write(m, &self.input) {
            Ok(n) => {
                self.input.drain(..n);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => self.input.clear(),
        }
    }

    fn hang_up(&mut self) {
        self.master = None;
        self.stdin_open = false;
        self.output_open = false;
        self.input.clear();
    }

    /// After the command ended: what it wrote and the relay did not pass on yet (up to what
    /// a terminal buffers, many times over: a process left in a running env may go on writing).
    /// The kernel passes what the command wrote last to the master from a work queue: read
    /// right after its exit, the master may say EAGAIN with the tail still on its way (the
    /// last lines were lost under load). So an EAGAIN waits a little for more, or for the
    /// hang-up (EIO: nobody holds the other side any more), within a bounded time.
    fn drain(&mut self) {
        let Some(m) = self.master.as_ref().filter(|_| self.output_open) else {
            return;
        };
        let deadline = std::time::Instant::now() + DRAIN_FOR;
        let mut buf = [0u8; CHUNK];
        for _ in 0..64 {
            match nix::unistd::read(m.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    if write_out(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    let wait =
                        PollTimeout::try_from(left.min(DRAIN_QUIET)).unwrap_or(PollTimeout::ZERO);
                    let mut fds = [PollFd::new(m.as_fd(), PollFlags::POLLIN)];
                    // Nothing more within the quiet time (a process left in the env holds
                    // the terminal, writing nothing): everything written so far is out.
                    if !matches!(poll(&mut fds, wait), Ok(n) if n > 0) {
                        return;
                    }
                }
                // EIO: nobody can write more, and all of it was read.
                _ => return,
            }
        }
    }
}

/// Writes all of `bytes` to the user's terminal (dev's stdout), waiting while it cannot take
/// more (it is shared with the user's shell, which may have left it non-blocking).
fn write_out(mut bytes: &[u8]) -> io::Result<()> {
    let stdout = io::stdout();
    while !bytes.is_empty() {
        match nix::unistd::write(stdout.as_fd(), bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::NONE);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Passes `sig` on to `child` as `forward` says (`sent`: a process sent it to this one).
pub fn pass_on(child: Pid, sig: Signal, sent: bool, forward: Forward) {
    match (sig, forward) {
        (Signal::SIGCHLD, _) | (Signal::SIGWINCH, Forward::All { resize: false }) => {}
        _ if sent => {
            let _ = kill(child, sig);
        }
        // The kernel's (the user's terminal's ^C): to the command's whole process group, as the
        // terminal would have sent it (the command leads the group of its session).
        (_, Forward::All { .. }) => {
            let _ = kill(Pid::from_raw(-child.as_raw()), sig);
        }
        (_, Forward::Sent) => {}
    }
}
