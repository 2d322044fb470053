//! The hidden `__userns-helper` subcommand: work that must happen as root inside the user
//! namespace (unpacking with owners kept, removing trees owned by subordinate ids), and the
//! sandbox's helper when `dev` cannot fork it (it has threads).

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::oci::Digest;
use crate::sandbox::plan::{IdMode, SandboxPlan};
use crate::sandbox::spawn::enter_as_helper;
use crate::sandbox::{self, init};
use crate::store::layers::{capture_layer, pack_into, remove_paths, unpack_into};
use crate::unpack::UnpackOptions;

pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(2).collect();
    let mode = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(IdMode::from_arg);
    let Some(mode) = mode else {
        crate::ui::note(format_args!("error: internal: the helper needs an id mode"));
        return 2;
    };
    if args.get(1).is_some_and(|a| a == "sandbox") {
        let plan = args
            .get(2)
            .and_then(|a| a.to_str())
            .and_then(|j| serde_json::from_str::<SandboxPlan>(j).ok());
        let Some(plan) = plan else {
            crate::ui::note(format_args!("error: internal: bad sandbox plan"));
            return init::SETUP_FAILED;
        };
        return sandbox::helper::run(mode, &plan);
    }
    match enter_as_helper(mode).and_then(|()| run(&args[1..])) {
        Ok(()) => 0,
        Err(e) => {
            crate::ui::note(format_args!("{e:#}"));
            1
        }
    }
}

/// Runs one operation; what it prints on stdout (its result as JSON) is the caller's answer.
fn run(args: &[OsString]) -> Result<()> {
    let op = args.first().and_then(|a| a.to_str()).unwrap_or("");
    let result = match op {
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
            serde_json::to_string(&stats)
        }
        "capture" => {
            let [_, upper, dir] = args else {
                bail!("usage: capture UPPER LAYERS_DIR")
            };
            serde_json::to_string(&capture_layer(&PathBuf::from(upper), &PathBuf::from(dir))?)
        }
        "pack" => {
            let [_, tree, out] = args else {
                bail!("usage: pack TREE OUT|-")
            };
            let out = (out != "-").then(|| PathBuf::from(out));
            serde_json::to_string(&pack_into(&PathBuf::from(tree), out.as_deref())?)
        }
        "remove" => return remove_paths(&args[1..].iter().map(PathBuf::from).collect::<Vec<_>>()),
        _ => bail!("unknown helper operation `{op}`"),
    };
    crate::ui::out(format_args!(
        "{}",
        result.context("cannot encode the result")?
    ));
    Ok(())
}
