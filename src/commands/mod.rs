//! One file per command: glue between the command line, the library modules and the printer.

pub mod commit;
pub mod doctor;
pub mod helper;
pub mod images;
pub mod init;
pub mod inspect;
pub mod lock;
pub mod ps;
pub mod pull;
pub mod rmi;
pub mod status;
pub mod system;
pub mod trust;

use anyhow::Result;

use crate::cli::{Cli, Command, SystemCommand};
use crate::ui::ExitCode;

/// Runs a command; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Pull { reference, quiet } => pull::run(&reference, quiet),
        Command::Images { format } => images::run(format),
        Command::Rmi { references } => rmi::run(&references),
        Command::Inspect { reference } => inspect::run(&reference),
        Command::Shell { env } => crate::session::run(&env.into()),
        Command::Run { env, command } => crate::session::enter(&env.into(), command),
        Command::Lock { frozen } => lock::run(frozen),
        Command::Update { image, packages } => lock::update(image, packages),
        Command::Status => status::run(),
        Command::Ps { all, format } => ps::list(all, format),
        Command::Start { name } => ps::start(name),
        Command::Stop { name } => ps::stop(name.as_deref()),
        Command::Exec { name, command } => ps::exec(&name, command),
        Command::Rm { name, force } => ps::rm(name.as_deref(), force, false),
        Command::Reset { name } => ps::rm(name.as_deref(), true, true),
        Command::Diff { name } => ps::diff(name.as_deref()),
        Command::Commit { name, tag } => commit::run(name.as_deref(), &tag),
        Command::Init { template, image } => init::run(template.as_deref(), image.as_deref()),
        Command::Trust { show } => trust::run(show),
        Command::Untrust => trust::untrust(),
        Command::Doctor { format, gui, gpu } => return doctor::run(format, gui, gpu),
        Command::System {
            command: SystemCommand::Df { format },
        } => system::df(format),
        Command::System {
            command: SystemCommand::Prune { envs },
        } => system::prune(envs),
        Command::Helper { .. } => Err(ExitCode(helper::main()).into()),
    }
    .map(|()| 0)
    .or_else(|e| {
        if let Some(code) = e.downcast_ref::<ExitCode>() {
            Ok(code.0)
        } else {
            Err(e)
        }
    })
}

impl From<crate::cli::EnterArgs> for crate::session::EnterOptions {
    fn from(a: crate::cli::EnterArgs) -> Self {
        crate::session::EnterOptions {
            image: a.image,
            root: a.root,
            rm: a.rm,
            frozen: a.frozen,
            start_only: false,
            name: a.name,
            ssh_agent: a.ssh_agent,
            gui: a.gui,
            gpu: a.gpu,
        }
    }
}
