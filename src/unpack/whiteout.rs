//! OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) to the overlay format: a 0/0 character device
//! and the `user.overlay.opaque=y` xattr, which native overlay (`userxattr`) and fuse-overlayfs
//! both read.

use std::io;

pub const PREFIX: &str = ".wh.";
pub const OPAQUE: &str = ".wh..opq";
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";

pub enum Kind<'a> {
    Opaque,
    Remove(&'a str),
    /// Other AUFS metadata (`.wh..wh.plnk`, …): not content.
    Ignore,
    Malformed,
}

/// `rest` is the file name with `.wh.` removed.
pub fn classify(rest: &str) -> Kind<'_> {
    if rest == OPAQUE {
        Kind::Opaque
    } else if rest.starts_with(PREFIX) {
        Kind::Ignore
    } else if rest.is_empty() || rest == "." || rest == ".." || rest.contains('/') {
        Kind::Malformed
    } else {
        Kind::Remove(rest)
    }
}

/// Marks the open directory `dir` opaque.
pub fn mark_opaque(dir: &std::fs::File) -> io::Result<()> {
    xattr::FileExt::set_xattr(dir, OPAQUE_XATTR, b"y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert!(matches!(classify(".wh..opq"), Kind::Opaque));
        assert!(matches!(classify("foo"), Kind::Remove("foo")));
        assert!(matches!(classify("."), Kind::Malformed));
        assert!(matches!(classify(".."), Kind::Malformed));
        assert!(matches!(classify(""), Kind::Malformed));
        assert!(matches!(classify(".wh.plnk"), Kind::Ignore));
    }
}
