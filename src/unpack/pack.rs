//! The inverse of unpacking: a layer tree (whiteouts as 0/0 devices, opaque directories as
//! `user.overlay.opaque=y`) written as an OCI layer tar, deterministically (sorted names,
//! mtime 0, owners as seen), so the same content always has the same digest.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::FileType;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::beneath::{self, Tree};
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

/// What an exported layer's entries carry beyond their content (the default: what `dev
/// commit` has always written).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackOptions {
    /// `Some(t)`: each entry keeps its mtime, clamped to `t` (`SOURCE_DATE_EPOCH`); `None`:
    /// every mtime is 0.
    #[serde(default)]
    pub mtime_clamp: Option<u64>,
    /// Every entry's owner, for a store flattened to one id (it kept no others).
    #[serde(default)]
    pub owner: Option<(u32, u32)>,
    /// Write the tar gzip-compressed (fixed settings: see [`gzip`]); the digest returned is
    /// still the tar's.
    #[serde(default)]
    pub gzip: bool,
}

/// The one way dev compresses a layer it makes: level 6 of the bundled zlib-rs, a header
/// with no name and mtime 0; the same tar gives the same bytes on every machine.
pub fn gzip<W: Write>(out: W) -> flate2::write::GzEncoder<W> {
    flate2::GzBuilder::new()
        .mtime(0)
        .write(out, flate2::Compression::new(6))
}

/// The diff id of `root` as an OCI layer: the sha256 of its deterministic tar.
pub fn layer_digest(root: &Path) -> Result<Digest> {
    Ok(write_layer(root, io::sink())?.0)
}

/// Writes `root` as a deterministic OCI layer tar to `out`; returns its digest (the layer's
/// diff id, as the tar is not compressed) and size. The tree may be an env's writable layer
/// that the env changes meanwhile: every entry is opened beneath its directory's fd without
/// following a symlink, and what is packed is what that fd is (its `fstat`, its bytes), so a
/// name swapped for a symlink to a host file packs as that symlink, never as the host file.
pub fn write_layer<W: Write>(root: &Path, out: W) -> Result<(Digest, u64)> {
    write_layer_with(root, out, PackOptions::default())
}

/// [`write_layer`] with the entries' times and owners as `opts` says.
pub fn write_layer_with<W: Write>(root: &Path, out: W, opts: PackOptions) -> Result<(Digest, u64)> {
    let mut b = tar::Builder::new(HashWriter {
        hash: Sha256::new(),
        bytes: 0,
        out,
    });
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    let tree = Tree::open(root).with_context(|| format!("cannot open `{}`", root.display()))?;
    append_dir(&mut b, &tree, Path::new(""), root, opts)?;
    let mut w = b.into_inner().context("cannot finish the layer tar")?;
    w.flush().context("cannot write the layer tar")?;
    Ok((Digest::from_hasher(w.hash), w.bytes))
}

fn header(st: &beneath::Stat, kind: tar::EntryType, size: u64, opts: PackOptions) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(st.st_mode & 0o7777);
    let (uid, gid) = opts.owner.unwrap_or((st.st_uid, st.st_gid));
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    // No atime or ctime: a GNU header without extensions has neither.
    let mtime = match opts.mtime_clamp {
        Some(clamp) => (st.st_mtime.max(0) as u64).min(clamp),
        None => 0,
    };
    h.set_mtime(mtime);
    h
}

/// Exactly `size` bytes of `r`: what it has, padded with zeros if it shrank meanwhile.
fn exactly<R: io::Read>(r: R, size: u64) -> impl io::Read {
    io::Read::take(
        io::Read::chain(io::Read::take(r, size), io::repeat(0)),
        size,
    )
}

fn append_dir<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &Tree,
    rel: &Path,
    top: &Path,
    opts: PackOptions,
) -> Result<()> {
    let shown = || top.join(rel).display().to_string();
    let names = dir
        .names(Path::new(""))
        .with_context(|| format!("cannot read `{}`", shown()))?;
    let mut flag = [0u8; 2];
    let opaque = rustix::fs::fgetxattr(dir.fd(), "user.overlay.opaque", &mut flag[..]);
    if opaque.ok() == Some(1) && flag[0] == b'y' {
        let st = rustix::fs::fstat(dir.fd()).map_err(io::Error::from)?;
        let mut h = header(&st, tar::EntryType::Regular, 0, opts);
        b.append_data(&mut h, rel.join(".wh..wh..opq"), io::empty())?;
    }
    for name in names {
        let inner = rel.join(&name);
        let entry = match dir.entry(&name) {
            Ok(e) => e,
            // Gone since the listing (the env removed it): not part of the snapshot.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read `{}`", top.join(&inner).display()))
            }
        };
        let st = &entry.stat;
        match entry.file_type() {
            FileType::CharacterDevice if st.st_rdev == 0 => {
                let mut h = header(st, tar::EntryType::Regular, 0, opts);
                h.set_mode(0o644);
                let wh = rel.join(format!(".wh.{}", name.to_string_lossy()));
                b.append_data(&mut h, wh, io::empty())?;
            }
            FileType::Directory => {
                let mut h = header(st, tar::EntryType::Directory, 0, opts);
                b.append_data(&mut h, &inner, io::empty())?;
                let sub = entry
                    .open_dir()
                    .with_context(|| format!("cannot read `{}`", top.join(&inner).display()))?;
                append_dir(b, &sub, &inner, top, opts)?;
            }
            FileType::Symlink => {
                let mut h = header(st, tar::EntryType::Symlink, 0, opts);
                let target = entry
                    .read_link()
                    .with_context(|| format!("cannot read `{}`", top.join(&inner).display()))?;
                b.append_link(&mut h, &inner, target)?;
            }
            FileType::RegularFile => {
                let f = entry
                    .open_file()
                    .with_context(|| format!("cannot read `{}`", top.join(&inner).display()))?;
                let st = rustix::fs::fstat(&f).map_err(io::Error::from)?;
                let size = st.st_size.max(0) as u64;
                let mut h = header(&st, tar::EntryType::Regular, size, opts);
                b.append_data(&mut h, &inner, exactly(f, size))?;
            }
            FileType::Fifo => {
                let mut h = header(st, tar::EntryType::Fifo, 0, opts);
                b.append_data(&mut h, &inner, io::empty())?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
