//! The store under a power cut and on a full disk. A power cut is played the way xfstests
//! does: the store on a loop-mounted ext4 image, shut down with no log flush
//! (`EXT4_IOC_SHUTDOWN`, `EXT4_GOING_FLAGS_NOLOGFLUSH`: what was not on disk is lost, as in a
//! crash), unmounted and mounted again.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::image::{basic_layers, Pushed};
use crate::common::{Entry, Env, ImageBuilder, Layer, Registry};
use crate::e2e;

/// `_IOR('X', 125, __u32)`.
const EXT4_IOC_SHUTDOWN: u64 = 0x8004_587D;
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

fn sh(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        crate::common::describe(what, &out)
    );
}

/// An ext4 file system on a loop device, mounted at the test's data dir.
struct Ext4 {
    image: PathBuf,
    at: PathBuf,
    /// The test's directory: its processes name it in their environment.
    mark: String,
    /// Loop devices set up for the remounts, detached at the end.
    loops: std::cell::RefCell<Vec<String>>,
}

impl Ext4 {
    fn new(env: &Env, mib: u64) -> Ext4 {
        let image = env.path("ext4.img");
        let f = fs::File::create(&image).unwrap();
        f.set_len(mib << 20).unwrap();
        drop(f);
        sh(
            "mkfs.ext4",
            Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image),
        );
        let fs = Ext4 {
            image,
            at: env.path("data"),
            mark: env.dir.path().display().to_string(),
            loops: Default::default(),
        };
        fs.mount();
        env.chown_all(&fs.at);
        // The disk as the user got it (theirs) is on the disk before any cut.
        sh("sync", Command::new("sync").arg("-f").arg(&fs.at));
        fs
    }

    fn mount(&self) {
        sh(
            "mount the ext4 image (the suite runs as root)",
            Command::new("mount")
                .args(["-t", "ext4", "-o", "loop"])
                .arg(&self.image)
                .arg(&self.at),
        );
    }

    /// The power cut: everything not yet on the disk is lost, then the disk comes back.
    fn crash_and_remount(&self) {
        self.shut_down();
        self.remount();
    }

    /// What is not on the disk now never will be; every later write fails.
    fn shut_down(&self) {
        let dir = fs::File::open(&self.at).unwrap();
        let mut flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: EXT4_IOC_SHUTDOWN reads one u32 through the pointer, which lives across the call.
        let rc = unsafe {
            nix::libc::ioctl(
                dir.as_raw_fd(),
                EXT4_IOC_SHUTDOWN as _,
                &mut flags as *mut u32,
            )
        };
        assert_eq!(
            rc,
            0,
            "EXT4_IOC_SHUTDOWN: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Unmounts (once this test's processes that used it are gone) and mounts it again, from a
    /// loop device of its own: another test's env that unshared its mount namespace meanwhile
    /// holds a copy of the shut-down mount, and the old device with it; a new device reads the
    /// image afresh, as a disk that comes back after a power cut.
    fn remount(&self) {
        self.wait_for_settle();
        let start = Instant::now();
        while !Command::new("umount")
            .arg(&self.at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the shut-down file system stayed busy for 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&self.image)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "{}",
            crate::common::describe("losetup --find --show", &out)
        );
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        sh(
            "mount the ext4 image again from a new loop device",
            Command::new("mount")
                .args(["-t", "ext4", &dev])
                .arg(&self.at),
        );
        self.loops.borrow_mut().push(dev);
    }
}

impl Ext4 {
    /// Waits for the processes that hold this file system in a mount namespace of their own
    /// (a helper of `dev __settle`, a session's flush in the background, or an env's processes
    /// still on their way out) to be gone: `umount` here does not see them, and mounting the
    /// image again would find the shut-down file system still there.
    fn wait_for_settle(&self) {
        let ours = fs::read_link("/proc/self/ns/mnt").unwrap();
        let point = format!(" {} ", self.at.display());
        let start = Instant::now();
        let holders = || -> Vec<String> {
            fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter(|p| {
                    fs::read_link(p.path().join("ns/mnt")).is_ok_and(|ns| ns != ours)
                        && fs::read_to_string(p.path().join("mountinfo"))
                            .is_ok_and(|m| m.contains(&point))
                        // This test's own (another test's env only holds a copy).
                        && String::from_utf8_lossy(
                            &fs::read(p.path().join("environ")).unwrap_or_default(),
                        )
                        .contains(&self.mark)
                })
                .map(|p| {
                    let cmd = fs::read(p.path().join("cmdline")).unwrap_or_default();
                    String::from_utf8_lossy(&cmd).replace('\0', " ")
                })
                .collect()
        };
        loop {
            let held = holders();
            if held.is_empty() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "still held 10 s after the file system was shut down by: {held:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        for dev in self.loops.borrow().iter() {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
    }
}

/// Four layers of distinct, incompressible-ish files (10 MiB each): a pull takes long enough to
/// be cut in the middle.
fn image(reg: &Registry, repo: &str) -> (Pushed, Vec<Layer>) {
    let mut layers = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for l in 0..4 {
        let mut entries = vec![Entry::Dir(format!("l{l}/"), 0o755)];
        for f in 0..40 {
            let mut data = Vec::with_capacity(256 << 10);
            while data.len() < 256 << 10 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.extend_from_slice(&x.to_le_bytes());
            }
            entries.push(Entry::File(format!("l{l}/f{f}"), data, 0o644));
        }
        layers.push(Layer::new(entries));
    }
    let pushed = ImageBuilder::new(layers.clone()).push(reg, repo, Some("v1"));
    (pushed, layers)
}

/// Busybox under the layers of [`image`]: one `dev run` can check the files.
fn runnable_image(reg: &Registry, repo: &str) -> (Pushed, Vec<Layer>) {
    let (_, data) = image(reg, &format!("{repo}-data"));
    let mut layers = crate::common::image::busybox_layers();
    layers.extend(data);
    let pushed = ImageBuilder::new(layers.clone()).push(reg, repo, Some("v1"));
    (pushed, layers)
}

/// A `dev run` of the image (busybox under the layers of [`image`]) reads the files of the
/// first and the last data layer as they were pushed.
fn assert_a_run_reads_whole_files(env: &Env, cwd: &Path, r: &str, layers: &[Layer]) {
    let out = env.ok_in(
        cwd,
        &["run", "--image", r, "--", "sha256sum", "/l3/f39", "/l0/f0"],
    );
    // Layer 0 is busybox; data layer l is layers[l + 1].
    let want = |l: usize, f: usize| match &layers[l + 1].entries[f + 1] {
        Entry::File(_, data, _) => crate::common::image::sha256(data),
        _ => unreachable!(),
    };
    let got = crate::common::stdout(&out);
    for (l, f) in [(3, 39), (0, 0)] {
        assert!(
            got.contains(&want(l, f)[7..]),
            "/l{l}/f{f} is torn after the power cut: {got}"
        );
    }
}

/// Every layer of the image is in the store, and every file in it holds what was pushed.
fn assert_layers_whole(env: &Env, pushed: &Pushed, layers: &[Layer]) {
    for ((_, diff_id), layer) in pushed.layers.iter().zip(layers) {
        let root = env.layer_root(diff_id);
        for e in &layer.entries {
            if let Entry::File(path, data, _) = e {
                let got = fs::read(root.join(path)).unwrap_or_default();
                assert!(
                    &got == data,
                    "layer {diff_id}: `{path}` holds {} bytes, not the {} pulled: a torn layer is in use",
                    got.len(),
                    data.len()
                );
            }
        }
    }
}

/// The meta.json of each layer in the store (of every mapping).
fn metas(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for map in fs::read_dir(store.join("layers-v1"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for l in fs::read_dir(map.path()).into_iter().flatten().flatten() {
            if l.file_name() != "tmp" && l.path().join("meta.json").is_file() {
                out.push(l.path().join("meta.json"));
            }
        }
    }
    out
}

fn meta_files(store: &Path) -> usize {
    metas(store).len()
}

/// How many of the store's layers are still marked unsynced (their flush not yet done).
/// Whether a `dev __settle` for one of these layers still runs.
fn settling(pushed: &Pushed) -> bool {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("__settle")
                && pushed
                    .layers
                    .iter()
                    .any(|(_, diff_id)| cmdline.contains(diff_id.as_str()))
        })
}

fn unsynced_layers(store: &Path) -> usize {
    metas(store)
        .iter()
        .filter(|m| {
            fs::read_to_string(m)
                .unwrap_or_default()
                .contains("\"unsynced\"")
        })
        .count()
}

e2e!(
    a_pull_cut_off_right_after_it_returns_is_fetched_again_not_run_torn,
    |env: Env| {
        let reg = Registry::start();
        let (pushed, layers) = runnable_image(&reg, "fixture/durable");
        let disk = Ext4::new(&env, 256);
        let r = format!("{}/fixture/durable:v1", reg.host());
        // `dev pull` does not wait for its layers to reach the disk (`dev __settle` flushes
        // them once it returned): the cut comes at once, before that can be done.
        env.ok(&["pull", &r]);
        disk.crash_and_remount();
        let outside = env.path("outside");
        assert_a_run_reads_whole_files(&env, &outside, &r, &layers);
        assert_layers_whole(&env, &pushed, &layers);
    }
);

// A pull that unpacked layers writes its record without flushing it (`dev __settle` does, with
// the layers): a power cut before that may leave the record renamed into place but empty or cut
// short. Such a record is no record: the next run pulls the image again and writes it whole.
e2e!(a_record_a_power_cut_tore_is_pulled_again, |env: Env| {
    let reg = Registry::start();
    let r = crate::common::push_busybox(&reg);
    env.ok(&["pull", &r]);
    let records: Vec<PathBuf> = fs::read_dir(env.store().join("images-v1"))
        .expect("images-v1")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(records.len(), 1, "one image record: {records:?}");
    let whole = fs::read(&records[0]).expect("the record");
    for torn in [&whole[..0], &whole[..whole.len() / 2]] {
        fs::write(&records[0], torn).expect("tear the record");
        let outside = env.path("outside");
        let out = env.ok_in(&outside, &["run", "--image", &r, "--", "echo", "ran"]);
        assert!(
            crate::common::stdout(&out).contains("ran"),
            "a torn record ({} bytes): {}",
            torn.len(),
            crate::common::stdout(&out)
        );
        let again = fs::read(&records[0]).expect("the record");
        assert!(
            serde_json::from_slice::<serde_json::Value>(&again).is_ok(),
            "the record is not whole again after the run pulled the image"
        );
    }
    let out = env.ok(&["images"]);
    assert!(
        crate::common::stdout(&out).contains("fixture/busybox"),
        "{}",
        crate::common::stdout(&out)
    );
});

e2e!(a_pull_is_durable_once_its_flush_is_done, |env: Env| {
    let reg = Registry::start();
    let (pushed, layers) = runnable_image(&reg, "fixture/flushed");
    let disk = Ext4::new(&env, 256);
    let r = format!("{}/fixture/flushed:v1", reg.host());
    env.ok(&["pull", &r]);
    // Done once `dev __settle` for these layers has exited: the last mark it clears is durable
    // only when its directory's fsync returns, a few ms after the mark is gone from the file.
    let start = Instant::now();
    while unsynced_layers(&env.store()) > 0 || settling(&pushed) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the pull's layers were not flushed within 20 s of its return"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    disk.crash_and_remount();
    assert_layers_whole(&env, &pushed, &layers);
    // Nothing is fetched again: with the registry gone the image still runs, from the store.
    drop(reg);
    let outside = env.path("outside");
    let out = env.ok_in(&outside, &["run", "--image", &r, "--", "cat", "/l2/f7"]);
    let want = match &layers[3].entries[8] {
        Entry::File(_, data, _) => data.clone(),
        _ => unreachable!(),
    };
    assert!(out.stdout == want, "/l2/f7 differs after the power cut");
});

e2e!(
    a_first_run_cut_off_right_after_it_returns_runs_on_whole_layers,
    |env: Env| {
        let reg = Registry::start();
        let (_, data) = image(&reg, "fixture/first-data");
        let mut layers = crate::common::image::busybox_layers();
        layers.extend(data);
        let pushed = ImageBuilder::new(layers.clone()).push(&reg, "fixture/first", Some("v1"));
        let disk = Ext4::new(&env, 256);
        let r = format!("{}/fixture/first:v1", reg.host());
        let outside = env.path("outside");
        // A session does not wait for its layers to reach the disk (`dev __settle` flushes
        // them meanwhile): the cut comes at once, before that can be done.
        env.ok_in(&outside, &["run", "--image", &r, "--", "true"]);
        disk.crash_and_remount();
        assert_a_run_reads_whole_files(&env, &outside, &r, &layers);
        assert_layers_whole(&env, &pushed, &layers);
    }
);

e2e!(
    a_layer_cut_off_in_the_middle_of_a_pull_is_fetched_again,
    |env: Env| {
        let reg = Registry::start();
        let (pushed, layers) = image(&reg, "fixture/cut");
        let disk = Ext4::new(&env, 256);
        let r = format!("{}/fixture/cut:v1", reg.host());
        let mut child = env
            .dev(&["pull", &r])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The cut comes as soon as one layer is marked complete, while the others still unpack.
        let start = Instant::now();
        while meta_files(&env.store()) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no layer was unpacked in 20 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        disk.shut_down();
        let _ = child.kill();
        let _ = child.wait();
        disk.remount();
        env.ok(&["pull", &r]);
        assert_layers_whole(&env, &pushed, &layers);
    }
);

e2e!(
    a_pull_that_fills_the_disk_gives_its_space_back,
    |env: Env| {
        let reg = Registry::start();
        let (_, _) = image(&reg, "fixture/huge");
        ImageBuilder::new(basic_layers()).push(&reg, "fixture/small", Some("v1"));
        // A 4 MiB file system for the store: the 40 MiB image cannot fit, the small one can.
        let data = env.path("data");
        sh(
            "mount a small tmpfs (the suite runs as root)",
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs"])
                .arg(&data),
        );
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            }
        }
        let _guard = Unmount(data.clone());
        env.chown_all(&data);
        let err = env.fails(&["pull", &format!("{}/fixture/huge:v1", reg.host())]);
        assert!(err.contains("No space left on device"), "{err}");
        env.ok(&["pull", &format!("{}/fixture/small:v1", reg.host())]);
    }
);

e2e!(a_commit_is_durable_once_it_returns, |env: Env| {
    let reg = Registry::start();
    let _disk = Ext4::new(&env, 128);
    crate::shell::busybox_project(&env, &reg, "");
    env.ok(&[
        "run",
        "--root",
        "--",
        "sh",
        "-c",
        "mkdir -p /opt/app && seq 1 100000 > /opt/app/v",
    ]);
    env.ok(&["commit", "--tag", "snap:1"]);
    _disk.crash_and_remount();
    let out = env.ok_in(
        &env.path("outside"),
        &["run", "--image", "snap:1", "--", "cat", "/opt/app/v"],
    );
    let want: String = (1..=100000).map(|n| format!("{n}\n")).collect();
    assert!(
        crate::common::stdout(&out) == want,
        "the committed file holds {} bytes after the power cut, not {}",
        out.stdout.len(),
        want.len()
    );
});
