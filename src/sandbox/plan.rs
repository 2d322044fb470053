//! The sandbox as data: which ids, which root filesystem, which mounts in which order, which
//! environment, user and command. Built by the parent from config and store; executed by the
//! helper and init. Pure: nothing here touches the system.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::ids::IdMode;

/// How the image's layers become one root filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Kernel overlayfs mounted in the user namespace (`userxattr`, Linux ≥ 5.11).
    Native,
    /// The `fuse-overlayfs` program.
    Fuse,
    /// A plain copy of the layers: always works, slow to create.
    Copy,
}

impl Backend {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "native" => Some(Backend::Native),
            "fuse" => Some(Backend::Fuse),
            "copy" => Some(Backend::Copy),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::Fuse => "fuse",
            Backend::Copy => "copy",
        }
    }
}

/// The root filesystem the helper mounts at `merged`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RootfsPlan {
    /// `None`: try native, then fuse, then copy, and record what worked in `probe_cache`.
    pub backend: Option<Backend>,
    pub probe_cache: PathBuf,
    /// The directory the layer paths are relative to (keeps overlay's option string short).
    pub layers_dir: PathBuf,
    /// Layer trees relative to `layers_dir`, top layer first (overlay's `lowerdir` order).
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The full copy the copy backend uses instead of `upper`.
    pub copy: PathBuf,
    pub merged: PathBuf,
    /// Removed by the helper when the session ends (`--rm`).
    pub scratch: Option<PathBuf>,
}

impl RootfsPlan {
    /// The `-o` option string for overlayfs and fuse-overlayfs.
    pub fn overlay_options(&self, native: bool) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect();
        let mut o = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            self.upper.display(),
            self.work.display()
        );
        if native {
            o.push_str(",userxattr");
            // A throwaway layer skips every sync, the one at unmount included: what it
            // holds is deleted with it.
            if self.scratch.is_some() {
                o.push_str(",volatile");
            }
        }
        o
    }
}

/// Mount flags the plan uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flag {
    NoSuid,
    NoDev,
    NoExec,
    ReadOnly,
}

/// One step of init's mount plan. Steps before `PivotRoot` see the host's tree; every path after
/// it is resolved inside the new root, so an image's symlinks cannot point a mount at the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Clone a host tree (recursively) as a detached mount; later `Attach`ed by its index.
    Clone {
        source: PathBuf,
        readonly: bool,
    },
    /// Make `root` the root and detach the old one.
    PivotRoot {
        root: PathBuf,
    },
    Mkdir {
        path: PathBuf,
        mode: u32,
    },
    /// Create an empty file to mount onto, if nothing is there.
    File {
        path: PathBuf,
    },
    Mount {
        fstype: String,
        target: PathBuf,
        flags: Vec<Flag>,
        data: String,
    },
    /// Mount the tree of the `handle`-th `Clone` at `target`.
    Attach {
        handle: usize,
        target: PathBuf,
    },
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    /// Mount the tree of the `handle`-th `Clone` at `target`, whose missing components are made
    /// (directories, and the last one as `kind`; owned by `owner` where given) beneath the new
    /// root with no symlink followed in any component, and which is mounted on through the
    /// descriptor that walk opened, never by its path again (mount-target swaps, runc
    /// CVE-2021-30465). A symlink on the way is an error naming it.
    Bind {
        handle: usize,
        target: PathBuf,
        kind: BindKind,
        owner: Option<(u32, u32)>,
    },
}

/// Where things are, for the mount plan.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
    /// Host directories mounted inside, as (inside path, host path): the project and the home.
    pub shares: Vec<(PathBuf, PathBuf)>,
    pub ssh_agent: Option<PathBuf>,
    /// Host files shared read-only at the same path (`/etc/resolv.conf`, `/etc/hosts`).
    pub etc_files: Vec<PathBuf>,
    /// What the image has under `/tmp` and `/run` (directories and symlinks, parents first),
    /// made again in their fresh tmpfs, as podman shows them.
    pub kept: Vec<Kept>,
    /// What the user or the project opened of the host: mounts, volumes, GUI sockets, GPU
    /// devices and libraries. Attached last, in this order, so they land on top of the home
    /// and the project.
    pub binds: Vec<Bind>,
    /// Who owns the directories made for the binds' mount points (the user, so that a bind at
    /// `~/.cargo/registry` leaves `~/.cargo` theirs); `None`: whoever init is.
    pub bind_owner: Option<(u32, u32)>,
}

/// A host path bound into the env on request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// On the host, resolved there once (no symlink left to swap).
    pub source: PathBuf,
    /// Inside the env, absolute.
    pub target: PathBuf,
    pub readonly: bool,
    pub kind: BindKind,
}

/// What a bind's mount point is made as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindKind {
    /// A directory.
    Dir,
    /// Anything else: a file, a socket, a device node.
    File,
}

/// A directory or symlink of the image's `/tmp` or `/run`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kept {
    Dir { path: PathBuf, mode: u32 },
    Symlink { link: PathBuf, target: PathBuf },
}

/// Where `SSH_AUTH_SOCK` points inside.
pub const SSH_AGENT_INSIDE: &str = "/run/dev/ssh-agent.sock";

/// Where the GPU's driver libraries are bound inside (on the env's /run tmpfs: nothing of them
/// is left in the env's layer).
pub const GPU_LIB_INSIDE: &str = "/run/dev/gpu/lib";
/// The drop-in that keeps them in ld.so's cache when the env runs `ldconfig` again (every
/// `apt-get install` of a library does); init removes its mount point at a start without them.
pub const GPU_DROP_IN_INSIDE: &str = "/etc/ld.so.conf.d/000-dev-gpu.conf";

const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Paths the project or home may not sit under: they are the sandbox's own.
pub const RESERVED: [&str; 4] = ["/proc", "/sys", "/dev", "/run"];

/// The mount plan: host trees cloned first, then pivot, then every mount inside.
pub fn mount_plan(l: &Layout) -> Vec<Step> {
    use Flag::*;
    let mut steps = Vec::new();
    let clone = |steps: &mut Vec<Step>, source: PathBuf, readonly: bool| {
        steps.push(Step::Clone { source, readonly });
        steps
            .iter()
            .filter(|s| matches!(s, Step::Clone { .. }))
            .count()
            - 1
    };
    let devices: Vec<usize> = DEVICES
        .iter()
        .map(|d| clone(&mut steps, Path::new("/dev").join(d), false))
        .collect();
    let sys = clone(&mut steps, "/sys".into(), true);
    let etc: Vec<usize> = l
        .etc_files
        .iter()
        .map(|f| clone(&mut steps, f.clone(), true))
        .collect();
    let ssh = l
        .ssh_agent
        .as_ref()
        .map(|s| clone(&mut steps, s.clone(), false));
    // Home and project, outer first: a project inside the home is mounted on top of it.
    let mut binds = l.shares.clone();
    binds.sort_by_key(|(target, _)| target.components().count());
    let binds: Vec<(PathBuf, usize)> = binds
        .into_iter()
        .map(|(target, source)| (target, clone(&mut steps, source, false)))
        .collect();
    let opened: Vec<(&Bind, usize)> = l
        .binds
        .iter()
        .map(|b| (b, clone(&mut steps, b.source.clone(), b.readonly)))
        .collect();

    // A new proc mount needs the host's /proc still visible in the mount namespace (the kernel's
    // mount_too_revealing check), so it goes on before the old root is detached.
    steps.push(Step::Mkdir {
        path: l.root.join("proc"),
        mode: 0o555,
    });
    steps.push(Step::Mount {
        fstype: "proc".into(),
        target: l.root.join("proc"),
        flags: vec![NoSuid, NoDev, NoExec],
        data: String::new(),
    });
    steps.push(Step::PivotRoot {
        root: l.root.clone(),
    });
    let mkdir = |path: &str, mode: u32| Step::Mkdir {
        path: path.into(),
        mode,
    };
    let mount = |fstype: &str, target: &str, flags: Vec<Flag>, data: &str| Step::Mount {
        fstype: fstype.into(),
        target: target.into(),
        flags,
        data: data.into(),
    };
    steps.push(mkdir("/dev", 0o755));
    steps.push(mount(
        "tmpfs",
        "/dev",
        vec![NoSuid, NoExec],
        "mode=755,size=65536k",
    ));
    for (name, handle) in DEVICES.iter().zip(devices) {
        let path = Path::new("/dev").join(name);
        steps.push(Step::File { path: path.clone() });
        steps.push(Step::Attach {
            handle,
            target: path,
        });
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
    ] {
        steps.push(Step::Symlink {
            target: target.into(),
            link: link.into(),
        });
    }
    steps.push(mkdir("/dev/pts", 0o755));
    steps.push(mount(
        "devpts",
        "/dev/pts",
        vec![NoSuid, NoExec],
        "newinstance,ptmxmode=0666,mode=0620",
    ));
    steps.push(mkdir("/dev/shm", 0o1777));
    steps.push(mount("tmpfs", "/dev/shm", vec![NoSuid, NoDev], "mode=1777"));
    steps.push(mkdir("/sys", 0o555));
    steps.push(Step::Attach {
        handle: sys,
        target: "/sys".into(),
    });
    steps.push(mkdir("/tmp", 0o1777));
    steps.push(mount("tmpfs", "/tmp", vec![NoSuid, NoDev], "mode=1777"));
    steps.push(mkdir("/run", 0o755));
    steps.push(mount("tmpfs", "/run", vec![NoSuid, NoDev], "mode=755"));
    for k in &l.kept {
        steps.push(match k {
            Kept::Dir { path, mode } => Step::Mkdir {
                path: path.clone(),
                mode: *mode,
            },
            Kept::Symlink { link, target } => Step::Symlink {
                target: target.clone(),
                link: link.clone(),
            },
        });
    }
    if let Some(handle) = ssh {
        steps.push(mkdir("/run/dev", 0o755));
        steps.push(Step::File {
            path: SSH_AGENT_INSIDE.into(),
        });
        steps.push(Step::Attach {
            handle,
            target: SSH_AGENT_INSIDE.into(),
        });
    }
    for (file, handle) in l.etc_files.iter().zip(etc) {
        steps.push(Step::File { path: file.clone() });
        steps.push(Step::Attach {
            handle,
            target: file.clone(),
        });
    }
    for (target, handle) in binds {
        steps.push(Step::Mkdir {
            path: target.clone(),
            mode: 0o755,
        });
        steps.push(Step::Attach { handle, target });
    }
    for (bind, handle) in opened {
        steps.push(Step::Bind {
            handle,
            target: bind.target.clone(),
            kind: bind.kind,
            owner: l.bind_owner,
        });
    }
    steps
}

/// Checks where a mount may go inside: an absolute path without `..`, not `/` and not under
/// the sandbox's own trees ([`RESERVED`]).
pub fn check_bind_target(target: &Path) -> Result<(), String> {
    if !target.is_absolute() {
        return Err(format!("`{}` is not an absolute path", target.display()));
    }
    if target
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!("`{}` contains `..`", target.display()));
    }
    if target.parent().is_none() {
        return Err("`/` is the env's root filesystem".to_string());
    }
    if let Some(r) = RESERVED.iter().find(|r| target.starts_with(r)) {
        return Err(format!(
            "`{}` is under {r}, which the sandbox provides itself",
            target.display()
        ));
    }
    Ok(())
}

/// The user the session runs as, and the entries `/etc/passwd` and `/etc/group` need for them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPlan {
    pub name: String,
    pub uid: u32,
    pub group: String,
    pub gid: u32,
    pub home: PathBuf,
    /// Run the command as root inside (`--root`); the entries are still written.
    pub root: bool,
    /// Add the user to `/etc/passwd` and `/etc/group` (not while building a shared tools layer).
    pub write_entries: bool,
}

/// What runs, with which environment, where.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessPlan {
    /// The command; empty means "the shell".
    pub argv: Vec<String>,
    /// The shell dev.toml names: it must exist.
    pub shell: Option<String>,
    /// Shells tried in order when dev.toml names none.
    pub shell_fallbacks: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

/// Everything the helper and init need, sent to the helper as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxPlan {
    pub ids: IdMode,
    pub rootfs: RootfsPlan,
    pub steps: Vec<Step>,
    pub user: UserPlan,
    pub process: ProcessPlan,
    pub hostname: String,
    /// The image config's `User`, checked against the image's `/etc/passwd`.
    pub image_user: Option<String>,
    /// The image, for error messages.
    pub image: String,
    /// Set for a project's env: the helper keeps it running for every session that joins it.
    pub keep: Option<KeepPlan>,
    /// Run the image's `ldconfig` as root inside once the tree is built (the GPU's driver
    /// libraries were bound in).
    #[serde(default)]
    pub ldconfig: bool,
}

/// What the keeper of a running env needs: where its runtime files go, and what `dev ps` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeepPlan {
    pub run_dir: PathBuf,
    pub name: String,
    pub project: PathBuf,
    pub image: String,
    pub fingerprint: String,
    /// What the env was started with that a later session cannot change by joining (see
    /// `runtime::RunState::shape`).
    pub shape: String,
    /// Started by `dev start`: it runs without sessions until `dev stop`.
    pub persist: bool,
    /// The binds it starts with, one line each (`session::mounts::key`): a later session that
    /// asks for others is told to restart the env.
    #[serde(default)]
    pub mounts: Vec<String>,
    /// How long it keeps running after its last session left (0: it stops with it).
    pub linger_ms: u64,
}

/// Host variables that describe the terminal and locale, passed through as they are.
fn passes_through(key: &str) -> bool {
    matches!(key, "TERM" | "COLORTERM" | "LANG" | "LANGUAGE") || key.starts_with("LC_")
}

/// The environment inside: the image's `Env`, the host's terminal and locale, the user's
/// identity, then dev.toml's `[env]`, each overriding the ones before. The prompt shows the
/// env's name.
#[allow(clippy::too_many_arguments)]
pub fn environment(
    image_env: &[String],
    host: &BTreeMap<String, String>,
    user: &UserPlan,
    hostname: &str,
    env_name: &str,
    ssh_agent: bool,
    extra: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    )];
    let set = |env: &mut Vec<(String, String)>, k: &str, v: &str| match env
        .iter_mut()
        .find(|(key, _)| key == k)
    {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in image_env {
        if let Some((k, v)) = kv.split_once('=') {
            if !k.is_empty() && !kv.contains('\0') {
                set(&mut env, k, v);
            }
        }
    }
    for (k, v) in host.iter().filter(|(k, _)| passes_through(k)) {
        set(&mut env, k, v);
    }
    let (name, home) = if user.root {
        ("root".to_string(), "/root".to_string())
    } else {
        (user.name.clone(), user.home.display().to_string())
    };
    set(&mut env, "HOME", &home);
    set(&mut env, "USER", &name);
    set(&mut env, "LOGNAME", &name);
    set(&mut env, "HOSTNAME", hostname);
    if ssh_agent {
        set(&mut env, "SSH_AUTH_SOCK", SSH_AGENT_INSIDE);
    }
    if !env.iter().any(|(k, _)| k == "PS1") {
        set(&mut env, "PS1", &format!("({env_name}) \\u@\\h:\\w\\$ "));
    }
    for (k, v) in extra {
        set(&mut env, k, v);
    }
    env
}

/// `/etc/passwd` (or `/etc/group`) with `entry` in it: lines with the same name or id are
/// replaced. `None` when the file already has exactly that entry.
pub fn merge_entry(text: &str, entry: &str) -> Option<String> {
    let field = |line: &str, n: usize| line.split(':').nth(n).map(str::to_string);
    let (name, id) = (field(entry, 0), field(entry, 2));
    if text.lines().any(|l| l == entry) {
        return None;
    }
    let mut out: String = text
        .lines()
        .filter(|l| field(l, 0) != name && field(l, 2) != id)
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(entry);
    out.push('\n');
    Some(out)
}

impl UserPlan {
    pub fn passwd_entry(&self, shell: &str) -> String {
        format!(
            "{}:x:{}:{}:{}:{}:{shell}",
            self.name,
            self.uid,
            self.gid,
            self.name,
            self.home.display()
        )
    }

    pub fn group_entry(&self) -> String {
        format!("{}:x:{}:", self.group, self.gid)
    }
}

/// Checks an image config's `WorkingDir`: absolute, no `..`, not under the sandbox's own mounts.
pub fn check_working_dir(dir: &str) -> Result<(), String> {
    if dir.is_empty() {
        return Ok(());
    }
    let p = Path::new(dir);
    if !p.is_absolute() {
        return Err(format!("its WorkingDir `{dir}` is not an absolute path"));
    }
    if p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(format!("its WorkingDir `{dir}` contains `..`"));
    }
    if RESERVED.iter().any(|r| p.starts_with(r)) {
        return Err(format!(
            "its WorkingDir `{dir}` points into {}, which the sandbox provides itself",
            RESERVED
                .iter()
                .find(|r| p.starts_with(r))
                .copied()
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// Resolves an image config's `User` (`name`, `uid`, `name:group`, `uid:gid`) against the
/// image's `/etc/passwd`; ids must fall in the 0..65535 inside range.
pub fn check_image_user(user: &str, passwd: &str) -> Result<u32, String> {
    let who = user.split(':').next().unwrap_or("");
    if who.is_empty() {
        return Ok(0);
    }
    if let Ok(uid) = who.parse::<u64>() {
        if uid >= u64::from(crate::ids::map::INSIDE_IDS) {
            return Err(format!(
                "its User `{user}` is outside the ids an image can use (0-65535)"
            ));
        }
        return Ok(uid as u32);
    }
    passwd
        .lines()
        .find(|l| l.split(':').next() == Some(who))
        .and_then(|l| l.split(':').nth(2))
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("its User `{user}` is not in the image's /etc/passwd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_throwaway_layer_is_volatile() {
        let plan = |scratch: Option<&str>| RootfsPlan {
            backend: None,
            probe_cache: "/store/overlay.json".into(),
            layers_dir: "/store/layers".into(),
            lowers: vec!["b/root".into(), "a/root".into()],
            upper: "/store/env/upper".into(),
            work: "/store/env/work".into(),
            copy: "/store/env/rootfs".into(),
            merged: "/store/env/merged".into(),
            scratch: scratch.map(PathBuf::from),
        };
        let kept = plan(None);
        assert_eq!(
            kept.overlay_options(true),
            "lowerdir=b/root:a/root,upperdir=/store/env/upper,workdir=/store/env/work,userxattr"
        );
        let thrown = plan(Some("/store/scratch/1"));
        assert!(thrown
            .overlay_options(true)
            .ends_with(",userxattr,volatile"));
        // fuse-overlayfs has no such option.
        assert!(!thrown.overlay_options(false).contains("volatile"));
    }

    fn layout() -> Layout {
        Layout {
            root: "/store/env/merged".into(),
            shares: vec![
                ("/home/ann/src/app".into(), "/home/ann/src/app".into()),
                ("/home/ann".into(), "/store/env/home".into()),
            ],
            ssh_agent: Some("/tmp/ssh-x/agent.1".into()),
            etc_files: vec!["/etc/resolv.conf".into(), "/etc/hosts".into()],
            kept: vec![
                Kept::Dir {
                    path: "/run/lock".into(),
                    mode: 0o1777,
                },
                Kept::Symlink {
                    link: "/run/shm".into(),
                    target: "/dev/shm".into(),
                },
            ],
            binds: Vec::new(),
            bind_owner: Some((1500, 1500)),
        }
    }

    #[test]
    fn opened_binds_land_last_and_keep_their_kind_and_mode() {
        let mut l = layout();
        l.binds = vec![
            Bind {
                source: "/home/ann/.cargo/registry".into(),
                target: "/home/ann/.cargo/registry".into(),
                readonly: false,
                kind: BindKind::Dir,
            },
            Bind {
                source: "/tmp/.X11-unix/X0".into(),
                target: "/tmp/.X11-unix/X0".into(),
                readonly: true,
                kind: BindKind::File,
            },
        ];
        let steps = mount_plan(&l);
        assert!(steps.contains(&Step::Clone {
            source: "/tmp/.X11-unix/X0".into(),
            readonly: true,
        }));
        let n = steps.len();
        assert_eq!(
            steps[n - 2..],
            [
                // Six devices, /sys, two /etc files, the agent, two shares: then the binds,
                // each made and mounted on beneath the root in one step, as the user.
                Step::Bind {
                    handle: 12,
                    target: "/home/ann/.cargo/registry".into(),
                    kind: BindKind::Dir,
                    owner: Some((1500, 1500)),
                },
                Step::Bind {
                    handle: 13,
                    target: "/tmp/.X11-unix/X0".into(),
                    kind: BindKind::File,
                    owner: Some((1500, 1500)),
                },
            ]
        );
        // No path-based mkdir, file or attach is left for an opened bind.
        assert!(!steps.iter().any(|s| matches!(s,
            Step::Mkdir { path, .. } | Step::File { path } | Step::Attach { target: path, .. }
                if path.starts_with("/home/ann/.cargo") || path.starts_with("/tmp/.X11-unix"))));
    }

    #[test]
    fn bind_targets_stay_out_of_the_sandboxs_own_trees() {
        assert!(check_bind_target(Path::new("/home/ann/.cache")).is_ok());
        assert!(check_bind_target(Path::new("/opt/data")).is_ok());
        for bad in [
            "relative",
            "/a/../etc",
            "/",
            "/proc/1",
            "/run/dev/x",
            "/dev",
            "/sys/fs",
        ] {
            assert!(check_bind_target(Path::new(bad)).is_err(), "{bad}");
        }
        assert!(check_bind_target(Path::new("/dev/shm"))
            .unwrap_err()
            .contains("under /dev"));
    }

    #[test]
    fn the_images_run_entries_are_made_in_the_fresh_tmpfs() {
        let steps = mount_plan(&layout());
        let at = |want: &Step| steps.iter().position(|s| s == want).expect("step");
        let tmpfs = steps
            .iter()
            .position(|s| matches!(s, Step::Mount { fstype, target, .. } if fstype == "tmpfs" && target == Path::new("/run")))
            .expect("tmpfs on /run");
        let lock = at(&Step::Mkdir {
            path: "/run/lock".into(),
            mode: 0o1777,
        });
        let shm = at(&Step::Symlink {
            target: "/dev/shm".into(),
            link: "/run/shm".into(),
        });
        assert!(tmpfs < lock && lock < shm, "{steps:#?}");
    }

    #[test]
    fn host_paths_are_only_read_before_pivot() {
        let steps = mount_plan(&layout());
        let pivot = steps
            .iter()
            .position(|s| matches!(s, Step::PivotRoot { .. }))
            .expect("pivot");
        let in_root = |p: &Path| p.starts_with("/store/env/merged");
        assert!(steps[..pivot].iter().all(|s| match s {
            Step::Clone { .. } => true,
            Step::Mkdir { path, .. } => in_root(path),
            Step::Mount { target, .. } => in_root(target),
            _ => false,
        }));
        assert!(steps[pivot..]
            .iter()
            .all(|s| !matches!(s, Step::Clone { .. })));
        // Every clone is attached exactly once.
        let clones = steps[..pivot]
            .iter()
            .filter(|s| matches!(s, Step::Clone { .. }))
            .count();
        for h in 0..clones {
            let n = steps
                .iter()
                .filter(|s| matches!(s, Step::Attach { handle, .. } if *handle == h))
                .count();
            assert_eq!(n, 1, "clone {h}: {:?}", steps[h]);
        }
    }

    #[test]
    fn sys_is_read_only_and_proc_fresh() {
        let steps = mount_plan(&layout());
        assert!(steps.contains(&Step::Clone {
            source: "/sys".into(),
            readonly: true
        }));
        assert!(steps.iter().any(|s| matches!(s, Step::Mount { fstype, target, .. } if fstype == "proc" && target == Path::new("/store/env/merged/proc"))));
        assert!(steps.iter().any(|s| matches!(s, Step::Mount { fstype, data, .. } if fstype == "devpts" && data.contains("newinstance"))));
    }

    #[test]
    fn home_before_project_inside_it_and_tmp_before_both() {
        let steps = mount_plan(&layout());
        let pos = |target: &str| {
            steps
                .iter()
                .position(|s| matches!(s, Step::Attach { target: t, .. } | Step::Mount { target: t, .. } if t == Path::new(target)))
                .unwrap_or_else(|| panic!("{target} not mounted"))
        };
        assert!(pos("/home/ann") < pos("/home/ann/src/app"));
        let mut l = layout();
        l.shares = vec![
            ("/tmp/p/h".into(), "/store/h".into()),
            ("/tmp/p".into(), "/tmp/p".into()),
        ];
        let steps = mount_plan(&l);
        let pos = |target: &str| {
            steps
                .iter()
                .position(|s| matches!(s, Step::Attach { target: t, .. } | Step::Mount { target: t, .. } if t == Path::new(target)))
                .unwrap_or_else(|| panic!("{target} not mounted"))
        };
        assert!(pos("/tmp") < pos("/tmp/p") && pos("/tmp/p") < pos("/tmp/p/h"));
    }

    fn user(root: bool) -> UserPlan {
        UserPlan {
            name: "ann".into(),
            uid: 1500,
            group: "ann".into(),
            gid: 1500,
            home: "/home/ann".into(),
            root,
            write_entries: true,
        }
    }

    #[test]
    fn environment_order() {
        let host: BTreeMap<String, String> = [
            ("TERM", "xterm-256color"),
            ("LC_ALL", "C.UTF-8"),
            ("AWS_SECRET", "nope"),
            ("PATH", "/host/bin"),
        ]
        .into_iter()
        .map(|(a, b)| (a.into(), b.into()))
        .collect();
        let extra: BTreeMap<String, String> = [
            ("RUST_LOG".to_string(), "debug".to_string()),
            ("LANG".to_string(), "de_DE.UTF-8".to_string()),
        ]
        .into();
        let env = environment(
            &[
                "PATH=/opt/bin:/usr/bin".into(),
                "LANG=C".into(),
                "bogus".into(),
            ],
            &host,
            &user(false),
            "app",
            "app-2",
            true,
            &extra,
        );
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("PATH"), Some("/opt/bin:/usr/bin"));
        assert_eq!(get("TERM"), Some("xterm-256color"));
        assert_eq!(get("LC_ALL"), Some("C.UTF-8"));
        assert_eq!(get("AWS_SECRET"), None);
        assert_eq!(get("LANG"), Some("de_DE.UTF-8"));
        assert_eq!(get("RUST_LOG"), Some("debug"));
        assert_eq!(get("HOME"), Some("/home/ann"));
        assert_eq!(get("SSH_AUTH_SOCK"), Some(SSH_AGENT_INSIDE));
        assert_eq!(get("HOSTNAME"), Some("app"));
        assert!(get("PS1").is_some_and(|p| p.starts_with("(app-2) ")));
        let env = environment(
            &[],
            &host,
            &user(true),
            "app",
            "app",
            false,
            &BTreeMap::new(),
        );
        assert!(env.contains(&("HOME".into(), "/root".into())));
        assert!(!env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK"));
    }

    #[test]
    fn passwd_merge() {
        let u = user(false);
        let e = u.passwd_entry("/bin/bash");
        let text = "root:x:0:0:root:/root:/bin/bash\nold:x:1500:1500::/x:/bin/sh\n";
        let merged = merge_entry(text, &e).expect("changed");
        assert_eq!(
            merged,
            "root:x:0:0:root:/root:/bin/bash\nann:x:1500:1500:ann:/home/ann:/bin/bash\n"
        );
        assert_eq!(merge_entry(&merged, &e), None);
        assert_eq!(
            merge_entry("", &u.group_entry()).as_deref(),
            Some("ann:x:1500:\n")
        );
    }

    #[test]
    fn image_config_checks() {
        assert!(check_working_dir("/proc/self/fd/7").is_err());
        assert!(check_working_dir("relative").is_err());
        assert!(check_working_dir("/a/../../etc").is_err());
        assert!(check_working_dir("/srv/app").is_ok());
        let passwd = "root:x:0:0::/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n";
        assert_eq!(check_image_user("web", passwd), Ok(33));
        assert_eq!(check_image_user("33:33", passwd), Ok(33));
        assert!(check_image_user("4294967295", passwd).is_err());
        assert!(check_image_user("65536", passwd).is_err());
        assert!(check_image_user("ghost", passwd)
            .unwrap_err()
            .contains("not in the image"));
        assert_eq!(check_image_user("", passwd), Ok(0));
    }

    #[test]
    fn hostnames() {
        let hostname = crate::config::project::hostname;
        assert_eq!(hostname(Path::new("/home/ann/My Project!")), "my-project");
        assert_eq!(hostname(Path::new("/")), "dev");
    }
}
