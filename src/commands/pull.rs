//! `dev pull REF`: pull an image into the store and say which manifest it is.

use anyhow::Result;

use crate::ids::Identity;
use crate::oci::Reference;
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
