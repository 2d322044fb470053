//! Archives that real tools write (GNU tar in every `--format`, sparse, with xattrs, dates
//! before 1970 and far in the future; Python's tarfile), pushed as layers, pulled by `dev`, and
//! compared entry by entry with GNU tar's own extraction of the same archive. And archives that
//! GNU tar refuses, which `dev` refuses in one line, keeping nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::tarcmp::{assert_same_as_gnu_tar, assert_same_tree, gnu_refuses, Owners};
use crate::common::{describe, Env, ImageBuilder, Kind, Layer, Registry};
use crate::e2e;

/// Runs a shell script as root (the test's own side: building trees and archives).
fn sh(script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .output()
        .expect("sh");
    assert!(out.status.success(), "{}", describe(script, &out));
}

/// `tar -c ARGS -f - -C dir .` with GNU tar.
fn gnu_tar(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-c")
        .args(args)
        .args(["-f", "-", "-C"])
        .arg(dir)
        .arg(".")
        .output()
        .expect("GNU tar is missing");
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs a Python script with `/usr/bin/python3`; it writes an archive to stdout.
fn python_tar(script: &str) -> Vec<u8> {
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 is missing");
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Python helpers for archives written header by header with tarfile.
const PY_PRELUDE: &str = r#"
import io, sys, tarfile
def add(t, name, typ=tarfile.REGTYPE, data=None, size=None, link="", mode=0o644, mtime=1500000000, uid=0, gid=0, pax=None):
    ti = tarfile.TarInfo(name)
    ti.type = typ
    ti.size = len(data) if data is not None else (size or 0)
    ti.linkname = link
    ti.mode = mode
    ti.mtime = mtime
    ti.uid, ti.gid = uid, gid
    if pax:
        ti.pax_headers = pax
    t.addfile(ti, io.BytesIO(data) if data is not None else None)
out = io.BytesIO()
"#;

fn py_archive(format: &str, extra_open: &str, body: &str) -> Vec<u8> {
    python_tar(&format!(
        "{PY_PRELUDE}\nwith tarfile.open(fileobj=out, mode='w', format=tarfile.{format}{extra_open}) as t:\n{body}\nsys.stdout.buffer.write(out.getvalue())\n"
    ))
}

/// The headers of a plain archive (no extended headers), patched by `f`, their checksums made
/// right again (as an unsigned sum, or a signed one where `f` says so).
fn patch_headers(mut tar: Vec<u8>, f: impl Fn(&str, &mut [u8]) -> bool) -> Vec<u8> {
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|&b| b != 0) {
        let h = &mut tar[at..at + 512];
        let name = String::from_utf8_lossy(&h[..100])
            .trim_end_matches('\0')
            .to_string();
        let size = u64::from_str_radix(
            std::str::from_utf8(&h[124..135])
                .unwrap()
                .trim_matches(|c| c == '\0' || c == ' '),
            8,
        )
        .unwrap_or(0);
        let header_only = matches!(h[156], b'1' | b'2' | b'3' | b'4' | b'5' | b'6');
        let signed = f(&name, h);
        h[148..156].copy_from_slice(b"        ");
        let sum: i64 = if signed {
            h.iter().map(|&b| i64::from(b as i8)).sum()
        } else {
            h.iter().map(|&b| i64::from(b)).sum()
        };
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        at += 512;
        if !header_only {
            at += size.div_ceil(512) as usize * 512;
        }
    }
    tar
}

/// Pushes each archive as one layer of one image, pulls it as the test user, and compares every
/// layer with GNU tar's extraction of its archive.
fn pull_and_compare(env: &Env, archives: &[(String, Vec<u8>)]) {
    let reg = Registry::start();
    let layers: Vec<Layer> = archives
        .iter()
        .map(|(_, tar)| Layer::from_tar(tar.clone()))
        .collect();
    let pushed = ImageBuilder::new(layers).push(&reg, "fidelity/x", Some("1"));
    env.ok(&["pull", &format!("{}/fidelity/x:1", reg.host())]);
    let owners = Owners::of(env);
    for ((label, tar), (_, diff_id)) in archives.iter().zip(&pushed.layers) {
        assert_same_as_gnu_tar(label, tar, &env.layer_root(diff_id), &owners);
    }
}

/// A tree with what images hold: modes (setuid, sticky, read-only directories), owners
/// (root, system ids, the user's own id), hard links, symlinks (relative, absolute,
/// dangling), empty files, names with blanks and non-ASCII letters, times with nanoseconds.
fn base_tree(env: &Env, dir: &Path) {
    sh(&format!(
        r#"cd {dir}
mkdir -p etc usr/bin usr/lib 'with space' ünïcode ro tmp private shared
printf 'hello\n' > etc/hello
printf 'owned\n' > etc/owned
printf '#!/bin/sh\necho tool\n' > usr/bin/tool
printf 'lib' > usr/lib/libx.so.1
: > empty
printf 'in a read-only dir' > ro/file
printf 'x' > 'with space/a file'
printf 'ü' > ünïcode/dätei
printf 'mine' > mine
ln etc/hello etc/hello2
ln etc/hello usr/hello3
ln -s ../etc/hello usr/rel
ln -s /etc/hello abs
ln -s nowhere dangling
ln -s usr/bin bin
ln -s libx.so.1 usr/lib/libx.so
chmod 0644 etc/hello etc/owned usr/lib/libx.so.1 empty ro/file mine
chmod 4755 usr/bin/tool
chmod 0600 'with space/a file'
chmod 2640 ünïcode/dätei
chmod 1777 tmp
chmod 0700 private
chmod 2775 shared
chown -h 0:0 . etc usr usr/bin usr/lib etc/hello usr/bin/tool abs bin
chown 100:65534 etc/owned
chown 1:2 usr/lib/libx.so.1
chown -h 1000:1000 usr/rel dangling
chown 65534:65534 private
chown {uid}:{gid} mine
find . -exec touch -h -d @1600000000.123456789 {{}} +
touch -h -d @1500000000 usr/rel
touch -d @1400000000.5 etc/owned
chmod 0555 ro
"#,
        dir = dir.display(),
        uid = env.uid,
        gid = env.gid
    ));
}

/// What ustar can hold beyond v7: a name split into prefix and name (longer than 100).
fn ustar_long(dir: &Path) {
    let a = "a".repeat(60);
    let b = "b".repeat(60);
    sh(&format!(
        "cd {} && mkdir -p long/{a}/{b} && printf split > long/{a}/{b}/file && touch -d @1600000000 long/{a}/{b}/file long/{a}/{b} long/{a} long",
        dir.display()
    ));
}

/// What only GNU and PAX can hold: long names and long symlink targets.
fn gnu_long(dir: &Path) {
    let c = "c".repeat(200);
    let t = format!("../{}", "t".repeat(150));
    sh(&format!(
        "cd {} && mkdir -p gnu && printf long > gnu/{c} && ln -s {t} gnu/link && ln gnu/{c} gnu/hard-{c} && touch -h -d @1600000000 gnu/{c} gnu/link gnu",
        dir.display()
    ));
}

fn tmp_tree() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("fidelity-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

e2e!(
    every_gnu_tar_format_unpacks_as_gnu_tar_extracts_it,
    |env: Env| {
        let (v7, ustar, gnu, posix) = (tmp_tree(), tmp_tree(), tmp_tree(), tmp_tree());
        for d in [&v7, &ustar, &gnu, &posix] {
            base_tree(&env, d.path());
        }
        for d in [&ustar, &gnu, &posix] {
            ustar_long(d.path());
        }
        for d in [&gnu, &posix] {
            gnu_long(d.path());
        }
        sh(&format!(
        "cd {} && python3 -c \"import os; os.setxattr('etc/hello', 'user.color', b'blue'); os.setxattr('usr', 'user.dir', b'd'); os.setxattr('etc/owned', 'user.bin', bytes(range(256)))\"",
        posix.path().display()
    ));
        let v7_tar = gnu_tar(v7.path(), &["--format=v7"]);
        // Old V7 archives wrote directories as regular entries whose names end in `/`.
        let v7_old_dirs = patch_headers(v7_tar.clone(), |name, h| {
            if h[156] == b'5' && name.ends_with('/') {
                h[156] = 0;
            }
            false
        });
        assert!(v7_old_dirs != v7_tar);
        let archives = vec![
            ("v7".to_string(), v7_tar),
            ("v7 with old directories".to_string(), v7_old_dirs),
            ("ustar".into(), gnu_tar(ustar.path(), &["--format=ustar"])),
            ("oldgnu".into(), gnu_tar(gnu.path(), &["--format=oldgnu"])),
            ("gnu".into(), gnu_tar(gnu.path(), &["--format=gnu"])),
            (
                "posix".into(),
                gnu_tar(posix.path(), &["--format=posix", "--xattrs"]),
            ),
        ];
        pull_and_compare(&env, &archives);
    }
);

/// A tree of sparse files: holes inside, at the start, at the end, one that is all hole, and
/// one with more chunks than an old GNU header holds (so it needs extension blocks).
fn sparse_tree(dir: &Path) {
    sh(&format!(
        r#"cd {}
mkdir d
truncate -s 3M d/inner && printf 'start' | dd of=d/inner conv=notrunc status=none && printf 'middle' | dd of=d/inner bs=1 seek=1048576 conv=notrunc status=none && printf 'end' | dd of=d/inner bs=1 seek=3145725 conv=notrunc status=none
truncate -s 5M d/tail && printf 'head only' | dd of=d/tail conv=notrunc status=none
truncate -s 64M d/hole
truncate -s 2M d/lead && printf 'late' | dd of=d/lead bs=1 seek=2000000 conv=notrunc status=none
truncate -s 8M d/many && for i in $(seq 0 29); do printf "chunk $i" | dd of=d/many bs=1 seek=$((i * 262144 + 100)) conv=notrunc status=none; done
printf 'dense' > d/dense
chmod 0640 d/inner
find . -exec touch -h -d @1600000000 {{}} +
"#,
        dir.display()
    ));
}

e2e!(
    sparse_files_unpack_sparsely_in_every_gnu_format,
    |env: Env| {
        let dir = tmp_tree();
        sparse_tree(dir.path());
        let mut archives = Vec::new();
        for (label, args) in [
            ("gnu --sparse", vec!["--format=gnu", "--sparse"]),
            ("oldgnu --sparse", vec!["--format=oldgnu", "--sparse"]),
            (
                "posix --sparse 0.0",
                vec!["--format=posix", "--sparse", "--sparse-version=0.0"],
            ),
            (
                "posix --sparse 0.1",
                vec!["--format=posix", "--sparse", "--sparse-version=0.1"],
            ),
            (
                "posix --sparse 1.0",
                vec!["--format=posix", "--sparse", "--sparse-version=1.0"],
            ),
        ] {
            let tar = gnu_tar(dir.path(), &args);
            assert!(tar.len() < 256 << 10, "{label}: GNU tar stored the holes");
            archives.push((label.to_string(), tar));
        }
        pull_and_compare(&env, &archives);
    }
);

e2e!(dates_before_1970_and_far_in_the_future, |env: Env| {
    let dir = tmp_tree();
    sh(&format!(
        r#"cd {}
for t in -1 -1.5 -86400 -2147483648 0 4294967296 8589934592 13000000000.25; do printf %s "$t" > "at$t"; touch -d "@$t" "at$t"; done
ln -s at-1 link-1 && touch -h -d @-100 link-1
mkdir old && touch -d @-31536000 old
touch -d @1600000000 .
"#,
        dir.path().display()
    ));
    let one = tmp_tree();
    sh(&format!("cd {} && printf x > f", one.path().display()));
    let mut archives = vec![
        ("gnu".to_string(), gnu_tar(dir.path(), &["--format=gnu"])),
        (
            "posix".to_string(),
            gnu_tar(dir.path(), &["--format=posix"]),
        ),
    ];
    for t in ["@-99999999999", "@99999999999", "@-1000000000000000"] {
        for f in ["gnu", "posix"] {
            archives.push((
                format!("{f} --mtime={t}"),
                gnu_tar(
                    one.path(),
                    &[&format!("--format={f}"), &format!("--mtime={t}")],
                ),
            ));
        }
    }
    archives.push((
        "python gnu, base-256 times".to_string(),
        py_archive(
            "GNU_FORMAT",
            "",
            "    add(t, 'neg', data=b'n', mtime=-1000000000000)\n    add(t, 'big', data=b'b', mtime=10**15)\n    add(t, 'sym', tarfile.SYMTYPE, link='neg', mtime=-5)",
        ),
    ));
    pull_and_compare(&env, &archives);
});

e2e!(
    header_only_entries_whose_headers_carry_a_size,
    |env: Env| {
        // Python's tarfile writes the size it is given for any type, with no data behind it; GNU
        // tar (and Go, Python, libarchive) read links, directories and devices as a header alone.
        let body = "    add(t, './', tarfile.DIRTYPE, mode=0o755)
    add(t, 'f', data=b'abc')
    add(t, 'hard', tarfile.LNKTYPE, size=3, link='f')
    add(t, 'after-hard', data=b'not swallowed')
    add(t, 'd', tarfile.DIRTYPE, size=5, mode=0o750)
    add(t, 'after-dir', data=b'also kept')
    add(t, 'sym', tarfile.SYMTYPE, size=9, link='f', mtime=1234567890)
    add(t, 'fifo', tarfile.FIFOTYPE, size=3)
    add(t, 'chr', tarfile.CHRTYPE, size=3)
    add(t, 'last', data=b'last')
    add(t, 'd', tarfile.LNKTYPE, link='d')
    add(t, 'last', tarfile.LNKTYPE, size=4, link='last')
    add(t, 'unknown', b'Z', data=b'an unknown type is a regular file')";
        let archives = vec![
            (
                "python ustar".to_string(),
                py_archive("USTAR_FORMAT", "", body),
            ),
            ("python gnu".to_string(), py_archive("GNU_FORMAT", "", body)),
            (
                "python pax, PAX sizes on links".to_string(),
                py_archive(
                    "PAX_FORMAT",
                    "",
                    "    add(t, 'f', data=b'abc')
    add(t, 'hard', tarfile.LNKTYPE, link='f', pax={'size': '3'})
    add(t, 'd', tarfile.DIRTYPE, pax={'size': '700'})
    add(t, 'g', data=b'kept')",
                ),
            ),
        ];
        pull_and_compare(&env, &archives);
    }
);

e2e!(extended_headers_read_as_gnu_tar_reads_them, |env: Env| {
    // PAX: values with newlines (read by length), a global header, mtimes with fractions
    // that override the ustar field, a path that only PAX holds.
    let pax = py_archive(
        "PAX_FORMAT",
        ", pax_headers={'comment': 'global\\nwith a newline', 'uid': '7', 'gid': '8'}",
        "    add(t, './', tarfile.DIRTYPE, mode=0o755)
    add(t, 'nl', data=b'x', pax={'SCHILY.xattr.user.nl': 'a\\nb=c\\n', 'comment': 'multi\\nline\\n'})
    add(t, 'x', data=b'y', pax={'path': 'name\\nwith a newline'})
    add(t, 'frac', data=b'z', mtime=5, pax={'mtime': '1234567890.987654321123'})
    add(t, 'neg', data=b'n', pax={'mtime': '-1.0000000001'})
    add(t, 'own', data=b'o', pax={'uid': '42', 'gid': '43'})",
    );
    // Solaris `X` headers are local PAX headers.
    let mut solaris = py_archive(
        "PAX_FORMAT",
        "",
        "    add(t, 's', data=b'solaris', pax={'path': 'solaris-name', 'mtime': '1000000000.5'})",
    );
    assert_eq!(solaris[156], b'x');
    solaris[156] = b'X';
    let sum: u32 = solaris[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    solaris[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());

    let dir = tmp_tree();
    sh(&format!(
        "cd {} && mkdir -p a/b c && printf 1 > a/one && printf 2 > a/b/two && printf e > é && chown -R 5:6 a && chown 7:8 c && find . -exec touch -d @1500000000 {{}} + && touch -d @1400000000 a/b",
        dir.path().display()
    ));
    // GNU incremental dumps: directories as dumpdirs (`D`), which list their names.
    let snar = tempfile::NamedTempFile::new().expect("snapshot file");
    let dumpdir = gnu_tar(
        dir.path(),
        &[
            "--format=gnu",
            &format!("--listed-incremental={}", snar.path().display()),
        ],
    );
    assert!(dumpdir.chunks(512).any(|h| h[156] == b'D'), "no dumpdir");
    let label = gnu_tar(dir.path(), &["--format=gnu", "--label=volume one"]);
    // GNU tar ends an archive quietly where its input ends inside a header, even after an
    // extended header that describes nothing yet.
    let posix = gnu_tar(dir.path(), &["--format=posix"]);
    let last_x = posix.chunks(512).rposition(|h| h[156] == b'x').expect("x") * 512;
    let cut = posix[..last_x + 1024 + 100].to_vec();
    // Numeric fields as old tars wrote them: a leading NUL, all NULs, leading blanks; and a
    // checksum summed over signed bytes (a name with bytes past 0x7f).
    let numeric = patch_headers(
        gnu_tar(dir.path(), &["--format=ustar"]),
        |name, h| match name {
            "./a/one" => {
                h[108..116].copy_from_slice(b"\x000001750");
                h[116..124].copy_from_slice(&[0; 8]);
                false
            }
            "./a/b/two" => {
                h[100..108].copy_from_slice(b"\x00000640 ");
                h[136..148].copy_from_slice(b" 12345670123");
                false
            }
            "./c/" => {
                h[124..136].copy_from_slice(&[0; 12]);
                false
            }
            "./é" => true,
            _ => false,
        },
    );
    let archives = vec![
        ("python pax with a global header".to_string(), pax),
        ("solaris X".to_string(), solaris),
        ("gnu dumpdirs".to_string(), dumpdir),
        ("gnu volume label".to_string(), label),
        ("old numeric fields".to_string(), numeric),
        ("cut inside a header".to_string(), cut),
        (
            "a directory given twice".to_string(),
            py_archive(
                "GNU_FORMAT",
                "",
                "    add(t, 'd/', tarfile.DIRTYPE, mode=0o755, mtime=1000000000)
    add(t, 'd/f', data=b'f')
    add(t, 'd/', tarfile.DIRTYPE, mode=0o700, mtime=1200000000, uid=3)",
            ),
        ),
    ];
    pull_and_compare(&env, &archives);
});

/// Pulls an image of one layer, `tar`, that must be refused: one `error:` line that says
/// `what`, no layer kept, no staging directory left behind.
fn refused(env: &Env, reg: &Registry, n: usize, tar: Vec<u8>, what: &str) {
    let repo = format!("refused/n{n}");
    ImageBuilder::new(vec![Layer::from_tar(tar)]).push(reg, &repo, Some("1"));
    let err = env.fails(&["pull", &format!("{}/{repo}:1", reg.host())]);
    assert!(err.contains(what), "the error should say `{what}`: {err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert_nothing_kept(env);
}

/// No layer, and no staging directory of one, is left in the store.
fn assert_nothing_kept(env: &Env) {
    assert!(env.layer_dirs().is_empty(), "a refused layer was kept");
    let leftovers: Vec<_> = fs::read_dir(env.store().join("layers-v1"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|m| {
            fs::read_dir(m.path().join("tmp"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

e2e!(malformed_archives_are_refused_in_one_line, |env: Env| {
    let dir = tmp_tree();
    sh(&format!(
        "cd {} && head -c 10240 /dev/urandom > big && printf small > small && truncate -s 1M sparse && printf x | dd of=sparse bs=1 seek=4096 conv=notrunc status=none",
        dir.path().display()
    ));
    let ustar = gnu_tar(dir.path(), &["--format=ustar"]);
    let find = |tar: &[u8], name: &str| {
        tar.chunks(512)
            .position(|h| h.starts_with(name.as_bytes()) && h[name.len()] == 0)
            .expect("entry in archive")
            * 512
    };
    let big = find(&ustar, "./big");
    let mut cases: Vec<(Vec<u8>, String)> = Vec::new();
    cases.push((
        ustar[..big + 512 + 4096].to_vec(),
        "entry `./big` (header at byte".into(),
    ));
    let small = find(&ustar, "./small");
    // Cut inside an extended header's data.
    let pax = gnu_tar(dir.path(), &["--format=posix"]);
    let x = pax
        .chunks(512)
        .position(|h| h[156] == b'x')
        .expect("a PAX header")
        * 512;
    cases.push((
        pax[..x + 512 + 50].to_vec(),
        "entry `./PaxHeaders/.` (header at byte 0): the archive ends in the middle of it".into(),
    ));
    let mut bad_sum = ustar.clone();
    bad_sum[small + 3] = b'S';
    cases.push((bad_sum, "checksum".into()));
    let bad_size = patch_headers(ustar.clone(), |name, h| {
        if name == "./small" {
            h[124..136].copy_from_slice(b"0000000xyz0\0");
        }
        false
    });
    cases.push((bad_size, "entry `./small` (header at byte".into()));
    // A PAX record whose length runs past the header's data.
    let bad_pax = py_archive(
        "PAX_FORMAT",
        "",
        "    add(t, 'p', data=b'p', pax={'comment': 'x'})",
    );
    let at = bad_pax
        .windows(11)
        .position(|w| w == b" comment=x\n")
        .expect("comment record");
    let mut bad_pax = bad_pax;
    bad_pax[at - 2..at].copy_from_slice(b"99");
    cases.push((bad_pax, "malformed PAX header".into()));
    // An old GNU sparse map whose chunk runs past the file's size.
    let sparse = gnu_tar(dir.path(), &["--format=gnu", "--sparse"]);
    let at = find(&sparse, "./sparse");
    assert_eq!(
        sparse[at + 156],
        b'S',
        "GNU tar did not write an old GNU sparse entry"
    );
    let mut bad_map = sparse.clone();
    let realsize = &mut bad_map[at + 483..at + 495];
    realsize.copy_from_slice(b"00000000100\0");
    let sum: u32 = bad_map[at..at + 512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    bad_map[at + 148..at + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    cases.push((bad_map, "sparse map".into()));

    let reg = Registry::start();
    for (n, (tar, what)) in cases.into_iter().enumerate() {
        assert!(gnu_refuses(&tar), "GNU tar extracts case {n} ({what})");
        refused(&env, &reg, n, tar, &what);
    }
});

e2e!(
    owners_beyond_the_subordinate_range_are_named_with_the_fix,
    |env: Env| {
        let reg = Registry::start();
        let tar = py_archive(
        "GNU_FORMAT",
        "",
        "    add(t, 'etc/', tarfile.DIRTYPE, mode=0o755)\n    add(t, 'etc/far', data=b'far', uid=70000, gid=0)",
    );
        ImageBuilder::new(vec![Layer::from_tar(tar)]).push(&reg, "far/ids", Some("1"));
        let r = format!("{}/far/ids:1", reg.host());
        match env.kind {
            Kind::Sub | Kind::Sub2 => {
                let err = env.fails(&["pull", &r]);
                for want in [
                    "etc/far",
                    "uid 70000",
                    "uids 0-65536 (host ",
                    "/etc/subuid",
                    "usermod --add-subuids",
                ] {
                    assert!(err.contains(want), "the error should say `{want}`: {err}");
                }
                assert!(!err.contains("os error"), "{err}");
                assert_nothing_kept(&env);
            }
            Kind::NoSub => {
                // Without a range every file is the user's, whatever the archive says.
                env.ok(&["pull", &r]);
            }
        }
    }
);

#[test]
fn the_comparison_sees_each_kind_of_difference() {
    // The helper must fail on trees that differ in any one way it compares.
    let a = tmp_tree();
    let setup = "printf x > f && ln -s f s && ln f h && truncate -s 1M sp && touch -h -d @1600000000 f s sp .";
    sh(&format!("cd {} && {setup}", a.path().display()));
    let owners = Owners::Flat { uid: 0, gid: 0 };
    for (what, change) in [
        ("nothing", "true"),
        ("a symlink's mtime", "touch -h -d @1600000001 s"),
        ("content", "printf y > f && touch -d @1600000000 f"),
        ("a mode", "chmod 0600 f"),
        ("a hard link", "rm h && cp -p f h"),
        (
            "an xattr",
            "python3 -c \"import os; os.setxattr('f', 'user.x', b'1')\"",
        ),
        (
            "holes filled",
            "rm sp && head -c 1048576 /dev/zero > sp && touch -d @1600000000 sp",
        ),
    ] {
        let b = tmp_tree();
        sh(&format!(
            "cd {} && {setup} && {change} && touch -d @1600000000 .",
            b.path().display()
        ));
        let same = std::panic::catch_unwind(|| {
            assert_same_tree(what, a.path(), b.path(), &owners);
        })
        .is_ok();
        assert_eq!(same, what == "nothing", "{what}");
    }
}
