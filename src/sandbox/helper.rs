//! The helper process of a sandbox (a fork or a re-exec of `dev`): enters the user namespace,
//! creates the mount, uts and ipc namespaces, mounts the root filesystem, starts init in a new
//! pid namespace, waits for it and cleans up. Also the first steps of every helper, the store's
//! included: [`enter_as_helper`] (its user namespace, its maps, root inside).

use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::ForkResult;

use super::parent::userns_hint;
use super::plan::{IdMode, SandboxPlan, Step};
use super::sys::ns::{unshare, CloneFlags};
use super::sys::Sys;
use super::{init, keeper, rootfs, sys};
use crate::ui::UserError;

fn fail(e: anyhow::Error) -> i32 {
    crate::ui::note(crate::ui::render(&e));
    init::SETUP_FAILED
}

/// The re-executed helper (`dev __userns-helper MODE sandbox PLAN`): user namespace, then the
/// sandbox.
pub fn run(mode: IdMode, plan: &SandboxPlan) -> i32 {
    // The socket `dev` relays the command's pty from, when it passed one.
    let dev = std::env::var(TERMINAL_SOCKET_ENV)
        .ok()
        .and_then(|fd| fd.parse().ok())
        .and_then(sys::take_inherited_socket);
    match enter_as_helper(mode).and_then(|()| namespaces(&mut sys::Linux)) {
        Ok(()) => sandbox(plan, dev, None),
        Err(e) => fail(e),
    }
}

/// Names the descriptor of the socket a re-executed helper's init sends the command's pty on.
pub const TERMINAL_SOCKET_ENV: &str = "DEV_TERMINAL_SOCKET";

/// The sandbox's mount, uts and ipc namespaces, owned by the helper's user namespace (which
/// need not be mapped yet), and no mount event shared with the host.
fn namespaces<S: Sys>(sys: &mut S) -> Result<()> {
    sys.unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
        .context("cannot create the sandbox's namespaces")?;
    sys.make_private()
}

/// The forked helper (see `parent::Helper`), born in its own user namespace: the plan from
/// `plan` (a length and the JSON); then one byte once its maps are written (nothing when `dev`
/// no longer needs it: then it leaves quietly); then the sandbox. `status` is the socket to the
/// starter `dev`: a keeper answers on it, a one-shot session's init sends the command's pty
/// on it; `host` its ids on the host. With `held` (the full map), it is not in a user namespace
/// of its own yet: it makes one beneath the holder's and maps it itself, first thing.
pub fn run_pending(
    plan: OwnedFd,
    status: OwnedFd,
    host: (u32, u32),
    held: Option<super::holder::Joined>,
) -> i32 {
    use std::io::Read;
    // Mapped later: by newuidmap and newgidmap, or (a single id) by itself once the plan says.
    // Meanwhile, what needs no ids: its other namespaces.
    let entered = match held {
        Some(held) => die_with_parent().and_then(|()| held.enter()),
        None => Ok(()),
    };
    // (Joining a namespace changes credentials, which clears the parent-death signal.)
    if let Err(e) = entered
        .and_then(|()| die_with_parent())
        .and_then(|()| namespaces(&mut sys::Linux))
    {
        return fail(e);
    }
    let mut rx = std::fs::File::from(plan);
    // While `dev` still prepares and the maps are being written: init, forked ahead (see
    // `PendingInit`); it gets the plan as this process does. No clone3 (None): `sandbox` forks
    // init once the root filesystem is mounted.
    let early = {
        use std::os::fd::AsRawFd;
        let inherited = [rx.as_raw_fd(), status.as_raw_fd()];
        PendingInit::fork(sys::fork_in_new_pidns, &inherited, Some(&status))
    };
    let Some(json) = read_plan(&mut rx) else {
        return init::SETUP_FAILED;
    };
    let pending = serde_json::from_slice::<SandboxPlan>(&json)
        .map_err(|e| anyhow::anyhow!("internal error: bad sandbox plan: {e}"))
        .and_then(|plan| {
            let mut init = early?;
            if let Some(init) = init.as_mut() {
                init.plan(&json, plan.keep.is_some())?;
            }
            Ok((plan, init))
        });
    let mut go = [0u8; 1];
    if rx.read_exact(&mut go).is_err() || go != *b"m" {
        return init::SETUP_FAILED;
    }
    drop(rx);
    let (plan, pending) = match pending {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    // A keeper holds the env's lock from the starter until the env is gone (see `start_env`).
    let lock = match &plan.keep {
        Some(_) => match sys::recv_fds(&status) {
            Ok((word, mut fds)) if word == keeper::LOCK && fds.len() == 1 => Some(fds.remove(0)),
            _ => {
                return fail(anyhow::anyhow!(
                    "internal error: the env's lock was not passed"
                ))
            }
        },
        None => None,
    };
    let mapped = if plan.ids == IdMode::Subordinate {
        if is_mapped() {
            become_root_inside()
        } else {
            Err(anyhow::anyhow!(
                "internal error: the id maps are not written"
            ))
        }
    } else {
        write_own_map(plan.ids, host.0, host.1)
    };
    if let Err(e) = mapped {
        return fail(e);
    }
    let code = sandbox(&plan, Some(status), pending);
    // Last: the env is unmounted and its runtime files are gone.
    drop(lock);
    code
}

/// The helper's body, in its user namespace and its other [`namespaces`]: the root filesystem,
/// then a pid namespace whose init runs the command (or, with `plan.keep`, a keeper serving the
/// env). Cleans up whatever way the command ends. `status`: the socket to the starter (see
/// [`run_pending`]); `pending`: its init, if forked ahead.
fn sandbox(plan: &SandboxPlan, status: Option<OwnedFd>, pending: Option<PendingInit>) -> i32 {
    let mounted = match rootfs::mount(&mut sys::Linux, &plan.rootfs) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let code = (|| -> Result<i32> {
        let pending = match pending {
            Some(p) => p,
            None => {
                // After the mount, so that fuse-overlayfs stays out of the env's pid namespace.
                use std::os::fd::AsRawFd;
                unshare(CloneFlags::CLONE_NEWPID).context("cannot create the pid namespace")?;
                let inherited: Vec<_> = status.iter().map(|s| s.as_raw_fd()).collect();
                let fork = || sys::fork().map_err(std::io::Error::other);
                let mut init = PendingInit::fork(fork, &inherited, status.as_ref())?
                    .context("internal error: fork(2) is missing")?;
                init.plan(&serde_json::to_vec(plan)?, plan.keep.is_some())?;
                init
            }
        };
        let signals = init::block_signals()?;
        let (child, ready) = pending.start(&mounted.root(&plan.rootfs))?;
        let (Some(keep), Some(status), Some(ready)) = (&plan.keep, status, ready) else {
            return init::supervise(child, &signals, false, init::Forward::Sent);
        };
        // From here on the keeper stops the env and cleans up itself, the starter alive or
        // not: a starter that died is a first session that left. (Killed with it, the keeper
        // would leave its socket and state.json behind.)
        let _ = sys::process::pdeathsig(None);
        // Listening while init mounts the env: the keeper is on the other core.
        let owner = (plan.user.uid, plan.user.gid);
        let listening = keeper::listen(keep, plan.ids, owner, child);
        let (answer, mut fds) = sys::recv_fds(&ready).unwrap_or_default();
        if answer != b"ok" || fds.len() != 2 {
            crate::ui::raw_err(String::from_utf8_lossy(&answer).as_bytes());
            if listening.is_ok() {
                keeper::withdraw(keep);
            }
            let _ = nix::sys::wait::waitpid(child, None);
            return Ok(init::SETUP_FAILED);
        }
        let (init_mnt, init_pid) = (fds.remove(0), fds.remove(0));
        let listening = match listening {
            Ok(l) => l,
            Err(e) => {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(e);
            }
        };
        keeper::serve(
            keep,
            listening,
            child,
            [init_mnt, init_pid],
            status,
            &plan.rootfs.upper,
        )?;
        Ok(0)
    })()
    .unwrap_or_else(fail);
    mounted.release(&mut sys::Linux, &plan.rootfs);
    code
}

/// Init, forked into the env's new pid namespace (its pid 1) and waiting for the word to set
/// the env up. The forked helper forks it first thing, before it has its plan: the fork is off
/// a start's critical path (it ran after the maps in about half of the starts measured, the
/// helper waiting for a core while newuidmap and newgidmap ran). Init reads the plan it is
/// sent, then the path of the root filesystem, and takes its own ids once they are mapped.
struct PendingInit {
    pid: nix::unistd::Pid,
    /// The plan (a length and the JSON), then the path the root filesystem is mounted at.
    /// Closed before the path, init leaves.
    go: Option<std::fs::File>,
    /// For a keeper: its end of the socket init answers on ("ok", its mount and pid namespaces).
    ready: Option<std::os::unix::net::UnixStream>,
}

impl PendingInit {
    /// Forks init with `fork`, which puts the child in a new pid namespace (or follows an
    /// unshare of it); `None` if `fork` is not implemented (ENOSYS). `inherited`: descriptors
    /// of this process init must not hold. `dev`: the socket to the starter, on which a
    /// one-shot session's init sends the command's pty (a keeper's init closes its copy).
    fn fork(
        fork: impl FnOnce() -> std::io::Result<ForkResult>,
        inherited: &[std::os::fd::RawFd],
        dev: Option<&OwnedFd>,
    ) -> Result<Option<PendingInit>> {
        let signals = init::block_signals()?;
        let dev = match dev {
            Some(s) => Some(s.try_clone().context("cannot pass the terminal's socket")?),
            None => None,
        };
        let (rx, tx) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        let (ready, ready_init) =
            std::os::unix::net::UnixStream::pair().context("cannot create a socket pair")?;
        let forked = match fork() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSYS) => return Ok(None),
            forked => forked.context("cannot create the pid namespace")?,
        };
        match forked {
            ForkResult::Child => {
                use std::os::fd::AsRawFd;
                let ours = [tx.as_raw_fd(), ready.as_raw_fd()];
                for fd in inherited.iter().copied().chain(ours) {
                    let _ = nix::unistd::close(fd);
                }
                let dev = dev.map(std::os::unix::net::UnixStream::from);
                std::process::exit(await_go(&signals, rx.into(), ready_init, dev))
            }
            ForkResult::Parent { child } => Ok(Some(PendingInit {
                pid: child,
                go: Some(tx.into()),
                ready: Some(ready),
            })),
        }
    }

    /// Sends init its plan (`json`, as the helper got it); with `keep`, init answers a keeper.
    fn plan(&mut self, json: &[u8], keep: bool) -> Result<()> {
        use std::io::Write;
        let go = self
            .go
            .as_mut()
            .context("internal error: init has its plan")?;
        go.write_all(&(json.len() as u64).to_le_bytes())
            .and_then(|()| go.write_all(json))
            .context("cannot give init its plan")?;
        if !keep {
            self.ready = None;
        }
        Ok(())
    }

    /// Lets init set the env up on the root filesystem at `root`: its pid, and for a keeper the
    /// socket init answers on.
    fn start(
        mut self,
        root: &std::path::Path,
    ) -> Result<(nix::unistd::Pid, Option<std::os::unix::net::UnixStream>)> {
        use std::io::Write;
        use std::os::unix::ffi::OsStrExt;
        let mut go = self
            .go
            .take()
            .context("internal error: init started twice")?;
        if let Err(e) = go.write_all(root.as_os_str().as_bytes()) {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(self.pid, None);
            return Err(e).context("cannot start init");
        }
        Ok((self.pid, self.ready.take()))
    }
}

impl Drop for PendingInit {
    fn drop(&mut self) {
        if let Some(go) = self.go.take() {
            // Never started: it reads the end of the pipe and leaves.
            drop(go);
            let _ = nix::sys::wait::waitpid(self.pid, None);
        }
    }
}

/// Init's first steps, until [`PendingInit::start`]: dies with the helper, reads its plan and
/// where the root filesystem is mounted (nothing: the helper failed and says why), takes its
/// ids (which are mapped by then), then sets the env up, answering a keeper on `ready` or, for
/// a one-shot session, sending the command's pty on `dev`.
fn await_go(
    signals: &nix::sys::signal::SigSet,
    mut go: std::fs::File,
    ready: std::os::unix::net::UnixStream,
    dev: Option<std::os::unix::net::UnixStream>,
) -> i32 {
    use std::io::Read;
    use std::os::unix::ffi::OsStringExt;
    if sys::process::pdeathsig(Some(nix::sys::signal::Signal::SIGKILL)).is_err() {
        return init::SETUP_FAILED;
    }
    let Some(json) = read_plan(&mut go) else {
        return init::SETUP_FAILED;
    };
    let plan = match serde_json::from_slice::<SandboxPlan>(&json) {
        Ok(p) => p,
        Err(e) => return fail(anyhow::anyhow!("internal error: bad sandbox plan: {e}")),
    };
    // Only the keeper may hold the starter's socket: its end is what "ready" means.
    let (ready, dev) = match plan.keep {
        Some(_) => (Some(ready), None),
        None => (None, dev),
    };
    let mut root = Vec::new();
    if go.read_to_end(&mut root).is_err() || root.is_empty() {
        return init::SETUP_FAILED;
    }
    drop(go);
    let root = std::path::PathBuf::from(std::ffi::OsString::from_vec(root));
    if plan.ids == IdMode::Subordinate {
        if let Err(e) = become_root_inside() {
            return fail(e);
        }
    }
    let plan = rooted(&plan, &root);
    match ready {
        Some(ready) => init::keep(&plan, signals, ready),
        None => init::run(&plan, signals, dev),
    }
}

/// A sandbox plan as its sender writes it: its length (8 bytes, little-endian), then its JSON.
/// None if the pipe ends before (the sender gave up).
fn read_plan(from: &mut impl std::io::Read) -> Option<Vec<u8>> {
    let mut len = [0u8; 8];
    from.read_exact(&mut len).ok()?;
    let mut json = vec![0u8; usize::try_from(u64::from_le_bytes(len)).ok()?];
    from.read_exact(&mut json).ok()?;
    Some(json)
}

/// `plan` with its mount steps on the root filesystem mounted at `root` (the copy backend's
/// is not `plan.rootfs.merged`).
fn rooted(plan: &SandboxPlan, root: &std::path::Path) -> SandboxPlan {
    let mut plan = plan.clone();
    for step in &mut plan.steps {
        if let Step::PivotRoot { root: r } = step {
            *r = root.to_path_buf();
        }
        if let Step::Mkdir { path, .. } | Step::Mount { target: path, .. } = step {
            if let Ok(rel) = path.strip_prefix(&plan.rootfs.merged) {
                *path = root.join(rel);
            }
        }
    }
    plan
}

/// The helper's side: unshare the user namespace and get mapped (stopped, by the parent, with
/// the full mapping; by itself with a single id), then become the inside id `mode` asks for.
/// Must run before the process starts any thread.
pub fn enter_as_helper(mode: IdMode) -> Result<()> {
    unshare_user(mode)?;
    if mode != IdMode::Subordinate {
        return Ok(());
    }
    // A stray SIGCONT (job control) can wake us before the maps are written: stop again.
    while !is_mapped() {
        nix::sys::signal::raise(Signal::SIGSTOP).context("cannot stop for the id maps")?;
    }
    become_root_inside()
}

/// A helper must never outlive the `dev` that started it: a killed pull must not leave an
/// unpack running that races the next one.
pub fn die_with_parent() -> Result<()> {
    super::sys::process::die_with_parent()
}

/// Unshares the user namespace; with a single id, writes its map too (the full map is
/// newuidmap's and newgidmap's, from outside).
pub fn unshare_user(mode: IdMode) -> Result<()> {
    use super::sys::ns::{unshare, CloneFlags};
    die_with_parent()?;
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| {
        UserError::with_hint(
            format!("cannot create a user namespace: {e}"),
            userns_hint(),
        )
    })?;
    if mode == IdMode::Subordinate {
        return Ok(());
    }
    write_own_map(mode, uid, gid)
}

/// With a single id: this process maps its own host ids `uid` and `gid` (read before it
/// unshared; inside an unmapped namespace they read as the overflow id).
pub fn write_own_map(mode: IdMode, uid: u32, gid: u32) -> Result<()> {
    let inside = match mode {
        IdMode::Subordinate => bail!("internal error: the full map is written from outside"),
        IdMode::FlatUser => uid,
        IdMode::FlatRoot => 0,
    };
    let gid_inside = if mode == IdMode::FlatRoot { 0 } else { gid };
    super::sys::ids::write_own_map((inside, uid), (gid_inside, gid))
}

/// Whether this process's user namespace has its uid map.
pub fn is_mapped() -> bool {
    super::sys::ids::is_mapped()
}

/// Once the full map is written: root inside, with no supplementary group.
pub fn become_root_inside() -> Result<()> {
    use super::sys::ids::{set_gid, set_groups, set_uid};
    set_gid(0).context("cannot become group 0 in the user namespace")?;
    set_groups(&[]).context("cannot drop supplementary groups in the user namespace")?;
    set_uid(0).context("cannot become root in the user namespace")?;
    // A credential change clears the parent-death signal: set it again, then make sure the
    // parent did not die in between.
    super::sys::process::die_with_parent()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::plan::{mount_plan, Backend, Layout, ProcessPlan, UserPlan};
    use crate::sandbox::sys::Recorder;

    fn sandbox_plan(dir: &std::path::Path) -> SandboxPlan {
        let rootfs = rootfs::tests::plan_in(dir, None);
        let layout = Layout {
            root: rootfs.merged.clone(),
            shares: vec![("/home/ann".into(), dir.join("env/home"))],
            ssh_agent: None,
            etc_files: vec!["/etc/resolv.conf".into()],
            kept: Vec::new(),
            binds: Vec::new(),
            bind_owner: None,
        };
        SandboxPlan {
            ids: IdMode::Subordinate,
            steps: mount_plan(&layout),
            rootfs,
            user: UserPlan {
                name: "ann".into(),
                uid: 1000,
                group: "ann".into(),
                gid: 1000,
                home: "/home/ann".into(),
                root: false,
                write_entries: true,
            },
            process: ProcessPlan {
                argv: vec![],
                shell: None,
                shell_fallbacks: vec!["/bin/sh".into()],
                env: vec![],
                cwd: "/home/ann".into(),
            },
            hostname: "app".into(),
            image_user: None,
            image: "test".into(),
            keep: None,
            ldconfig: false,
        }
    }

    /// What the helper and its init do to the kernel, in the order they do it: the helper's
    /// [`namespaces`] (before it reads its plan), `sandbox`'s root filesystem, init's tree on
    /// the root as mounted ([`rooted`], `init::tree`), and the helper's unmount once init is
    /// gone.
    fn run(rec: &mut Recorder, plan: &SandboxPlan) -> Result<()> {
        namespaces(rec)?;
        let mounted = rootfs::mount(rec, &plan.rootfs)?;
        let tree = init::tree(rec, &rooted(plan, &mounted.root(&plan.rootfs)));
        mounted.release(rec, &plan.rootfs);
        tree
    }

    fn position(lines: &[String], prefix: &str) -> usize {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {lines:#?}"))
    }

    /// Namespaces first, private before any mount; the overlay before init's own mount
    /// namespace; the host paths cloned and proc mounted before the pivot into the overlay,
    /// the env's own filesystems after it; the hostname last; the overlay detached at the end.
    #[test]
    fn the_helper_sets_up_namespaces_then_the_root_then_inits_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = sandbox_plan(dir.path());
        let mut rec = Recorder::default();
        run(&mut rec, &plan).expect("runs");
        let lines = rec.lines();
        let merged = plan.rootfs.merged.display();
        let helper_ns = format!(
            "unshare {:?}",
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC
        );
        let init_ns = format!("unshare {:?}", CloneFlags::CLONE_NEWNS);
        assert_eq!(lines[0], helper_ns, "{lines:#?}");
        assert_eq!(lines[1], "make-private", "{lines:#?}");
        assert!(
            lines[2].starts_with(&format!("overlay {merged} ")),
            "{lines:#?}"
        );
        assert_eq!(lines[3], init_ns, "{lines:#?}");
        let pivot = position(&lines, &format!("pivot {merged}"));
        assert!(position(&lines, "clone /sys") < pivot);
        assert!(position(&lines, &format!("clone {}", dir.path().display())) < pivot);
        // A fresh proc is mounted in the new root before the pivot (see `plan::mount_plan`).
        assert!(position(&lines, &format!("mount proc {merged}/proc ")) < pivot);
        assert!(pivot < position(&lines, "mount tmpfs /dev "));
        assert_eq!(lines[lines.len() - 2], "hostname app", "{lines:#?}");
        assert_eq!(lines[lines.len() - 1], format!("detach {merged}"));
    }

    /// On the copy backend init pivots into the copy, and nothing of the plan is done on the
    /// overlay's mount point, which the copy backend does not mount.
    #[test]
    fn on_a_copy_init_pivots_into_the_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut plan = sandbox_plan(dir.path());
        plan.rootfs.backend = Some(Backend::Copy);
        let mut rec = Recorder::default();
        run(&mut rec, &plan).expect("runs");
        let lines = rec.lines();
        let copy = plan.rootfs.copy.display().to_string();
        let merged = plan.rootfs.merged.display().to_string();
        assert_eq!(lines[2], format!("bind {copy}"), "{lines:#?}");
        assert!(
            position(&lines, &format!("mount proc {copy}/proc "))
                < position(&lines, &format!("pivot {copy}"))
        );
        assert!(
            lines.iter().all(|l| !l.contains(&merged)),
            "the overlay's mount point is used: {lines:#?}"
        );
        assert_eq!(lines[lines.len() - 1], format!("detach {copy}"));
    }
}
