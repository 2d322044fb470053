//! Seeded random tar streams (headers of every type, lying sizes, broken PAX records and sparse
//! maps, hostile names and link targets, truncations) through the reader and the whole unpack:
//! no panic, no write outside the staging directory, and what the reader holds (entries, global
//! headers, sparse maps) bounded whatever the stream says.

use std::path::Path;

use super::archive::{Entry, Kind, Reader, BLOCK, MAX_EXTENDED, MAX_SPARSE_CHUNKS};

/// xorshift64*: the same streams on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

const NAMES: &[&str] = &[
    "a",
    "b",
    "d",
    ".",
    "",
    "link",
    "l2",
    ".wh.a",
    ".wh..wh..opq",
    "x/",
    "/",
    "PaxHeaders",
];
const TYPES: &[u8] = b"0\x00123456789xXgLKSDVMNZ\xff";

fn name(rng: &mut Rng, outside: &str) -> String {
    if rng.chance(5) {
        return format!("{outside}/victim");
    }
    let n = 1 + rng.below(4);
    let mut parts: Vec<&str> = Vec::new();
    for _ in 0..n {
        parts.push(if rng.chance(4) {
            ".."
        } else {
            *rng.pick(NAMES)
        });
    }
    let mut s = parts.join("/");
    if rng.chance(10) {
        s.insert(0, '/');
    }
    if rng.chance(2) {
        s = "n".repeat(rng.below(300) as usize);
    }
    s
}

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    let s = format!("{v:0w$o}");
    if s.len() <= w {
        field[..w].copy_from_slice(s.as_bytes());
        field[w] = 0;
    } else {
        // Base-256, as GNU tar writes what octal cannot hold.
        field.fill(0);
        field[0] = 0x80;
        let bytes = v.to_be_bytes();
        let n = bytes.len().min(field.len() - 1);
        let start = field.len() - n;
        field[start..].copy_from_slice(&bytes[bytes.len() - n..]);
    }
}

fn number_field(rng: &mut Rng, wild: bool, field: &mut [u8], v: u64) {
    if !wild {
        return octal(field, v);
    }
    match rng.below(20) {
        0 => field.fill(0),
        1 => field.fill(b' '),
        2 => field.fill(0xff),
        3 => field.copy_from_slice(&vec![b'9'; field.len()]),
        4 => {
            let i = rng.below(field.len() as u64) as usize;
            field[i] = rng.next() as u8;
        }
        _ => octal(field, v),
    }
}

fn checksum(h: &mut [u8; BLOCK]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn pax(rng: &mut Rng, outside: &str) -> Vec<u8> {
    let keys = [
        "path",
        "linkpath",
        "size",
        "uid",
        "gid",
        "mtime",
        "atime",
        "SCHILY.xattr.user.a",
        "SCHILY.xattr.user.overlay.opaque",
        "SCHILY.xattr.trusted.x",
        "GNU.sparse.major",
        "GNU.sparse.minor",
        "GNU.sparse.name",
        "GNU.sparse.realsize",
        "GNU.sparse.size",
        "GNU.sparse.numblocks",
        "GNU.sparse.offset",
        "GNU.sparse.numbytes",
        "GNU.sparse.map",
        "comment",
    ];
    let mut out = Vec::new();
    for _ in 0..rng.below(8) {
        let k = *rng.pick(&keys);
        let v: Vec<u8> = match rng.below(7) {
            0 => name(rng, outside).into_bytes(),
            1 => format!("{}", rng.below(5000)).into_bytes(),
            2 => format!("-{}.{}", rng.below(100), rng.below(1000)).into_bytes(),
            3 => format!(
                "{},{},{},{}",
                rng.below(64),
                rng.below(64),
                rng.below(5000),
                rng.below(64)
            )
            .into_bytes(),
            4 => b"a\nb=c\n".to_vec(),
            5 => format!("{}", rng.next()).into_bytes(),
            _ => (0..rng.below(20)).map(|_| rng.next() as u8).collect(),
        };
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while format!("{len}").len() + rest != len {
            len += 1;
        }
        if rng.chance(5) {
            len = rng.below(len as u64 * 2) as usize;
        }
        out.extend(format!("{len} {k}=").as_bytes());
        out.extend(&v);
        out.push(b'\n');
    }
    out
}

/// One random stream: up to a dozen headers, each followed by data that may or may not match
/// what it says, perhaps cut short. Not `wild`: every header is well-formed, and only names,
/// link targets, types and extended headers are random.
fn stream(rng: &mut Rng, outside: &str, wild: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(12) {
        let t = if wild {
            *rng.pick(TYPES)
        } else {
            *rng.pick(b"0\x00\x0012225555xL")
        };
        let mut data: Vec<u8> = match t {
            b'x' | b'X' | b'g' => pax(rng, outside),
            b'L' | b'K' => {
                let mut n = name(rng, outside).into_bytes();
                n.push(0);
                n
            }
            b'0' | 0 | b'7' | b'S' | b'Z' => (0..rng.below(3000))
                .map(|_| b'a' + (rng.below(26) as u8))
                .collect(),
            _ => Vec::new(),
        };
        if t == b'0' && rng.chance(10) {
            // A PAX 1.0 sparse map at the start of the data.
            let mut m = format!(
                "2\n0\n{}\n{}\n{}\n",
                rng.below(10),
                rng.below(9000),
                rng.below(10)
            )
            .into_bytes();
            m.resize(BLOCK, 0);
            m.extend(data);
            data = m;
        }
        let mut h = [0u8; BLOCK];
        let n = name(rng, outside);
        let nb = n.as_bytes();
        h[..nb.len().min(100)].copy_from_slice(&nb[..nb.len().min(100)]);
        let mode = *rng.pick(&[0o644u64, 0o755, 0o4755, 0o000, 0o7777, 0o1777]);
        number_field(rng, wild, &mut h[100..108], mode);
        let (uid, gid) = (rng.below(70000), rng.below(70000));
        number_field(rng, wild, &mut h[108..116], uid);
        number_field(rng, wild, &mut h[116..124], gid);
        let size = if !wild || rng.chance(85) {
            data.len() as u64
        } else {
            *rng.pick(&[
                0,
                1,
                511,
                512,
                1 << 40,
                u64::MAX >> 1,
                data.len() as u64 + 700,
            ])
        };
        number_field(rng, wild, &mut h[124..136], size);
        let mtime = *rng.pick(&[0u64, 1_700_000_000, 1 << 40, u64::MAX >> 1]);
        number_field(rng, wild, &mut h[136..148], mtime);
        h[156] = t;
        let link = name(rng, outside);
        let lb = link.as_bytes();
        h[157..157 + lb.len().min(100)].copy_from_slice(&lb[..lb.len().min(100)]);
        h[257..265].copy_from_slice(if rng.chance(50) {
            b"ustar\x0000"
        } else {
            b"ustar  \0"
        });
        if t == b'S' {
            for i in 0..4 {
                let e = 386 + i * 24;
                octal(&mut h[e..e + 12], rng.below(4000));
                octal(&mut h[e + 12..e + 24], rng.below(1500));
            }
            h[482] = u8::from(rng.chance(30));
            octal(&mut h[483..495], rng.below(8000));
        }
        if !wild || !rng.chance(3) {
            checksum(&mut h);
        }
        out.extend(h);
        if t == b'S' && h[482] != 0 {
            let mut ext = [0u8; BLOCK];
            for i in 0..21 {
                octal(&mut ext[i * 24..i * 24 + 12], rng.below(9000));
                octal(&mut ext[i * 24 + 12..i * 24 + 24], rng.below(100));
            }
            out.extend(ext);
        }
        let padded = data.len().div_ceil(BLOCK) * BLOCK;
        out.extend(&data);
        out.resize(out.len() + padded - data.len(), 0);
        if wild && rng.chance(3) {
            out.extend((0..rng.below(1000)).map(|_| rng.next() as u8));
        }
    }
    if rng.chance(70) {
        out.extend([0u8; 2 * BLOCK]);
    }
    if wild && rng.chance(10) {
        let cut = rng.below(out.len() as u64 + 1) as usize;
        out.truncate(cut);
    }
    out
}

/// The bytes an entry holds from the stream.
fn entry_bytes(e: &Entry) -> usize {
    e.path.len()
        + e.link.len()
        + e.xattrs
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + e.sparse.as_ref().map_or(0, |m| m.len() * 16)
}

#[test]
fn random_streams_never_panic_and_stay_bounded() {
    let mut rng = Rng(0x005e_ed0f_7a25);
    let mut buf = vec![0u8; 4096];
    let (mut entries, mut refused) = (0, 0);
    let bound = 3 * MAX_EXTENDED as usize + MAX_SPARSE_CHUNKS * 16;
    for _ in 0..4000 {
        let s = stream(&mut rng, "/tmp/outside", true);
        let mut r = Reader::new(&s[..]);
        loop {
            match r.next_entry() {
                Ok(Some(e)) => {
                    entries += 1;
                    assert!(
                        entry_bytes(&e) + r.held() <= bound,
                        "{} bytes held",
                        entry_bytes(&e) + r.held()
                    );
                    if e.kind != Kind::File {
                        continue;
                    }
                    let mut total = 0u64;
                    let ok = loop {
                        match r.read_data(&mut buf) {
                            Ok(Some((off, n))) => {
                                total += n as u64;
                                assert!(off + n as u64 <= e.size, "data past the size");
                            }
                            Ok(None) => break true,
                            Err(_) => break false,
                        }
                    };
                    assert!(total <= s.len() as u64);
                    if !ok {
                        refused += 1;
                        break;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    refused += 1;
                    let text = err.to_string();
                    assert!(!text.contains('\n') || text.contains("entry `"), "{text}");
                    break;
                }
            }
        }
    }
    assert!(
        entries > 1000 && refused > 100,
        "the streams exercise little: {entries} entries, {refused} refused"
    );
}

#[test]
fn random_streams_never_write_outside_the_staging_dir() {
    let base = tempfile::tempdir().expect("tempdir");
    let outside = base.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(outside.join("victim"), "v").expect("write");
    let before = listing(base.path());
    let mut rng = Rng(0xdead_beef_1234);
    let outside_s = outside.display().to_string();
    let mut unpacked = 0;
    for i in 0..300 {
        let s = stream(&mut rng, &outside_s, i % 4 == 0);
        let blob = base.path().join("blob");
        std::fs::write(&blob, &s).expect("write blob");
        let stage = base.path().join("stage");
        std::fs::create_dir(&stage).expect("mkdir");
        let diff = crate::oci::Digest::of_bytes(&s);
        let result = super::unpack_layer(
            &blob,
            &diff,
            &stage,
            super::UnpackOptions { keep_owners: false },
        );
        unpacked += usize::from(result.is_ok());
        super::remove_tree(&stage).expect("remove the staging dir");
        std::fs::remove_file(&blob).expect("remove blob");
        assert_eq!(
            listing(base.path()),
            before,
            "stream {i} wrote outside the staging dir"
        );
    }
    assert!(unpacked > 60, "only {unpacked} streams unpacked");
}

/// Every path under `root` with its type, mode, size and (for files) content.
fn listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let content = if m.is_file() {
            String::from_utf8_lossy(&std::fs::read(&p).expect("read")).into_owned()
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {} {content}",
            p.display(),
            m.permissions().mode(),
            m.len()
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("read dir") {
                stack.push(e.expect("entry").path());
            }
        }
    }
    out.sort();
    out
}
