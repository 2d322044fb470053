//! One file per command: glue between the command line, the library modules and the printer.

pub mod build;
pub mod commit;
pub mod config;
pub mod doctor;
pub mod helper;
pub mod images;
pub mod init;
pub mod inspect;
pub mod kube;
pub mod load;
pub mod lock;
pub mod ps;
pub mod pull;
pub mod push;
pub mod rmi;
pub mod save;
pub mod status;
pub mod system;
pub mod trust;
pub mod volume;

use anyhow::Result;

use crate::cli::{Cli, Command, SystemCommand, VolumeCommand};
use crate::ui::ExitCode;

/// Runs a command; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    if let Some(file) = cli.config {
        crate::config::project::choose_config(file);
    }
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
        Command::Init {
            from_devcontainer: true,
            ..
        } => init::from_devcontainer(),
        Command::Init {
            template, image, ..
        } => init::run(template.as_deref(), image.as_deref()),
        Command::Config { format } => config::run(format),
        Command::Save {
            output,
            format,
            reference,
        } => save::run(&output, format, reference.as_deref()),
        Command::Load { input } => load::run(&input),
        Command::Kube { reference } => kube::run(reference.as_deref()),
        Command::Build { tag, quiet } => build::run(tag.as_deref(), quiet),
        Command::Push { reference, quiet } => push::run(reference.as_deref(), quiet),
        Command::Trust { show } => trust::run(show),
        Command::Untrust => trust::untrust(),
        Command::Doctor { format, gui, gpu } => return doctor::run(format, gui, gpu),
        Command::System {
            command: SystemCommand::Df { format },
        } => system::df(format),
        Command::System {
            command: SystemCommand::Prune { envs, volumes },
        } => system::prune(envs, volumes),
        Command::Volume {
            command: VolumeCommand::Ls { format },
        } => volume::ls(format),
        Command::Volume {
            command: VolumeCommand::Rm { names, force },
        } => volume::rm(&names, force),
        Command::Settle { diff_ids } => pull::settle(&diff_ids),
        Command::Hold {
            seconds,
            record,
            after,
        } => return Ok(crate::sandbox::holder::hold(&seconds, &record, &after)),
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
            mounts: a.mounts,
            gui: a.gui,
            gpu: a.gpu,
        }
    }
}
