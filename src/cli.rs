//! Command-line types. The doc comments are the help text.

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Rootless developer environments from OCI images.
#[derive(Debug, Parser)]
#[command(name = "dev", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download an image from a registry into the local store.
    Pull {
        /// Image reference, e.g. `debian:bookworm`, `ghcr.io/owner/repo:tag`, `repo@sha256:…`.
        reference: String,
        /// Print only the image's manifest digest.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the images in the local store.
    Images {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove images from the local store (layers other images use stay).
    Rmi {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Show an image's config, layers, platform and digests as JSON.
    Inspect { reference: String },
    /// Start a shell in the project's env (the nearest dev.toml's image, with the project mounted).
    Shell {
        #[command(flatten)]
        env: EnterArgs,
    },
    /// Run one command in the project's env; its exit code is dev's.
    Run {
        #[command(flatten)]
        env: EnterArgs,
        /// The command and its arguments (after `--` if they start with `-`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Resolve dev.toml (image digest, tool versions, tools layer) and write dev.lock.
    Lock {
        /// Fail if dev.toml and dev.lock disagree, instead of re-resolving.
        #[arg(long)]
        frozen: bool,
    },
    /// Re-resolve what dev.lock pins (everything, the image, or named packages) and rewrite it.
    Update {
        /// Pull the image's tag again and pin what it points at now.
        #[arg(long)]
        image: bool,
        /// Packages to re-resolve (all, when none is named and --image is not given).
        packages: Vec<String>,
    },
    /// Show the env's fingerprint, whether it matches dev.toml and dev.lock, and any drift.
    Status,
    /// Write a commented dev.toml here from a template.
    Init {
        /// debian, ubuntu, alpine, python, node, rust or go.
        #[arg(long, short)]
        template: Option<String>,
        /// Start from this image instead of a template's.
        #[arg(long, conflicts_with = "template")]
        image: Option<String>,
    },
    /// List running envs (`-a`: all): name, project, image, fingerprint, state, sessions, uptime, size.
    Ps {
        #[arg(short, long)]
        all: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Start the project's env and keep it running without sessions, until `dev stop`.
    Start {
        /// Name the env (default: the project directory's name, made unique).
        #[arg(long, value_parser = env_name)]
        name: Option<String>,
    },
    /// Stop an env (the project's, or NAME): SIGTERM to its processes, SIGKILL after 10 s.
    Stop { name: Option<String> },
    /// Run a command in the env NAME, from anywhere.
    Exec {
        name: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Delete an env's writable layer and home (the project's, or NAME); `-f` stops it first.
    Rm {
        name: Option<String>,
        #[arg(short, long)]
        force: bool,
    },
    /// Throw the env's changes away: the next session starts fresh from the image and tools.
    Reset { name: Option<String> },
    /// Paths the env's own layer added (A), changed (C) or deleted (D), like `docker diff`.
    Diff { name: Option<String> },
    /// Snapshot an env (the project's, or NAME) into a local image: its image's layers, its
    /// tools layer and its own layer. `dev run --image REF` runs it.
    Commit {
        name: Option<String>,
        /// The new image's name, e.g. `myproject:snapshot`.
        #[arg(long, short, value_name = "REF")]
        tag: String,
    },
    /// Trust what the project's dev.toml runs ([setup]) and exposes (ssh-agent); a change to
    /// those parts asks again.
    Trust {
        /// Print what it runs and exposes, and whether you trust it; change nothing.
        #[arg(long)]
        show: bool,
    },
    /// Forget the trust in the project's dev.toml.
    Untrust,
    /// Check what dev needs on this machine, and say how to fix what is missing.
    Doctor {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Also check what `--gui` would open (so does a project or config.toml that asks for it).
        #[arg(long)]
        gui: bool,
        /// Also check what `--gpu` would open.
        #[arg(long)]
        gpu: bool,
    },
    /// Manage the store as a whole.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
    #[command(name = "__userns-helper", hide = true)]
    Helper {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(Debug, Args)]
pub struct EnterArgs {
    /// Use this image instead of dev.toml's (works without a dev.toml; the env is thrown away).
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Enter as root inside the env (e.g. to `apt-get install`).
    #[arg(long)]
    pub root: bool,
    /// Throw away the changes made to the env's filesystem when the session ends.
    #[arg(long)]
    pub rm: bool,
    /// Fail if dev.toml and dev.lock disagree, instead of re-resolving (for CI).
    #[arg(long)]
    pub frozen: bool,
    /// Name the project's env (default: the project directory's name, made unique).
    #[arg(long, value_parser = env_name)]
    pub name: Option<String>,
    /// Forward your ssh agent (SSH_AUTH_SOCK) into the env.
    #[arg(long)]
    pub ssh_agent: bool,
    /// Open your display (Wayland, X11 with its cookie), sound (PipeWire, PulseAudio), session
    /// D-Bus and /dev/dri to the env.
    #[arg(long)]
    pub gui: bool,
    /// Open your GPU to the env: `--gpu` or `--gpu=auto` (NVIDIA's if there is one, else
    /// /dev/dri), `--gpu=nvidia`, `--gpu=none`.
    #[arg(long, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "auto", value_parser = gpu_mode)]
    pub gpu: Option<crate::host::GpuMode>,
}

fn gpu_mode(s: &str) -> Result<crate::host::GpuMode, String> {
    crate::host::GpuMode::parse(s).ok_or_else(|| "use `auto`, `nvidia` or `none`".to_string())
}

/// An env name: letters, digits, `_`, `.` and `-`, starting with a letter or digit (as
/// Docker's container names).
fn env_name(s: &str) -> Result<String, String> {
    let ok = s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err("use up to 64 letters, digits, `_`, `.` or `-`, starting with a letter or digit".into())
    }
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show disk usage: images, layers shared and unique, envs, reclaimable space.
    Df {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove layers and blobs nothing uses, leftovers of interrupted runs, and stopped envs
    /// whose project is gone (its directory or dev.toml). Running envs always stay.
    Prune {
        /// Also remove every stopped env whose project is still there.
        #[arg(long)]
        envs: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}
