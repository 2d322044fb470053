//! What a session opens of the host when the user or a trusted project asks for it: the GUI and
//! sound sockets (`gui`) and the GPU's devices and driver libraries (`gpu`, from a CDI spec in
//! `cdi`), found from the host's facts and returned as an [`Opening`]: binds, variables, the
//! few files the env gets from dev (a display cookie, an `ld.so.conf.d` drop-in) and notes.
//! Nothing here mounts: the binds go into the sandbox plan (`sandbox::plan::Layout::binds`).
//! Only [`write_files`] writes, and only into the env's own runtime directory.

pub mod cdi;
pub mod gpu;
pub mod gui;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::sandbox::plan::{Bind, BindKind};
use crate::ui::UserError;

/// Which GPU the session gets (`gpu = …` in dev.toml or config.toml, `--gpu`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuMode {
    /// None at all.
    #[default]
    None,
    /// NVIDIA's if the host has one, else `/dev/dri` (and `/dev/kfd`) if it has them.
    Auto,
    /// NVIDIA's, or an error.
    Nvidia,
}

impl GpuMode {
    pub fn parse(s: &str) -> Option<GpuMode> {
        match s {
            "none" => Some(GpuMode::None),
            "auto" => Some(GpuMode::Auto),
            "nvidia" => Some(GpuMode::Nvidia),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GpuMode::None => "none",
            GpuMode::Auto => "auto",
            GpuMode::Nvidia => "nvidia",
        }
    }
}

/// What the session asks to open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Asked {
    pub gui: bool,
    pub gpu: GpuMode,
}

impl Asked {
    pub fn any(&self) -> bool {
        self.gui || self.gpu != GpuMode::None
    }
}

/// Something dev makes on the host for the env, in its runtime directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostFile {
    Dir(PathBuf),
    File { path: PathBuf, bytes: Vec<u8> },
}

/// What a session opens of the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Opening {
    pub binds: Vec<Bind>,
    /// Set inside, over the image's and the host's.
    pub env: Vec<(String, String)>,
    /// Directories appended to `PATH` inside.
    pub path: Vec<String>,
    /// Made on the host before the env starts (sources of some binds).
    pub files: Vec<HostFile>,
    /// Run the image's `ldconfig` as root inside once the tree is built.
    pub ldconfig: bool,
    /// What was opened, a few words each, for the one line a start shows.
    pub opened: Vec<String>,
    pub notes: Vec<String>,
}

impl Opening {
    fn bind(
        &mut self,
        source: PathBuf,
        target: impl Into<PathBuf>,
        readonly: bool,
        kind: BindKind,
    ) {
        let target = target.into();
        // The first bind of a target wins (`/dev/dri` for the GUI and for the GPU).
        if self.binds.iter().any(|b| b.target == target) {
            return;
        }
        self.binds.push(Bind {
            source,
            target,
            readonly,
            kind,
        });
    }

    fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.env.push((key.to_string(), value)),
        }
    }

    /// The targets of the binds: what a running env must already have for a session to join.
    pub fn targets(&self) -> Vec<PathBuf> {
        self.binds.iter().map(|b| b.target.clone()).collect()
    }
}

/// The host's facts the discovery reads.
pub struct Facts<'a> {
    pub vars: &'a BTreeMap<String, String>,
    /// Where `/dev`, `/etc/cdi`, `/var/run/cdi` and the driver's files are looked for: `/`
    /// (see [`host_root`]).
    pub root: &'a Path,
    /// The env's own runtime directory on the host, for the files dev makes.
    pub runtime: &'a Path,
    /// The id the command runs as inside (its `XDG_RUNTIME_DIR` is `/run/user/<uid>`).
    pub uid: u32,
    /// `ldconfig -p` of the host (for `root`), when the session asks for an NVIDIA GPU.
    pub ldcache: Option<&'a str>,
}

/// The variable that points the host's facts at a synthetic host tree. Test-only: read only
/// in a debug build, never in a release.
pub const TEST_HOST_ROOT: &str = "DEV_TEST_HOST_ROOT";

/// Where the host's devices and driver files are looked for: `/`, or in a debug build the
/// directory [`TEST_HOST_ROOT`] names (the end-to-end tests' synthetic GPU host).
pub fn host_root() -> PathBuf {
    if cfg!(debug_assertions) {
        if let Some(root) = std::env::var_os(TEST_HOST_ROOT).map(PathBuf::from) {
            if root.is_absolute() {
                return root;
            }
        }
    }
    PathBuf::from("/")
}

/// `abs` (an absolute host path) under `root`.
pub fn under(root: &Path, abs: &Path) -> PathBuf {
    root.join(abs.strip_prefix("/").unwrap_or(abs))
}

/// Finds what `asked` opens on this host.
pub fn open(asked: Asked, facts: &Facts) -> Result<Opening> {
    let mut out = Opening::default();
    if asked.gui {
        gui::discover(facts, &mut out);
    }
    if asked.gpu != GpuMode::None {
        gpu::discover(asked.gpu, facts, &mut out)?;
    }
    Ok(out)
}

/// Makes the opening's files in `dir`, the env's runtime directory (the user's own, 0700).
pub fn write_files(dir: &Path, opening: &Opening) -> Result<()> {
    let dirs = std::iter::once(HostFile::Dir(dir.to_path_buf()));
    for f in dirs.chain(opening.files.iter().cloned()) {
        match f {
            HostFile::Dir(ref dir) => {
                match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot create `{}`", dir.display()))
                    }
                }
                let st = std::fs::symlink_metadata(dir)
                    .with_context(|| format!("cannot stat `{}`", dir.display()))?;
                if !st.is_dir() || st.uid() != nix::unistd::getuid().as_raw() {
                    return Err(UserError::with_hint(
                        format!("`{}` is not a directory of yours", dir.display()),
                        "remove it; dev makes it again at the env's next start",
                    ));
                }
            }
            HostFile::File {
                ref path,
                ref bytes,
            } => crate::atomic::write(path, bytes, 0o600, crate::atomic::Durability::Volatile)
                .with_context(|| format!("cannot write `{}`", path.display()))?,
        }
    }
    Ok(())
}

/// The record of what a running env opened, next to its files: a later session checks it.
pub fn opened_record(runtime: &Path) -> PathBuf {
    runtime.join("opened.json")
}

/// Saves the targets a starting env binds, for the sessions that join it.
pub fn save_opened(runtime: &Path, opening: &Opening) -> Result<()> {
    let path = opened_record(runtime);
    crate::atomic::write(
        &path,
        &serde_json::to_vec(&opening.targets())?,
        0o600,
        crate::atomic::Durability::Volatile,
    )
    .with_context(|| format!("cannot write `{}`", path.display()))
}

/// What the running env opened (nothing, when no record is there).
pub fn load_opened(runtime: &Path) -> Vec<PathBuf> {
    read_bounded(&opened_record(runtime), 1 << 20)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// At most `max` bytes of a file; longer is an error.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// An absolute path with no `..`, no `.` and no NUL: safe to join under a root.
pub fn plain_absolute(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    // (Components would drop a `.` without a word: the text is checked.)
    let ok = path.is_absolute() && !p.contains('\0') && p.split('/').all(|c| c != "." && c != "..");
    ok.then(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_absolute_paths_only() {
        assert!(plain_absolute("/dev/nvidia0").is_some());
        for p in ["dev/x", "/a/../b", "/a/./b", "/a\0b", ""] {
            assert!(plain_absolute(p).is_none(), "{p:?}");
        }
        assert_eq!(
            under(Path::new("/t/root"), Path::new("/dev/dri")),
            Path::new("/t/root/dev/dri")
        );
    }

    #[test]
    fn a_target_is_bound_once() {
        let mut o = Opening::default();
        o.bind("/dev/dri".into(), "/dev/dri", false, BindKind::Dir);
        o.bind("/other".into(), "/dev/dri", true, BindKind::Dir);
        assert_eq!(o.binds.len(), 1);
        assert_eq!(o.binds[0].source, Path::new("/dev/dri"));
    }
}
