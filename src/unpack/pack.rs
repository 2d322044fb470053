//! The inverse of unpacking: a layer tree (whiteouts as 0/0 devices, opaque directories as
//! `user.overlay.opaque=y`) written as an OCI layer tar, deterministically (sorted names,
//! mtime 0, owners as seen), so the same content always has the same digest.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};

use crate::oci::Digest;

/// Hashes and counts what goes through to `W`.
struct HashWriter<W> {
    hash: Sha256,
    bytes: u64,
    out: W,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The diff id of `root` as an OCI layer: the sha256 of its deterministic tar.
pub fn layer_digest(root: &Path) -> Result<Digest> {
    Ok(write_layer(root, io::sink())?.0)
}

/// Writes `root` as a deterministic OCI layer tar to `out`; returns its digest (the layer's
/// diff id, as the tar is not compressed) and size.
pub fn write_layer<W: Write>(root: &Path, out: W) -> Result<(Digest, u64)> {
    let mut b = tar::Builder::new(HashWriter {
        hash: Sha256::new(),
        bytes: 0,
        out,
    });
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    append_dir(&mut b, root, Path::new(""))?;
    let mut w = b.into_inner().context("cannot finish the layer tar")?;
    w.flush().context("cannot write the layer tar")?;
    Ok((Digest::from_hasher(w.hash), w.bytes))
}

fn header(meta: &fs::Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime(0);
    h
}

fn append_dir<W: Write>(b: &mut tar::Builder<W>, dir: &Path, rel: &Path) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("cannot read `{}`", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    if xattr::get(dir, "user.overlay.opaque")
        .ok()
        .flatten()
        .as_deref()
        == Some(b"y")
    {
        let meta = fs::symlink_metadata(dir)?;
        let mut h = header(&meta, tar::EntryType::Regular, 0);
        b.append_data(&mut h, rel.join(".wh..wh..opq"), io::empty())?;
    }
    for name in names {
        let (path, inner) = (dir.join(&name), rel.join(&name));
        let meta = fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            let mut h = header(&meta, tar::EntryType::Regular, 0);
            h.set_mode(0o644);
            let wh = rel.join(format!(".wh.{}", name.to_string_lossy()));
            b.append_data(&mut h, wh, io::empty())?;
        } else if ft.is_dir() {
            let mut h = header(&meta, tar::EntryType::Directory, 0);
            b.append_data(&mut h, &inner, io::empty())?;
            append_dir(b, &path, &inner)?;
        } else if ft.is_symlink() {
            let mut h = header(&meta, tar::EntryType::Symlink, 0);
            b.append_link(&mut h, &inner, fs::read_link(&path)?)?;
        } else if ft.is_file() {
            let mut h = header(&meta, tar::EntryType::Regular, meta.len());
            let f = fs::File::open(&path)
                .with_context(|| format!("cannot read `{}`", path.display()))?;
            b.append_data(&mut h, &inner, f)?;
        } else if ft.is_fifo() {
            let mut h = header(&meta, tar::EntryType::Fifo, 0);
            b.append_data(&mut h, &inner, io::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_content_same_digest_whatever_the_times() {
        let make = || {
            let d = tempfile::tempdir().expect("tempdir");
            fs::create_dir_all(d.path().join("etc/apt")).expect("mkdir");
            fs::write(d.path().join("etc/apt/x.list"), "deb x\n").expect("write");
            std::os::unix::fs::symlink("apt", d.path().join("etc/link")).expect("symlink");
            d
        };
        let (a, b) = (make(), make());
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(b.path().join("etc/apt/x.list"), "deb x\n").expect("touch");
        assert_eq!(
            layer_digest(a.path()).expect("a"),
            layer_digest(b.path()).expect("b")
        );
        fs::write(b.path().join("etc/apt/x.list"), "deb y\n").expect("change");
        assert_ne!(
            layer_digest(a.path()).expect("a"),
            layer_digest(b.path()).expect("b")
        );
    }
}
