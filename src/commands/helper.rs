//! The hidden `__userns-helper` subcommand: work that must happen as root inside the user
//! namespace (unpacking with owners kept, removing trees owned by subordinate ids).

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::oci::Digest;
use crate::sandbox::plan::{IdMode, SandboxPlan, Step};
use crate::sandbox::spawn::enter_as_helper;
use crate::sandbox::{init, rootfs, sys};
use crate::store::layers::{remove_paths, unpack_into};
use crate::unpack::UnpackOptions;
use nix::sched::{unshare, CloneFlags};
use nix::unistd::ForkResult;

pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(2).collect();
    let mode = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(IdMode::from_arg);
    let Some(mode) = mode else {
        eprintln!("error: internal: the helper needs an id mode");
        return 2;
    };
    if args.get(1).is_some_and(|a| a == "sandbox") {
        return sandbox(mode, &args[2..]);
    }
    match enter_as_helper(mode).and_then(|()| run(&args[1..])) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e:#}");
            1
        }
    }
}

/// The sandbox: user namespace, then mount, uts and ipc namespaces and the root filesystem,
/// then a pid namespace whose init runs the command. Cleans up whatever way the command ends.
fn sandbox(mode: IdMode, args: &[OsString]) -> i32 {
    let fail = |e: anyhow::Error| {
        eprintln!("{}", crate::ui::render(&e));
        init::SETUP_FAILED
    };
    let plan: SandboxPlan = match args
        .first()
        .and_then(|a| a.to_str())
        .context("internal error: no sandbox plan")
        .and_then(|j| serde_json::from_str(j).context("internal error: bad sandbox plan"))
    {
        Ok(p) => p,
        Err(e) => return fail(e),
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
    let code = (|| -> anyhow::Result<i32> {
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
        match sys::fork()? {
            ForkResult::Child => std::process::exit(init::run(&plan, &signals)),
            ForkResult::Parent { child } => init::supervise(child, &signals, false),
        }
    })()
    .unwrap_or_else(fail);
    mounted.release(&plan.rootfs);
    code
}

fn run(args: &[OsString]) -> Result<()> {
    let op = args.first().and_then(|a| a.to_str()).unwrap_or("");
    match op {
        "unpack" => {
            let [_, dir, blob, diff_id] = args else {
                bail!("usage: unpack DIR BLOB DIFF_ID")
            };
            let diff_id = Digest::parse(diff_id.to_str().unwrap_or(""))?;
            let stats = unpack_into(
                &PathBuf::from(dir),
                &PathBuf::from(blob),
                &diff_id,
                UnpackOptions { keep_owners: true },
            )?;
            println!(
                "{}",
                serde_json::to_string(&stats).context("cannot encode the result")?
            );
            Ok(())
        }
        "remove" => remove_paths(&args[1..].iter().map(PathBuf::from).collect::<Vec<_>>()),
        _ => bail!("unknown helper operation `{op}`"),
    }
}
