//! Command-line types. The doc comments are the help text.

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Rootless developer environments from OCI images.
#[derive(Debug, Parser)]
#[command(name = "dev", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// The project's devcontainer.json, where it has several (or keeps one elsewhere).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
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
        /// Write the dev.toml the project's devcontainer.json amounts to.
        #[arg(long, conflicts_with_all = ["template", "image"])]
        from_devcontainer: bool,
    },
    /// Print the project's effective configuration (from dev.toml or devcontainer.json):
    /// image, tools, features, env, user, commands, mounts, and what is ignored and why.
    Config {
        #[arg(long, value_enum, default_value_t = ConfigFormat::Toml)]
        format: ConfigFormat,
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
    /// Write an image (REF, or the project's `dev build`, or its base image as dev.lock pins
    /// it) to a tar file that `podman load`, `docker load` and `dev load` read.
    Save {
        /// The archive to write.
        #[arg(long, short, value_name = "FILE")]
        output: std::path::PathBuf,
        /// An OCI image layout, or a docker-archive (as `docker save` writes).
        #[arg(long, value_enum, default_value_t = ArchiveFormat::Oci)]
        format: ArchiveFormat,
        reference: Option<String>,
    },
    /// Load the images of an archive that `dev save`, `podman save` or `docker save` wrote
    /// (an OCI image layout or a docker-archive), every digest checked.
    Load {
        /// The archive.
        #[arg(long, short, value_name = "FILE")]
        input: std::path::PathBuf,
    },
    /// Print a Kubernetes Pod manifest that runs the project's image (REF, or its `dev build`,
    /// or its base image as dev.lock pins it) with the project mounted from a volume, its [env]
    /// and working directory (`podman kube play` runs it).
    Kube {
        /// The image to run instead of the project's.
        reference: Option<String>,
    },
    /// Make the project's image from dev.toml and dev.lock: the base image's layers, the tools
    /// layer and the env's config. Reproducible: the same dev.toml and dev.lock give the same
    /// digest (SOURCE_DATE_EPOCH sets its time).
    Build {
        /// The image's name (default: `localhost/<project directory>:latest`).
        #[arg(long, short, value_name = "REF")]
        tag: Option<String>,
        /// Print only the image's manifest digest.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Push an image of the store to the registry its name says (default: the project's
    /// `dev build`; with REF not in the store, the project's image goes to REF).
    Push {
        reference: Option<String>,
        /// Print only the pushed manifest digest.
        #[arg(short, long)]
        quiet: bool,
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
    /// Named volumes: directories of the store that envs mount (`[[mounts]] volume = "NAME"`),
    /// shared by every env that names them and kept across `dev reset`.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Manage the store as a whole.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
    /// Flushes layers a session pulled to disk, after the session started.
    #[command(name = "__settle", hide = true)]
    Settle { diff_ids: Vec<String> },
    /// Keeps the user namespace later starts join (see `sandbox::holder`).
    #[command(name = "__userns-hold", hide = true)]
    Hold {
        seconds: String,
        record: std::path::PathBuf,
        after: String,
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
    /// Mount a host path or a named volume (`~` and `${VAR}` expanded; `~` in DST is the env's
    /// home): `SRC:DST[:ro]`, or `type=bind,source=SRC,target=DST[,readonly]`
    /// (`type=volume,source=NAME,…`), as podman's `-v` and `--mount` read them. Applies when
    /// the env starts. Repeatable.
    #[arg(
        long = "mount",
        short = 'v',
        visible_alias = "volume",
        value_name = "SRC:DST[:ro]",
        value_parser = crate::config::mounts::MountSpec::parse_cli
    )]
    pub mounts: Vec<crate::config::mounts::MountSpec>,
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
        /// Also remove the named volumes no env uses (as `podman system prune --volumes`).
        #[arg(long)]
        volumes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List the volumes: name, size, and the envs that mount them.
    Ls {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove volumes (refused while an env that mounts one runs, unless --force).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchiveFormat {
    Oci,
    Docker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigFormat {
    Toml,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}
