//! `dev`: parse the command line, run the command, render any error, exit.

// Only the printer (`ui::print`) writes to stdout and stderr.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod atomic;
mod beneath;
mod cli;
mod commands;
mod config;
mod export;
mod features;
mod host;
mod ids;
mod oci;
mod pull;
mod registry;
mod runtime;
mod sandbox;
mod session;
mod store;
mod tools;
mod ui;
mod unpack;

use clap::Parser;

fn main() {
    // The user-namespace helper must unshare before anything starts a thread.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == sandbox::parent::HELPER_COMMAND)
    {
        std::process::exit(commands::helper::main());
    }
    store::inside::set_runner(commands::helper::run_in_helper);
    // A session's slowest step is mapping the helper's user namespace: start it before the
    // command line is even parsed.
    session::speculate(&std::env::args_os().skip(1).collect::<Vec<_>>());
    let cli = cli::Cli::parse();
    let result = commands::run(cli);
    // A start that had to map a user namespace of its own leaves one for the next to join.
    sandbox::holder::leave_behind();
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            // A helper forked ahead for a session that never came must go first, or it says
            // "the parent `dev` is gone" after the error.
            session::forget_speculation();
            crate::ui::note(format_args!("{}", ui::render(&err)));
            std::process::exit(1);
        }
    }
}
