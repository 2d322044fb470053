//! The helper process of a sandbox (a fork or a re-exec of `dev`): enters the user namespace,
//! creates the mount, uts and ipc namespaces, mounts the root filesystem, starts init in a new
//! pid namespace, waits for it and cleans up.

use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::ForkResult;

use super::plan::{IdMode, SandboxPlan, Step};
use super::spawn::{
    become_root_inside, die_with_parent, enter_as_helper, is_mapped, write_own_map,
};
use super::{init, keeper, rootfs, sys};

fn fail(e: anyhow::Error) -> i32 {
    eprintln!("{}", crate::ui::render(&e));
    init::SETUP_FAILED
}

/// The re-executed helper (`dev __userns-helper MODE sandbox PLAN`): user namespace, then the
/// sandbox.
pub fn run(mode: IdMode, plan: &SandboxPlan) -> i32 {
    match enter_as_helper(mode).and_then(|()| namespaces()) {
        Ok(()) => sandbox(plan, None),
        Err(e) => fail(e),
    }
}

/// The sandbox's mount, uts and ipc namespaces, owned by the helper's user namespace (which
/// need not be mapped yet), and no mount event shared with the host.
fn namespaces() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
        .context("cannot create the sandbox's namespaces")?;
    sys::make_private()
}

/// The forked helper (see `spawn::Helper`), born in its own user namespace: the plan from
/// `plan` (a length and the JSON); then one byte once its maps are written (nothing when `dev`
/// no longer needs it: then it leaves quietly); then the sandbox. `status` is the socket a
/// keeper answers the starter on; `host` its ids on the host.
pub fn run_pending(plan: OwnedFd, status: OwnedFd, host: (u32, u32)) -> i32 {
    use std::io::Read;
    // Mapped later: by newuidmap and newgidmap, or (a single id) by itself once the plan says.
    // Meanwhile, what needs no ids: its other namespaces.
    if let Err(e) = die_with_parent().and_then(|()| namespaces()) {
        return fail(e);
    }
    let mut rx = std::fs::File::from(plan);
    let mut len = [0u8; 8];
    if rx.read_exact(&mut len).is_err() {
        return init::SETUP_FAILED;
    }
    let mut json = vec![0u8; u64::from_le_bytes(len) as usize];
    if rx.read_exact(&mut json).is_err() {
        return init::SETUP_FAILED;
    }
    let parsed = serde_json::from_slice::<SandboxPlan>(&json);
    let mut go = [0u8; 1];
    if rx.read_exact(&mut go).is_err() || go != *b"m" {
        return init::SETUP_FAILED;
    }
    drop(rx);
    let plan = match parsed {
        Ok(plan) => plan,
        Err(e) => return fail(anyhow::anyhow!("internal error: bad sandbox plan: {e}")),
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
    let code = sandbox(&plan, Some(status));
    // Last: the env is unmounted and its runtime files are gone.
    drop(lock);
    code
}

/// The helper's body, in its user namespace and its other [`namespaces`]: the root filesystem,
/// then a pid namespace whose init runs the command (or, with `plan.keep`, a keeper serving the
/// env). Cleans up whatever way the command ends.
fn sandbox(plan: &SandboxPlan, status: Option<OwnedFd>) -> i32 {
    let mounted = match rootfs::mount(&plan.rootfs) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let code = (|| -> Result<i32> {
        let mut plan = plan.clone();
        let root = mounted.root(&plan.rootfs);
        for step in &mut plan.steps {
            if let Step::PivotRoot { root: r } = step {
                *r = root.clone();
            }
            if let Step::Mkdir { path, .. } | Step::Mount { target: path, .. } = step {
                if let Ok(rel) = path.strip_prefix(&plan.rootfs.merged) {
                    *path = root.join(rel);
                }
            }
        }
        unshare(CloneFlags::CLONE_NEWPID).context("cannot create the pid namespace")?;
        let signals = init::block_signals()?;
        let (Some(keep), Some(status)) = (&plan.keep, status) else {
            return match sys::fork()? {
                ForkResult::Child => std::process::exit(init::run(&plan, &signals)),
                ForkResult::Parent { child } => init::supervise(child, &signals, false),
            };
        };
        // Init answers on this socket: "ok" with its mount namespace, or why it failed.
        let (ready, ready_init) =
            std::os::unix::net::UnixStream::pair().context("cannot create a socket pair")?;
        match sys::fork()? {
            ForkResult::Child => {
                // Only the keeper may hold the starter's pipe: its end is what "ready" means.
                drop(ready);
                drop(status);
                std::process::exit(init::keep(&plan, &signals, ready_init))
            }
            ForkResult::Parent { child } => {
                drop(ready_init);
                // From here on the keeper stops the env and cleans up itself, the starter alive
                // or not: a starter that died is a first session that left. (Killed with it,
                // the keeper would leave its socket and state.json behind.)
                let _ = nix::sys::prctl::set_pdeathsig(None);
                // Listening while init mounts the env: the keeper is on the other core.
                let owner = (plan.user.uid, plan.user.gid);
                let listening = keeper::listen(keep, plan.ids, owner, child);
                let (answer, mut fds) = sys::recv_fds(&ready).unwrap_or_default();
                if answer != b"ok" || fds.len() != 1 {
                    eprint!("{}", String::from_utf8_lossy(&answer));
                    if listening.is_ok() {
                        keeper::withdraw(keep);
                    }
                    let _ = nix::sys::wait::waitpid(child, None);
                    return Ok(init::SETUP_FAILED);
                }
                let init_mnt = fds.remove(0);
                let listening = match listening {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                        let _ = nix::sys::wait::waitpid(child, None);
                        return Err(e);
                    }
                };
                keeper::serve(keep, listening, child, init_mnt, status)?;
                Ok(0)
            }
        }
    })()
    .unwrap_or_else(fail);
    mounted.release(&plan.rootfs);
    code
}
