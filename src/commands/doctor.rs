//! `dev doctor`: one screen of what dev needs on this machine — user namespaces, subordinate id
//! ranges, newuidmap/newgidmap, the overlay backend, /dev/fuse, the runtime directory, the
//! store's free space, credentials (names only), the project's registry and the mounts it and
//! config.toml ask for — each with the fix
//! when it is missing. Exits non-zero when something a session needs is missing.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::cli::Format;
use crate::config::project::Project;
use crate::host::{Asked, Facts, GpuMode, Opening};
use crate::ids::{is_setuid_root, IdMode, Identity, Ownership};
use crate::oci::Reference;
use crate::sandbox::parent::HELPER_COMMAND;
use crate::sandbox::rootfs::{kernel_release, ProbeCache};
use crate::store::Store;
use crate::ui::Table;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, with less (a fallback, a single id).
    Warn,
    /// A session cannot start, or the project's image cannot be pulled.
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(check: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        check,
        status,
        detail: detail.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

pub fn run(format: Format, gui: bool, gpu: bool) -> Result<i32> {
    let identity = Identity::detect();
    let store = Store::open().ok();
    let mut checks = vec![user_namespaces(), subordinate_ids(&identity), newuidmap()];
    checks.push(overlay(store.as_ref()));
    checks.push(fuse());
    checks.push(runtime_dir(identity.uid));
    checks.push(store_space(store.as_ref()));
    checks.push(credentials());
    if let Some(c) = project_registry() {
        checks.push(c);
    }
    checks.extend(mounts());
    // GUI and GPU when asked: by the flags, the project or config.toml.
    let project = std::env::current_dir()
        .ok()
        .and_then(|cwd| Project::discover(&cwd).ok().flatten());
    let asked = crate::config::trust::openings_asked(
        gui,
        gpu.then_some(GpuMode::Auto),
        project.as_ref().map(|p| &p.config),
    )
    .unwrap_or(Asked {
        gui,
        gpu: if gpu { GpuMode::Auto } else { GpuMode::None },
    });
    if asked.gui {
        checks.push(gui_sockets(identity.uid));
    }
    if asked.gpu != GpuMode::None {
        checks.push(gpu_devices(asked.gpu, identity.uid));
    }
    match format {
        Format::Json => crate::ui::json(&checks)?,
        Format::Table => {
            let mut t = Table::new(&["CHECK", "STATUS", "DETAIL"]);
            for c in &checks {
                let status = match c.status {
                    Status::Ok => "ok",
                    Status::Warn => "warn",
                    Status::Fail => "FAIL",
                };
                t.row(vec![
                    c.check.to_string(),
                    status.to_string(),
                    c.detail.clone(),
                ]);
                if let Some(f) = &c.fix {
                    t.row(vec![String::new(), String::new(), format!("fix: {f}")]);
                }
            }
            t.print();
        }
    }
    Ok(i32::from(checks.iter().any(|c| c.status == Status::Fail)))
}

fn read(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// What the kernel's settings say of unprivileged user namespaces: `None` when they allow them.
pub fn userns_blocked(
    max_user_namespaces: Option<&str>,
    unprivileged_clone: Option<&str>,
    apparmor_restrict: Option<&str>,
) -> Option<(&'static str, &'static str)> {
    if max_user_namespaces == Some("0") {
        return Some((
            "user.max_user_namespaces is 0",
            "`sudo sysctl user.max_user_namespaces=15000`",
        ));
    }
    if unprivileged_clone == Some("0") {
        return Some((
            "kernel.unprivileged_userns_clone is 0",
            "`sudo sysctl kernel.unprivileged_userns_clone=1`",
        ));
    }
    if apparmor_restrict == Some("1") {
        return Some((
            "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1)",
            "`sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0`, or give `dev` an AppArmor profile with `userns,`",
        ));
    }
    None
}

fn user_namespaces() -> Check {
    let blocked = userns_blocked(
        read("/proc/sys/user/max_user_namespaces").as_deref(),
        read("/proc/sys/kernel/unprivileged_userns_clone").as_deref(),
        read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref(),
    );
    // The real test: dev's own helper enters a user namespace and maps itself.
    let probe = std::env::current_exe().ok().map(|exe| {
        Command::new(exe)
            .args([HELPER_COMMAND, IdMode::FlatUser.as_arg(), "probe"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    });
    match (probe, blocked) {
        (Some(Ok(out)), None) if out.status.success() => check(
            "user namespaces",
            Status::Ok,
            "an unprivileged user namespace can be made",
        ),
        (_, Some((why, fix))) => check("user namespaces", Status::Fail, why).fix(fix),
        (probe, None) => {
            let why = match probe {
                Some(Ok(out)) => String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("the helper failed")
                    .trim_start_matches("error: ")
                    .to_string(),
                Some(Err(e)) => format!("cannot run dev's helper: {e}"),
                None => "cannot find dev's own executable".to_string(),
            };
            check("user namespaces", Status::Fail, why).fix(
                "check `sysctl user.max_user_namespaces` and any seccomp or container policy around this shell",
            )
        }
    }
}

fn subordinate_ids(identity: &Identity) -> Check {
    match &identity.ownership {
        Ownership::Subordinate {
            sub_uid, sub_gid, ..
        } => check(
            "subordinate ids",
            Status::Ok,
            format!(
                "uids {}-{}, gids {}-{}: images keep their owners",
                sub_uid.start,
                sub_uid.start + sub_uid.count.saturating_sub(1),
                sub_gid.start,
                sub_gid.start + sub_gid.count.saturating_sub(1)
            ),
        ),
        Ownership::Flat { reason } => {
            let (detail, fix) = reason
                .split_once("; ")
                .map_or((reason.as_str(), ""), |(d, f)| (d, f));
            let c = check("subordinate ids", Status::Warn, detail);
            if fix.is_empty() {
                c
            } else {
                c.fix(fix)
            }
        }
    }
}

fn newuidmap() -> Check {
    let found: Vec<(String, Option<PathBuf>)> = ["newuidmap", "newgidmap"]
        .iter()
        .map(|p| (p.to_string(), which::which(p).ok()))
        .collect();
    let missing: Vec<&str> = found
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    if !missing.is_empty() {
        return check(
            "newuidmap",
            Status::Warn,
            format!(
                "{} not found: only your own id can be mapped",
                missing.join(", ")
            ),
        )
        .fix("`sudo apt install uidmap` (Debian, Ubuntu) or `sudo dnf install shadow-utils`");
    }
    let not_setuid: Vec<String> = found
        .iter()
        .filter_map(|(_, p)| p.as_ref())
        .filter(|p| !is_setuid_root(p))
        .map(|p| p.display().to_string())
        .collect();
    if !not_setuid.is_empty() {
        return check(
            "newuidmap",
            Status::Warn,
            format!(
                "{} is not setuid root: only your own id can be mapped",
                not_setuid.join(", ")
            ),
        )
        .fix(format!(
            "`sudo chmod u+s {}`, or `sudo apt install --reinstall uidmap`",
            not_setuid.join(" ")
        ));
    }
    let paths: Vec<String> = found
        .iter()
        .filter_map(|(_, p)| p.as_ref().map(|p| p.display().to_string()))
        .collect();
    check(
        "newuidmap",
        Status::Ok,
        format!("{} (setuid root)", paths.join(", ")),
    )
}

fn overlay(store: Option<&Store>) -> Check {
    if let Some(v) = std::env::var_os("DEV_OVERLAY") {
        return check(
            "overlay",
            Status::Ok,
            format!("forced by DEV_OVERLAY={}", v.to_string_lossy()),
        );
    }
    let kernel = kernel_release();
    let cache: Option<ProbeCache> = store
        .and_then(|s| std::fs::read(s.overlay_probe_path()).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    match cache {
        Some(c) if c.kernel == kernel => {
            let name = c.backend.name();
            let status = if name == "native" {
                Status::Ok
            } else {
                Status::Warn
            };
            let c = check(
                "overlay",
                status,
                format!("{name} (probed for kernel {kernel})"),
            );
            if status == Status::Ok {
                c
            } else {
                c.fix("native overlayfs in a user namespace needs Linux 5.11 and a store on a filesystem it supports (ext4, xfs, btrfs, tmpfs)")
            }
        }
        _ => check(
            "overlay",
            Status::Ok,
            format!("not probed yet for kernel {kernel}: the first session tries native, then fuse-overlayfs, then a copy"),
        ),
    }
}

/// `/dev/fuse` (fuse-overlayfs's device); `DEV_DOCTOR_FUSE` names another one, for tests.
fn fuse() -> Check {
    let dev = std::env::var_os("DEV_DOCTOR_FUSE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/fuse"));
    let program = which::which("fuse-overlayfs").ok();
    let usable = nix::unistd::access(
        &dev,
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    )
    .is_ok();
    match (usable, program) {
        (true, Some(p)) => check(
            "fuse",
            Status::Ok,
            format!("{} usable, {}", dev.display(), p.display()),
        ),
        (true, None) => check(
            "fuse",
            Status::Warn,
            "fuse-overlayfs is not installed: no fallback when native overlay fails",
        )
        .fix("`sudo apt install fuse-overlayfs`"),
        (false, _) => check(
            "fuse",
            Status::Warn,
            format!(
                "{} is not readable and writable by you: no fuse-overlayfs fallback",
                dev.display()
            ),
        )
        .fix(format!(
            "`sudo chmod 0666 {}` (desktop distributions ship it so)",
            dev.display()
        )),
    }
}

fn runtime_dir(uid: u32) -> Check {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) else {
        return check(
            "runtime dir",
            Status::Warn,
            "XDG_RUNTIME_DIR is not set: running envs keep their sockets under the store",
        )
        .fix("log in through a session manager (systemd-logind sets it), or export XDG_RUNTIME_DIR=/run/user/$(id -u)");
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0 => check(
            "runtime dir",
            Status::Ok,
            format!("{} (yours, 0700)", dir.display()),
        ),
        Ok(m) if m.is_dir() && m.uid() == uid => check(
            "runtime dir",
            Status::Warn,
            format!(
                "{} is open to others (mode {:o})",
                dir.display(),
                m.mode() & 0o777
            ),
        )
        .fix(format!("`chmod 0700 {}`", dir.display())),
        Ok(_) => check(
            "runtime dir",
            Status::Fail,
            format!("{} is not a directory of yours", dir.display()),
        )
        .fix("point XDG_RUNTIME_DIR at a directory you own, mode 0700"),
        Err(e) => check(
            "runtime dir",
            Status::Fail,
            format!("{}: {e}", dir.display()),
        )
        .fix(format!("`mkdir -m 0700 {}`", dir.display())),
    }
}

fn store_space(store: Option<&Store>) -> Check {
    let Some(store) = store else {
        return check("store", Status::Fail, "cannot open the store")
            .fix("set $XDG_DATA_HOME (or $HOME) to a directory you can write");
    };
    let root = store.root().to_path_buf();
    match nix::sys::statvfs::statvfs(&root) {
        Ok(st) => {
            let free = st.blocks_available() * st.fragment_size();
            let text = format!("{}: {} free", root.display(), crate::ui::human_bytes(free));
            if free < 2_000_000_000 {
                check("store", Status::Warn, text).fix("free space, or run `dev system prune`")
            } else {
                check("store", Status::Ok, text)
            }
        }
        Err(e) => check("store", Status::Fail, format!("{}: {e}", root.display())),
    }
}

fn credentials() -> Check {
    let found = crate::registry::auth::registries_with_credentials();
    if found.is_empty() {
        return check(
            "credentials",
            Status::Ok,
            "none (public images need none; `docker login` or `podman login` adds them)",
        );
    }
    let names: Vec<String> = found
        .iter()
        .map(|(n, f)| format!("{n} ({})", f.display()))
        .collect();
    check("credentials", Status::Ok, names.join(", "))
}

/// What `--gui` would open here (nothing is written: the env's runtime directory is a name).
fn gui_sockets(uid: u32) -> Check {
    let vars: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let root = crate::host::host_root();
    let mut out = Opening::default();
    crate::host::gui::discover(
        &Facts {
            vars: &vars,
            root: &root,
            runtime: std::path::Path::new("/nonexistent"),
            uid,
            ldcache: None,
        },
        &mut out,
    );
    let mut detail = out.opened.join(", ");
    for n in &out.notes {
        if !detail.is_empty() {
            detail.push_str("; ");
        }
        detail.push_str(n);
    }
    if out.opened.is_empty() {
        check("gui sockets", Status::Warn, detail)
            .fix("run dev in your desktop session's terminal (with WAYLAND_DISPLAY or DISPLAY set)")
    } else {
        check("gui sockets", Status::Ok, detail)
    }
}

/// What `--gpu` would open here; an NVIDIA GPU asked for and not found fails.
fn gpu_devices(mode: GpuMode, uid: u32) -> Check {
    let vars: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let root = crate::host::host_root();
    let ldcache = crate::host::gpu::ldconfig_p(&root);
    let mut out = Opening::default();
    let found = crate::host::gpu::discover(
        mode,
        &Facts {
            vars: &vars,
            root: &root,
            runtime: std::path::Path::new("/nonexistent"),
            uid,
            ldcache: ldcache.as_deref(),
        },
        &mut out,
    );
    let what = match mode {
        GpuMode::Nvidia => "gpu (nvidia)",
        _ => "gpu (auto)",
    };
    match found {
        Err(e) => {
            let hint = e
                .downcast_ref::<crate::ui::UserError>()
                .and_then(|u| u.hint.clone());
            let c = check(what, Status::Fail, format!("{e}"));
            match hint {
                Some(h) => c.fix(h),
                None => c,
            }
        }
        Ok(()) if out.opened.is_empty() => check(what, Status::Warn, out.notes.join("; "))
            .fix("install your GPU's driver on the host, or drop `gpu` from dev.toml"),
        Ok(()) => {
            let mut detail = out.opened.join(", ");
            for n in &out.notes {
                detail.push_str("; ");
                detail.push_str(n);
            }
            check(what, Status::Ok, detail)
        }
    }
}

/// The project's image's registry answers (any HTTP answer on `/v2/` will do).
fn project_registry() -> Option<Check> {
    let cwd = std::env::current_dir().ok()?;
    let project = match Project::discover(&cwd) {
        Ok(p) => p?,
        Err(e) => {
            return Some(check(
                "project",
                Status::Fail,
                crate::ui::render(&e).replace('\n', " "),
            ))
        }
    };
    let reference = match Reference::parse(&project.config.image) {
        Ok(r) => r,
        Err(e) => return Some(check("project", Status::Fail, format!("{e:#}"))),
    };
    let host = reference.registry.clone();
    let answered = ["https", "http"]
        .iter()
        .filter(|scheme| **scheme == "https" || crate::config::settings::is_loopback(&host))
        .any(|scheme| reaches(&format!("{scheme}://{}/v2/", api_host(&host))));
    let what = format!("`{}` from {}", project.config.image, host);
    Some(if answered {
        check("project registry", Status::Ok, format!("{what} answers"))
    } else {
        check(
            "project registry",
            Status::Fail,
            format!("{what}: nothing answers"),
        )
        .fix("check the network, or set a mirror for it in ~/.config/dev/config.toml ([mirrors])")
    })
}

/// The mounts config.toml and the project's dev.toml ask for: every host source must be there
/// (a missing one stops every session). Volumes are made on first use, so they need nothing.
fn mounts() -> Option<Check> {
    use crate::session::mounts::{resolve, Context, Origin};
    let settings = crate::config::Settings::load().ok()?;
    let cwd = std::env::current_dir().ok()?;
    let project = Project::discover(&cwd).ok().flatten();
    let asked: Vec<_> = settings
        .mounts
        .iter()
        .map(|m| (Origin::Settings, m))
        .chain(
            project
                .iter()
                .flat_map(|p| p.config.mounts.iter().map(|m| (Origin::Project, m))),
        )
        .collect();
    if asked.is_empty() {
        return None;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let vars = std::env::vars().collect();
    let volume = |name: &str| Ok(PathBuf::from(name));
    let root = project.as_ref().map_or(cwd.clone(), |p| p.root.clone());
    let cx = Context {
        home: &home,
        vars: &vars,
        project: &root,
        cwd: &cwd,
        volume: &volume,
    };
    Some(match resolve(&asked, &cx) {
        Ok(found) => check(
            "mounts",
            Status::Ok,
            format!("{} asked for; every source is there", found.len()),
        ),
        Err(e) => {
            let hint = e
                .downcast_ref::<crate::ui::UserError>()
                .and_then(|u| u.hint.clone());
            let c = check("mounts", Status::Fail, e.to_string());
            match hint {
                Some(h) => c.fix(h),
                None => c,
            }
        }
    })
}

fn api_host(registry: &str) -> &str {
    if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

fn reaches(url: &str) -> bool {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .redirects(0)
        .build();
    match agent.get(url).call() {
        Ok(_) | Err(ureq::Error::Status(..)) => true,
        Err(ureq::Error::Transport(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_settings_that_block_user_namespaces() {
        assert!(userns_blocked(Some("15000"), None, None).is_none());
        assert!(userns_blocked(Some("15000"), Some("1"), Some("0")).is_none());
        let (why, fix) = userns_blocked(Some("0"), None, None).expect("blocked");
        assert!(why.contains("max_user_namespaces") && fix.contains("sysctl"));
        let (why, _) = userns_blocked(None, Some("0"), None).expect("blocked");
        assert!(why.contains("unprivileged_userns_clone"));
        let (why, fix) = userns_blocked(None, None, Some("1")).expect("blocked");
        assert!(why.contains("AppArmor") && fix.contains("userns,"));
    }
}
