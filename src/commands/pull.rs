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

/// `dev __settle DIFF_ID...`: makes these layers durable (see `Store::settle`).
pub fn settle(diff_ids: &[String]) -> Result<()> {
    let diff_ids = diff_ids
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    let store = Store::open()?;
    let _shared = store.lock_store(false)?;
    store.settle(&Identity::detect(), &diff_ids)
}
