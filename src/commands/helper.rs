//! The hidden `__userns-helper` subcommand: the store's work that must happen as root inside
//! the user namespace (`store::inside`: one typed operation on stdin, its reply on stdout),
//! and the sandbox's helper when `dev` cannot fork it (it has threads).

use std::ffi::OsString;

use anyhow::{Context, Result};

use crate::ids::Identity;
use crate::sandbox::helper::enter_as_helper;
use crate::sandbox::parent::run_helper;
use crate::sandbox::plan::{IdMode, SandboxPlan};
use crate::sandbox::{self, init};
use crate::store::inside::{execute, Op, Reply};

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
    if args.get(1).is_some_and(|a| a == "probe") {
        // `dev doctor`: entering a user namespace (and mapping it) is all there is to do.
        return match enter_as_helper(mode) {
            Ok(()) => 0,
            Err(e) => {
                crate::ui::note(format_args!("{}", crate::ui::render(&e)));
                1
            }
        };
    }
    if args.get(1).is_none_or(|a| a != "store") {
        crate::ui::note(format_args!("error: internal: unknown helper operation"));
        return 2;
    }
    match enter_as_helper(mode).and_then(|()| serve_store_op()) {
        Ok(()) => 0,
        Err(e) => {
            crate::ui::note(format_args!("{e:#}"));
            1
        }
    }
}

/// The helper's side of the store's protocol: one operation from stdin (JSON), done here as
/// root inside the user namespace, its reply on stdout.
fn serve_store_op() -> Result<()> {
    use std::io::Read;
    let mut request = Vec::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_end(&mut request)
        .context("cannot read the operation")?;
    let op: Op = serde_json::from_slice(&request).context("the operation is not valid")?;
    let reply = serde_json::to_string(&execute(op)).context("cannot encode the reply")?;
    crate::ui::out(reply);
    Ok(())
}

/// The store's runner (`store::inside::set_runner`): `op` in a helper of `identity`'s
/// subordinate mapping, over its stdin and stdout.
pub fn run_in_helper(identity: &Identity, op: &Op) -> Result<Reply> {
    let request = serde_json::to_vec(op).context("cannot encode the operation")?;
    let answer = run_helper(identity, &request)?;
    serde_json::from_slice(&answer).context("the helper gave no reply")
}
