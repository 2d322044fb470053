//! `dev rmi REF...`: forget image names; layers no other image uses go too.

use anyhow::Result;

use crate::ids::Identity;
use crate::store::gc::EnvPrune;
use crate::store::Store;
use crate::ui::UserError;

pub fn run(references: &[String]) -> Result<()> {
    let store = Store::open()?;
    let identity = Identity::detect();
    for r in references {
        let Some(img) = store.find_image(r)? else {
            return Err(UserError::with_hint(
                format!("no image `{r}` in the store"),
                "`dev images` lists the images you have",
            ));
        };
        store.remove_image(&img.name)?;
        crate::ui::out(format_args!("Untagged: {}", img.name));
    }
    let removed = store.prune(&identity, false, EnvPrune::Keep)?.layers.len();
    if removed > 0 {
        crate::ui::out(format_args!(
            "Deleted {removed} layer(s) no other image uses"
        ));
    }
    Ok(())
}
