//! The system calls the sandbox makes: mounts (through the [`Sys`] trait, so plans run against a
//! recording fake in tests), fork, signal waits and the last steps before `exec`.
//! The only module of `dev` with `unsafe`; each block says why it is sound.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, Context, Result};
use nix::libc;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{chdir, pivot_root, ForkResult};

use super::plan::Flag;

/// What init's mount plan needs from the kernel.
pub trait Sys {
    /// A detached copy of a mount tree.
    type Tree;
    fn clone_tree(&mut self, source: &Path, readonly: bool) -> Result<Self::Tree>;
    fn pivot_root(&mut self, root: &Path) -> Result<()>;
    fn mkdir_all(&mut self, path: &Path, mode: u32) -> Result<()>;
    fn create_file(&mut self, path: &Path) -> Result<()>;
    fn mount(&mut self, fstype: &str, target: &Path, flags: &[Flag], data: &str) -> Result<()>;
    fn attach(&mut self, tree: &Self::Tree, target: &Path) -> Result<()>;
    fn symlink(&mut self, target: &Path, link: &Path) -> Result<()>;
}

/// The real kernel.
pub struct Linux;

// From <linux/mount.h>; the libc crate does not export them on every target yet.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: u64 = 1;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| anyhow!("path `{}` has a NUL byte", p.display()))
}

fn ms_flags(flags: &[Flag]) -> MsFlags {
    flags.iter().fold(MsFlags::empty(), |acc, f| {
        acc | match f {
            Flag::NoSuid => MsFlags::MS_NOSUID,
            Flag::NoDev => MsFlags::MS_NODEV,
            Flag::NoExec => MsFlags::MS_NOEXEC,
            Flag::ReadOnly => MsFlags::MS_RDONLY,
        }
    })
}

impl Sys for Linux {
    type Tree = OwnedFd;

    fn clone_tree(&mut self, source: &Path, readonly: bool) -> Result<OwnedFd> {
        let path = cpath(source)?;
        let flags =
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
        // SAFETY: open_tree(2) reads a NUL-terminated path that outlives the call and returns a
        // new file descriptor, or -1, which is checked before the fd is owned.
        let fd =
            unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("cannot clone the mount of `{}`", source.display()));
        }
        // SAFETY: fd is a fresh descriptor returned by the kernel and owned by nobody else.
        let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        if readonly {
            let attr = MountAttr {
                attr_set: MOUNT_ATTR_RDONLY,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            let empty = c"";
            // SAFETY: mount_setattr(2) reads `attr` (size passed) and an empty path, both live
            // for the call; the fd is valid because `tree` owns it.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_mount_setattr,
                    tree.as_raw_fd(),
                    empty.as_ptr(),
                    (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
                    &attr as *const MountAttr,
                    std::mem::size_of::<MountAttr>(),
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("cannot make `{}` read-only", source.display()));
            }
        }
        Ok(tree)
    }

    fn pivot_root(&mut self, root: &Path) -> Result<()> {
        // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the
        // new root, with no directory of the old one to reach it through (as runc does).
        chdir(root).with_context(|| format!("cannot enter `{}`", root.display()))?;
        pivot_root(".", ".").context("cannot pivot into the root filesystem")?;
        umount2(".", MntFlags::MNT_DETACH).context("cannot detach the host's root")?;
        chdir("/").context("cannot enter the new root")?;
        Ok(())
    }

    fn mkdir_all(&mut self, path: &Path, mode: u32) -> Result<()> {
        // Most mount points are in the image: one lookup, not a failed mkdir and then a lookup
        // (each a walk through an overlay whose caches are cold).
        if path.is_dir() {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .with_context(|| {
                format!(
                    "cannot create the mount point `{}` in the image",
                    path.display()
                )
            })
    }

    fn create_file(&mut self, path: &Path) -> Result<()> {
        use nix::sys::stat::{mknod, Mode, SFlag};
        if path.exists() {
            return Ok(());
        }
        let make = || mknod(path, SFlag::S_IFREG, Mode::from_bits_truncate(0o644), 0);
        let made = match make() {
            // A dangling symlink (`/etc/resolv.conf` → `/run/...`): replace it by a file to
            // mount on.
            Err(nix::errno::Errno::EEXIST) => {
                std::fs::remove_file(path).ok();
                make()
            }
            Err(nix::errno::Errno::ENOENT) => {
                if let Some(parent) = path.parent() {
                    self.mkdir_all(parent, 0o755)?;
                }
                make()
            }
            r => r,
        };
        made.with_context(|| {
            format!(
                "cannot create the mount point `{}` in the image",
                path.display()
            )
        })
    }

    fn mount(&mut self, fstype: &str, target: &Path, flags: &[Flag], data: &str) -> Result<()> {
        // Before the pivot a symlink in the image would point the mount at the host's tree.
        if target
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            anyhow::bail!(
                "the image's `{}` is a symlink; cannot mount {fstype} there",
                target.display()
            );
        }
        mount(
            Some(fstype),
            target,
            Some(fstype),
            ms_flags(flags),
            Some(data),
        )
        .with_context(|| format!("cannot mount {fstype} on `{}`", target.display()))
    }

    fn attach(&mut self, tree: &OwnedFd, target: &Path) -> Result<()> {
        let to = cpath(target)?;
        let empty = c"";
        // SAFETY: move_mount(2) reads two NUL-terminated paths that live for the call; `tree` is
        // a valid descriptor from open_tree.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("cannot mount onto `{}`", target.display()));
        }
        Ok(())
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> Result<()> {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                Err(e).with_context(|| format!("cannot create `{}`", link.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Forks the calling process.
pub fn fork() -> Result<ForkResult> {
    // SAFETY: only the single-threaded helper and init call this (the helper is a fresh exec of
    // `dev` that starts no thread; init is its fork), so the child cannot inherit a lock held by
    // another thread.
    unsafe { nix::unistd::fork() }.context("cannot fork")
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
    // SAFETY: as for `fork` above: the caller is single-threaded.
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
    // the caller is single-threaded (as for `fork` above), so the child inherits no lock held
    // by another thread. `args` lives for the call and its size is passed.
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

/// Starts `a.program` by posix_spawn: the child shares this process's memory until it execs,
/// so nothing is copied. It starts in a session of its own with no controlling terminal, no
/// blocked signal and SIGPIPE at its default; ids, capabilities and descriptors are this
/// process's (see [`clean_for_exec`]).
pub fn spawn_clean(a: &SpawnArgs) -> io::Result<nix::unistd::Pid> {
    let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let cstr = |s: &[u8]| CString::new(s).map_err(invalid);
    let program = cstr(a.program.as_os_str().as_bytes())?;
    let cwd = cstr(a.cwd.as_os_str().as_bytes())?;
    let argv = a
        .argv
        .iter()
        .map(|s| cstr(s.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let env = a
        .env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
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
    let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let cstr = |s: &[u8]| CString::new(s).map_err(invalid);
    let program = cstr(a.program.as_os_str().as_bytes())?;
    let cwd = cstr(a.cwd.as_os_str().as_bytes())?;
    let argv = a
        .argv
        .iter()
        .map(|s| cstr(s.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let env = a
        .env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
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

/// Opens the pseudo-terminal multiplexer of the devpts at /dev/pts in this mount namespace (the
/// env's own instance), for reading and writing, non-blocking. No symlink is followed on the
/// way: in a running env, its root can make /dev/pts or ptmx a link, and /dev/tty there is the
/// caller's own terminal. Refused unless what opened is a ptmx device (5:2), which only a
/// devpts has (the env cannot make device nodes).
pub fn open_ptmx() -> io::Result<OwnedFd> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(libc::AT_FDCWD, "/dev/pts/ptmx", how)?;
    // SAFETY: fd is a fresh descriptor returned by the kernel and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    let rdev = st.st_rdev;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || nix::sys::stat::major(rdev) != 5
        || nix::sys::stat::minor(rdev) != 2
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "/dev/pts/ptmx is not a pseudo-terminal multiplexer",
        ));
    }
    Ok(fd)
}

/// The other side of the pseudo-terminal `master`, unlocked and opened through the master
/// (TIOCGPTPEER, Linux 4.13), not by its name under /dev/pts; close-on-exec, not a controlling
/// terminal of this process.
pub fn open_pty_peer(master: &OwnedFd) -> io::Result<OwnedFd> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int, which lives for the call (ioctl_tty(2)).
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags as its integer argument and returns a new
    // descriptor or -1 (ioctl_tty(2)).
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor returned by the kernel and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A terminal's window size (TIOCGWINSZ).
pub fn window_size(tty: std::os::fd::BorrowedFd<'_>) -> io::Result<libc::winsize> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it (ioctl_tty(2)).
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is valid for the call.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ws)
}

/// Sets a terminal's window size (TIOCSWINSZ); the kernel sends SIGWINCH to its foreground
/// process group when it changed.
pub fn set_window_size(tty: std::os::fd::BorrowedFd<'_>, ws: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads the winsize, which lives for the call (ioctl_tty(2)).
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The socket a re-executed helper was given by [`spawn_helper`](super::spawn::spawn_helper)'s
/// caller as descriptor `fd` (inherited across exec), if it is one.
pub fn take_inherited_socket(fd: std::os::fd::RawFd) -> Option<OwnedFd> {
    let st = nix::sys::stat::fstat(fd).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    // SAFETY: the parent passed this descriptor for this process to take, once, and nothing
    // else in it refers to it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// No inheritable or ambient capabilities, and every descriptor but 0, 1 and 2 closed on exec:
/// [`clean_exec`]'s steps but the signal mask. Taken by this process itself before
/// [`spawn_clean`] (which clears the child's mask), it is for a process that execs nothing
/// itself and only waits for that command. Async-signal-safe; allocates nothing.
pub fn clean_for_exec() -> io::Result<()> {
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    set_inheritable(false)?;
    // SAFETY: close_range(2) with integer arguments; CLOEXEC keeps std's own exec-error pipe
    // working until exec closes every marked descriptor at once.
    if unsafe {
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clears the signal mask (std's `Command` keeps it when a `pre_exec` hook is set).
fn unblock_signals() -> io::Result<()> {
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

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets the inheritable capabilities to the permitted ones (`keep`) or to none; returns the
/// permitted set as two 32-bit words.
fn set_inheritable(keep: bool) -> io::Result<[u32; 2]> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget(2)/capset(2) read the header and read or write two CapData structs, the
    // layout _LINUX_CAPABILITY_VERSION_3 defines; all live on this stack frame.
    unsafe {
        if libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        for d in &mut data {
            d.inheritable = if keep { d.permitted } else { 0 };
        }
        if libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok([data[0].permitted, data[1].permitted])
}

/// `cmd` gets `signal` when the process that started it dies.
pub fn die_with_parent(cmd: &mut Command, signal: Signal) {
    let sig = signal as libc::c_int;
    // SAFETY: the hook makes one async-signal-safe prctl(2) call.
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

/// `cmd` keeps this process's capabilities across `exec` although it runs as a non-root id
/// (fuse-overlayfs under a single-id map, where the only id inside is the user's own).
pub fn keep_capabilities(cmd: &mut Command) {
    let hook = || -> io::Result<()> {
        let permitted = set_inheritable(true)?;
        for cap in 0..64u32 {
            if permitted[(cap / 32) as usize] & (1 << (cap % 32)) != 0 {
                // SAFETY: prctl(2) with integer arguments only.
                unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE,
                        cap as libc::c_ulong,
                        0,
                        0,
                    )
                };
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls and allocates nothing.
    unsafe { cmd.pre_exec(hook) };
}

/// Whether `path` is a mount point: its device differs from its parent's.
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (path.metadata(), path.join("..").metadata()) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Makes every mount in this (new) mount namespace private, so nothing propagates to the host.
pub fn make_private() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("cannot make the mount namespace private")
}

/// Mounts overlayfs with `options` at `target`; relative layer paths resolve from the cwd.
pub fn mount_overlay(options: &str, target: &Path) -> nix::Result<()> {
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options),
    )
}

/// Bind-mounts `path` onto itself, so it can be the root of a pivot.
pub fn bind_self(path: &Path) -> Result<()> {
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("cannot bind `{}`", path.display()))
}

pub fn detach(path: &Path) -> nix::Result<()> {
    umount2(path, MntFlags::MNT_DETACH)
}

/// Sends `data` and the descriptors `fds` over a unix socket (SCM_RIGHTS).
pub fn send_fds(sock: &impl AsRawFd, data: &[u8], fds: &[std::os::fd::RawFd]) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .context("cannot pass the env's namespaces")?;
    Ok(())
}

/// Receives what [`send_fds`] sent: the bytes and the descriptors.
pub fn recv_fds(sock: &impl AsRawFd) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = vec![0u8; 4096];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 8]);
    let (n, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .context("cannot receive the env's namespaces")?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().context("bad control message")? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: SCM_RIGHTS descriptors are new in this process and owned by nobody else.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (msg.bytes, fds)
    };
    buf.truncate(n);
    Ok((buf, fds))
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
