//! Pure OCI and Docker image types: references, digests, manifests, platform choice.
//! `oci` does no I/O.

pub mod digest;
pub mod manifest;
pub mod platform;
pub mod reference;

pub use digest::Digest;
pub use manifest::{
    Descriptor, Document, DocumentError, EntryError, ImageConfig, ImageManifest, MediaType,
};
pub use platform::Platform;
pub use reference::Reference;
