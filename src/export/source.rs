//! Any blob of a stored image as a verified stream: the store's own copy in
//! `blobs-v1/sha256/` when it has one, else streamed from the registry the layer came from.
//! Every byte handed out is counted into the digest; a stream that runs long fails on the
//! byte past the size, and one that ends short or does not match fails at its end, so a
//! consumer that reads to EOF never finishes with wrong bytes. It never writes the store.
//!
//! The signature the exporters use:
//! `pub fn open_blob(store: &Store, image: &ImageRecord, digest: &Digest, size: u64)
//!     -> anyhow::Result<Box<dyn Read + Send>>`

use std::fs::File;
use std::io::{self, Read};

use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};

use crate::config::Settings;
use crate::oci::{Descriptor, Digest, Reference};
use crate::registry::{Endpoint, RegistryError};
use crate::store::images::ImageRecord;
use crate::store::Store;
use crate::ui::UserError;

/// Opens the blob `digest` (`size` bytes) of `image`: the manifest, the config or a layer.
/// A layer the store holds only unpacked (a pulled base layer) is streamed from its source
/// registry (its `LayerRecord::source`, else the image's own repository), the user's mirrors
/// for that registry first.
pub fn open_blob(
    store: &Store,
    image: &ImageRecord,
    digest: &Digest,
    size: u64,
) -> Result<Box<dyn Read + Send>> {
    let local = store.blob_path(digest);
    match File::open(&local) {
        Ok(f) => return Ok(Box::new(Verified::new(f, digest.clone(), size))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot open `{}`", local.display())),
    }
    let Some(layer) = image.layers.iter().find(|l| &l.digest == digest) else {
        return Err(UserError::with_hint(
            format!(
                "blob {} of `{}` is missing from the store",
                digest.short(),
                image.name
            ),
            format!("pull or build `{}` again", image.name),
        ));
    };
    let from = layer.fetched_from(image);
    let reference = Reference::parse(&from)
        .with_context(|| format!("layer {} names an unusable source `{from}`", digest.short()))?;
    let desc = Descriptor {
        media_type: layer.media_type.clone(),
        digest: digest.clone(),
        size,
        platform: None,
        annotations: None,
        urls: None,
    };
    let settings = Settings::load()?;
    let mut last = None;
    let hosts = settings
        .mirrors_for(&reference.registry)
        .iter()
        .map(|m| (m.as_str(), m.as_str()))
        .chain([(reference.registry.as_str(), reference.api_host())]);
    for (registry, host) in hosts {
        let attempt = Endpoint::new(registry, host, &reference.repository, &settings)
            .and_then(|ep| ep.blob_reader(&desc));
        match attempt {
            Ok(r) => return Ok(Box::new(Verified::new(r, digest.clone(), size))),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e @ RegistryError::Transport { .. }) | Some(e @ RegistryError::Stalled { .. }) => {
            UserError::with_hint(
                format!(
                    "layer {} of `{}` is not in the store and `{}` cannot be reached ({e})",
                    digest.short(),
                    image.name,
                    reference.registry
                ),
                format!(
                    "dev keeps base layers unpacked, not compressed: go online so it can stream them from `{}`",
                    reference.registry
                ),
            )
        }
        Some(e) => anyhow::Error::from(e).context(format!(
            "cannot fetch layer {} of `{}` from `{from}`",
            digest.short(),
            image.name
        )),
        None => anyhow::anyhow!("internal error: no source tried for {digest}"),
    })
}

/// Counts and hashes what it hands out; fails past `size`, and at the end unless both the
/// size and the digest match.
pub struct Verified<R> {
    inner: R,
    hash: Sha256,
    read: u64,
    digest: Digest,
    size: u64,
    /// The digest matched at EOF (a later read answers EOF again).
    checked: bool,
}

impl<R: Read> Verified<R> {
    pub fn new(inner: R, digest: Digest, size: u64) -> Self {
        Verified {
            inner,
            hash: Sha256::new(),
            read: 0,
            digest,
            size,
            checked: false,
        }
    }

    fn bad(&self, what: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("blob {} {what}; nothing of it may be used", self.digest),
        )
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if self.read != self.size {
                return Err(self.bad(format!("ended after {} of {} bytes", self.read, self.size)));
            }
            if !self.checked {
                let actual = Digest::from_hasher(std::mem::take(&mut self.hash));
                if actual != self.digest {
                    return Err(self.bad(format!("has the content of {actual}")));
                }
                self.checked = true;
            }
            return Ok(0);
        }
        self.read += n as u64;
        if self.read > self.size {
            return Err(self.bad(format!("is longer than its {} bytes", self.size)));
        }
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(r: impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut r = r;
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn passes_the_right_bytes_and_refuses_wrong_short_and_long_ones() {
        let body = b"layer bytes".to_vec();
        let d = Digest::of_bytes(&body);
        let n = body.len() as u64;
        assert_eq!(
            read_all(Verified::new(&body[..], d.clone(), n)).unwrap(),
            body
        );
        let wrong = b"layer bytez".to_vec();
        let e = read_all(Verified::new(&wrong[..], d.clone(), n)).unwrap_err();
        assert!(e.to_string().contains("has the content of"), "{e}");
        let e = read_all(Verified::new(&body[..5], d.clone(), n)).unwrap_err();
        assert!(e.to_string().contains("ended after 5 of 11"), "{e}");
        let e = read_all(Verified::new(&body[..], d, n - 1)).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }
}
