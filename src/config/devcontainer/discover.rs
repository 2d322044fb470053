//! Where a project's devcontainer.json is: looked up beneath the project directory, no
//! symlink followed; which project a `--config` file belongs to.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{DIR, FILE_NAME};
use crate::ui::UserError;

/// The devcontainer.json of a project directory, in the spec's order:
/// `.devcontainer/devcontainer.json`, `.devcontainer.json`, then `.devcontainer/<name>/devcontainer.json`
/// (more than one of those: the error lists them). Paths relative to `root`, looked up
/// beneath it with no symlink followed. `None` when there is none.
pub fn find(root: &Path) -> Result<Option<PathBuf>> {
    let Ok(tree) = crate::beneath::Tree::open(root) else {
        return Ok(None);
    };
    let kind = |rel: &Path| {
        tree.lstat(rel)
            .ok()
            .flatten()
            .map(|st| crate::beneath::file_type(&st))
    };
    // A link where a config would be is found, so that reading it refuses it by name (a
    // linked `.devcontainer` too): skipped, a parent directory's config would be used instead.
    if kind(Path::new(DIR)) == Some(rustix::fs::FileType::Symlink) {
        return Ok(Some(Path::new(DIR).join(FILE_NAME)));
    }
    for rel in [
        Path::new(DIR).join(FILE_NAME),
        PathBuf::from(".devcontainer.json"),
    ] {
        if kind(&rel).is_some_and(|k| k != rustix::fs::FileType::Directory) {
            return Ok(Some(rel));
        }
    }
    let is_file = |rel: &Path| kind(rel) == Some(rustix::fs::FileType::RegularFile);
    let Ok(names) = tree.names(Path::new(DIR)) else {
        return Ok(None);
    };
    let mut found: Vec<PathBuf> = names
        .iter()
        .take(256)
        .map(|n| Path::new(DIR).join(n).join(FILE_NAME))
        .filter(|rel| is_file(rel))
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(UserError::with_hint(
            format!(
                "`{}` has {} devcontainer.json files: {}",
                root.display(),
                found.len(),
                found
                    .iter()
                    .map(|p| format!("`{}`", p.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("pick one with `--config {}`", found[0].display()),
        )),
    }
}

/// Whether `dir` holds something [`find`] may find (a cheap look, for guesses).
pub fn maybe_in(dir: &Path) -> bool {
    dir.join(DIR).symlink_metadata().is_ok()
        || dir.join(".devcontainer.json").symlink_metadata().is_ok()
}

/// The project root a devcontainer.json given with `--config` belongs to: the directory that
/// holds its `.devcontainer` folder, else the file's own directory.
pub fn root_of(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new("/"));
    dir.ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == DIR))
        .and_then(Path::parent)
        .unwrap_or(dir)
        .to_path_buf()
}
