//! Processes: fork, clone3 into new namespaces, the posix_spawn and vfork-style spawns of the
//! user's command, the hooks a `Command` runs before its exec, the parent-death signal and
//! dumpability.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::libc;
use nix::sys::signal::Signal;
use nix::unistd::ForkResult;

use super::fds::clean_for_exec;
use super::signals::unblock_signals;

/// Forks the calling process.
pub fn fork() -> Result<ForkResult> {
    // SAFETY: a child of a multi-threaded process may only take locks that no other thread held
    // at the fork. Two callers: the helper forking init (the helper has one thread: a fresh
    // exec of `dev` that starts none, or a fork of a `dev` that checked it had one), and
    // `join` forking the process that enters the env when `dev` may have threads left (a
    // registry request left to its read timeout, blocked in the kernel and holding no lock).
    // That child allocates (glibc's malloc is reset in a fork's child) and writes to stderr
    // only after `join` flushed it, while no progress bar is drawing; it takes no other lock.
    unsafe { nix::unistd::fork() }.context("cannot fork")
}

/// Moves `child`, just forked, off this process's CPU when this process may run on another,
/// then lets it run on any CPU it could before (it stays where it was moved). A fork is queued
/// on its parent's CPU when the kernel finds no idler one, and waits there until the parent
/// sleeps: on a 2-core machine that was 18 helpers of 20, each waiting 1.2 ms (median) for a
/// `dev` still preparing its plan, while the other core was idle. Best effort: a failure
/// leaves the child where the kernel put it.
pub fn run_beside(child: nix::unistd::Pid) {
    use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
    let (Ok(allowed), Ok(here)) = (
        sched_getaffinity(nix::unistd::Pid::from_raw(0)),
        sched_getcpu(),
    ) else {
        return;
    };
    let mut others = allowed;
    if others.unset(here).is_err() {
        return;
    }
    let another = (0..CpuSet::count()).any(|cpu| others.is_set(cpu).unwrap_or(false));
    if another && sched_setaffinity(child, &others).is_ok() {
        let _ = sched_setaffinity(child, &allowed);
    }
}

/// fork(2) with the child in a new user namespace from its start (clone3 with CLONE_NEWUSER),
/// so its maps can be written at once, without waiting for the child to run and unshare. Its
/// ids are unmapped until they are. Where clone3 is missing (Linux before 5.3, or a seccomp
/// profile that hides it, as container runtimes' defaults did), the child unshares after a
/// plain fork and this returns once it has.
pub fn fork_in_new_userns() -> io::Result<ForkResult> {
    match clone3(libc::CLONE_NEWUSER) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => fork_then_unshare(),
        r => r,
    }
}

fn fork_then_unshare() -> io::Result<ForkResult> {
    use std::io::{Read, Write};
    let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (mut rx, mut tx) = (std::fs::File::from(rx), std::fs::File::from(tx));
    // SAFETY: the one caller, `parent::Helper::spawn`, checks first that `dev` has a single
    // thread, so the child inherits no lock held by another thread.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            drop(rx);
            // One byte: 0 once unshared, or 1 and the errno.
            match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
                Ok(()) => {
                    let _ = tx.write_all(&[0]);
                    Ok(ForkResult::Child)
                }
                Err(e) => {
                    let mut said = vec![1u8];
                    said.extend((e as i32).to_le_bytes());
                    let _ = tx.write_all(&said);
                    // SAFETY: _exit(2) ends this child at once, without running the parent's
                    // exit handlers twice.
                    unsafe { libc::_exit(1) }
                }
            }
        }
        ForkResult::Parent { child } => {
            drop(tx);
            let mut said = Vec::new();
            let _ = rx.read_to_end(&mut said);
            match said.first() {
                Some(0) => Ok(ForkResult::Parent { child }),
                _ => {
                    let _ = nix::sys::wait::waitpid(child, None);
                    let errno = said
                        .get(1..5)
                        .and_then(|b| b.try_into().ok())
                        .map_or(libc::EPERM, i32::from_le_bytes);
                    Err(io::Error::from_raw_os_error(errno))
                }
            }
        }
    }
}

/// fork(2) with the child in a new pid namespace, its pid 1 (clone3 with CLONE_NEWPID); the
/// caller's later children (fuse-overlayfs) stay in the caller's. ENOSYS where clone3 is
/// missing (see [`fork_in_new_userns`]): then the caller unshares the pid namespace once it
/// starts no other child, and forks.
pub fn fork_in_new_pidns() -> io::Result<ForkResult> {
    clone3(libc::CLONE_NEWPID)
}

/// fork(2) with the child in the new namespaces `flags` names.
fn clone3(flags: libc::c_int) -> io::Result<ForkResult> {
    // struct clone_args as of Linux 5.3 (CLONE_ARGS_SIZE_VER0).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
    }
    let args = CloneArgs {
        flags: flags as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: without CLONE_VM and with no stack, clone3(2) is fork(2) in new namespaces;
    // its callers have one thread (`parent::Helper::spawn` checks it; the helper forking init
    // starts none), so the child inherits no lock held by another thread. `args` lives for
    // the call and its size is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        r if r < 0 => Err(io::Error::last_os_error()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent {
            child: nix::unistd::Pid::from_raw(pid as libc::pid_t),
        }),
    }
}

/// The last steps in the child before `exec` of the user's command: no blocked signals (init
/// blocks them to wait for them), no inheritable or ambient capabilities, and no file
/// descriptor but 0, 1 and 2.
pub fn clean_exec(cmd: &mut Command) {
    let hook = || -> io::Result<()> {
        unblock_signals()?;
        clean_for_exec()
    };
    // SAFETY: the hook only makes async-signal-safe system calls and allocates nothing.
    unsafe { cmd.pre_exec(hook) };
}

/// What [`spawn_clean`] starts.
#[derive(Debug)]
pub struct SpawnArgs {
    pub program: std::path::PathBuf,
    /// `argv[0]` included.
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    pub cwd: std::path::PathBuf,
}

impl SpawnArgs {
    /// The program, working directory, argv and environment as C strings for exec (a NUL
    /// inside any of them is invalid input).
    fn c_strings(&self) -> io::Result<(CString, CString, Vec<CString>, Vec<CString>)> {
        let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
        let cstr = |s: &[u8]| CString::new(s).map_err(invalid);
        let argv = self
            .argv
            .iter()
            .map(|s| cstr(s.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let env = self
            .env
            .iter()
            .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        Ok((
            cstr(self.program.as_os_str().as_bytes())?,
            cstr(self.cwd.as_os_str().as_bytes())?,
            argv,
            env,
        ))
    }
}

/// Starts `a.program` by posix_spawn: the child shares this process's memory until it execs,
/// so nothing is copied. It starts in a session of its own with no controlling terminal, no
/// blocked signal and SIGPIPE at its default; ids, capabilities and descriptors are this
/// process's (see [`clean_for_exec`]).
pub fn spawn_clean(a: &SpawnArgs) -> io::Result<nix::unistd::Pid> {
    let (program, cwd, argv, env) = a.c_strings()?;
    let ptrs = |v: &[CString]| -> Vec<*mut libc::c_char> {
        v.iter()
            .map(|s| s.as_ptr().cast_mut())
            .chain(std::iter::once(std::ptr::null_mut()))
            .collect()
    };
    let (argv_p, env_p) = (ptrs(&argv), ptrs(&env));
    let check = |r: libc::c_int| match r {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    };
    // SAFETY: the attribute and file-action objects are initialised before use and destroyed
    // once; every pointer passed (program, cwd, argv, envp, both sets) points at data that
    // lives on this frame until posix_spawn returns, and both arrays end with a null pointer.
    unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        check(libc::posix_spawnattr_init(&mut attr))?;
        if let Err(e) = check(libc::posix_spawn_file_actions_init(&mut actions)) {
            libc::posix_spawnattr_destroy(&mut attr);
            return Err(e);
        }
        let spawned = (|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &none))?;
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &pipe))?;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
                    | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short
                    | libc::POSIX_SPAWN_SETSID,
            ))?;
            check(libc::posix_spawn_file_actions_addchdir_np(
                &mut actions,
                cwd.as_ptr(),
            ))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &actions,
                &attr,
                argv_p.as_ptr(),
                env_p.as_ptr(),
            ))?;
            Ok(nix::unistd::Pid::from_raw(pid))
        })();
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        spawned
    }
}

/// [`spawn_clean`]'s command on the pseudo-terminal `tty`: its stdin and stdout, its stderr
/// too with `stderr`, and the controlling terminal of a session of its own. posix_spawn cannot
/// ask the child to take a terminal (TIOCSCTTY, which only the session's own process can), and
/// a fork copies this process's page tables (a third of a millisecond for `dev`): so this is
/// what posix_spawn does, a child that shares this process's memory (CLONE_VM) while this
/// process waits for it to exec or fail (CLONE_VFORK), with the terminal steps added.
pub fn spawn_on_terminal(
    a: &SpawnArgs,
    tty: &OwnedFd,
    stderr: bool,
) -> io::Result<nix::unistd::Pid> {
    use std::sync::atomic::{AtomicI32, Ordering};
    let (program, cwd, argv, env) = a.c_strings()?;
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (argv_p, env_p) = (ptrs(&argv), ptrs(&env));
    let tty = tty.as_raw_fd();
    let outputs: &[libc::c_int] = if stderr { &[0, 1, 2] } else { &[0, 1] };
    // The errno of the step that failed in the child, which it writes before it exits.
    let failed = AtomicI32::new(0);
    let child = || -> isize {
        // SAFETY: this runs in the child, on its own stack, in the parent's memory while the
        // parent waits: it only makes async-signal-safe system calls on data prepared above
        // (which lives until the parent resumes), writes nothing but `failed`, and ends in
        // execve or _exit, so it never returns into the parent's frames or runs its exit
        // handlers. The signal mask is the parent's (all blocked, see below) until just before
        // execve; SIGPIPE's disposition is the child's own (no CLONE_SIGHAND).
        unsafe {
            let fail = |failed: &AtomicI32| -> ! {
                failed.store(*libc::__errno_location(), Ordering::SeqCst);
                libc::_exit(127)
            };
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            if libc::setsid() < 0 {
                fail(&failed)
            }
            for &fd in outputs {
                if libc::dup2(tty, fd) < 0 {
                    fail(&failed)
                }
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 || libc::chdir(cwd.as_ptr()) < 0 {
                fail(&failed)
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::execve(program.as_ptr(), argv_p.as_ptr(), env_p.as_ptr());
            fail(&failed)
        }
    };
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: sigset_t is plain data that sigfillset initialises; pthread_sigmask(3) reads it
    // and writes the old mask, both on this frame. With every signal blocked across the clone,
    // no handler of this process runs on the child's stack or in the memory it shares.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    use nix::sched::CloneFlags;
    // SAFETY: see `child` above; CLONE_VFORK keeps this frame (the stack, the strings, the
    // pointer arrays, `failed`) alive and untouched until the child has exec'd or exited.
    let cloned = unsafe {
        nix::sched::clone(
            Box::new(child),
            &mut stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(libc::SIGCHLD),
        )
    };
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    let pid = cloned?;
    match failed.load(Ordering::SeqCst) {
        0 => Ok(pid),
        errno => {
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// `cmd` starts a session of its own (setsid(2)): no terminal's signals and no terminal's
/// input reach it unless it has one of its own. With `terminal`, its stdin, a pseudo-terminal
/// no session has yet, becomes that session's controlling terminal (TIOCSCTTY, ioctl_tty(2)).
pub fn new_session(cmd: &mut Command, terminal: bool) {
    let hook = move || -> io::Result<()> {
        // SAFETY: setsid(2) takes no argument; TIOCSCTTY takes an integer (0: steal from no
        // other session).
        unsafe {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls and allocates nothing.
    unsafe { cmd.pre_exec(hook) };
}

/// `cmd` gets `signal` when the process that started it dies.
pub fn signal_on_parent_death(cmd: &mut Command, signal: Signal) {
    let sig = signal as libc::c_int;
    // SAFETY: the hook clears the signal mask and makes one prctl(2) call, both
    // async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            unblock_signals()?;
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// This process gets `signal` (none: nothing) when the thread that forked it dies.
pub fn pdeathsig(signal: Option<Signal>) -> Result<()> {
    nix::sys::prctl::set_pdeathsig(signal).context("cannot set the parent-death signal")
}

/// This process is killed when the `dev` that started it dies, and fails if it died already
/// (this process was re-parented before it could ask).
pub fn die_with_parent() -> Result<()> {
    pdeathsig(Some(Signal::SIGKILL))?;
    if nix::unistd::getppid().as_raw() == 1 {
        bail!("the parent `dev` is gone");
    }
    Ok(())
}

/// A descriptor that refers to process `pid` for as long as it is held, whatever pid the
/// kernel gives out later (pidfd_open(2), Linux 5.3).
pub fn pidfd_open(pid: nix::unistd::Pid) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open(2) takes a pid and flags (0) and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is new and this is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Whether the process `pidfd` refers to is still running (it may be signalled: signal 0).
pub fn pidfd_alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: pidfd_send_signal(2) with a valid descriptor, signal 0 (only checks), no info.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ) == 0
    }
}

/// Ends this process at once with `code` (_exit(2)): for a fork's child, which must not run
/// the parent's exit handlers or flush its buffers a second time.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) takes an integer and does not return.
    unsafe { libc::_exit(code) }
}

/// No process of another user id, nor `ptrace`, can open this one through /proc.
pub fn not_dumpable() -> Result<()> {
    nix::sys::prctl::set_dumpable(false).context("cannot make init non-dumpable")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forks with `fork` (`how` names it); whether the child, which exits at once, found
    /// `check` true.
    fn child_finds(how: &str, fork: fn() -> io::Result<ForkResult>, check: fn() -> bool) -> bool {
        match fork().unwrap_or_else(|e| panic!("{how}: {e}")) {
            ForkResult::Child => {
                let code = if check() { 0 } else { 1 };
                // SAFETY: the child of a multi-threaded test only makes system calls.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("wait");
                status == nix::sys::wait::WaitStatus::Exited(child, 0)
            }
        }
    }

    /// Both ways into a new user namespace: each child is in one (its ids, unmapped, read as
    /// the overflow id) by the time the parent hears of it.
    #[test]
    fn children_are_born_in_a_new_user_namespace() {
        type Fork = fn() -> io::Result<ForkResult>;
        for (how, fork) in [
            ("clone3", (|| clone3(libc::CLONE_NEWUSER)) as Fork),
            ("fork, then unshare", fork_then_unshare as Fork),
        ] {
            assert!(
                child_finds(how, fork, || nix::unistd::getuid().as_raw() == 65534),
                "{how}: the child's uid was not the overflow id"
            );
        }
    }

    /// A command started on a pty leads a session of its own whose controlling terminal the
    /// pty is (it can open /dev/tty); one that cannot be started is an error, not a child.
    #[test]
    fn a_command_spawned_on_a_pty_has_it_as_its_controlling_terminal() {
        use std::io::Read;
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let script = "set -- $(cat /proc/$$/stat); echo \"pid=$1 sid=$6 tty=$7\" >/dev/tty";
        let mut args = SpawnArgs {
            program: "/bin/sh".into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: "/".into(),
        };
        let pid = spawn_on_terminal(&args, &pty.slave, true).expect("spawn on the pty");
        let status = nix::sys::wait::waitpid(pid, None).expect("wait");
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
        drop(pty.slave);
        let mut said = String::new();
        let _ = std::fs::File::from(pty.master).read_to_string(&mut said);
        let fields: Vec<&str> = said.split_whitespace().collect();
        assert_eq!(fields.len(), 3, "{said:?}");
        assert_eq!(
            fields[0].strip_prefix("pid="),
            fields[1].strip_prefix("sid="),
            "{said:?}"
        );
        assert_ne!(fields[2], "tty=0", "{said:?}");

        args.program = "/nonexistent/program".into();
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let err = spawn_on_terminal(&args, &pty.slave, false).expect_err("no such program");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err:?}");
    }

    /// Init forked ahead (`helper::PendingInit`) is pid 1 of its own pid namespace, and the
    /// parent's next child is not in it.
    #[test]
    fn a_child_forked_into_a_new_pid_namespace_is_its_pid_1() {
        let pid_1 = || nix::unistd::getpid().as_raw() == 1;
        assert!(
            child_finds("clone3", fork_in_new_pidns, pid_1),
            "the child was not pid 1"
        );
        // SAFETY: as above, the child only makes system calls.
        let plain = || unsafe { nix::unistd::fork() }.map_err(io::Error::from);
        assert!(
            !child_finds("fork", plain, pid_1),
            "a plain fork after it was pid 1 too"
        );
    }
}
