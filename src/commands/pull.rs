//! `dev pull REF`: pull an image into the store and say which manifest it is; and the hidden
//! `dev __settle`, which flushes the layers a pull made once the pull returned.

use anyhow::Result;

use crate::ids::Identity;
use crate::oci::{Digest, Reference};
use crate::pull::pull;
use crate::store::Store;
use crate::ui::progress::PullProgress;

pub fn run(reference: &str, quiet: bool) -> Result<()> {
    let reference = Reference::parse(reference)?;
    let store = Store::open()?;
    let identity = Identity::detect();
    let progress = PullProgress::new(quiet);
    let rec = pull(&store, &identity, &reference, &progress)?;
    if quiet {
        crate::ui::out(format_args!("{}", rec.manifest_digest));
    } else {
        crate::ui::note(format_args!("{}: pulled {}", rec.name, rec.manifest_digest));
    }
    Ok(())
}

/// How long `dev __settle` lets the pull's session start before its flush: the env's own
/// writes (the overlay's work dir, the first-run probe) then do not queue behind 100 MB of
/// writeback (a first `dev run --image` measured 615 to 881 ms with the flush at once).
const SETTLE_AFTER: std::time::Duration = std::time::Duration::from_millis(300);

/// `dev __settle DIFF_ID...`: makes these layers durable (see `Store::settle`).
pub fn settle(diff_ids: &[String]) -> Result<()> {
    let diff_ids = diff_ids
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    std::thread::sleep(SETTLE_AFTER);
    let store = Store::open()?;
    let _shared = store.lock_store(false)?;
    // First the pull's downloads: deleted, their pages need no writeback.
    store.remove_set_aside();
    store.settle(&Identity::detect(), &diff_ids)
}
