//! The runtime state of a running env, `state.json` in its runtime directory: written by its
//! keeper once the env is up, removed when it stops, read by every command that looks for it.
//! Plain data, and the process identity it is checked against.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How long `dev stop` lets the env's processes end after SIGTERM before they are killed.
pub const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A process by pid and start time (clock ticks since boot), so a recycled pid is not mistaken
/// for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

impl ProcId {
    pub fn of(pid: i32) -> Option<ProcId> {
        ProcId::in_stat(pid, &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// From the text of `/proc/PID/stat`.
    fn in_stat(pid: i32, stat: &str) -> Option<ProcId> {
        // Field 22, counted after the `(comm)` that may hold spaces and parentheses.
        let after = stat.rsplit_once(')')?.1;
        let mut fields = after.split_whitespace();
        // A zombie (or a dead task) is gone, whatever its parent has not reaped yet.
        if matches!(fields.next(), Some("Z" | "X" | "x")) {
            return None;
        }
        let start = fields.nth(18)?.parse().ok()?;
        Some(ProcId { pid, start })
    }

    pub fn alive(&self) -> bool {
        ProcId::of(self.pid).is_some_and(|p| p.start == self.start)
    }
}

/// A running env: written by its keeper once the env is up, removed when it stops.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub ids: crate::ids::IdMode,
    pub keeper: ProcId,
    pub init: ProcId,
    pub name: String,
    pub project: PathBuf,
    pub image: String,
    pub fingerprint: String,
    /// Unix seconds.
    pub started: u64,
    /// The env's user namespace (its inode): every process of the env is in it, and so is a
    /// session's `dev` that joined it. 0 when unknown.
    #[serde(default)]
    pub userns: u64,
    /// The binds the env started with, one line each (source, target, read-only).
    #[serde(default)]
    pub mounts: Vec<String>,
    /// What the env was started with that a session cannot change by joining it: the image's
    /// manifest, the tools layer and the ssh agent's socket, in words. A session that asks for
    /// another does not join a lingering env, it restarts it.
    #[serde(default)]
    pub shape: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command may name itself `a) S 1 2 (b`: the fields start after the last `)`; a zombie
    /// is no process.
    #[test]
    fn the_start_time_is_read_past_a_command_name_with_spaces_and_parens() {
        let tail = "S 1 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777123 2000000 100";
        let start = |stat: &str| ProcId::in_stat(4242, stat).map(|p| p.start);
        assert_eq!(start(&format!("4242 (dev) {tail}")), Some(777123));
        assert_eq!(start(&format!("4242 (a) S 1 2 (b) {tail}")), Some(777123));
        assert_eq!(start("4242 (dev) S 1"), None);
        assert_eq!(
            start(&format!("4242 (dev) {}", tail.replacen('S', "Z", 1))),
            None
        );
        assert!(ProcId::of(std::process::id() as i32).is_some());
    }
}
