//! Starting the user-namespace helper: the parent re-executes `dev` as a hidden subcommand, the
//! child unshares its user namespace and waits; the parent writes the id maps with
//! `newuidmap`/`newgidmap` (checking their exit status) and lets it go on as root inside.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use super::idmap::{parse_subid, IdMap, SubRange};

/// The hidden subcommand the helper runs as.
pub const HELPER_COMMAND: &str = "__userns-helper";

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
    pub fn detect() -> Self {
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
    let group = nix::unistd::Group::from_gid(gid.into())
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_default();
    let hint = format!(
        "to keep the image's owners, ask an administrator for a range: `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}`"
    );
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let sub_uid = parse_subid(&read("/etc/subuid"), name, uid);
    let sub_gid = parse_subid(&read("/etc/subgid"), &group, gid)
        .or_else(|| parse_subid(&read("/etc/subgid"), name, gid));
    let (Some(sub_uid), Some(sub_gid)) = (sub_uid, sub_gid) else {
        return Ownership::Flat { reason: format!("no subordinate id range for `{name}` in /etc/subuid and /etc/subgid; every file is owned by you ({hint})") };
    };
    let (Ok(newuidmap), Ok(newgidmap)) = (which::which("newuidmap"), which::which("newgidmap"))
    else {
        return Ownership::Flat { reason: "`newuidmap`/`newgidmap` are not installed (Debian/Ubuntu: `apt install uidmap`); every file is owned by you".to_string() };
    };
    Ownership::Subordinate {
        uid_map: IdMap::with_subordinate(uid, sub_uid),
        gid_map: IdMap::with_subordinate(gid, sub_gid),
        newuidmap,
        newgidmap,
        sub_uid,
        sub_gid,
    }
}

/// Runs `dev __userns-helper ARGS...` as root inside a user namespace with the full mapping and
/// returns what it printed on stdout. Its error, if any, becomes ours.
pub fn run_helper(identity: &Identity, args: &[OsString]) -> Result<Vec<u8>> {
    let Ownership::Subordinate {
        uid_map,
        gid_map,
        newuidmap,
        newgidmap,
        ..
    } = &identity.ownership
    else {
        bail!("internal error: the user-namespace helper needs a subordinate id range");
    };
    let exe = std::env::current_exe().context("cannot find the `dev` executable to re-run")?;
    let mut child = Command::new(exe)
        .arg(HELPER_COMMAND)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the `dev` helper process")?;
    let pid = child.id().to_string();
    let mut stdout = child.stdout.take().context("helper has no stdout")?;
    let mut ready = [0u8; 1];
    let got = stdout.read(&mut ready).unwrap_or(0);
    if got == 0 {
        let out = child
            .wait_with_output()
            .context("the helper process failed")?;
        bail!(
            "{}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .trim_start_matches("error: ")
        );
    }
    let map = |program: &PathBuf, map: &IdMap| -> Result<()> {
        let out = Command::new(program)
            .arg(&pid)
            .args(map.args())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run `{}`", program.display()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            bail!(
                "`{} {pid} {}` failed: {}; check /etc/subuid and /etc/subgid and that `{}` is setuid root (`apt install --reinstall uidmap`)",
                program.display(),
                map.args().join(" "),
                stderr.trim(),
                program.display()
            );
        }
        Ok(())
    };
    let mapped = map(newuidmap, uid_map).and_then(|_| map(newgidmap, gid_map));
    let mut stdin = child.stdin.take().context("helper has no stdin")?;
    if let Err(e) = mapped {
        drop(stdin);
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    stdin
        .write_all(b"m")
        .context("cannot signal the helper process")?;
    drop(stdin);
    let mut output = Vec::new();
    stdout
        .read_to_end(&mut output)
        .context("cannot read the helper's answer")?;
    let out = child
        .wait_with_output()
        .context("the helper process failed")?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let msg = msg.trim().trim_start_matches("error: ");
        return Err(anyhow!(
            "{}",
            if msg.is_empty() {
                "the helper process died"
            } else {
                msg
            }
        ));
    }
    Ok(output)
}

/// The helper's side: unshare the user namespace, tell the parent, wait for the maps, become
/// root inside. Must run before the process starts any thread.
pub fn enter_as_helper() -> Result<()> {
    use nix::sched::{unshare, CloneFlags};
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    // A helper must never outlive the `dev` that started it: a killed pull must not leave an
    // unpack running that races the next one.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .context("cannot set the parent-death signal")?;
    if nix::unistd::getppid().as_raw() == 1 {
        bail!("the parent `dev` is gone");
    }
    unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(|e| anyhow!("cannot create a user namespace: {e}{}", userns_hint()))?;
    let mut stdout = std::io::stdout();
    stdout
        .write_all(b"u")
        .and_then(|_| stdout.flush())
        .context("cannot signal the parent")?;
    let mut go = [0u8; 1];
    if std::io::stdin().read(&mut go).unwrap_or(0) != 1 {
        bail!("the parent did not map the ids");
    }
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .context("cannot become group 0 in the user namespace")?;
    setgroups(&[]).context("cannot drop supplementary groups in the user namespace")?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .context("cannot become root in the user namespace")?;
    Ok(())
}

/// Why user namespaces may be off here, and what to do.
pub fn userns_hint() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return "; AppArmor restricts unprivileged user namespaces here (`sysctl kernel.apparmor_restrict_unprivileged_userns=0`, or an AppArmor profile for `dev`)".to_string();
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return "; unprivileged user namespaces are disabled (`sysctl kernel.unprivileged_userns_clone=1`)".to_string();
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return "; user namespaces are disabled (`sysctl user.max_user_namespaces=15000`)"
            .to_string();
    }
    String::new()
}
