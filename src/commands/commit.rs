//! `dev commit`: snapshot an env into a local image that `dev run --image` and `dev images` know.

use anyhow::Result;

use crate::ids::Identity;
use crate::oci::Reference;
use crate::session::env_of;
use crate::store::images::record_name;
use crate::store::Store;
use crate::ui::UserError;

pub fn run(name: Option<&str>, tag: &str) -> Result<()> {
    let reference = Reference::parse(tag)?;
    if reference.digest.is_some() {
        return Err(UserError::with_hint(
            format!("`{tag}` has a digest; a commit's digest is computed"),
            "give a name with an optional tag: `dev commit --tag myproject:snapshot`",
        ));
    }
    let store = Store::open()?;
    let identity = Identity::detect();
    let (dir, env) = env_of(&store, &identity.store_key(), name)?;
    let upper = dir.join("upper");
    if !upper.is_dir() {
        let hint = if dir.join("rootfs").is_dir() {
            "this env uses the copy backend, which keeps no separate layer to commit"
        } else {
            "start it once with `dev shell`"
        };
        return Err(UserError::with_hint(
            format!(
                "the env of `{}` has no writable layer",
                env.project.display()
            ),
            hint,
        ));
    }
    let image = record_name(&reference);
    let rec = store.commit_env(&identity, &env, &upper, &image)?;
    crate::ui::note(format_args!(
        "committed {} as {image} ({} layers)",
        env.name.as_deref().unwrap_or("the env"),
        rec.layers.len()
    ));
    crate::ui::out(format_args!("{}", rec.manifest_digest));
    Ok(())
}
