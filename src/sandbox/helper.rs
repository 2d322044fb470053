//! The helper process of a sandbox (a fork or a re-exec of `dev`): enters the user namespace,
//! creates the mount, uts and ipc namespaces, mounts the root filesystem, starts init in a new
//! pid namespace, waits for it and cleans up.

use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::ForkResult;

use super::plan::{IdMode, SandboxPlan, Step};
use super::spawn::enter_as_helper;
use super::{init, keeper, rootfs, sys};

/// The helper's body: user namespace, then mount, uts and ipc namespaces and the root filesystem,
/// then a pid namespace whose init runs the command. Cleans up whatever way the command ends.
pub fn run(mode: IdMode, plan: &SandboxPlan, status: Option<OwnedFd>) -> i32 {
    let fail = |e: anyhow::Error| {
        eprintln!("{}", crate::ui::render(&e));
        init::SETUP_FAILED
    };
    let prepared = enter_as_helper(mode)
        .and_then(|()| {
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
                .context("cannot create the sandbox's namespaces")
        })
        .and_then(|()| sys::make_private())
        .and_then(|()| rootfs::mount(&plan.rootfs));
    let mounted = match prepared {
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
                let (answer, mut fds) = sys::recv_fds(&ready).unwrap_or_default();
                if answer != b"ok" || fds.len() != 1 {
                    eprint!("{}", String::from_utf8_lossy(&answer));
                    let _ = nix::sys::wait::waitpid(child, None);
                    return Ok(init::SETUP_FAILED);
                }
                let init_mnt = fds.remove(0);
                keeper::serve(
                    keep,
                    plan.ids,
                    (plan.user.uid, plan.user.gid),
                    child,
                    init_mnt,
                    status,
                )?;
                Ok(0)
            }
        }
    })()
    .unwrap_or_else(fail);
    mounted.release(&plan.rootfs);
    code
}
