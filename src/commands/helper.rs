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

/// The helper's side of the store's protocol: one operation from stdin (a line of JSON), done
/// here as root inside the user namespace, its reply on stdout. What follows the line is the
/// operation's input (a streamed unpack's blob).
fn serve_store_op() -> Result<()> {
    use std::io::{BufRead, BufReader, Read};
    use std::os::fd::AsFd;
    let stdin = std::fs::File::from(
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot read the operation")?,
    );
    let mut stdin = BufReader::with_capacity(256 << 10, stdin);
    let mut request = Vec::new();
    (&mut stdin)
        .take(1 << 20)
        .read_until(b'\n', &mut request)
        .context("cannot read the operation")?;
    let op: Op = serde_json::from_slice(&request).context("the operation is not valid")?;
    let done = execute(op, Box::new(stdin));
    // No reader of stdin is left once the reply is due: `dev`, still feeding a layer this
    // refused, gets EPIPE and reads the reply, instead of both waiting on full pipes.
    if let Ok(null) = std::fs::File::open("/dev/null") {
        use std::os::fd::AsRawFd;
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
    }
    let reply = serde_json::to_string(&done).context("cannot encode the reply")?;
    crate::ui::out(reply);
    Ok(())
}

/// The store's runner (`store::inside::set_runner`): `op` in a helper of `identity`'s
/// subordinate mapping, over its stdin and stdout, `input` after the operation.
pub fn run_in_helper(
    identity: &Identity,
    op: &Op,
    input: Option<&mut dyn std::io::Read>,
) -> Result<Reply> {
    let mut request = serde_json::to_vec(op).context("cannot encode the operation")?;
    request.push(b'\n');
    let (answer, cut) = run_helper(identity, &request, input)?;
    let reply = serde_json::from_slice(&answer).context("the helper gave no reply")?;
    match (reply, cut) {
        // What the helper made of a stream cut short is not the cause: the cut is.
        (Reply::Failed(_), Some(cut)) => Err(anyhow::Error::new(cut)),
        (reply, _) => Ok(reply),
    }
}
