//! Compares a layer `dev` unpacked with GNU tar's extraction of the same archive, entry by entry:
//! names, types, modes, owners (mapped as the store maps them), sizes, content hashes, mtimes,
//! symlink targets, hard-link identity, `user.*` xattrs, and the blocks a sparse file takes.
//! What dev deliberately leaves out (device nodes, FIFOs, `user.overlay.*` xattrs; see the
//! README) is left out of GNU tar's side before comparing.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};

use super::{Env, Kind};

/// How the store maps the owners an archive records to host owners.
#[derive(Clone, Copy, Debug)]
pub enum Owners {
    /// With a subordinate range: inside id `own` stays `own`; the others go to the range, in
    /// order (0 → start, …, `own` skipped).
    Mapped {
        uid: u32,
        gid: u32,
        sub_uid: u32,
        sub_gid: u32,
    },
    /// Without: every file is the user's.
    Flat { uid: u32, gid: u32 },
}

fn sub_start(user: &str, file: &str) -> u32 {
    let text = fs::read_to_string(file).expect("read subordinate ids");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{user}:")))
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{user} has no range in {file}"))
}

impl Owners {
    pub fn of(env: &Env) -> Owners {
        match env.kind {
            Kind::NoSub => Owners::Flat {
                uid: env.uid,
                gid: env.gid,
            },
            Kind::Sub | Kind::Sub2 => Owners::Mapped {
                uid: env.uid,
                gid: env.gid,
                sub_uid: sub_start(env.kind.user(), "/etc/subuid"),
                sub_gid: sub_start(env.kind.user(), "/etc/subgid"),
            },
        }
    }

    fn map(inside: u32, own: u32, sub: u32) -> u32 {
        match inside.cmp(&own) {
            std::cmp::Ordering::Equal => own,
            std::cmp::Ordering::Less => sub + inside,
            std::cmp::Ordering::Greater => sub + inside - 1,
        }
    }

    pub fn uid(&self, inside: u32) -> u32 {
        match *self {
            Owners::Mapped { uid, sub_uid, .. } => Self::map(inside, uid, sub_uid),
            Owners::Flat { uid, .. } => uid,
        }
    }

    pub fn gid(&self, inside: u32) -> u32 {
        match *self {
            Owners::Mapped { gid, sub_gid, .. } => Self::map(inside, gid, sub_gid),
            Owners::Flat { gid, .. } => gid,
        }
    }
}

/// GNU tar's extraction of `tar`, as root, with numeric owners and every xattr, into a new
/// temp dir. Fails the test if GNU tar does not extract it cleanly.
pub fn gnu_extract(tar: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("gnu-tar-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let mut child = Command::new("tar")
        .args([
            "-x",
            "-p",
            "--numeric-owner",
            "--same-owner",
            "--xattrs",
            "--xattrs-include=*",
            "-f",
            "-",
            "-C",
        ])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("GNU tar is missing");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = tar.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for tar");
    let _ = feeder.join();
    assert!(
        out.status.success(),
        "GNU tar does not extract this archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Whether GNU tar refuses `tar` (extracting it into a temp dir fails).
pub fn gnu_refuses(tar: &[u8]) -> bool {
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let mut child = Command::new("tar")
        .args(["-x", "--numeric-owner", "-f", "-", "-C"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("GNU tar is missing");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = tar.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let st = child.wait().expect("wait for tar");
    let _ = feeder.join();
    !st.success()
}

/// One entry of an unpacked tree, as the comparison sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub sha256: Option<String>,
    pub mtime: (i64, i64),
    pub target: Option<PathBuf>,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// For a file with more than one name: the first of its names (sorted).
    pub same_as: Option<PathBuf>,
    /// For a file with holes: the 512-byte blocks it takes.
    pub blocks: Option<u64>,
}

fn content_hash(path: &Path) -> String {
    let mut f = fs::File::open(path).expect("open");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

/// Every entry under `root` (the root itself as ""), keyed by relative path.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    fn walk(
        root: &Path,
        rel: &Path,
        out: &mut BTreeMap<PathBuf, Node>,
        inodes: &mut HashMap<(u64, u64), Vec<PathBuf>>,
    ) {
        let p = root.join(rel);
        let mut m = fs::symlink_metadata(&p).expect("lstat");
        let ft = m.file_type();
        if ft.is_file() && m.blocks() * 512 < m.len() {
            // Blocks are counted as written back (with the extent tree's own blocks).
            fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .expect("fsync");
            m = fs::symlink_metadata(&p).expect("lstat");
        }
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else {
            "other"
        };
        let mut xattrs: Vec<(String, Vec<u8>)> = if ft.is_symlink() {
            Vec::new()
        } else {
            xattr::list(&p)
                .expect("list xattrs")
                .map(|n| n.to_string_lossy().to_string())
                .filter(|n| n.starts_with("user."))
                .map(|n| {
                    let v = xattr::get(&p, &n).expect("get xattr").unwrap_or_default();
                    (n, v)
                })
                .collect()
        };
        xattrs.sort();
        if ft.is_file() && m.nlink() > 1 {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.to_path_buf());
        }
        let node = Node {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: if ft.is_file() || ft.is_symlink() {
                m.len()
            } else {
                0
            },
            sha256: ft.is_file().then(|| content_hash(&p)),
            mtime: (m.mtime(), m.mtime_nsec()),
            target: ft
                .is_symlink()
                .then(|| fs::read_link(&p).expect("readlink")),
            xattrs,
            same_as: None,
            blocks: (ft.is_file() && m.blocks() * 512 < m.len()).then(|| m.blocks()),
        };
        out.insert(rel.to_path_buf(), node);
        if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&p)
                .expect("read dir")
                .map(|e| e.expect("dir entry").file_name())
                .collect();
            names.sort();
            for n in names {
                walk(root, &rel.join(n), out, inodes);
            }
        }
    }
    walk(root, Path::new(""), &mut out, &mut inodes);
    for (_, mut names) in inodes {
        names.sort();
        let first = names[0].clone();
        for n in &names {
            if let Some(node) = out.get_mut(n) {
                node.same_as = Some(first.clone());
            }
        }
    }
    out
}

/// Whether the archive has an entry for its root (`./`), whose metadata then applies to the
/// directory it is extracted into.
pub fn names_its_root(tar: &[u8]) -> bool {
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let file = dir.path().join("a.tar");
    fs::write(&file, tar).expect("write");
    let out = Command::new("tar")
        .arg("-tf")
        .arg(&file)
        .output()
        .expect("GNU tar is missing");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| matches!(l, "." | "./" | "/"))
}

/// Asserts that `dev_root`, the layer `dev` unpacked from `tar`, is what GNU tar extracts from
/// it. `label` names the archive in failures.
pub fn assert_same_as_gnu_tar(label: &str, tar: &[u8], dev_root: &Path, owners: &Owners) {
    let gnu = gnu_extract(tar);
    let with_root = names_its_root(tar);
    compare(label, gnu.path(), dev_root, owners, with_root);
}

/// Asserts that `dev_root` holds what GNU tar extracted into `gnu_root`, owners mapped by
/// `owners`, but for what dev deliberately leaves out. `label` names the archive in failures.
pub fn assert_same_tree(label: &str, gnu_root: &Path, dev_root: &Path, owners: &Owners) {
    compare(label, gnu_root, dev_root, owners, true);
}

fn compare(label: &str, gnu_root: &Path, dev_root: &Path, owners: &Owners, with_root: bool) {
    let mut expected = tree(gnu_root);
    let mut actual = tree(dev_root);
    if !with_root {
        // The directory GNU tar extracts into is the test's, and dev's is the store's.
        expected.remove(Path::new(""));
        actual.remove(Path::new(""));
    }
    expected.retain(|_, n| !matches!(n.kind, "fifo" | "char" | "block"));
    for n in expected.values_mut() {
        n.uid = owners.uid(n.uid);
        n.gid = owners.gid(n.gid);
        n.xattrs.retain(|(k, _)| {
            !k.starts_with("user.overlay.") && !k.starts_with("user.fuseoverlayfs.")
        });
    }
    let mut problems = Vec::new();
    for (path, want) in &expected {
        match actual.get(path) {
            None => problems.push(format!(
                "`{}` is missing: GNU tar made {want:?}",
                path.display()
            )),
            Some(got) if got != want => problems.push(format!(
                "`{}` differs:\n    GNU tar: {want:?}\n    dev:     {got:?}",
                path.display()
            )),
            Some(_) => {}
        }
    }
    for (path, got) in &actual {
        if !expected.contains_key(path) {
            problems.push(format!(
                "`{}` is not in GNU tar's extraction: dev made {got:?}",
                path.display()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{label}: dev's layer differs from GNU tar's extraction in {} entries:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}
