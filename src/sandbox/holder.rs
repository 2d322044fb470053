//! The user namespace a holder process keeps between starts, as podman's pause process does:
//! newuidmap and newgidmap map it once, and a later start's helper joins it and creates the
//! env's own user namespace beneath it, mapping the same ids one to one itself (a process of
//! the parent namespace, with its capabilities there, may write any map of the ids that
//! namespace has). No setuid program runs on such a start's path.
//!
//! Each env still has a user namespace of its own: its root has capabilities in it and in what
//! it owns (the env's mount, pid, uts and ipc namespaces), never in the holder's, which owns
//! every env's. The holder is `dev __userns-hold`: no descriptor, no environment, no terminal,
//! `/` as its directory, in the user's own mount namespace. It leaves once its record has gone
//! unused for the linger time (`userns-linger` in config.toml).
//!
//! Its record, `$XDG_RUNTIME_DIR/dev/userns-holder`, names its pid, its start time and its user
//! namespace's inode; a start joins only a process that matches all three, is in this
//! process's mount namespace (an env's processes never are) and whose maps are the user's.

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;

use super::sys;
use super::sys::ns::CloneFlags;
use crate::ids::{IdMap, Identity, Ownership};
use crate::runtime::ProcId;

/// The hidden subcommand the holder is started as: `dev __userns-hold SECONDS RECORD PID`.
pub const COMMAND: &str = "__userns-hold";

/// Whether a holder is to be left behind (a start mapped its own namespace).
static WANTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long a holder stays unused: config.toml's `userns-linger` (read once per process); none
/// with 0, and then none is joined either.
fn linger() -> Option<Duration> {
    let linger = crate::config::Settings::load()
        .ok()
        .and_then(|s| s.userns_linger)
        .unwrap_or(crate::config::settings::Linger::USERNS_DEFAULT);
    Some(linger.0).filter(|l| !l.is_zero())
}

/// Where the holder's record is: none without a runtime directory (no holder then).
fn record_path() -> Option<PathBuf> {
    dirs::runtime_dir().map(|d| d.join("dev").join("userns-holder"))
}

/// What the record says: the holder's pid and start time (a pid given out again has another)
/// and its user namespace's inode.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    proc: ProcId,
    ns: u64,
}

impl Record {
    fn text(&self) -> String {
        format!("{} {} {}\n", self.proc.pid, self.proc.start, self.ns)
    }

    fn parse(text: &str) -> Option<Record> {
        let mut f = text.trim_end_matches('\n').split(' ');
        let record = Record {
            proc: ProcId {
                pid: f.next()?.parse().ok().filter(|p| *p > 1)?,
                start: f.next()?.parse().ok()?,
            },
            ns: f.next()?.parse().ok()?,
        };
        f.next().is_none().then_some(record)
    }

    /// The record at `path` (not through a symlink, 4 KiB read at most).
    fn read(path: &Path) -> Option<Record> {
        Record::parse(&read_small(path, false)?)
    }
}

/// A small file's text, read at most 4 KiB (the record, `/proc` files: the maps); with
/// `follow` false, never through a symlink.
fn read_small(path: &Path, follow: bool) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    if !follow {
        opts.custom_flags(nix::libc::O_NOFOLLOW);
    }
    let mut text = String::new();
    opts.open(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The lines of a `/proc/PID/uid_map` or `gid_map`, as read from this namespace, sorted.
fn map_lines(text: &str) -> Option<Vec<(u32, u32, u32)>> {
    let mut lines = text
        .lines()
        .map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            match f[..] {
                [inside, outside, count] => Some((inside, outside, count)),
                _ => None,
            }
        })
        .collect::<Option<Vec<_>>>()?;
    lines.sort_unstable();
    Some(lines)
}

/// Whether a namespace's map, as its `/proc/PID/*_map` reads, is `want`.
fn map_is(text: &str, want: &IdMap) -> bool {
    let mut want: Vec<_> = want
        .ranges
        .iter()
        .map(|r| (r.inside, r.outside, r.count))
        .collect();
    want.sort_unstable();
    map_lines(text).is_some_and(|have| have == want)
}

/// The map of the env's namespace beneath the holder's: each id the holder's maps, to itself.
fn one_to_one(map: &IdMap) -> String {
    map.ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.inside, r.count))
        .collect()
}

/// A holder's user namespace, checked, for a helper to join ([`Joined::enter`]).
pub struct Joined {
    ns: OwnedFd,
    uid_map: String,
    gid_map: String,
}

/// The holder's namespace, if a holder of this user's with the maps `identity` has is there and
/// holders are on; its record is touched (the holder stays). Only for the full map.
pub fn find(identity: &Identity) -> Option<Joined> {
    let Ownership::Subordinate {
        uid_map, gid_map, ..
    } = &identity.ownership
    else {
        return None;
    };
    linger()?;
    let path = record_path()?;
    let record = Record::read(&path)?;
    // From here on the pid is the process the descriptor refers to, or the checks below fail.
    let pidfd = sys::process::pidfd_open(Pid::from_raw(record.proc.pid)).ok()?;
    let proc = PathBuf::from(format!("/proc/{}", record.proc.pid));
    let ns = OwnedFd::from(std::fs::File::open(proc.join("ns/user")).ok()?);
    let same_mnt = {
        let (theirs, ours) = (
            std::fs::metadata(proc.join("ns/mnt")).ok()?,
            std::fs::metadata("/proc/self/ns/mnt").ok()?,
        );
        (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino())
    };
    let ns_ino = rustix::fs::fstat(&ns).ok()?.st_ino;
    let ok = same_mnt
        && ns_ino == record.ns
        && record.proc.alive()
        && read_small(&proc.join("uid_map"), true).is_some_and(|m| map_is(&m, uid_map))
        && read_small(&proc.join("gid_map"), true).is_some_and(|m| map_is(&m, gid_map))
        // Still that process: what was opened through /proc was its.
        && sys::process::pidfd_alive(&pidfd);
    if !ok {
        return None;
    }
    let _ = nix::sys::stat::utimensat(
        None,
        &path,
        &nix::sys::time::TimeSpec::UTIME_NOW,
        &nix::sys::time::TimeSpec::UTIME_NOW,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
    Some(Joined {
        ns,
        uid_map: one_to_one(uid_map),
        gid_map: one_to_one(gid_map),
    })
}

impl Joined {
    /// In the helper (a single thread, before its other namespaces): joins the holder's user
    /// namespace, creates one of its own beneath it, and has a child left in the holder's
    /// write that one's maps (its capabilities there allow any map of the ids it has).
    pub fn enter(self) -> Result<()> {
        use std::io::Read;
        sys::ns::setns(&self.ns, CloneFlags::CLONE_NEWUSER)
            .context("cannot join the user namespace `dev __userns-hold` keeps")?;
        drop(self.ns);
        let me = nix::unistd::getpid();
        let (rx, tx) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        match sys::fork()? {
            nix::unistd::ForkResult::Child => {
                drop(tx);
                // The end of the pipe: the parent has unshared (or failed).
                let _ = std::fs::File::from(rx).read(&mut [0u8; 1]);
                let written = std::fs::write(format!("/proc/{me}/uid_map"), &self.uid_map)
                    .and_then(|()| std::fs::write(format!("/proc/{me}/gid_map"), &self.gid_map));
                sys::process::exit_now(if written.is_ok() { 0 } else { 1 })
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(rx);
                let unshared = sys::ns::unshare(CloneFlags::CLONE_NEWUSER);
                drop(tx);
                let status = nix::sys::wait::waitpid(child, None);
                unshared.context("cannot create a user namespace in the held one")?;
                if status != Ok(nix::sys::wait::WaitStatus::Exited(child, 0)) {
                    bail!("cannot write the id maps of the env's user namespace");
                }
                Ok(())
            }
        }
    }
}

/// Asks for a holder to be left behind once this `dev` is gone (see [`leave_behind`]): a start
/// just had newuidmap and newgidmap map a namespace of its own.
pub fn wanted() {
    WANTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// If [`wanted`] (once): starts `dev __userns-hold SECONDS RECORD PID` in a session of its own,
/// with no descriptor or terminal of this one's and no environment but `PATH`, which makes the
/// holder once this process (PID) has ended: off every start's path. Called while this `dev`
/// is still in the host's namespaces (before a session joins an env's) and as it ends. Any
/// failure just leaves no holder.
pub fn leave_behind() {
    use std::process::{Command, Stdio};
    if !WANTED.swap(false, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let (Some(linger), Some(path)) = (linger(), record_path()) else {
        return;
    };
    let argv0 = std::env::args_os().next().unwrap_or_else(|| "dev".into());
    let mut cmd = Command::new("/proc/self/exe");
    {
        use std::os::unix::process::CommandExt;
        cmd.arg0(argv0);
    }
    cmd.arg(COMMAND)
        .arg(format!("{}", linger.as_secs_f64()))
        .arg(path)
        .arg(std::process::id().to_string())
        .env_clear()
        // Only where newuidmap and newgidmap are found.
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    sys::new_session(&mut cmd, false);
    sys::clean_exec(&mut cmd);
    // Not waited for: it outlives this process, which only ends after it.
    let _ = cmd.spawn();
}

/// `dev __userns-hold SECONDS RECORD PID`: once process PID (the `dev` that asked) has ended,
/// forks the holder into a user namespace of its own, has newuidmap and newgidmap map it and
/// writes its record (then this process leaves and the holder, which waited for its record, is
/// re-parented). The holder stays while RECORD names it and was used (touched) in the last
/// SECONDS; then it removes the record, if still its, and leaves.
pub fn hold(seconds: &str, record: &Path, after: &str) -> i32 {
    let Some(linger) = seconds
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
    else {
        return 2;
    };
    let Some(after) = after.parse().ok().filter(|p| *p > 1).map(Pid::from_raw) else {
        return 2;
    };
    wait_for_exit(after);
    let identity = Identity::detect();
    if !identity.has_subordinate() || !super::parent::single_threaded() {
        return 1;
    }
    // (No pipe to the holder: it holds nothing but /dev/null from its first instant on.)
    match sys::fork_in_new_userns() {
        Ok(nix::unistd::ForkResult::Child) => {
            match recorded_as(std::process::id() as i32, record) {
                true => keep(linger, record),
                // The maps failed (this process is killed then) or the record went to another.
                false => 1,
            }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => match recorded(&identity, child, record) {
            Ok(()) => 0,
            Err(_) => {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                1
            }
        },
        Err(_) => 1,
    }
}

/// Waits (up to 10 s) for the record at `path` to name process `me`: its starter writes it
/// once newuidmap and newgidmap have mapped it.
fn recorded_as(me: i32, path: &Path) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if Record::read(path).is_some_and(|r| r.proc.pid == me) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Returns once process `pid` (this one's parent, which started it) has ended.
fn wait_for_exit(pid: Pid) {
    let Ok(pidfd) = sys::process::pidfd_open(pid) else {
        return;
    };
    // A pid given out again after the parent ended is not the parent: it is gone.
    if nix::unistd::getppid() != pid {
        return;
    }
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    while let Err(nix::errno::Errno::EINTR) =
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE)
    {}
}

/// Maps the holder `pid` and writes its record at `path`, in a directory of the user's own.
fn recorded(identity: &Identity, pid: Pid, path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path.parent().context("no directory")?;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create `{}`", dir.display())),
    }
    let st = std::fs::symlink_metadata(dir)?;
    if !st.is_dir() || st.uid() != nix::unistd::getuid().as_raw() || st.mode() & 0o077 != 0 {
        bail!("`{}` is not a directory of the user's own", dir.display());
    }
    super::parent::map_with(identity, pid)?;
    let record = Record {
        proc: ProcId::of(pid.as_raw()).context("the holder is gone")?,
        ns: std::fs::metadata(format!("/proc/{pid}/ns/user"))
            .context("the holder is gone")?
            .ino(),
    };
    crate::atomic::write(
        path,
        record.text().as_bytes(),
        0o600,
        crate::atomic::Durability::Volatile,
    )
    .with_context(|| format!("cannot write `{}`", path.display()))
}

/// The holder's life: while `record` names this process and was touched in the last `linger`.
fn keep(linger: Duration, record: &Path) -> i32 {
    let me = std::process::id() as i32;
    loop {
        let used = std::fs::symlink_metadata(record).and_then(|m| m.modified());
        let mine = Record::read(record).is_some_and(|r| r.proc.pid == me);
        let (Ok(used), true) = (used, mine) else {
            return 0;
        };
        let idle = SystemTime::now()
            .duration_since(used)
            .unwrap_or(Duration::ZERO);
        if idle >= linger {
            if Record::read(record).is_some_and(|r| r.proc.pid == me) {
                let _ = std::fs::remove_file(record);
            }
            return 0;
        }
        std::thread::sleep(linger - idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::map::IdRange;

    fn keep_id() -> IdMap {
        IdMap {
            ranges: vec![
                IdRange {
                    inside: 0,
                    outside: 100000,
                    count: 1001,
                },
                IdRange {
                    inside: 1001,
                    outside: 1001,
                    count: 1,
                },
                IdRange {
                    inside: 1002,
                    outside: 101001,
                    count: 64535,
                },
            ],
        }
    }

    #[test]
    fn a_record_is_three_numbers_and_nothing_else() {
        let r = Record {
            proc: ProcId {
                pid: 4242,
                start: 99,
            },
            ns: 4026532000,
        };
        assert_eq!(Record::parse(&r.text()), Some(r));
        for bad in [
            "",
            "4242 99\n",
            "4242 99 4026532000 1\n",
            "1 99 4026532000\n",
            "0 99 4026532000\n",
            "-5 99 4026532000\n",
            "4242  99 4026532000\n",
            "x 99 4026532000\n",
        ] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
    }

    /// The kernel's format (right-aligned columns), in any order, is the map it says; another
    /// range, a missing one or a shifted one is not.
    #[test]
    fn a_holders_map_must_be_the_users() {
        let map = keep_id();
        let proc = "      1001       1001          1\n         0     100000       1001\n      1002     101001      64535\n";
        assert!(map_is(proc, &map));
        assert!(!map_is("         0     100000       1001\n", &map));
        let shifted = proc.replace("101001", "101002");
        assert!(!map_is(&shifted, &map));
        assert!(!map_is(&format!("{proc}     70000     200000 5\n"), &map));
        assert!(!map_is("garbage\n", &map));
    }

    #[test]
    fn the_envs_map_is_the_holders_ids_one_to_one() {
        assert_eq!(
            one_to_one(&keep_id()),
            "0 0 1001\n1001 1001 1\n1002 1002 64535\n"
        );
    }
}
