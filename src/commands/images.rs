//! `dev images`: the images in the store.

use anyhow::Result;
use serde::Serialize;

use crate::cli::Format;
use crate::ids::Identity;
use crate::store::Store;
use crate::ui::human_bytes;

#[derive(Serialize)]
struct Row {
    reference: String,
    digest: String,
    created: Option<String>,
    size: u64,
    platform: String,
}

pub fn run(format: Format) -> Result<()> {
    let store = Store::open()?;
    let key = Identity::detect().store_key();
    let rows: Vec<Row> = store
        .images()?
        .into_iter()
        .map(|img| Row {
            size: store.image_bytes(&key, &img),
            reference: img.name,
            digest: img.manifest_digest.to_string(),
            created: img.created,
            platform: img.platform.to_string(),
        })
        .collect();
    match format {
        Format::Json => crate::ui::json(&rows)?,
        Format::Table => {
            let w = rows
                .iter()
                .map(|r| r.reference.len())
                .max()
                .unwrap_or(0)
                .max(9);
            crate::ui::out(format_args!(
                "{:<w$}  {:<12}  {:<20}  {:>10}",
                "REFERENCE", "DIGEST", "CREATED", "SIZE"
            ));
            for r in &rows {
                let short = r
                    .digest
                    .trim_start_matches("sha256:")
                    .get(..12)
                    .unwrap_or("");
                let created = r.created.as_deref().map_or("-".to_string(), |c| {
                    c.chars().take(19).collect::<String>().replace('T', " ")
                });
                crate::ui::out(format_args!(
                    "{:<w$}  {short:<12}  {created:<20}  {:>10}",
                    r.reference,
                    human_bytes(r.size)
                ));
            }
        }
    }
    Ok(())
}
