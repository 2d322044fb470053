//! `dev pull`, `images`, `inspect`, `rmi`, `system df`, `system prune`.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::Stdio;
use std::time::Duration;

use crate::common::image::{basic_layers, host_arch, push_index, Compression};
use crate::common::{stdout, Entry, Env, ImageBuilder, Kind, Layer, Registry};
use crate::e2e;

e2e!(pulls_layers_with_whiteouts_owners_and_links, |env: Env| {
    let reg = Registry::start();
    let img = ImageBuilder::new(basic_layers()).push(&reg, "fixture/basic", Some("v1"));
    let r = format!("{}/fixture/basic:v1", reg.host());
    let out = env.ok(&["pull", "-q", &r]);
    assert_eq!(
        stdout(&out).trim(),
        img.manifest,
        "--quiet prints only the digest"
    );

    let l1 = env.layer_root(&img.layers[0].1);
    let l2 = env.layer_root(&img.layers[1].1);
    assert_eq!(
        fs::read_to_string(l1.join("usr/bin/tool")).unwrap(),
        "#!/bin/sh\necho tool\n"
    );
    assert_eq!(
        fs::read_link(l1.join("bin")).unwrap().to_str(),
        Some("usr/bin")
    );
    let (a, b) = (
        fs::metadata(l1.join("usr/bin/tool")).unwrap(),
        fs::metadata(l1.join("usr/bin/tool2")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hard link kept");
    // Whiteout: a 0/0 character device; opaque dir: the user.overlay xattr.
    let wh = fs::symlink_metadata(l2.join("etc/os-release")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is char 0/0"
    );
    let opq = xattr::get(l2.join("opt"), "user.overlay.opaque").unwrap();
    assert_eq!(opq.as_deref(), Some(&b"y"[..]));
    let suid = fs::metadata(l2.join("usr/bin/suid")).unwrap();
    assert_eq!(
        suid.mode() & 0o7777,
        0o4755,
        "setuid bit kept inside the store"
    );
    let store_mode = fs::metadata(env.store()).unwrap().mode() & 0o777;
    assert_eq!(store_mode, 0o700);

    let owned = fs::metadata(l2.join("var/cache/apt-owned")).unwrap();
    let tool = fs::metadata(l1.join("usr/bin/tool")).unwrap();
    match env.kind {
        Kind::Sub | Kind::Sub2 => {
            // devtest-sub's range starts at 100000 (./install.sh --dev): inside 0 → 100000, 100 → 100100.
            let sub = sub_start(&env, "/etc/subuid");
            assert_eq!(tool.uid(), sub, "root-owned files keep their owner");
            assert_eq!(owned.uid(), sub + 100);
            // Inside gid 65534 is above the user's own gid, so it maps one lower in the range.
            assert_eq!(owned.gid(), sub_start(&env, "/etc/subgid") + 65534 - 1);
        }
        Kind::NoSub => {
            assert_eq!(
                (tool.uid(), owned.uid(), owned.gid()),
                (env.uid, env.uid, env.gid),
                "ownership flattened"
            );
            let err = String::from_utf8_lossy(&env.ok(&["pull", &r]).stderr).to_string();
            assert!(
                err.contains("no subordinate id range") && err.contains("usermod --add-subuids"),
                "{err}"
            );
        }
    }

    let images = stdout(&env.ok(&["images", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&images).unwrap();
    assert_eq!(v[0]["reference"], format!("{r}"));
    assert_eq!(v[0]["digest"], img.manifest);
    assert!(v[0]["size"].as_u64().unwrap() > 0);
    let table = stdout(&env.ok(&["images"]));
    assert!(
        table.contains(&r) && table.contains(&img.manifest[7..19]),
        "{table}"
    );

    let inspect: serde_json::Value =
        serde_json::from_slice(&env.ok(&["inspect", &r]).stdout).unwrap();
    assert_eq!(inspect["Digest"], img.manifest);
    assert_eq!(inspect["Config"]["rootfs"]["diff_ids"][1], img.layers[1].1);
    assert_eq!(inspect["Platform"]["architecture"], host_arch());
});

/// The start of the test user's range in /etc/subuid or /etc/subgid.
fn sub_start(env: &Env, file: &str) -> u32 {
    let text = fs::read_to_string(file).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{}:", env.kind.user())))
        .unwrap();
    line.split(':').nth(1).unwrap().parse().unwrap()
}

e2e!(
    multi_arch_index_with_attestation_and_docker_media_types,
    |env: Env| {
        let reg = Registry::start();
        let other = if host_arch() == "amd64" {
            "arm64"
        } else {
            "amd64"
        };
        let mk = |name: &str| {
            ImageBuilder::new(vec![Layer::new(vec![Entry::File(
                "which".into(),
                name.as_bytes().to_vec(),
                0o644,
            )])])
        };
        for docker in [false, true] {
            let tag = if docker { "docker" } else { "oci" };
            let entries = vec![
                ("linux", other, mk(other).arch(other)),
                ("unknown", "unknown", mk("attestation")),
                ("linux", host_arch(), mk(host_arch())),
            ];
            let entries: Vec<_> = entries
                .into_iter()
                .map(|(o, a, i)| (o, a, if docker { i.docker() } else { i }))
                .collect();
            let (index, pushed) = push_index(&reg, "fixture/multi", tag, docker, &entries);
            let r = format!("{}/fixture/multi:{tag}", reg.host());
            let out = env.ok(&["pull", "-q", &r]);
            assert_eq!(
                stdout(&out).trim(),
                pushed[2].manifest,
                "picked this machine's entry, the last one"
            );
            let root = env.layer_root(&pushed[2].layers[0].1);
            assert_eq!(fs::read_to_string(root.join("which")).unwrap(), host_arch());
            let inspect: serde_json::Value =
                serde_json::from_slice(&env.ok(&["inspect", &r]).stdout).unwrap();
            assert_eq!(inspect["IndexDigest"], index);
            // By digest, too.
            let by_digest = format!("{}/fixture/multi@{index}", reg.host());
            assert_eq!(
                stdout(&env.ok(&["pull", "-q", &by_digest])).trim(),
                pushed[2].manifest
            );
        }
        // An index with no entry for this machine names what it has.
        let (_, _) = push_index(
            &reg,
            "fixture/foreign",
            "v1",
            false,
            &[("linux", other, mk(other).arch(other))],
        );
        let err = env.fails(&["pull", &format!("{}/fixture/foreign:v1", reg.host())]);
        assert!(
            err.contains(&format!("linux/{other}")) && err.contains("not found"),
            "{err}"
        );
    }
);

e2e!(zstd_plain_and_gzip_layers, |env: Env| {
    let reg = Registry::start();
    let layers = vec![
        Layer::new(vec![Entry::File("g".into(), b"gzip".to_vec(), 0o644)]),
        Layer::new(vec![Entry::File("z".into(), b"zstd".to_vec(), 0o644)]).with(Compression::Zstd),
        Layer::new(vec![Entry::File("p".into(), b"plain".to_vec(), 0o644)])
            .with(Compression::Plain),
    ];
    let img = ImageBuilder::new(layers).push(&reg, "fixture/comp", Some("v1"));
    env.ok(&["pull", &format!("{}/fixture/comp:v1", reg.host())]);
    for (i, (name, text)) in [("g", "gzip"), ("z", "zstd"), ("p", "plain")]
        .iter()
        .enumerate()
    {
        assert_eq!(
            fs::read_to_string(env.layer_root(&img.layers[i].1).join(name)).unwrap(),
            *text
        );
    }
});

e2e!(shared_layers_download_once_and_count_once, |env: Env| {
    let reg = Registry::start();
    let base = basic_layers().remove(0);
    let a = ImageBuilder::new(vec![base.clone()]).push(&reg, "fixture/debian", Some("bookworm"));
    let b = ImageBuilder::new(vec![
        base,
        Layer::new(vec![Entry::File(
            "usr/bin/python".into(),
            b"py".to_vec(),
            0o755,
        )]),
    ])
    .push(&reg, "fixture/python", Some("3.11"));
    env.ok(&["pull", &format!("{}/fixture/debian:bookworm", reg.host())]);
    let out = env.ok(&["pull", &format!("{}/fixture/python:3.11", reg.host())]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(
        reg.blob_gets("fixture/python", &b.layers[0].0),
        0,
        "shared base layer not downloaded again"
    );
    assert_eq!(reg.blob_gets("fixture/python", &b.layers[1].0), 1);
    assert_eq!(
        env.layer_dirs().len(),
        2,
        "the shared layer is unpacked once"
    );

    let df: serde_json::Value =
        serde_json::from_slice(&env.ok(&["system", "df", "--format", "json"]).stdout).unwrap();
    assert_eq!(df["images"], 2);
    assert_eq!(df["layers"], 2);
    assert_eq!(df["shared_layers"], 1);
    assert_eq!(df["unique_layers"], 1);
    assert!(stdout(&env.ok(&["system", "df"])).contains("shared"));

    // rmi keeps the layer the other image uses and deletes the one only it had.
    let out = env.ok(&["rmi", &format!("{}/fixture/python:3.11", reg.host())]);
    assert!(stdout(&out).contains("Untagged"));
    assert_eq!(env.layer_dirs().len(), 1);
    assert!(env.layer_root(&a.layers[0].1).join("usr/bin/tool").exists());
    let err = env.fails(&["rmi", &format!("{}/fixture/python:3.11", reg.host())]);
    assert!(err.contains("no image") && err.contains("hint:"), "{err}");
    env.ok(&["rmi", &a.manifest[7..19]]);
    assert!(env.layer_dirs().is_empty());
    assert_eq!(
        stdout(&env.ok(&["images", "--format", "json"])).trim(),
        "[]"
    );
});

e2e!(bad_references_and_unknown_images, |env: Env| {
    let reg = Registry::start();
    let err = env.fails(&["pull", "Not/Valid"]);
    assert!(err.contains("`Not`") && err.lines().count() <= 3, "{err}");
    let err = env.fails(&["pull", "debian@sha256:1234"]);
    assert!(err.contains("sha256:1234"), "{err}");
    let err = env.fails(&["pull", &format!("{}/nothing/here:v1", reg.host())]);
    assert!(err.contains("not found") && err.contains("hint:"), "{err}");
    // Nothing listens on this port: a clear transport error, not a panic.
    let port = crate::common::free_port();
    let err = env.fails(&["pull", &format!("127.0.0.1:{port}/x:v1")]);
    assert!(err.contains("cannot reach"), "{err}");
    // A non-loopback registry is never spoken to over plain HTTP unless the user says so.
    env.settings("insecure-registies = [\"x\"]\n");
    let err = env.fails(&["pull", &format!("{}/nothing/here:v1", reg.host())]);
    assert!(
        err.contains("config.toml") && err.contains("unknown key `insecure-registies`"),
        "{err}"
    );
});

e2e!(tampered_blob_is_refused_and_nothing_kept, |env: Env| {
    let reg = Registry::start();
    let img = ImageBuilder::new(basic_layers()).push(&reg, "fixture/tamper", Some("v1"));
    let f = reg.blob_file(&img.layers[1].0);
    let mut bytes = fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    fs::write(&f, bytes).unwrap();
    let err = env.fails(&["pull", &format!("{}/fixture/tamper:v1", reg.host())]);
    assert!(
        err.contains("does not match") && err.contains(&img.layers[1].0),
        "{err}"
    );
    assert!(
        !env.layer_dirs()
            .iter()
            .any(|d| d.ends_with(&img.layers[1].1[7..])),
        "no tampered layer"
    );
    let blobs: Vec<_> = fs::read_dir(env.store().join("blobs-v1/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        !blobs
            .iter()
            .any(|b| b.to_string_lossy() == img.layers[1].0[7..]),
        "no tampered blob"
    );
    let partials = fs::read_dir(env.store().join("blobs-v1/tmp"))
        .unwrap()
        .count();
    assert_eq!(partials, 0);
    assert_eq!(
        stdout(&env.ok(&["images", "--format", "json"])).trim(),
        "[]"
    );
});

e2e!(lying_diff_id_is_refused, |env: Env| {
    let reg = Registry::start();
    let mut b = ImageBuilder::new(vec![Layer::new(vec![Entry::File(
        "f".into(),
        b"x".to_vec(),
        0o644,
    )])]);
    b.diff_ids = Some(vec![format!("sha256:{}", "0".repeat(64))]);
    b.push(&reg, "fixture/liar", Some("v1"));
    let err = env.fails(&["pull", &format!("{}/fixture/liar:v1", reg.host())]);
    assert!(err.contains("content digest"), "{err}");
    assert!(env.layer_dirs().is_empty());
    assert_eq!(
        fs::read_dir(env.store().join("blobs-v1/sha256"))
            .unwrap()
            .count(),
        0
    );
});

/// An image big enough that a pull takes a while: a few layers of pseudo-random text.
fn big_image(reg: &Registry, repo: &str) -> crate::common::image::Pushed {
    let mut layers = Vec::new();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for l in 0..4 {
        let mut entries = Vec::new();
        for f in 0..40 {
            let mut data = Vec::with_capacity(256 << 10);
            while data.len() < 256 << 10 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.extend_from_slice(format!("{x:016x}\n").as_bytes());
            }
            data.truncate(256 << 10);
            entries.push(Entry::File(format!("l{l}/f{f}"), data, 0o644));
        }
        layers.push(Layer::new(entries));
    }
    ImageBuilder::new(layers).push(reg, repo, Some("v1"))
}

/// Every layer dir in the store is complete: it has its meta.json and root.
/// The downloads of a pull are gone once its flush in the background (`dev __settle`, which
/// deletes them first) ran: within seconds, not left in the store.
fn assert_downloads_gone(env: &Env) {
    let start = std::time::Instant::now();
    loop {
        let left: Vec<_> = fs::read_dir(env.store().join("blobs-v1/tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "downloads left in the store 10 s after the pull: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn assert_no_partial_layers(env: &Env) {
    for d in env.layer_dirs() {
        assert!(
            d.join("meta.json").is_file() && d.join("root").is_dir(),
            "partial layer visible: {}",
            d.display()
        );
    }
}

e2e!(sigkill_during_pull_leaves_nothing_partial, |env: Env| {
    let reg = Registry::start();
    let img = big_image(&reg, "fixture/big");
    let r = format!("{}/fixture/big:v1", reg.host());
    for delay_ms in [5, 30, 80, 150, 300, 600] {
        let mut child = env
            .dev(&["pull", &r])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // setpriv execs dev, so this is dev's pid.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(50));
        assert_no_partial_layers(&env);
        let images = stdout(&env.ok(&["images", "--format", "json"]));
        assert!(
            images.trim() == "[]" || images.contains(&img.manifest),
            "{images}"
        );
    }
    env.ok(&["pull", &r]);
    assert_no_partial_layers(&env);
    for (_, diff) in &img.layers {
        assert!(env.layer_root(diff).read_dir().unwrap().count() > 0);
    }
    let f = env.layer_root(&img.layers[3].1).join("l3/f39");
    assert_eq!(fs::metadata(f).unwrap().len(), 256 << 10);
    // prune clears leftovers of the killed runs and keeps the image's layers.
    env.ok(&["system", "prune"]);
    assert_eq!(env.layer_dirs().len(), 4);
    assert_eq!(
        fs::read_dir(env.store().join("blobs-v1/tmp"))
            .unwrap()
            .count(),
        0
    );
});

e2e!(concurrent_pulls_fetch_each_layer_once, |env: Env| {
    let reg = Registry::start();
    let img = big_image(&reg, "fixture/race");
    let r = format!("{}/fixture/race:v1", reg.host());
    let children: Vec<_> = (0..4)
        .map(|_| {
            env.dev(&["pull", "-q", &r])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            crate::common::describe("dev pull (concurrent)", &out)
        );
        assert_eq!(stdout(&out).trim(), img.manifest);
    }
    for (blob, _) in &img.layers {
        assert_eq!(
            reg.blob_gets("fixture/race", blob),
            1,
            "layer {blob} downloaded exactly once"
        );
    }
    assert_eq!(env.layer_dirs().len(), 4);
    assert_no_partial_layers(&env);
});

e2e!(interrupted_download_resumes_with_range, |env: Env| {
    let reg = Registry::start();
    let img = big_image(&reg, "fixture/resume");
    let r = format!("{}/fixture/resume:v1", reg.host());
    // What an interrupted run leaves: the first half of a layer blob, invisible in tmp/.
    let blob = fs::read(reg.blob_file(&img.layers[0].0)).unwrap();
    let partial = env
        .store()
        .join("blobs-v1/tmp")
        .join(format!("{}.partial", &img.layers[0].0[7..]));
    // A second blob whose partial holds wrong bytes: the resumed download fails to verify and
    // must start over rather than fail the pull.
    let blob1 = fs::read(reg.blob_file(&img.layers[1].0)).unwrap();
    let bad_partial = env
        .store()
        .join("blobs-v1/tmp")
        .join(format!("{}.partial", &img.layers[1].0[7..]));
    fs::create_dir_all(partial.parent().unwrap()).unwrap();
    fs::write(&partial, &blob[..blob.len() / 2]).unwrap();
    fs::write(&bad_partial, vec![b'!'; blob1.len() / 2]).unwrap();
    env.chown_all(&env.store());
    fs::set_permissions(
        env.store(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    env.ok(&["pull", &r]);
    let ranged = reg
        .log()
        .lines()
        .filter(|l| l.contains(&format!("blobs/{}", img.layers[0].0)) && l.contains("\" 206 "))
        .count();
    assert_eq!(
        ranged,
        1,
        "the first blob was resumed with a Range request:\n{}",
        reg.log()
    );
    assert_eq!(
        reg.blob_gets("fixture/resume", &img.layers[0].0),
        1,
        "and fetched only once"
    );
    assert_eq!(
        reg.blob_gets("fixture/resume", &img.layers[1].0),
        2,
        "the bad partial was retried from scratch"
    );
    assert_eq!(
        fs::metadata(env.layer_root(&img.layers[0].1).join("l0/f0"))
            .unwrap()
            .len(),
        256 << 10
    );
    assert_downloads_gone(&env);
});

e2e!(
    layers_stack_with_native_overlay_and_fuse_overlayfs,
    |env: Env| {
        let reg = Registry::start();
        let img = ImageBuilder::new(basic_layers()).push(&reg, "fixture/stack", Some("v1"));
        env.ok(&["pull", &format!("{}/fixture/stack:v1", reg.host())]);
        let (l1, l2) = (
            env.layer_root(&img.layers[0].1),
            env.layer_root(&img.layers[1].1),
        );
        for d in ["u", "w", "m"] {
            fs::create_dir_all(env.path(&format!("ov/{d}"))).unwrap();
        }
        env.chown_all(&env.path("ov"));
        let ov = env.path("ov").display().to_string();
        let opts = format!(
            "lowerdir={}:{},upperdir={ov}/u,workdir={ov}/w",
            l2.display(),
            l1.display()
        );
        let show =
            format!("cd {ov}/m && ls -A etc opt && cat usr/bin/tool && test ! -e etc/os-release");
        let native = env.sh(&format!(
            "unshare -Urm sh -c 'mount -t overlay -o userxattr,{opts} none {ov}/m && {show}'"
        ));
        let fuse = env.sh(&format!(
        "rm -rf {ov}/u/* {ov}/w/*; fuse-overlayfs -o {opts} {ov}/m && ({show}); st=$?; fusermount3 -u {ov}/m; exit $st"
    ));
        for (name, out) in [("native overlay", native), ("fuse-overlayfs", fuse)] {
            assert!(
                out.status.success(),
                "{}",
                crate::common::describe(name, &out)
            );
            // etc/os-release is whited out; opt is opaque: only the upper layer's `b` shows.
            assert_eq!(
                stdout(&out),
                "etc:\n\nopt:\nb\n#!/bin/sh\necho tool\n",
                "{name}"
            );
        }
    }
);

e2e!(
    disk_full_is_explained_and_leaves_nothing_partial,
    |env: Env| {
        let reg = Registry::start();
        let img = big_image(&reg, "fixture/full");
        // A 3 MiB file system for the store: the 40 MiB image cannot fit.
        let data = env.path("data");
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3m,mode=0755"])
            .arg("tmpfs")
            .arg(&data)
            .status()
            .unwrap();
        assert!(st.success(), "mount a small tmpfs (the suite runs as root)");
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.0)
                    .status();
            }
        }
        let _guard = Unmount(data.clone());
        env.chown_all(&data);
        let err = env.fails(&["pull", &format!("{}/fixture/full:v1", reg.host())]);
        assert!(
            err.contains("No space left on device")
                && err.contains("hint:")
                && err.contains("disk"),
            "{err}"
        );
        assert_no_partial_layers(&env);
        assert!(env.layer_dirs().len() < img.layers.len());
        assert_eq!(
            stdout(&env.ok(&["images", "--format", "json"])).trim(),
            "[]"
        );
    }
);

e2e!(progress_bars_on_a_terminal, |env: Env| {
    let reg = Registry::start();
    ImageBuilder::new(basic_layers()).push(&reg, "fixture/tty", Some("v1"));
    let cmd = format!("{} pull {}/fixture/tty:v1", env.bin.display(), reg.host());
    let out = env.sh(&format!("script -qec '{cmd}' /dev/null"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        crate::common::describe("script dev pull", &out)
    );
    assert!(
        text.contains("\u{1b}[") && text.contains("/s") && text.contains("done"),
        "a drawn bar with a rate: {text:?}"
    );
    // Not a terminal: plain lines, no escape codes.
    let plain = String::from_utf8_lossy(
        &env.ok(&["pull", &format!("{}/fixture/tty:v1", reg.host())])
            .stderr,
    )
    .to_string();
    assert!(
        !plain.contains('\u{1b}') && plain.contains("already exists"),
        "{plain:?}"
    );
});

// A gzip layer whose deflate stream breaks well past the inflater's first chunks: the manifest
// names the digest of the broken bytes, so only the inflate (on its own thread) finds it.
// Refused, and nothing of it is kept: no layer, no staging dir, no blob, no partial.
e2e!(
    corrupt_gzip_stream_is_refused_and_nothing_kept,
    |env: Env| {
        use crate::common::image::{push_blob, put_manifest, sha256, OCI_MANIFEST};
        let reg = Registry::start();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let entries = (0..24)
            .map(|f| {
                let mut data = Vec::with_capacity(256 << 10);
                while data.len() < 256 << 10 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    data.extend_from_slice(&x.to_le_bytes());
                }
                Entry::File(format!("f{f}"), data, 0o644)
            })
            .collect();
        let (mut gz, diff_id) = Layer::new(entries).blob();
        let n = gz.len();
        for b in &mut gz[n * 3 / 4..n * 3 / 4 + 64] {
            *b ^= 0x5a;
        }
        let repo = "fixture/corrupt";
        let layer = push_blob(&reg, repo, &gz);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": host_arch(), "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .unwrap();
        let config_digest = push_blob(&reg, repo, &config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer, "size": gz.len()}],
        }))
        .unwrap();
        assert_ne!(sha256(&gz), diff_id);
        put_manifest(&reg, repo, "v1", OCI_MANIFEST, &manifest);
        let err = env.fails(&["pull", &format!("{}/{repo}:v1", reg.host())]);
        assert!(
            err.contains(&format!("cannot unpack layer {layer}")),
            "{err}"
        );
        assert!(env.layer_dirs().is_empty(), "{:?}", env.layer_dirs());
        for dir in ["blobs-v1/sha256", "blobs-v1/tmp"] {
            assert_eq!(
                fs::read_dir(env.store().join(dir)).unwrap().count(),
                0,
                "{dir} keeps something of the refused layer"
            );
        }
        for map in fs::read_dir(env.store().join("layers-v1"))
            .unwrap()
            .flatten()
        {
            let staging = map.path().join("tmp");
            assert_eq!(
                fs::read_dir(&staging).map_or(0, |d| d.count()),
                0,
                "a staging dir is left in {}",
                staging.display()
            );
        }
        assert_eq!(
            stdout(&env.ok(&["images", "--format", "json"])).trim(),
            "[]"
        );
    }
);

e2e!(
    a_download_cut_under_its_unpack_resumes_or_starts_over,
    |env: Env| {
        use crate::common::http::{forward, Response, Server};
        use std::collections::BTreeMap;
        use std::sync::{Arc, Mutex};
        let reg = Registry::start();
        let img = big_image(&reg, "fixture/cut-mid");
        let upstream = reg.url();
        // Both are cut half-way while their unpack reads them; the first is resumed with a Range
        // request, the second's Range is ignored (a full answer), so its download starts over
        // under the unpack.
        let resumed = img.layers[0].0.clone();
        let restarted = img.layers[1].0.clone();
        let path = |d: &str| format!("/v2/fixture/cut-mid/blobs/{d}");
        let blobs: BTreeMap<String, Vec<u8>> = [&resumed, &restarted]
            .iter()
            .map(|d| (path(d), fs::read(reg.blob_file(d)).unwrap()))
            .collect();
        let gets = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
        let seen = gets.clone();
        let resumed_path = path(&resumed);
        let front = Server::start(move |req| {
            let Some(blob) = blobs.get(&req.path).cloned() else {
                return forward(&upstream, req);
            };
            let n = {
                let mut g = seen.lock().unwrap();
                let c = g.entry(req.path.clone()).or_default();
                *c += 1;
                *c
            };
            if n == 1 {
                return Response::streamed(200, Some(blob.len() as u64), move |w| {
                    let _ = w.write_all(&blob[..blob.len() / 2]);
                    let _ = w.flush();
                    // Long enough for the unpack to take what came.
                    std::thread::sleep(Duration::from_millis(300));
                });
            }
            let from = req
                .headers
                .get("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|r| r.parse::<usize>().ok());
            match from {
                Some(from) if req.path == resumed_path => Response::new(206, blob[from..].to_vec())
                    .header(
                        "Content-Range",
                        &format!("bytes {from}-{}/{}", blob.len() - 1, blob.len()),
                    ),
                _ => Response::new(200, blob),
            }
        });
        let r = format!("127.0.0.1:{}/fixture/cut-mid:v1", front.port);
        env.ok(&["pull", &r]);
        let gets = gets.lock().unwrap().clone();
        assert_eq!(
            (gets.get(&path(&resumed)), gets.get(&path(&restarted))),
            (Some(&2), Some(&2)),
            "each cut blob was asked for twice"
        );
        // Whole layers (their diff ids were checked before they became visible), nothing left over.
        for (l, (_, diff_id)) in img.layers.iter().enumerate() {
            for f in 0..40 {
                let file = env.layer_root(diff_id).join(format!("l{l}/f{f}"));
                assert_eq!(
                    fs::metadata(&file).map(|m| m.len()).ok(),
                    Some(256 << 10),
                    "{}",
                    file.display()
                );
            }
        }
        assert_downloads_gone(&env);
    }
);
