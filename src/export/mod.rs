//! Taking an image out of the store: the project's image (`build`), deterministic layer blobs
//! (`layer`), and any blob of a stored image as a verified stream (`source`). It never
//! recompresses a base layer: base layers keep the digests their registry gave them.
//! Images leave and enter the machine without a registry too: image archives written
//! (`archive`) and read (`load`); `kube` writes a Kubernetes Pod manifest for an image;
//! `image` says which image an export command means.

pub mod archive;
pub mod build;
pub mod image;
pub mod kube;
pub mod layer;
pub mod load;
pub mod source;
