//! Signals: waiting for blocked ones, and the mask a child starts with.

use std::io;

use anyhow::{Context, Result};
use nix::libc;
use nix::sys::signal::{SigSet, Signal};

/// Waits for one of the blocked signals in `set`; returns it and whether a process sent it
/// with kill(2) (as opposed to the kernel, e.g. the terminal's Ctrl-C to the whole group).
pub fn wait_signal(set: &SigSet) -> Result<(Signal, bool)> {
    loop {
        // SAFETY: siginfo_t is plain data for which all-zero is valid; sigwaitinfo(2) fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let raw: &libc::sigset_t = set.as_ref();
        // SAFETY: both pointers are valid for the duration of the call.
        let n = unsafe { libc::sigwaitinfo(raw, &mut info) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("cannot wait for signals");
        }
        let sig = Signal::try_from(n).context("unknown signal")?;
        return Ok((
            sig,
            info.si_code == libc::SI_USER || info.si_code == libc::SI_QUEUE,
        ));
    }
}

/// Clears the signal mask (std's `Command` keeps it when a `pre_exec` hook is set).
pub(super) fn unblock_signals() -> io::Result<()> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it and pthread_sigmask(3) reads
    // it; both are async-signal-safe.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        let r = libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
    }
    Ok(())
}
