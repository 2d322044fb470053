//! Path safety for layer entries: names are made relative to the layer root, `..` is refused,
//! and no entry is ever written through a symlink.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use rustix::fs::FileType;

use super::UnpackError;
use crate::beneath::{self, Tree};

/// Turns a tar entry name into a path relative to the layer root. Leading `/` and `./` are
/// dropped (as Docker does); a `..` anywhere is refused rather than resolved.
pub fn normalize(name: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(UnpackError::Escape {
                    entry: name.display().to_string(),
                })
            }
            Component::Normal(p) => out.push(p),
        }
    }
    Ok(out)
}

/// Directories of the layer being unpacked that are known to be real directories, so that each
/// entry's parents are checked with `lstat` only once.
#[derive(Default)]
pub struct SafeDirs {
    known: HashSet<PathBuf>,
}

impl SafeDirs {
    /// Makes sure every parent of `rel` under `root` is a real directory (creating missing ones
    /// with mode 0755) and none is a symlink. Entries are checked from the top down, so a
    /// directory replaced by a symlink earlier in the layer is caught.
    pub fn prepare_parents(&mut self, root: &Tree, rel: &Path) -> Result<(), UnpackError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut cur = PathBuf::new();
        for c in parent.components() {
            cur.push(c);
            if self.known.contains(&cur) {
                continue;
            }
            match root.lstat(&cur) {
                Ok(Some(st)) if beneath::file_type(&st) == FileType::Symlink => {
                    return Err(UnpackError::ThroughSymlink {
                        entry: rel.display().to_string(),
                        link: cur.display().to_string(),
                    })
                }
                Ok(Some(st)) if beneath::file_type(&st) == FileType::Directory => {}
                Ok(Some(_)) => {
                    return Err(UnpackError::NotADirectory {
                        entry: rel.display().to_string(),
                        parent: cur.display().to_string(),
                    })
                }
                Ok(None) => root
                    .mkdir(&cur, 0o755)
                    .map_err(|e| UnpackError::io(&cur, e))?,
                Err(e) => return Err(UnpackError::io(&cur, e)),
            }
            self.known.insert(cur.clone());
        }
        Ok(())
    }

    pub fn insert(&mut self, rel: &Path) {
        self.known.insert(rel.to_path_buf());
    }

    pub fn forget(&mut self, rel: &Path) {
        self.known.remove(rel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_refuses_dotdot() {
        assert_eq!(
            normalize(Path::new("/etc/passwd")).unwrap(),
            PathBuf::from("etc/passwd")
        );
        assert_eq!(
            normalize(Path::new("./a/./b/")).unwrap(),
            PathBuf::from("a/b")
        );
        assert!(normalize(Path::new("../x")).is_err());
        assert!(normalize(Path::new("a/../../x")).is_err());
        assert!(normalize(Path::new("a/..")).is_err());
    }

    #[test]
    fn refuses_symlinked_parent() {
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/tmp", t.path().join("l")).unwrap();
        let mut s = SafeDirs::default();
        let tree = Tree::open(t.path()).unwrap();
        assert!(s.prepare_parents(&tree, Path::new("l/x")).is_err());
        s.prepare_parents(&tree, Path::new("d/e/f")).unwrap();
        assert!(t.path().join("d/e").is_dir());
    }
}
