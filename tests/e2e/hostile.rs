//! Hostile layers never write outside the layer's own directory, even when extraction fails
//! half-way. Each test checks that a sentinel outside the store is unchanged and that nothing
//! new appeared outside the store.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::image::{push_blob, put_manifest, OCI_MANIFEST};
use crate::common::{snapshot, Entry, Env, ImageBuilder, Layer, Registry};
use crate::e2e;

const SENTINEL: &str = "sentinel: do not touch\n";

/// Pulls an image made of `entries`; returns (succeeded, stderr). Asserts the world outside the
/// store is exactly as before.
fn pull_hostile(env: &Env, entries: Vec<Entry>) -> (bool, String) {
    let reg = Registry::start();
    ImageBuilder::new(vec![Layer::new(entries)]).push(&reg, "hostile/x", Some("v1"));
    pull_and_compare(env, &format!("{}/hostile/x:v1", reg.host()))
}

fn pull_and_compare(env: &Env, reference: &str) -> (bool, String) {
    let outside = env.path("outside");
    fs::write(outside.join("sentinel"), SENTINEL).unwrap();
    fs::set_permissions(outside.join("sentinel"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
    env.chown_all(&outside);
    let before = snapshot(env.dir.path(), &env.store());
    let out = env.run(&["pull", reference]);
    let after = snapshot(env.dir.path(), &env.store());
    assert_eq!(
        fs::read_to_string(outside.join("sentinel")).unwrap(),
        SENTINEL,
        "sentinel changed"
    );
    assert_eq!(before, after, "something outside the store changed");
    // Whatever happened, no staging leftovers are visible as layers.
    for d in env.layer_dirs() {
        assert!(
            d.join("meta.json").is_file(),
            "partial layer {}",
            d.display()
        );
    }
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn out(env: &Env) -> String {
    env.path("outside").display().to_string()
}

fn refused(env: &Env, entries: Vec<Entry>, what: &str) {
    let (ok, err) = pull_hostile(env, entries);
    assert!(!ok, "hostile layer was accepted");
    assert!(err.contains(what), "error should mention `{what}`: {err}");
    assert!(
        env.layer_dirs().is_empty(),
        "nothing of a refused layer is kept"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
}

e2e!(dotdot_names, |env: Env| {
    let target = format!("../../../../../../../..{}/pwned", out(&env));
    refused(
        &env,
        vec![Entry::File(target, b"x".to_vec(), 0o644)],
        "points outside the layer",
    );
    refused(
        &env,
        vec![
            Entry::Dir("a/".into(), 0o755),
            Entry::File("a/../../pwned".into(), b"x".to_vec(), 0o644),
        ],
        "points outside",
    );
});

e2e!(absolute_names_stay_inside, |env: Env| {
    let abs = format!("{}/pwned", out(&env));
    let (ok, err) = pull_hostile(&env, vec![Entry::File(abs.clone(), b"x".to_vec(), 0o644)]);
    assert!(ok, "{err}");
    let inside = env.layer_dirs()[0]
        .join("root")
        .join(abs.trim_start_matches('/'));
    assert_eq!(fs::read(inside).unwrap(), b"x");
});

e2e!(write_through_absolute_symlink, |env: Env| {
    refused(
        &env,
        vec![
            Entry::Symlink("link".into(), out(&env)),
            Entry::File("link/pwned".into(), b"x".to_vec(), 0o644),
        ],
        "through the symlink",
    );
});

e2e!(write_through_relative_symlink, |env: Env| {
    let rel = format!("../../../../../../../../..{}", out(&env));
    refused(
        &env,
        vec![
            Entry::Symlink("link".into(), rel),
            Entry::Dir("link/sub/".into(), 0o777),
        ],
        "through the symlink",
    );
});

e2e!(symlink_then_file_of_same_name, |env: Env| {
    let (ok, err) = pull_hostile(
        &env,
        vec![
            Entry::Symlink("s".into(), format!("{}/sentinel", out(&env))),
            Entry::File("s".into(), b"pwned".to_vec(), 0o644),
        ],
    );
    assert!(ok, "{err}");
    let s = env.layer_dirs()[0].join("root/s");
    assert!(fs::symlink_metadata(&s).unwrap().is_file());
    assert_eq!(fs::read(&s).unwrap(), b"pwned");
});

e2e!(
    symlink_then_directory_that_would_chmod_target,
    |env: Env| {
        let (ok, err) = pull_hostile(
            &env,
            vec![
                // A symlink replaced by a directory entry: the chmod must hit the new directory.
                Entry::Symlink("d".into(), out(&env)),
                Entry::Dir("d/".into(), 0o777),
                // A directory replaced by a symlink: the deferred chmod must not follow it.
                Entry::Dir("e/".into(), 0o777),
                Entry::Symlink("e".into(), out(&env)),
            ],
        );
        assert!(ok, "{err}");
        let root = env.layer_dirs()[0].join("root");
        assert!(fs::symlink_metadata(root.join("d")).unwrap().is_dir());
        assert!(fs::symlink_metadata(root.join("e"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
);

e2e!(hardlinks_pointing_outside, |env: Env| {
    refused(
        &env,
        vec![Entry::Hardlink(
            "h".into(),
            format!("{}/sentinel", out(&env)),
        )],
        "hard link",
    );
    refused(
        &env,
        vec![Entry::Hardlink(
            "h".into(),
            "../../../../../../../etc/passwd".into(),
        )],
        "hard link",
    );
    refused(
        &env,
        vec![
            Entry::Symlink("l".into(), out(&env)),
            Entry::Hardlink("h".into(), "l/sentinel".into()),
        ],
        "hard link",
    );
});

e2e!(malformed_whiteouts, |env: Env| {
    refused(
        &env,
        vec![Entry::File(".wh..".into(), vec![], 0o644)],
        "whiteout",
    );
    refused(
        &env,
        vec![
            Entry::Dir("a/".into(), 0o755),
            Entry::File("a/.wh...".into(), vec![], 0o644),
        ],
        "whiteout",
    );
    refused(
        &env,
        vec![
            Entry::Symlink("l".into(), out(&env)),
            Entry::File("l/.wh.sentinel".into(), vec![], 0o644),
        ],
        "through the symlink",
    );
});

e2e!(devices_and_fifos_are_skipped, |env: Env| {
    let (ok, err) = pull_hostile(
        &env,
        vec![
            Entry::CharDev("sda".into(), 8, 0),
            Entry::CharDev("null".into(), 1, 3),
            Entry::Fifo("fifo".into()),
            Entry::File("ok".into(), b"1".to_vec(), 0o644),
        ],
    );
    assert!(ok, "{err}");
    let root = env.layer_dirs()[0].join("root");
    assert!(root.join("ok").is_file());
    for n in ["sda", "null", "fifo"] {
        assert!(
            fs::symlink_metadata(root.join(n)).is_err(),
            "{n} was created"
        );
    }
});

e2e!(dangerous_xattrs_are_dropped, |env: Env| {
    let x = |k: &str, v: &str| (format!("SCHILY.xattr.{k}"), v.as_bytes().to_vec());
    let (ok, err) = pull_hostile(
        &env,
        vec![
            Entry::Pax(
                vec![
                    x("trusted.overlay.opaque", "y"),
                    x("user.overlay.opaque", "y"),
                    x("user.keep", "1"),
                ],
                Box::new(Entry::Dir("d/".into(), 0o755)),
            ),
            Entry::Pax(
                vec![
                    x("security.capability", "\u{1}"),
                    x("user.overlay.redirect", "/x"),
                    x("user.keep", "2"),
                ],
                Box::new(Entry::File("f".into(), b"x".to_vec(), 0o755)),
            ),
        ],
    );
    assert!(ok, "{err}");
    let root = env.layer_dirs()[0].join("root");
    for p in ["d", "f"] {
        let names: Vec<String> = xattr::list(root.join(p))
            .unwrap()
            .map(|n| n.to_string_lossy().to_string())
            .collect();
        assert_eq!(names, vec!["user.keep".to_string()], "{p}");
    }
});

e2e!(pax_size_disagreeing_with_header, |env: Env| {
    refused(
        &env,
        vec![Entry::Pax(
            vec![("size".into(), b"5".to_vec())],
            Box::new(Entry::Sized("f".into(), vec![b'a'; 1024], 1024)),
        )],
        "PAX size",
    );
});

e2e!(decompression_bomb, |env: Env| {
    // 1.1 GiB of zeros, zstd-compressed to a few kilobytes.
    let reg = Registry::start();
    let size: u64 = (1 << 30) + (100 << 20);
    let mut enc = zstd::Encoder::new(Vec::new(), 1).unwrap();
    {
        let mut b = tar::Builder::new(&mut enc);
        let mut h = tar::Header::new_ustar();
        h.set_path("zeros").unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, std::io::Read::take(std::io::repeat(0), size))
            .unwrap();
        b.finish().unwrap();
    }
    let blob = enc.finish().unwrap();
    let digest = push_blob(&reg, "hostile/bomb", &blob);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": crate::common::image::host_arch(), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "1".repeat(64))]},
    }))
    .unwrap();
    let cdigest = push_blob(&reg, "hostile/bomb", &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": digest, "size": blob.len()}],
    }))
    .unwrap();
    put_manifest(&reg, "hostile/bomb", "v1", OCI_MANIFEST, &manifest);
    let (ok, err) = pull_and_compare(&env, &format!("{}/hostile/bomb:v1", reg.host()));
    assert!(!ok && err.contains("decompression bomb"), "{err}");
    assert!(env.layer_dirs().is_empty());
    let staging = env.store().join("layers-v1");
    let leftovers: usize = fs::read_dir(&staging)
        .unwrap()
        .flatten()
        .map(|m| fs::read_dir(m.path().join("tmp")).map_or(0, |r| r.count()))
        .sum();
    assert_eq!(leftovers, 0, "the refused layer's staging dir was removed");
});

// A directory's metadata is applied after all entries (so read-only directories can be filled),
// by opening it again: `a/victim` must be opened beneath the layer with no symlink followed, or
// a later symlink `a` -> a host directory makes the chmod, chown and mtime land on the host's
// `victim` (world-writable, and with a subordinate range owned by the sub-root).
e2e!(
    deferred_directory_metadata_never_lands_outside,
    |env: Env| {
        use std::os::unix::fs::MetadataExt;
        let victim = env.path("outside/victim");
        fs::create_dir(&victim).unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o755)).unwrap();
        env.chown_all(&env.path("outside"));
        let before = fs::metadata(&victim).unwrap();
        let (ok, err) = pull_hostile(
            &env,
            vec![
                Entry::Dir("a/".into(), 0o755),
                Entry::Dir("a/victim/".into(), 0o777),
                Entry::Symlink("a".into(), out(&env)),
            ],
        );
        let after = fs::metadata(&victim).unwrap();
        assert_eq!(
            after.mode() & 0o7777,
            0o755,
            "the layer's mode landed on the host's directory ({err})"
        );
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_eq!(after.mtime(), before.mtime(), "the layer's mtime landed");
        // The layer itself is valid: `a` is a symlink in it, and the directory below it is gone.
        assert!(ok, "{err}");
        let root = env.layer_dirs()[0].join("root");
        assert!(fs::symlink_metadata(root.join("a"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
);

// A tools build shapes its writable layer; dev then drops volatile paths (`var/log`, apt's
// caches, …) from it. `[setup] root = ["rm -rf /var && ln -s /host/dir /var"]` must not make
// that cleaning empty a host directory: it is done beneath the layer's fd, no symlink followed.
e2e!(
    cleaning_a_tools_layer_never_follows_its_symlinks,
    |env: Env| {
        let reg = Registry::start();
        // A busybox image that looks like an apt image (the build installs no package, it runs the
        // setup only, but the package manager is detected first).
        let mut layers = crate::common::image::busybox_layers();
        layers.push(Layer::new(vec![
            Entry::Dir("usr/".into(), 0o755),
            Entry::Dir("usr/bin/".into(), 0o755),
            Entry::File(
                "usr/bin/apt-get".into(),
                b"#!/bin/sh\nexit 1\n".to_vec(),
                0o755,
            ),
            Entry::File(
                "usr/bin/dpkg".into(),
                b"#!/bin/sh\nexit 1\n".to_vec(),
                0o755,
            ),
        ]));
        ImageBuilder::new(layers).push(&reg, "hostile/apt", Some("1"));
        let victim = env.path("outside/log");
        fs::create_dir_all(victim.join("apt")).unwrap();
        fs::write(victim.join("keep.log"), SENTINEL).unwrap();
        fs::write(victim.join("apt/keep.log"), SENTINEL).unwrap();
        env.chown_all(&env.path("outside"));
        fs::set_permissions(env.path("outside"), fs::Permissions::from_mode(0o777)).unwrap();
        env.write_dev_toml(&format!(
            "image = \"{}/hostile/apt:1\"\n[setup]\nroot = [\"rm -rf /var && ln -s {} /var\"]\n",
            reg.host(),
            env.path("outside").display()
        ));
        env.trust();
        let out = env.run(&["run", "--", "true"]);
        assert!(
            out.status.success(),
            "{}",
            crate::common::describe("dev run", &out)
        );
        assert_eq!(
            fs::read_to_string(victim.join("keep.log")).unwrap(),
            SENTINEL
        );
        assert_eq!(
            fs::read_to_string(victim.join("apt/keep.log")).unwrap(),
            SENTINEL
        );
    }
);

// The read-only binds of host files (/etc/hosts, /etc/resolv.conf) and of /sys cannot be
// locked read-only from inside a single user namespace (see README, "Security model"); root
// inside may remount them read-write, but the files stay the host's: writing them still fails.
e2e!(
    root_inside_cannot_write_the_hosts_files_through_a_remount,
    |env: Env| {
        let reg = Registry::start();
        crate::shell::busybox_project(&env, &reg, "");
        let before = fs::read("/etc/hosts").unwrap();
        let script = "for f in /etc/hosts /etc/resolv.conf /sys; do \
        mount -o remount,bind,rw $f 2>/dev/null && echo remounted $f; done; \
        echo pwned >> /etc/hosts && echo wrote-hosts; \
        echo pwned >> /etc/resolv.conf && echo wrote-resolv; \
        echo 1 > /sys/kernel/mm/ksm/run && echo wrote-sys; true";
        let out = env.ok(&["run", "--rm", "--root", "--", "sh", "-c", script]);
        let said = crate::common::stdout(&out);
        assert!(!said.contains("wrote"), "{said}");
        assert_eq!(fs::read("/etc/hosts").unwrap(), before);
    }
);

// init adds the user to the image's /etc/passwd and /etc/group. An image that plants a symlink
// at the temp name that write used (`/etc/passwd.dev-new`), pointing into the project bound in,
// must not make init (root inside) overwrite the project's file.
e2e!(
    user_entries_never_write_through_a_planted_symlink,
    |env: Env| {
        let reg = Registry::start();
        let victim = env.path("project/victim.txt");
        fs::write(&victim, SENTINEL).unwrap();
        env.chown_all(&env.path("project"));
        let mut layers = crate::common::image::busybox_layers();
        let target = victim.display().to_string();
        layers.push(Layer::new(vec![
            Entry::Symlink("etc/passwd.dev-new".into(), target.clone()),
            Entry::Symlink("etc/group.dev-new".into(), target),
        ]));
        ImageBuilder::new(layers).push(&reg, "hostile/etc", Some("1"));
        env.write_dev_toml(&format!("image = \"{}/hostile/etc:1\"\n", reg.host()));
        let out = env.ok(&[
            "run",
            "--",
            "sh",
            "-c",
            "id -un; grep -c \"^$(id -un):\" /etc/passwd",
        ]);
        assert_eq!(
            fs::read_to_string(&victim).unwrap(),
            SENTINEL,
            "the project's file was overwritten"
        );
        let said = crate::common::stdout(&out);
        assert!(
            said.ends_with(":\n1\n") || said.lines().nth(1) == Some("1"),
            "{said}"
        );
    }
);

/// A file outside every store that a walk of an env's tree must never reach.
fn host_secret(env: &Env) {
    let outside = env.path("outside");
    fs::write(outside.join("host-secret"), SENTINEL).unwrap();
    fs::set_permissions(
        outside.join("host-secret"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
    env.chown_all(&outside);
}

// `dev diff` tells added from changed by looking the env's paths up in the image's layers. A
// layer's symlink to a host directory must not turn that look-up into a probe of the host's
// files: what the env made under a directory of that name is added, whatever the host holds.
e2e!(diff_never_looks_through_a_layers_symlink, |env: Env| {
    let reg = Registry::start();
    host_secret(&env);
    let mut layers = crate::common::image::busybox_layers();
    layers.push(Layer::new(vec![Entry::Symlink("peek".into(), out(&env))]));
    ImageBuilder::new(layers).push(&reg, "hostile/peek", Some("1"));
    env.write_dev_toml(&format!("image = \"{}/hostile/peek:1\"\n", reg.host()));
    env.ok(&[
        "run",
        "--root",
        "--",
        "sh",
        "-c",
        "rm /peek && mkdir /peek && echo mine > /peek/host-secret && ln -s / /to-root",
    ]);
    let diff = crate::common::stdout(&env.ok(&["diff"]));
    for line in ["A /peek/host-secret", "A /to-root"] {
        assert!(diff.lines().any(|l| l == line), "no `{line}` in:\n{diff}");
    }
    assert!(
        !diff
            .lines()
            .any(|l| l.starts_with("A /to-root/") || l.starts_with("C /to-root/")),
        "a symlink to / was followed:\n{diff}"
    );
});

// While `dev diff`, `dev status` and `dev ps` walk the env's writable layer, a process in the
// env swaps a directory of it for a symlink to a host directory, again and again. None may list,
// stat or name anything of the host's (`ps` would count the host's sparse 1 TiB file).
e2e!(
    diff_status_and_ps_never_enter_a_directory_swapped_for_a_symlink,
    |env: Env| {
        use std::time::{Duration, Instant};
        let reg = Registry::start();
        crate::shell::busybox_project(&env, &reg, "");
        host_secret(&env);
        let big = fs::File::create(env.path("outside/host-big")).unwrap();
        big.set_len(1 << 40).unwrap();
        drop(big);
        env.chown_all(&env.path("outside"));
        // Many files beside the raced directory make the walk take a while between listing
        // `/r` and entering `/r/d`.
        let script = format!(
            "mkdir /r && cd /r && i=0; while [ $i -lt 3000 ]; do : > z$i; i=$((i+1)); done; \
             echo ready; while [ ! -e /r/stop ]; do mkdir d; rmdir d; ln -s {} d; rm d; done",
            out(&env)
        );
        let mut racer =
            crate::common::spawn_ready(&mut env.dev(&["run", "--root", "--", "sh", "-c", &script]));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut raced = 0;
        while Instant::now() < deadline {
            for cmd in ["diff", "status"] {
                let o = env.run(&[cmd]);
                let said = crate::common::stdout(&o) + &crate::common::stderr(&o);
                assert!(o.status.success(), "{}", crate::common::describe(cmd, &o));
                assert!(
                    !said.contains("host-"),
                    "`dev {cmd}` walked into the host's directory:\n{said}"
                );
                raced += said.lines().filter(|l| *l == "A /r/d").count();
            }
            let ps: serde_json::Value =
                serde_json::from_slice(&env.ok(&["ps", "--format", "json"]).stdout)
                    .expect("ps json");
            let size = ps[0]["size_bytes"].as_u64().expect("size_bytes");
            assert!(
                size < 1 << 39,
                "`dev ps` counted the host's files: {size} bytes"
            );
        }
        env.ok(&["run", "--root", "--", "touch", "/r/stop"]);
        assert!(racer.wait().expect("racer").success());
        assert!(raced > 0, "the racer never showed `/r/d`");
    }
);

// The copy backend marks a finished copy with `/.dev-complete` in the env's root, which the
// image shaped: an image whose layer holds that name as a symlink to a host file must not make
// dev write (truncate) the host file.
e2e!(
    copy_backend_never_writes_through_an_images_symlink,
    |env: Env| {
        let reg = Registry::start();
        let victim = env.path("outside/victim");
        fs::write(&victim, SENTINEL).unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(env.path("outside"), fs::Permissions::from_mode(0o755)).unwrap();
        env.chown_all(&env.path("outside"));
        let mut layers = crate::common::image::busybox_layers();
        layers.push(Layer::new(vec![Entry::Symlink(
            ".dev-complete".into(),
            victim.display().to_string(),
        )]));
        ImageBuilder::new(layers).push(&reg, "hostile/marker", Some("1"));
        env.write_dev_toml(&format!("image = \"{}/hostile/marker:1\"\n", reg.host()));
        let out = env
            .dev(&["run", "--", "cat", "/etc/os-release"])
            .env("DEV_OVERLAY", "copy")
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            crate::common::describe("dev run", &out)
        );
        assert_eq!(
            fs::read_to_string(&victim).unwrap(),
            SENTINEL,
            "the host file was written through the image's symlink"
        );
    }
);

e2e!(
    a_refusal_with_a_long_name_and_more_to_come_fails_instead_of_hanging,
    |env: Env| {
        // The first entry is refused and its error names it, 100,000 bytes long: the helper's
        // reply outgrows its pipe while `dev` still has megabytes of the layer to feed it.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..(32 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let reg = Registry::start();
        ImageBuilder::new(vec![Layer::new(vec![
            Entry::Pax(
                vec![(
                    "path".into(),
                    format!("{}/../../pwned", "d".repeat(100_000)).into_bytes(),
                )],
                Box::new(Entry::File("short".into(), b"x".to_vec(), 0o644)),
            ),
            Entry::File("noise".into(), noise, 0o644),
        ])])
        .push(&reg, "hostile/long", Some("v1"));
        // Its error goes to a file: a pipe this test read only at the end would hang it too.
        let err_file = env.path("pull.err");
        let mut child = env
            .dev(&["pull", &format!("{}/hostile/long:v1", reg.host())])
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(&err_file).unwrap())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > std::time::Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`dev pull` of a refused layer still runs after 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let err = fs::read_to_string(&err_file).unwrap();
        assert!(!status.success());
        assert!(
            err.contains("points outside the layer"),
            "{}",
            &err[..err.len().min(400)]
        );
        assert!(
            env.layer_dirs().is_empty(),
            "nothing of a refused layer is kept"
        );
    }
);
