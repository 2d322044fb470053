//! A fake kernel for tests: [`Recorder`] implements [`Sys`] by recording each call as data.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::ns::CloneFlags;
use super::Sys;
use crate::sandbox::plan::{BindKind, Flag};

/// One call made through [`Sys`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Unshare {
        flags: CloneFlags,
    },
    MakePrivate,
    Overlay {
        layers_dir: PathBuf,
        options: String,
        target: PathBuf,
    },
    StartFuse {
        layers_dir: PathBuf,
        options: String,
        target: PathBuf,
    },
    StopFuse {
        target: PathBuf,
    },
    Bind {
        path: PathBuf,
    },
    Detach {
        path: PathBuf,
    },
    Hostname {
        name: String,
    },
    Clone {
        source: PathBuf,
        readonly: bool,
    },
    Pivot {
        root: PathBuf,
    },
    Mkdir {
        path: PathBuf,
        mode: u32,
    },
    File {
        path: PathBuf,
    },
    Mount {
        fstype: String,
        target: PathBuf,
        flags: Vec<Flag>,
        data: String,
    },
    Attach {
        tree: PathBuf,
        target: PathBuf,
    },
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    BindBeneath {
        tree: PathBuf,
        target: PathBuf,
        kind: BindKind,
        owner: Option<(u32, u32)>,
    },
}

/// One line per call, as the tests read them.
impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Unshare { flags } => write!(f, "unshare {flags:?}"),
            Call::MakePrivate => write!(f, "make-private"),
            Call::Overlay {
                layers_dir,
                options,
                target,
            } => write!(
                f,
                "overlay {} in {} {options}",
                target.display(),
                layers_dir.display()
            ),
            Call::StartFuse {
                layers_dir,
                options,
                target,
            } => write!(
                f,
                "fuse {} in {} {options}",
                target.display(),
                layers_dir.display()
            ),
            Call::StopFuse { target } => write!(f, "stop-fuse {}", target.display()),
            Call::Bind { path } => write!(f, "bind {}", path.display()),
            Call::Detach { path } => write!(f, "detach {}", path.display()),
            Call::Hostname { name } => write!(f, "hostname {name}"),
            Call::Clone { source, readonly } => {
                write!(f, "clone {} ro={readonly}", source.display())
            }
            Call::Pivot { root } => write!(f, "pivot {}", root.display()),
            Call::Mkdir { path, mode } => write!(f, "mkdir {} {mode:o}", path.display()),
            Call::File { path } => write!(f, "file {}", path.display()),
            Call::Mount {
                fstype,
                target,
                flags,
                data,
            } => write!(f, "mount {fstype} {} {flags:?} {data}", target.display()),
            Call::Attach { tree, target } => {
                write!(f, "attach {} {}", tree.display(), target.display())
            }
            Call::Symlink { target, link } => {
                write!(f, "symlink {} -> {}", link.display(), target.display())
            }
            Call::BindBeneath {
                tree,
                target,
                kind,
                owner,
            } => {
                write!(
                    f,
                    "bind-beneath {} {} {kind:?}",
                    tree.display(),
                    target.display()
                )?;
                if let Some((uid, gid)) = owner {
                    write!(f, " owner={uid}:{gid}")?;
                }
                Ok(())
            }
        }
    }
}

/// Records every call instead of making it; a clone of a host path after the pivot panics.
/// The calls whose line starts with one of `failing` are recorded, then fail (as a kernel
/// without them would).
#[derive(Default)]
pub struct Recorder {
    pub calls: Vec<Call>,
    pub failing: Vec<&'static str>,
    pivoted: bool,
}

impl Recorder {
    /// A recorder whose calls starting with one of `failing` fail.
    pub fn failing(failing: &[&'static str]) -> Recorder {
        Recorder {
            failing: failing.to_vec(),
            ..Recorder::default()
        }
    }

    /// The calls, one line each (see [`Call`]'s `Display`).
    pub fn lines(&self) -> Vec<String> {
        self.calls.iter().map(Call::to_string).collect()
    }

    fn record(&mut self, call: Call) -> Result<()> {
        let line = call.to_string();
        self.calls.push(call);
        match self.failing.iter().find(|f| line.starts_with(*f)) {
            Some(f) => bail!("{f}: not on this fake kernel"),
            None => Ok(()),
        }
    }
}

impl Sys for Recorder {
    /// A clone is the path it was cloned from.
    type Tree = PathBuf;
    /// A fuse-overlayfs is the path it mounted on.
    type Fuse = PathBuf;

    fn unshare(&mut self, flags: CloneFlags) -> Result<()> {
        self.record(Call::Unshare { flags })
    }
    fn make_private(&mut self) -> Result<()> {
        self.record(Call::MakePrivate)
    }
    fn mount_overlay(&mut self, layers_dir: &Path, options: &str, target: &Path) -> Result<()> {
        self.record(Call::Overlay {
            layers_dir: layers_dir.into(),
            options: options.into(),
            target: target.into(),
        })
    }
    fn start_fuse(&mut self, layers_dir: &Path, options: &str, target: &Path) -> Result<PathBuf> {
        self.record(Call::StartFuse {
            layers_dir: layers_dir.into(),
            options: options.into(),
            target: target.into(),
        })?;
        Ok(target.into())
    }
    fn stop_fuse(&mut self, fuse: PathBuf) {
        let _ = self.record(Call::StopFuse { target: fuse });
    }
    fn bind_self(&mut self, path: &Path) -> Result<()> {
        self.record(Call::Bind { path: path.into() })
    }
    fn detach(&mut self, path: &Path) -> Result<()> {
        self.record(Call::Detach { path: path.into() })
    }
    fn set_hostname(&mut self, name: &str) -> Result<()> {
        self.record(Call::Hostname { name: name.into() })
    }

    fn clone_tree(&mut self, source: &Path, readonly: bool) -> Result<PathBuf> {
        assert!(
            !self.pivoted,
            "host path {} read after the pivot",
            source.display()
        );
        self.record(Call::Clone {
            source: source.into(),
            readonly,
        })?;
        Ok(source.to_path_buf())
    }
    fn pivot_root(&mut self, root: &Path) -> Result<()> {
        self.pivoted = true;
        self.record(Call::Pivot { root: root.into() })
    }
    fn mkdir_all(&mut self, path: &Path, mode: u32) -> Result<()> {
        self.record(Call::Mkdir {
            path: path.into(),
            mode,
        })
    }
    fn create_file(&mut self, path: &Path) -> Result<()> {
        self.record(Call::File { path: path.into() })
    }
    fn mount(&mut self, fstype: &str, target: &Path, flags: &[Flag], data: &str) -> Result<()> {
        self.record(Call::Mount {
            fstype: fstype.into(),
            target: target.into(),
            flags: flags.to_vec(),
            data: data.into(),
        })
    }
    fn attach(&mut self, tree: &PathBuf, target: &Path) -> Result<()> {
        self.record(Call::Attach {
            tree: tree.clone(),
            target: target.into(),
        })
    }
    fn bind_beneath(
        &mut self,
        tree: &PathBuf,
        target: &Path,
        kind: BindKind,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        assert!(self.pivoted, "a bind is placed only inside the new root");
        self.record(Call::BindBeneath {
            tree: tree.clone(),
            target: target.into(),
            kind,
            owner,
        })
    }
    fn symlink(&mut self, target: &Path, link: &Path) -> Result<()> {
        self.record(Call::Symlink {
            target: target.into(),
            link: link.into(),
        })
    }
}
