//! A session's sandbox plan from a prepared env and the host's facts: which layers, which
//! user, which binds, which environment, which shell. Pure: the host's facts ([`Host`]) and the
//! env's directories are gathered first, so the plan is unit-tested without root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{EnterOptions, Prepared};
use crate::beneath::Tree;
use crate::host::{Asked, Facts, GpuMode, Opening};
use crate::ids::Identity;
use crate::ids::Ownership;
use crate::sandbox::plan::{
    environment, mount_plan, Backend, Bind, IdMode, Kept, Layout, ProcessPlan, RootfsPlan,
    SandboxPlan, UserPlan, RESERVED,
};
use crate::store::envs::EnvDirs;
use crate::store::stack::LayerStack;
use crate::ui::UserError;

/// What a session takes from the host: read once, before planning.
#[derive(Clone, Debug)]
pub struct Host {
    /// The host's environment (only what `plan::environment` passes through enters).
    pub vars: BTreeMap<String, String>,
    /// The user as the env knows them (root inside or not is the session's choice).
    pub user: UserPlan,
    /// Host files shared read-only at the same path, those that exist.
    pub etc_files: Vec<PathBuf>,
    /// The ssh agent's socket, when the session forwards it.
    pub ssh_agent: Option<PathBuf>,
    /// The mounts the user and the project asked for, resolved (see `session::mounts`).
    pub mounts: Vec<Bind>,
    /// What the session opens of the host (GUI, GPU), as binds and variables.
    pub opening: Opening,
}

impl Host {
    /// Reads the host's facts for a session of `identity`; what `asked` opens has its files in
    /// `runtime` (the env's own runtime directory on the host). `root`: the command runs as
    /// root inside.
    pub fn read(
        identity: &Identity,
        ssh_agent: Option<PathBuf>,
        asked: Asked,
        runtime: &Path,
        root: bool,
    ) -> Result<Host> {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        let opening = if asked.any() {
            let host_root = crate::host::host_root();
            let ldcache = (asked.gpu != GpuMode::None)
                .then(|| crate::host::gpu::ldconfig_p(&host_root))
                .flatten();
            crate::host::open(
                asked,
                &Facts {
                    vars: &vars,
                    root: &host_root,
                    runtime,
                    uid: if root { 0 } else { identity.uid },
                    ldcache: ldcache.as_deref(),
                },
            )?
        } else {
            Opening::default()
        };
        Ok(Host {
            vars,
            user: user_plan(identity)?,
            etc_files: ["/etc/resolv.conf", "/etc/hosts"]
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect(),
            ssh_agent,
            mounts: Vec::new(),
            opening,
        })
    }
}

/// Where the session's env lives, as the store laid it out.
pub struct EnvPlace {
    /// The env's directories: the project's persistent env, or a throwaway one.
    pub dirs: EnvDirs,
    /// A throwaway env's directory, removed when the session ends.
    pub scratch: Option<PathBuf>,
    /// `--rm` in a project: the project's env as it is now, under the throwaway layer.
    pub current: Option<EnvDirs>,
    pub layers_dir: PathBuf,
    pub probe_cache: PathBuf,
    /// The env's name (`HOSTNAME` is the project's; `DEV_ENV` is this).
    pub name: String,
    /// The image's directories and symlinks under `/tmp` and `/run` (see [`kept_entries`]).
    pub kept: Vec<Kept>,
}

/// At most this many entries of the image's `/tmp` and `/run` are made again, this deep.
const KEPT_MAX: usize = 256;
const KEPT_DEPTH: usize = 3;

/// The directories and symlinks the image's layers (`lowers`, top first, relative to
/// `layers_dir`) have under `/tmp` and `/run`, as the stacked layers show them (a higher layer
/// wins, whiteouts hide, opaque directories hide what is below them), parents first. Read
/// beneath each layer's fd, no symlink followed; files are left out (a pid file of the build
/// means nothing in the env).
pub fn kept_entries(layers_dir: &Path, lowers: &[PathBuf]) -> Vec<Kept> {
    let mut seen: BTreeMap<PathBuf, Option<Kept>> = BTreeMap::new();
    let mut opaque: Vec<PathBuf> = Vec::new();
    for lower in lowers {
        let Ok(tree) = Tree::open(&layers_dir.join(lower)) else {
            continue;
        };
        let mut found_opaque = Vec::new();
        for top in ["run", "tmp"] {
            walk_kept(
                &tree,
                Path::new(top),
                0,
                &mut seen,
                &opaque,
                &mut found_opaque,
            );
        }
        opaque.extend(found_opaque);
        if seen.len() >= KEPT_MAX {
            break;
        }
    }
    seen.into_values().flatten().take(KEPT_MAX).collect()
}

fn is_opaque(dir: &crate::beneath::Entry) -> bool {
    let mut flag = [0u8; 2];
    dir.open_dir().is_ok_and(|d| {
        rustix::fs::fgetxattr(d.fd(), "user.overlay.opaque", &mut flag[..]).ok() == Some(1)
            && flag[0] == b'y'
    })
}

fn walk_kept(
    tree: &Tree,
    dir: &Path,
    depth: usize,
    seen: &mut BTreeMap<PathBuf, Option<Kept>>,
    opaque: &[PathBuf],
    found_opaque: &mut Vec<PathBuf>,
) {
    let inside = |rel: &Path| Path::new("/").join(rel);
    // Below a directory a higher layer made opaque, or replaced: nothing of this layer shows.
    let hidden = |rel: &Path| {
        rel.ancestors().skip(1).any(|a| {
            opaque.iter().any(|o| o == a)
                || matches!(
                    seen.get(&inside(a)),
                    Some(None) | Some(Some(Kept::Symlink { .. }))
                )
        })
    };
    if depth >= KEPT_DEPTH || hidden(dir) || opaque.iter().any(|o| o == dir) {
        return;
    }
    match tree.lstat(dir) {
        Ok(Some(st)) if crate::beneath::file_type(&st) == rustix::fs::FileType::Directory => {}
        _ => return,
    }
    let Ok(names) = tree.names(dir) else { return };
    for name in names {
        let rel = dir.join(&name);
        let path = inside(&rel);
        if seen.contains_key(&path) || seen.len() >= KEPT_MAX {
            if seen
                .get(&path)
                .is_some_and(|k| matches!(k, Some(Kept::Dir { .. })))
            {
                walk_kept(tree, &rel, depth + 1, seen, opaque, found_opaque);
            }
            continue;
        }
        let Ok(entry) = tree.dir(dir).and_then(|d| d.entry(&name)) else {
            continue;
        };
        match entry.file_type() {
            rustix::fs::FileType::Directory => {
                let mode = entry.stat.st_mode & 0o7777;
                seen.insert(path.clone(), Some(Kept::Dir { path, mode }));
                if is_opaque(&entry) {
                    found_opaque.push(rel.clone());
                }
                walk_kept(tree, &rel, depth + 1, seen, opaque, found_opaque);
            }
            rustix::fs::FileType::Symlink => {
                if let Ok(target) = entry.read_link() {
                    seen.insert(
                        path.clone(),
                        Some(Kept::Symlink {
                            link: path,
                            target: target.into(),
                        }),
                    );
                }
            }
            rustix::fs::FileType::CharacterDevice if entry.stat.st_rdev == 0 => {
                seen.insert(path, None);
            }
            _ => {}
        }
    }
}

/// How ids map for this user, as themselves or as root inside.
pub fn id_mode(identity: &Identity, root: bool) -> IdMode {
    match (&identity.ownership, root) {
        (Ownership::Subordinate { .. }, _) => IdMode::Subordinate,
        (Ownership::Flat { .. }, false) => IdMode::FlatUser,
        (Ownership::Flat { .. }, true) => IdMode::FlatRoot,
    }
}

/// The layers under a session's writable layer: the tools layer is dev.toml's, so an
/// `--image` session has none.
pub fn layer_stack(env: &Prepared, opts: &EnterOptions) -> LayerStack {
    let tools = env.tools.as_ref().filter(|_| opts.image.is_none());
    let stack = LayerStack::new(&env.record, tools.map(|t| &t.diff_id));
    match opts.image {
        None => stack.with_features(&env.features.layers),
        Some(_) => stack,
    }
}

/// The sandbox for one session running `argv` (the shell when empty) in `cwd`.
pub fn plan(
    env: &Prepared,
    opts: &EnterOptions,
    host: &Host,
    place: &EnvPlace,
    argv: Vec<String>,
    cwd: PathBuf,
) -> SandboxPlan {
    let mut lowers = layer_stack(env, opts).lowers();
    let mut home_source = place.dirs.home.clone();
    if let Some(current) = &place.current {
        // `--rm` in a project starts from the env as it is; its changes go to the throwaway layer.
        if current.upper.is_dir() && env.backend != Some(Backend::Copy) {
            lowers.insert(0, current.upper.clone());
        }
        home_source = current.home.clone();
    }
    let mut user = host.user.clone();
    user.root = opts.root;
    let devcontainer = env.project.as_ref().and_then(|p| p.devcontainer.as_ref());
    // A devcontainer.json's remoteUser is you by another name: your uid, the image's entry
    // for that name replaced (as updateRemoteUserUID does).
    if let Some(name) = devcontainer.and_then(|d| d.user_name()) {
        user.name = name.to_string();
    }
    let hostname = crate::config::project::hostname(&env.root);
    // The env's home is always its own directory of the store, at the path of the user's.
    let mut shares = vec![(user.home.clone(), home_source)];
    if shares[0].0 != env.root {
        shares.push((env.root.clone(), env.root.clone()));
    }
    let layout = Layout {
        root: place.dirs.merged.clone(),
        shares,
        ssh_agent: host.ssh_agent.clone(),
        etc_files: host.etc_files.clone(),
        kept: place.kept.clone(),
        // What the session opens of the host (GUI, GPU), then the mounts asked for, on top.
        binds: host
            .opening
            .binds
            .iter()
            .chain(&host.mounts)
            .cloned()
            .collect(),
        // The mount points made for them are the user's (not with one id mapped to root).
        bind_owner: (id_mode(&env.identity, opts.root) != IdMode::FlatRoot)
            .then_some((user.uid, user.gid)),
    };
    let image_env = env.config.config.env.as_deref().unwrap_or_default();
    // The Features' containerEnv, under the project's own environment: dev.toml's [env], or a
    // devcontainer.json's (the image's label merged in) containerEnv, then remoteEnv.
    let mut extra = env.features.env.clone();
    extra.extend(
        env.project
            .as_ref()
            .map(|p| {
                let env = p
                    .devcontainer
                    .as_ref()
                    .map_or_else(|| p.config.env.clone(), |dc| dc.dev_toml().env);
                crate::config::devcontainer::resolve_container_env(&env, image_env)
            })
            .unwrap_or_default(),
    );
    let mut vars = environment(
        image_env,
        &host.vars,
        &user,
        &hostname,
        &place.name,
        host.ssh_agent.is_some(),
        &extra,
    );
    with_opening(&mut vars, &host.opening);
    SandboxPlan {
        ids: id_mode(&env.identity, opts.root),
        rootfs: RootfsPlan {
            backend: env.backend,
            probe_cache: place.probe_cache.clone(),
            layers_dir: place.layers_dir.clone(),
            lowers,
            upper: place.dirs.upper.clone(),
            work: place.dirs.work.clone(),
            copy: place.dirs.copy.clone(),
            merged: place.dirs.merged.clone(),
            scratch: place.scratch.clone(),
        },
        steps: mount_plan(&layout),
        user,
        process: ProcessPlan {
            argv,
            shell: env.project.as_ref().and_then(|p| p.config.shell.clone()),
            shell_fallbacks: shell_fallbacks(host.vars.get("SHELL").map(String::as_str)),
            env: vars,
            cwd,
        },
        hostname,
        image_user: env.config.config.user.clone(),
        image: env.image.clone(),
        keep: None,
        ldconfig: host.opening.ldconfig,
    }
}

/// The opening's variables over the others, and its directories at the end of `PATH`.
fn with_opening(vars: &mut Vec<(String, String)>, opening: &Opening) {
    for (k, v) in &opening.env {
        match vars.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => vars.push((k.clone(), v.clone())),
        }
    }
    for dir in &opening.path {
        match vars.iter_mut().find(|(key, _)| key == "PATH") {
            Some((_, path)) if !path.split(':').any(|d| d == dir) => {
                path.push(':');
                path.push_str(dir);
            }
            Some(_) => {}
            None => vars.push(("PATH".into(), dir.clone())),
        }
    }
}

/// The shells tried when dev.toml names none: the user's `$SHELL` (absolute), bash, sh.
fn shell_fallbacks(shell: Option<&str>) -> Vec<String> {
    let mut fallbacks: Vec<String> = shell
        .filter(|s| s.starts_with('/'))
        .map(str::to_string)
        .into_iter()
        .collect();
    for s in ["/bin/bash", "/bin/sh"] {
        if !fallbacks.iter().any(|f| f == s) {
            fallbacks.push(s.to_string());
        }
    }
    fallbacks
}

/// The user as the env knows them (as themselves; the session sets `root`).
fn user_plan(identity: &Identity) -> Result<UserPlan> {
    let pw = nix::unistd::User::from_uid(identity.uid.into())
        .ok()
        .flatten();
    let name = pw
        .as_ref()
        .map(|u| u.name.clone())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| format!("u{}", identity.uid));
    let group = nix::unistd::Group::from_gid(identity.gid.into())
        .ok()
        .flatten()
        .map_or_else(|| name.clone(), |g| g.name);
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
        .or_else(|| pw.map(|u| u.dir))
        .context("cannot find your home directory; set $HOME")?;
    check_shared_path(&home, "your home directory ($HOME)")?;
    Ok(UserPlan {
        name,
        uid: identity.uid,
        group,
        gid: identity.gid,
        home,
        root: false,
        write_entries: true,
    })
}

/// A host path mounted at the same place inside must not be `/` or one of the sandbox's own.
pub fn check_shared_path(path: &Path, what: &str) -> Result<()> {
    if path == Path::new("/") || RESERVED.iter().any(|r| path.starts_with(r)) {
        return Err(UserError::with_hint(
            format!("{what} `{}` cannot be shared with the env", path.display()),
            "move the project under your home directory (the env provides / , /proc, /sys, /dev and /run itself)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opening_sets_its_variables_and_appends_to_path() {
        let mut vars = vec![
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("DISPLAY".to_string(), ":9".to_string()),
        ];
        let opening = Opening {
            env: vec![
                ("DISPLAY".into(), ":0".into()),
                ("XDG_RUNTIME_DIR".into(), "/run/user/1500".into()),
            ],
            path: vec!["/run/dev/gpu/bin".into()],
            ..Opening::default()
        };
        with_opening(&mut vars, &opening);
        with_opening(&mut vars, &opening);
        assert_eq!(
            vars,
            [
                (
                    "PATH".to_string(),
                    "/usr/bin:/bin:/run/dev/gpu/bin".to_string()
                ),
                ("DISPLAY".to_string(), ":0".to_string()),
                ("XDG_RUNTIME_DIR".to_string(), "/run/user/1500".to_string()),
            ]
        );
    }

    #[test]
    fn fallbacks_start_with_an_absolute_shell_only() {
        assert_eq!(
            shell_fallbacks(Some("/bin/zsh")),
            ["/bin/zsh", "/bin/bash", "/bin/sh"]
        );
        assert_eq!(shell_fallbacks(Some("zsh")), ["/bin/bash", "/bin/sh"]);
        assert_eq!(shell_fallbacks(Some("/bin/sh")), ["/bin/sh", "/bin/bash"]);
        assert_eq!(shell_fallbacks(None), ["/bin/bash", "/bin/sh"]);
    }

    #[test]
    fn shared_paths_are_never_the_sandboxs_own() {
        for p in ["/", "/proc/x", "/dev", "/sys/fs", "/run/user/1"] {
            assert!(check_shared_path(Path::new(p), "p").is_err(), "{p}");
        }
        assert!(check_shared_path(Path::new("/home/u/p"), "p").is_ok());
    }
}
