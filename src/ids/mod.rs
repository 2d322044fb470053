//! Who runs `dev` and how their ids map into a user namespace: the subordinate ranges, the id
//! maps, and the mode a helper enters its namespace in. Read by the store (its trees are keyed by
//! mapping), by sessions and by the sandbox; it makes no system call but reading who the user is.

pub mod map;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use map::parse_subid;
pub use map::{IdMap, SubRange};

/// How the helper enters its user namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdMode {
    /// The full 65536-id map, written by `newuidmap`/`newgidmap`; the helper is root inside.
    Subordinate,
    /// Only the user's own id, mapped to the same id inside: the shell runs as the user.
    FlatUser,
    /// Only the user's own id, mapped to root inside: for `--root` without a range.
    FlatRoot,
}

impl IdMode {
    pub fn as_arg(self) -> &'static str {
        match self {
            IdMode::Subordinate => "sub",
            IdMode::FlatUser => "flat-user",
            IdMode::FlatRoot => "flat-root",
        }
    }

    pub fn from_arg(s: &str) -> Option<Self> {
        [IdMode::Subordinate, IdMode::FlatUser, IdMode::FlatRoot]
            .into_iter()
            .find(|m| m.as_arg() == s)
    }
}

/// Who runs `dev`, and how their ids map into a user namespace.
#[derive(Clone, Debug)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub ownership: Ownership,
}

#[derive(Clone, Debug)]
pub enum Ownership {
    /// A subordinate range and the setuid `newuidmap`/`newgidmap`: the full 65536-id map.
    Subordinate {
        uid_map: IdMap,
        gid_map: IdMap,
        newuidmap: PathBuf,
        newgidmap: PathBuf,
        sub_uid: SubRange,
        sub_gid: SubRange,
    },
    /// Only the user's own id; why, in one line.
    Flat { reason: String },
}

impl Identity {
    /// Who runs this process (read once: it does not change while `dev` runs).
    pub fn detect() -> Self {
        static DETECTED: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
        DETECTED.get_or_init(Identity::read).clone()
    }

    fn read() -> Self {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let name = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        let ownership = detect_ownership(uid, gid, &name);
        Identity {
            uid,
            gid,
            ownership,
        }
    }

    /// The store keeps a layer tree per mapping: owners on disk depend on it.
    pub fn store_key(&self) -> String {
        match &self.ownership {
            Ownership::Subordinate {
                sub_uid, sub_gid, ..
            } => {
                format!(
                    "ids-{}-{}-{}-{}",
                    self.uid, sub_uid.start, self.gid, sub_gid.start
                )
            }
            Ownership::Flat { .. } => format!("flat-{}", self.uid),
        }
    }

    pub fn has_subordinate(&self) -> bool {
        matches!(self.ownership, Ownership::Subordinate { .. })
    }
}

fn detect_ownership(uid: u32, gid: u32, name: &str) -> Ownership {
    let hint = format!(
        "to keep the image's owners, ask an administrator for a range: `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}`"
    );
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let sub_uid = parse_subid(&read("/etc/subuid"), name, uid);
    // By the user's name, as shadow's tools look it up first; else by the group's.
    let subgid = read("/etc/subgid");
    let sub_gid = parse_subid(&subgid, name, gid).or_else(|| {
        let group = nix::unistd::Group::from_gid(gid.into()).ok().flatten()?;
        parse_subid(&subgid, &group.name, gid)
    });
    let (Some(sub_uid), Some(sub_gid)) = (sub_uid, sub_gid) else {
        return Ownership::Flat { reason: format!("no subordinate id range for `{name}` in /etc/subuid and /etc/subgid: every file is owned by you, and inside only your id and root exist (no `_apt` for apt-get); {hint}") };
    };
    let (Ok(newuidmap), Ok(newgidmap)) = (which::which("newuidmap"), which::which("newgidmap"))
    else {
        return Ownership::Flat { reason: "`newuidmap`/`newgidmap` are not installed (Debian/Ubuntu: `sudo apt install uidmap`); only your own id is mapped".to_string() };
    };
    for program in [&newuidmap, &newgidmap] {
        if !is_setuid_root(program) {
            return Ownership::Flat {
                reason: format!(
                    "`{}` is not setuid root (`sudo chmod u+s {}`, or `sudo apt install --reinstall uidmap`); only your own id is mapped",
                    program.display(),
                    program.display()
                ),
            };
        }
    }
    Ownership::Subordinate {
        uid_map: IdMap::with_subordinate(uid, sub_uid),
        gid_map: IdMap::with_subordinate(gid, sub_gid),
        newuidmap,
        newgidmap,
        sub_uid,
        sub_gid,
    }
}

pub fn is_setuid_root(program: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(program).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o4000 != 0)
}
