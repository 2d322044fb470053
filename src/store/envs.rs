//! Environments: one persistent writable layer and home per project (and id mapping), plus
//! throwaway ones for `--rm` and for `--image` runs outside a project.

use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};

use super::{write_atomic, Store};
use crate::oci::Digest;
use crate::runtime::{ProcId, RunState};

/// An env's directories.
#[derive(Clone, Debug)]
pub struct EnvDirs {
    pub dir: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    pub copy: PathBuf,
    pub home: PathBuf,
}

impl EnvDirs {
    fn at(dir: PathBuf) -> Self {
        EnvDirs {
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            copy: dir.join("rootfs"),
            home: dir.join("home"),
            dir,
        }
    }
}

/// What an env was made from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnvRecord {
    #[serde(default)]
    pub name: Option<String>,
    pub project: PathBuf,
    pub image: String,
    pub manifest_digest: Digest,
    /// The read-only layers under the env's own (tools layer first, then the image's, top first).
    #[serde(default)]
    pub layers: Vec<Digest>,
}

/// A persistent env, locked while it runs.
pub struct Env {
    lock: Flock<File>,
}

impl Env {
    /// The lock's open file, for the env's keeper to hold (see `sandbox::parent::start_env`).
    pub fn lock_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.lock.as_fd()
    }

    /// Leaves the lock to the keeper, which holds the same open file (see [`Env::lock_fd`]):
    /// this process's descriptor is closed without unlocking it.
    pub fn hand_over_lock(self) {
        use std::os::fd::AsRawFd;
        let fd = self.lock.as_raw_fd();
        std::mem::forget(self.lock);
        let _ = nix::unistd::close(fd);
    }
}

fn mkdir(p: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .with_context(|| format!("cannot create `{}`", p.display()))
}

/// One entry of an env's writable tree (its layer, its home, a volume): its path relative to
/// the tree's root and its own status (a symlink's, never its target's).
#[derive(Debug)]
pub struct EnvTreeEntry {
    pub rel: PathBuf,
    pub stat: crate::beneath::Stat,
}

/// How deep and how wide a walk of an env's tree goes before it gives up.
const TREE_MAX_DEPTH: usize = 256;
const TREE_MAX_ENTRIES: usize = 2_000_000;

/// Every entry of the env's tree at `top` (nothing there: none), sorted by path. The env's own
/// processes shape that tree while this runs, so it is walked beneath the tree's root fd: each
/// name is opened `O_PATH | O_NOFOLLOW` in its parent's fd and only a directory held that way
/// is entered; no path is resolved again. One fd is open per level, at most
/// `TREE_MAX_DEPTH` levels and `TREE_MAX_ENTRIES` entries are walked. A directory dev cannot
/// read (a sub-root's, mode 0700) is listed, not entered.
pub fn walk_env_tree(top: &Path) -> Result<Vec<EnvTreeEntry>> {
    let root = match crate::beneath::Tree::open(top) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot open `{}`", top.display())),
    };
    let mut out = Vec::new();
    walk_dir(top, &root, &PathBuf::new(), &mut out)?;
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

fn walk_dir(
    top: &Path,
    dir: &crate::beneath::Tree,
    rel: &Path,
    out: &mut Vec<EnvTreeEntry>,
) -> Result<()> {
    use rustix::fs::{Dir, FileType};
    let too_big = |what: String| {
        crate::ui::UserError::with_hint(
            format!("the env's tree `{}` {what}", top.display()),
            "remove what the env made with `dev rm`, or look inside with `dev shell`",
        )
    };
    if rel.components().count() >= TREE_MAX_DEPTH {
        return Err(too_big(format!(
            "nests directories more than {TREE_MAX_DEPTH} deep"
        )));
    }
    let Ok(listing) = Dir::read_from(dir.fd()) else {
        return Ok(());
    };
    let mut names = Vec::new();
    for e in listing {
        let Ok(e) = e else { break };
        let name = std::ffi::OsStr::from_bytes(e.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        if out.len() + names.len() >= TREE_MAX_ENTRIES {
            return Err(too_big(format!(
                "holds more than {TREE_MAX_ENTRIES} entries"
            )));
        }
        names.push(name.to_os_string());
    }
    for name in names {
        // Gone since it was listed: the env changed it; nothing to report.
        let Ok(entry) = dir.entry(&name) else {
            continue;
        };
        let rel = rel.join(&name);
        let sub = (entry.file_type() == FileType::Directory)
            .then(|| entry.open_dir().ok())
            .flatten();
        out.push(EnvTreeEntry {
            rel: rel.clone(),
            stat: entry.stat,
        });
        if let Some(sub) = sub {
            walk_dir(top, &sub, &rel, out)?;
        }
    }
    Ok(())
}

impl Store {
    pub fn envs_dir(&self, mapping: &str) -> PathBuf {
        self.root.join("envs-v1").join(mapping)
    }

    /// The probe result for the overlay backend.
    pub fn overlay_probe_path(&self) -> PathBuf {
        self.root.join("overlay-v1.json")
    }

    /// The directory of the project's env (whether or not it exists yet).
    pub fn env_dir(&self, mapping: &str, project: &Path) -> PathBuf {
        let name = crate::config::project::hostname(project);
        let hash = Digest::of_bytes(project.as_os_str().as_encoded_bytes());
        self.envs_dir(mapping)
            .join(format!("{name}-{}", &hash.hex()[..12]))
    }

    /// The project's env directories (nothing is created or locked).
    pub fn env_dirs(&self, mapping: &str, project: &Path) -> EnvDirs {
        EnvDirs::at(self.env_dir(mapping, project))
    }

    /// Serializes starting a project's env (and checking whether it runs) across processes.
    pub fn lock_env_start(&self, mapping: &str, project: &Path) -> Result<Flock<File>> {
        let dir = self.env_dir(mapping, project);
        mkdir(&dir)?;
        self.lock_file(&dir.join("start.lock"), true)
    }

    /// The lock of the env in `dir` (of `run_dir`'s project) once no keeper holds it: a keeper
    /// that is stopping the env (its runtime state already gone) is waited for, as long as a
    /// stop may take. `None` if the env runs, or a start holds it (then it soon runs).
    pub fn lock_stopped_env(&self, dir: &Path, run_dir: &Path) -> Option<Flock<File>> {
        use nix::fcntl::FlockArg;
        let deadline = std::time::Instant::now()
            + crate::runtime::STOP_TIMEOUT
            + std::time::Duration::from_secs(2);
        loop {
            let file = File::open(dir.join("lock")).ok()?;
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                return Some(lock);
            }
            if self.running(run_dir).is_some() || std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// The env's name: the one it was given (`--name`), else the project directory's, made
    /// unique among this user's envs.
    pub fn env_name(&self, mapping: &str, project: &Path) -> String {
        let mine = self.env_dir(mapping, project);
        if let Some(name) = fs::read(mine.join("env.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<EnvRecord>(&b).ok())
            .and_then(|r| r.name)
        {
            return name;
        }
        let base = crate::config::project::hostname(project);
        (1..)
            .map(|i| {
                if i == 1 {
                    base.clone()
                } else {
                    format!("{base}-{i}")
                }
            })
            .find(|n| self.name_owner(mapping, project, n).is_none())
            .unwrap_or(base)
    }

    /// The project of another env than `project`'s that has the name `name`.
    pub fn name_owner(&self, mapping: &str, project: &Path, name: &str) -> Option<PathBuf> {
        self.env_records(mapping)
            .into_iter()
            .filter(|(_, r)| r.project != project)
            .find(|(_, r)| {
                r.name
                    .clone()
                    .unwrap_or_else(|| crate::config::project::hostname(&r.project))
                    == name
            })
            .map(|(_, r)| r.project)
    }

    /// The project's env without locking it, if it exists and was made from `manifest`.
    pub fn env_dirs_if_current(
        &self,
        mapping: &str,
        project: &Path,
        manifest: &Digest,
    ) -> Option<EnvDirs> {
        let dirs = EnvDirs::at(self.env_dir(mapping, project));
        let rec: EnvRecord =
            serde_json::from_slice(&fs::read(dirs.dir.join("env.json")).ok()?).ok()?;
        (&rec.manifest_digest == manifest).then_some(dirs)
    }

    /// The project's env, created if new and locked for this session. An env made from another
    /// image than `manifest` is set aside (kept until `dev system prune`) and a fresh one made.
    pub fn open_env(
        &self,
        mapping: &str,
        project: &Path,
        image: &str,
        manifest: &Digest,
        layers: &[Digest],
        name: Option<&str>,
    ) -> Result<Env> {
        if let Some(n) = name {
            if let Some(other) = self.name_owner(mapping, project, n) {
                return Err(crate::ui::UserError::with_hint(
                    format!(
                        "the name `{n}` is taken by the env of `{}`",
                        other.display()
                    ),
                    format!("choose another, or remove that env first (`dev rm {n}`)"),
                ));
            }
        }
        // Kept when the env is made again from another image.
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| self.env_name(mapping, project));
        let dir = self.env_dir(mapping, project);
        mkdir(&dir)?;
        // Held by the env's keeper: one still stopping is waited for.
        let mut lock = self.lock_file(&dir.join("lock"), true)?;
        let dirs = EnvDirs::at(dir);
        let record_path = dirs.dir.join("env.json");
        let record: Option<EnvRecord> = fs::read(&record_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(old) = record.filter(|r| &r.manifest_digest != manifest) {
            let trash = self.envs_dir(mapping).join("tmp").join(format!(
                "{}.{}",
                dirs.dir
                    .file_name()
                    .map_or("env".into(), |n| n.to_string_lossy()),
                std::process::id()
            ));
            // The layer's top directories belong to ids inside the env: they cannot change
            // parent from here, but the env directory (the user's) can; the home comes back.
            mkdir(trash.parent().unwrap_or(&dirs.dir))?;
            fs::rename(&dirs.dir, &trash)
                .with_context(|| format!("cannot set `{}` aside", dirs.dir.display()))?;
            mkdir(&dirs.dir)?;
            if trash.join("home").exists() {
                fs::rename(trash.join("home"), &dirs.home)
                    .with_context(|| format!("cannot keep `{}`", dirs.home.display()))?;
            }
            lock = self.lock_file(&dirs.dir.join("lock"), true)?;
            crate::ui::note(format_args!(
                "note: the env was made from {} ({}); starting a fresh one for {image} (the old changes are kept until `dev system prune`)",
                old.image,
                old.manifest_digest.short()
            ));
        }
        mkdir(&dirs.home)?;
        self.make_run_dir(&self.run_dir(mapping, project))?;
        let rec = EnvRecord {
            name: Some(name),
            project: project.to_path_buf(),
            image: image.to_string(),
            manifest_digest: manifest.clone(),
            layers: layers.to_vec(),
        };
        let json = serde_json::to_vec_pretty(&rec)?;
        // Written only when it changes: a warm start makes no write that must reach the disk.
        if fs::read(&record_path).ok().as_deref() != Some(&json[..]) {
            write_atomic(&record_path, &json)?;
        }
        Ok(Env { lock })
    }

    /// A throwaway env under `envs-v1/<mapping>/tmp/`, removed when the session ends.
    pub fn scratch_env(&self, mapping: &str) -> Result<EnvDirs> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = self
            .envs_dir(mapping)
            .join("tmp")
            .join(format!("rm-{}-{nanos:08x}", std::process::id()));
        mkdir(&dir)?;
        let dirs = EnvDirs::at(dir);
        mkdir(&dirs.home)?;
        Ok(dirs)
    }
}

/// Whether a live process this user can inspect (other than this one) is in the user
/// namespace with inode `ino`. (A zombie has left its namespaces' mounts.)
fn userns_in_use(ino: u64) -> bool {
    let me = std::process::id().to_string();
    let want = format!("user:[{ino}]");
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let name = e.file_name();
            let pid = name.to_string_lossy();
            pid.bytes().all(|b| b.is_ascii_digit())
                && pid != me
                && fs::read_link(e.path().join("ns/user"))
                    .is_ok_and(|l| l.as_os_str() == want.as_str())
                && pid.parse().ok().and_then(ProcId::of).is_some()
        })
}

impl Store {
    /// Runtime files of a project's env: `$XDG_RUNTIME_DIR/dev/<hash>/` (short, for the socket).
    pub fn run_dir(&self, mapping: &str, project: &Path) -> PathBuf {
        let base = dirs::runtime_dir().unwrap_or_else(|| self.root.join("run-v1"));
        let key = Digest::of_bytes(format!("{mapping}\0{}", project.display()).as_bytes());
        base.join("dev").join(&key.hex()[..16])
    }

    /// Makes the env's runtime directory and the `dev` one above it (mode 0700), as the user,
    /// before the env's keeper starts: the keeper runs inside the env's user namespace, where
    /// what it makes belongs to the subordinate root, and a later session with a single-id map
    /// could not create its own directory there.
    pub fn make_run_dir(&self, run_dir: &Path) -> Result<()> {
        let Some(parent) = run_dir.parent() else {
            return Ok(());
        };
        if let Some(base) = parent.parent() {
            mkdir(base)?;
        }
        for (i, dir) in [parent, run_dir].into_iter().enumerate() {
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create `{}`", dir.display()))
                }
            }
            let st = fs::symlink_metadata(dir)
                .with_context(|| format!("cannot read `{}`", dir.display()))?;
            let me = nix::unistd::geteuid().as_raw();
            if st.is_dir() && st.uid() == me {
                continue;
            }
            // An older dev's keeper made it inside the namespace: empty once its envs
            // stopped, it goes (its own directory is the user's to remove from).
            if i == 0
                && st.is_dir()
                && fs::remove_dir(dir).is_ok()
                && fs::DirBuilder::new().mode(0o700).create(dir).is_ok()
            {
                continue;
            }
            return Err(crate::ui::UserError::with_hint(
                format!(
                    "the runtime directory `{}` is not a directory of yours (owner uid {})",
                    dir.display(),
                    st.uid()
                ),
                "stop the envs that use it (`dev ps`, `dev stop NAME`), then remove it",
            ));
        }
        Ok(())
    }

    /// The env's state if its keeper and init are alive; stale state is removed.
    pub fn running(&self, run_dir: &Path) -> Option<RunState> {
        let path = run_dir.join("state.json");
        let state: RunState = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
        if state.keeper.alive() && state.init.alive() {
            Some(state)
        } else {
            // A keeper killed outright (`kill -9`) let the env's lock go as it died, while the
            // kernel still kills init and the env's processes, and sessions' `dev`s that joined
            // the env are still leaving: wait for them to be gone, so that a start does not
            // mount the env's layer while their mount still holds it.
            let deadline = std::time::Instant::now() + crate::runtime::STOP_TIMEOUT;
            let in_use =
                || state.init.alive() || (state.userns != 0 && userns_in_use(state.userns));
            while in_use() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(run_dir.join("control.sock"));
            None
        }
    }
}

impl Store {
    /// Every env of this mapping with its record.
    pub fn env_records(&self, mapping: &str) -> Vec<(PathBuf, EnvRecord)> {
        let mut out: Vec<(PathBuf, EnvRecord)> = fs::read_dir(self.envs_dir(mapping))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name() != "tmp")
            .filter_map(|e| {
                let rec = fs::read(e.path().join("env.json")).ok()?;
                Some((e.path(), serde_json::from_slice(&rec).ok()?))
            })
            .collect();
        out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        out
    }
}

/// Bytes of regular files under `dir`, an env's writable tree (those readable from here: an
/// env's layer holds directories of ids inside the env); walked as [`walk_env_tree`] walks, so
/// 0 for a tree past its bounds.
pub fn tree_bytes(dir: &Path) -> u64 {
    walk_env_tree(dir).map_or(0, |entries| {
        entries
            .iter()
            .filter(|e| crate::beneath::file_type(&e.stat) == rustix::fs::FileType::RegularFile)
            .map(|e| e.stat.st_size.max(0) as u64)
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symlink in the layer is an entry of its own; what it points to is never walked.
    #[test]
    fn a_walk_lists_symlinks_and_never_follows_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (upper, host) = (dir.path().join("upper"), dir.path().join("host"));
        fs::create_dir_all(upper.join("a")).expect("upper");
        fs::create_dir_all(&host).expect("host");
        fs::write(host.join("secret"), "x").expect("secret");
        fs::write(upper.join("a/file"), "x").expect("file");
        std::os::unix::fs::symlink(&host, upper.join("a/link")).expect("link");
        std::os::unix::fs::symlink("/", upper.join("root")).expect("root link");
        let rels: Vec<PathBuf> = walk_env_tree(&upper)
            .expect("walks")
            .into_iter()
            .map(|e| e.rel)
            .collect();
        let want: Vec<PathBuf> = ["a", "a/file", "a/link", "root"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(rels, want);
        assert!(walk_env_tree(&dir.path().join("none"))
            .expect("no layer yet")
            .is_empty());
    }

    /// Nesting past the depth bound is refused with a message, not walked without end.
    #[test]
    fn a_walk_refuses_nesting_past_its_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let upper = dir.path().join("upper");
        let deep: PathBuf = std::iter::once("upper".to_string())
            .chain((0..=TREE_MAX_DEPTH).map(|_| "d".to_string()))
            .collect();
        fs::create_dir_all(dir.path().join(deep)).expect("deep");
        let err = walk_env_tree(&upper).expect_err("too deep");
        assert!(format!("{err:#}").contains("deep"), "{err:#}");
    }
}
