//! Ids: this process's user and group ids, its supplementary groups, and the maps of a user
//! namespace it writes for itself.

use anyhow::{Context, Result};
use nix::unistd::{Gid, Uid};

/// Sets the real, effective and saved group id.
pub fn set_gid(gid: u32) -> nix::Result<()> {
    let gid = Gid::from_raw(gid);
    nix::unistd::setresgid(gid, gid, gid)
}

/// Sets the real, effective and saved user id.
pub fn set_uid(uid: u32) -> nix::Result<()> {
    let uid = Uid::from_raw(uid);
    nix::unistd::setresuid(uid, uid, uid)
}

/// Sets the supplementary groups.
pub fn set_groups(gids: &[u32]) -> nix::Result<()> {
    let gids: Vec<Gid> = gids.iter().copied().map(Gid::from_raw).collect();
    nix::unistd::setgroups(&gids)
}

/// In a new user namespace, unmapped: maps `inside` ids to one host id each, `(uid, gid)`
/// pairs, with setgroups(2) denied (the kernel's condition for an unprivileged gid map).
pub fn write_own_map(uid: (u32, u32), gid: (u32, u32)) -> Result<()> {
    let write = |file: &str, text: String| {
        std::fs::write(file, text).with_context(|| format!("cannot write {file}"))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("{} {} 1\n", uid.0, uid.1))?;
    write("/proc/self/gid_map", format!("{} {} 1\n", gid.0, gid.1))?;
    Ok(())
}

/// Whether this process's user namespace has its uid map.
pub fn is_mapped() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| !m.trim().is_empty())
}
