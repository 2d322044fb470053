//! A fake kernel for tests: [`Recorder`] implements [`Sys`] by recording each call as data.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::Sys;
use crate::sandbox::plan::Flag;

/// One call made through [`Sys`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
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
}

/// One line per call, as the tests read them.
impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
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
        }
    }
}

/// Records every call instead of making it; a clone of a host path after the pivot panics.
#[derive(Default)]
pub struct Recorder {
    pub calls: Vec<Call>,
    pivoted: bool,
}

impl Recorder {
    /// The calls, one line each (see [`Call`]'s `Display`).
    pub fn lines(&self) -> Vec<String> {
        self.calls.iter().map(Call::to_string).collect()
    }
}

impl Sys for Recorder {
    /// A clone is the path it was cloned from.
    type Tree = PathBuf;

    fn clone_tree(&mut self, source: &Path, readonly: bool) -> Result<PathBuf> {
        assert!(
            !self.pivoted,
            "host path {} read after the pivot",
            source.display()
        );
        self.calls.push(Call::Clone {
            source: source.into(),
            readonly,
        });
        Ok(source.to_path_buf())
    }
    fn pivot_root(&mut self, root: &Path) -> Result<()> {
        self.pivoted = true;
        self.calls.push(Call::Pivot { root: root.into() });
        Ok(())
    }
    fn mkdir_all(&mut self, path: &Path, mode: u32) -> Result<()> {
        self.calls.push(Call::Mkdir {
            path: path.into(),
            mode,
        });
        Ok(())
    }
    fn create_file(&mut self, path: &Path) -> Result<()> {
        self.calls.push(Call::File { path: path.into() });
        Ok(())
    }
    fn mount(&mut self, fstype: &str, target: &Path, flags: &[Flag], data: &str) -> Result<()> {
        self.calls.push(Call::Mount {
            fstype: fstype.into(),
            target: target.into(),
            flags: flags.to_vec(),
            data: data.into(),
        });
        Ok(())
    }
    fn attach(&mut self, tree: &PathBuf, target: &Path) -> Result<()> {
        self.calls.push(Call::Attach {
            tree: tree.clone(),
            target: target.into(),
        });
        Ok(())
    }
    fn symlink(&mut self, target: &Path, link: &Path) -> Result<()> {
        self.calls.push(Call::Symlink {
            target: target.into(),
            link: link.into(),
        });
        Ok(())
    }
}
