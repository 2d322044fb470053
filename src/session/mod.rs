//! A session in an env, from the command line to the command's exit: `prepare` (project,
//! dev.lock, image, tools layer -> a [`Prepared`] env, past the trust gate), `plan` (a prepared
//! env and the host's facts -> the `SandboxPlan`, pure), `run` (one session: throwaway, or
//! starting or joining the project's running env). Commands (`shell`, `run`, `start`, `exec`,
//! `lock`, `update`) call these; nothing here parses a command line.

mod gate;
mod hooks;
pub mod mounts;
mod named;
pub mod plan;
mod prepare;
mod run;

pub use named::{env_of, project_of};
pub use prepare::{check_frozen, prepare, Prepared};
pub use run::{enter, forget_speculation, run, session, speculate};

/// Options `dev shell` and `dev run` share.
#[derive(Clone, Debug, Default)]
pub struct EnterOptions {
    pub image: Option<String>,
    pub root: bool,
    pub rm: bool,
    /// Fail when dev.toml and dev.lock disagree, instead of re-resolving (CI).
    pub frozen: bool,
    /// Start the env and keep it running (`dev start`) instead of entering it.
    pub start_only: bool,
    /// The env's name (`--name`).
    pub name: Option<String>,
    /// Forward the ssh agent (`--ssh-agent`).
    pub ssh_agent: bool,
    /// `--mount`: on top of config.toml's and dev.toml's.
    pub mounts: Vec<crate::config::mounts::MountSpec>,
    /// Open the host's GUI (`--gui`).
    pub gui: bool,
    /// Open the host's GPU (`--gpu`).
    pub gpu: Option<crate::host::GpuMode>,
}

/// What `dev update` re-resolves instead of taking from dev.lock.
#[derive(Clone, Debug, Default)]
pub struct Update {
    /// The image tag (pull it again).
    pub image: bool,
    /// These packages (all of them when `all`).
    pub packages: Vec<String>,
    pub all: bool,
}
