//! The store's work that runs as root inside the user namespace of a subordinate mapping —
//! unpacking a layer with its owners, capturing and packing trees that subordinate ids own,
//! removing them — as typed operations and replies. They travel to the helper process as one
//! line of JSON on its stdin (the news of a layer being downloaded follows it, see
//! `streamed`) and come back on its stdout; a failure keeps its kind and hint, so the user
//! sees the same error as if `dev` had done the work itself. The store never starts the
//! helper: the sandbox registers how (`set_runner`) before any command runs.

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::oci::Digest;
use crate::unpack::LayerStats;

/// One piece of work for the helper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Unpack the blob as layer `diff_id` into `layers_dir`, owners kept; it is made visible
    /// only if its uncompressed content hashes to `diff_id`.
    Unpack {
        layers_dir: PathBuf,
        /// The blob's file.
        blob: PathBuf,
        /// The blob is being downloaded (this many bytes): the news of it follows the operation
        /// on stdin (`registry::News`), and the helper reads the file as it lands.
        #[serde(default)]
        streamed: Option<u64>,
        diff_id: Digest,
        /// `dev`'s `cache_epoch` of the store: recorded in the layer unsynced (the helper may
        /// see other mount ids); without one the layer is synced before it is recorded.
        #[serde(default)]
        epoch: Option<String>,
    },
    /// Clear the unsynced mark of these layers (their files were just flushed to disk).
    Settle {
        layers_dir: PathBuf,
        diff_ids: Vec<Digest>,
        /// `dev`'s `cache_epoch` the flush was for (the helper sees other mount ids): only
        /// marks of it are cleared.
        epoch: String,
    },
    /// Turn a build's writable layer into a layer of `layers_dir`.
    Capture { upper: PathBuf, layers_dir: PathBuf },
    /// Pack `tree` as a layer tar into the new file `out` (or only measure it), the file
    /// then given to `out_owner` (the user, who reads it back).
    Pack {
        tree: PathBuf,
        out: Option<PathBuf>,
        #[serde(default)]
        opts: crate::unpack::pack::PackOptions,
        #[serde(default)]
        out_owner: Option<(u32, u32)>,
    },
    /// Remove these trees of the store.
    Remove { paths: Vec<PathBuf> },
}

/// What the helper answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    Unpacked { stats: LayerStats },
    Captured { diff_id: Digest, stats: LayerStats },
    Packed { digest: Digest, size: u64 },
    Removed,
    Settled,
    Failed(Failure),
}

/// An operation's error as it crosses the process boundary: its kind, its text (the error and
/// its causes), and the hint it carried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The store's filesystem is full (ENOSPC, EDQUOT).
    DiskFull,
    Other,
}

impl Failure {
    pub fn of(e: &anyhow::Error) -> Failure {
        let full = failed_for_disk_full(e);
        let hint = e
            .chain()
            .find_map(|c| c.downcast_ref::<crate::ui::UserError>())
            .and_then(|u| u.hint.clone());
        Failure {
            kind: if full {
                FailureKind::DiskFull
            } else {
                FailureKind::Other
            },
            message: format!("{e:#}"),
            hint,
        }
    }

    /// The hint the user sees for it.
    pub fn hint(&self) -> Option<String> {
        match (&self.hint, self.kind) {
            (Some(h), _) => Some(h.clone()),
            (None, FailureKind::DiskFull) => {
                Some("the disk is full; free space, or run `dev system prune`".to_string())
            }
            (None, FailureKind::Other) => None,
        }
    }
}

/// Whether an I/O error says the filesystem is full (ENOSPC, or EDQUOT for a quota).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT)
    )
}

/// Whether any cause of `e` is an I/O error that says the filesystem is full, an unpack's
/// included: the one test of it, for the helper's replies and for the error the user sees.
pub fn failed_for_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(is_disk_full)
            || c.downcast_ref::<crate::unpack::UnpackError>()
                .and_then(crate::unpack::UnpackError::io_error)
                .is_some_and(is_disk_full)
    })
}

/// Runs an operation in the helper of `identity`'s subordinate mapping, with the bytes of
/// `input` after it on the helper's stdin.
pub type Runner = fn(&crate::ids::Identity, &Op, Option<&mut dyn Read>) -> Result<Reply>;

static RUNNER: OnceLock<Runner> = OnceLock::new();

/// Tells the store how to reach the helper (once, at start).
pub fn set_runner(runner: Runner) {
    let _ = RUNNER.set(runner);
}

/// Runs `op` as root inside the user namespace; a failure comes back as an error.
pub fn run(identity: &crate::ids::Identity, op: &Op) -> Result<Reply> {
    run_fed(identity, op, None)
}

/// Like [`run`], `input` following the operation (a streamed unpack's blob).
pub fn run_fed(
    identity: &crate::ids::Identity,
    op: &Op,
    input: Option<&mut dyn Read>,
) -> Result<Reply> {
    let runner = RUNNER
        .get()
        .ok_or_else(|| anyhow::anyhow!("internal error: no helper runner is registered"))?;
    match runner(identity, op, input)? {
        Reply::Failed(f) => Err(f.into()),
        reply => Ok(reply),
    }
}

/// Does the work of `op` in this process (the helper's side, or `dev` itself without a range);
/// `stdin` is what followed the operation, a streamed unpack's blob.
pub fn execute(op: Op, stdin: Box<dyn Read + Send>) -> Reply {
    use super::layers::{capture_layer, mark_synced, pack_into, remove_paths, unpack_into, Input};
    let done = match op {
        Op::Unpack {
            layers_dir,
            blob,
            streamed,
            diff_id,
            epoch,
        } => unpack_into(
            &layers_dir,
            match streamed {
                // What follows the operation is the news of the download (see `News`).
                Some(size) => Input::Stream {
                    input: Box::new(crate::registry::Landed::new(blob.clone(), stdin)),
                    size,
                },
                None => Input::File(&blob),
            },
            &diff_id,
            crate::unpack::UnpackOptions { keep_owners: true },
            epoch,
        )
        .map(|stats| Reply::Unpacked { stats }),
        Op::Settle {
            layers_dir,
            diff_ids,
            epoch,
        } => mark_synced(&layers_dir, &diff_ids, &epoch).map(|()| Reply::Settled),
        Op::Capture { upper, layers_dir } => capture_layer(&upper, &layers_dir)
            .map(|(diff_id, stats)| Reply::Captured { diff_id, stats }),
        Op::Pack {
            tree,
            out,
            opts,
            out_owner,
        } => pack_into(&tree, out.as_deref(), opts, out_owner)
            .map(|(digest, size)| Reply::Packed { digest, size }),
        Op::Remove { paths } => remove_paths(&paths).map(|()| Reply::Removed),
    };
    done.unwrap_or_else(|e| Reply::Failed(Failure::of(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_and_replies_cross_as_json_and_failures_keep_kind_and_hint() {
        let op = Op::Unpack {
            layers_dir: "/s/layers".into(),
            blob: "/s/blob".into(),
            streamed: Some(12),
            diff_id: Digest::of_bytes(b"x"),
            epoch: Some("boot/7".into()),
        };
        let back: Op = serde_json::from_str(&serde_json::to_string(&op).unwrap()).unwrap();
        assert_eq!(back, op);
        let full = anyhow::Error::new(std::io::Error::from_raw_os_error(nix::libc::ENOSPC))
            .context("cannot write `x`");
        let f = Failure::of(&full);
        assert_eq!(f.kind, FailureKind::DiskFull);
        assert!(f.hint().is_some_and(|h| h.contains("dev system prune")));
        let hinted = crate::ui::UserError::with_hint("bad layer", "do this");
        let f = Failure::of(&hinted);
        assert_eq!(
            (f.kind, f.hint().as_deref()),
            (FailureKind::Other, Some("do this"))
        );
        let reply = Reply::Failed(f.clone());
        let back: Reply = serde_json::from_str(&serde_json::to_string(&reply).unwrap()).unwrap();
        assert_eq!(back, reply);
    }
}
