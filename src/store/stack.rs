//! The layer stack of an env: its Features' layers over its tools layer (when it has them)
//! over the image's layers. The
//! one place that orders them; the env's own writable layer goes on top of it.

use std::path::{Path, PathBuf};

use crate::oci::Digest;
use crate::store::images::ImageRecord;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerStack {
    /// Top first: the tools layer, then the image's layers from its top one down.
    top_first: Vec<Digest>,
}

impl LayerStack {
    /// The image's layers, under the tools layer when there is one.
    pub fn new(image: &ImageRecord, tools: Option<&Digest>) -> Self {
        let mut top_first: Vec<Digest> = tools.into_iter().cloned().collect();
        top_first.extend(image.layers.iter().rev().map(|l| l.diff_id.clone()));
        LayerStack { top_first }
    }

    /// With the Features' layers on top, given in installation order (the last on top).
    pub fn with_features(mut self, features: &[Digest]) -> Self {
        for d in features {
            self.top_first.insert(0, d.clone());
        }
        self
    }

    /// The layers' diff ids, top first (as an env's record keeps them).
    pub fn top_first(&self) -> &[Digest] {
        &self.top_first
    }

    /// The layers' trees, relative to the store's layer directory of a mapping, top first (as
    /// overlayfs takes its lowers).
    pub fn lowers(&self) -> Vec<PathBuf> {
        self.top_first
            .iter()
            .map(|d| Path::new(d.hex()).join("root"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::images::LayerRecord;

    #[test]
    fn tools_on_top_of_the_image_top_first() {
        let d = |s: &str| Digest::of_bytes(s.as_bytes());
        let layer = |s: &str| LayerRecord {
            digest: d(s),
            diff_id: d(s),
            size: 1,
            media_type: String::new(),
            source: None,
        };
        let image = ImageRecord {
            name: "x".into(),
            index_digest: None,
            manifest_digest: d("m"),
            config_digest: d("c"),
            platform: crate::oci::Platform::host(),
            created: None,
            pulled: 0,
            layers: vec![layer("bottom"), layer("top")],
        };
        let stack = LayerStack::new(&image, Some(&d("tools")));
        assert_eq!(stack.top_first(), [d("tools"), d("top"), d("bottom")]);
        assert_eq!(stack.lowers()[0], Path::new(d("tools").hex()).join("root"));
        let with = stack.clone().with_features(&[d("f1"), d("f2")]);
        assert_eq!(
            with.top_first(),
            [d("f2"), d("f1"), d("tools"), d("top"), d("bottom")]
        );
        assert_eq!(
            LayerStack::new(&image, None).top_first(),
            [d("top"), d("bottom")]
        );
    }
}
