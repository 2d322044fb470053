//! Taking an image out of the store: the project's image (`build`), deterministic layer blobs
//! (`layer`), and any blob of a stored image as a verified stream (`source`). It never
//! recompresses a base layer: base layers keep the digests their registry gave them.

pub mod build;
pub mod layer;
pub mod source;
