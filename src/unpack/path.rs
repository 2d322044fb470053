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

/// The directories entries were last written in, open: most entries of a layer go into the
/// directory of the entry before them, and an entry is then created by its name in the open
/// directory instead of by a walk of its whole path. Each was opened beneath the layer's root
/// with no symlink followed; the writer empties the cache whenever it removes anything (the
/// only way a directory of the layer can be replaced), so an open directory is always the one
/// at its path.
#[derive(Default)]
pub struct OpenDirs {
    /// Most recently used last.
    open: Vec<(PathBuf, Tree)>,
}

/// Directories kept open (a few fds).
const OPEN_DIRS: usize = 8;

impl OpenDirs {
    /// The directory `rel` beneath `root`, opened now or before.
    pub fn get(&mut self, root: &Tree, rel: &Path) -> std::io::Result<&Tree> {
        match self.open.iter().position(|(p, _)| p == rel) {
            Some(i) => {
                let hit = self.open.remove(i);
                self.open.push(hit);
            }
            None => {
                let dir = root.dir(rel)?;
                if self.open.len() == OPEN_DIRS {
                    self.open.remove(0);
                }
                self.open.push((rel.to_path_buf(), dir));
            }
        }
        Ok(&self.open[self.open.len() - 1].1)
    }

    /// Forgets them all (something in the layer was removed).
    pub fn clear(&mut self) {
        self.open.clear();
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

    #[test]
    fn open_dirs_are_the_ones_at_their_paths_and_never_symlinks() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink("a", t.path().join("l")).unwrap();
        let tree = Tree::open(t.path()).unwrap();
        let mut open = OpenDirs::default();
        for i in 0..20 {
            // More directories than are kept open, then the first again.
            let rel = PathBuf::from(format!("a/b/{i}"));
            std::fs::create_dir(t.path().join(&rel)).unwrap();
            open.get(&tree, &rel).unwrap();
        }
        let st = rustix::fs::fstat(open.get(&tree, Path::new("a/b/0")).unwrap().fd()).unwrap();
        let want = std::fs::metadata(t.path().join("a/b/0")).unwrap();
        assert_eq!(st.st_ino, std::os::unix::fs::MetadataExt::ino(&want));
        assert!(open.get(&tree, Path::new("l/b")).is_err());
        assert!(open.open.len() <= OPEN_DIRS);
    }
}
