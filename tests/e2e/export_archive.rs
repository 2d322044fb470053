//! Images leaving and entering without a registry, against real clients: `dev save` output
//! loaded and run by `podman`, `podman save` output (both formats) loaded and run by `dev`,
//! hostile and damaged archives refused by `dev load`, and `dev kube` output run by
//! `podman kube play`. Podman runs rootless as the test user, with its storage and runtime
//! state in the test's directory, and reaches nothing but the test's registry.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use crate::common::image::{busybox_layers, sha256};
use crate::common::{
    describe, snapshot, stderr, stdout, Entry, Env, ImageBuilder, Layer, Registry,
};
use crate::e2e;

/// Rootless podman as the test user (runc, cgroupfs, host network, storage in the test dir).
/// Its registries.conf is under `$HOME/.config`, which the test leaves empty: the test's
/// registry is reached with `--tls-verify=false`.
struct Podman<'a> {
    env: &'a Env,
}

impl<'a> Podman<'a> {
    fn new(env: &'a Env) -> Podman<'a> {
        let dir = env.path("config/containers");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("containers.conf"),
            "[containers]\nnetns = \"host\"\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                env.path("podman/storage").display(),
                env.path("run/containers").display()
            ),
        )
        .unwrap();
        fs::create_dir_all(env.path("podman")).unwrap();
        env.chown_all(&env.path("config"));
        env.chown_all(&env.path("podman"));
        Podman { env }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.env
            .as_user(Path::new("/usr/bin/podman"), args)
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{}",
            describe(&format!("podman {}", args.join(" ")), &out)
        );
        stdout(&out)
    }
}

/// Rootless podman leaves a pause process holding its user namespace (and containers under
/// conmon): they go with the test.
impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["pod", "rm", "-af", "-t", "0"]);
        let _ = self.run(&["rm", "-af", "-t", "0"]);
        if let Some(pid) = fs::read_to_string(self.env.path("run/libpod/tmp/pause.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

const MARKER: &str = "made for the archive tests\n";

/// A two-layer image: busybox (gzip) and a plain layer with a marker file, with an Env value.
fn push_image(reg: &Registry) -> String {
    let mut layers = busybox_layers();
    layers.push(
        Layer::new(vec![
            Entry::Dir("etc/".into(), 0o755),
            Entry::File("etc/marker".into(), MARKER.as_bytes().to_vec(), 0o644),
        ])
        .with(crate::common::image::Compression::Plain),
    );
    ImageBuilder::new(layers)
        .run_config(
            "Env",
            serde_json::json!(["PATH=/bin:/usr/bin", "FROM_IMAGE=image value"]),
        )
        .push(reg, "fixture/saved", Some("1"));
    format!("{}/fixture/saved:1", reg.host())
}

e2e!(podman_loads_and_runs_dev_save_output, |env: Env| {
    let reg = Registry::start();
    let image = push_image(&reg);
    env.ok(&["pull", &image]);
    let podman = Podman::new(&env);
    for format in ["oci", "docker"] {
        let file = env.path(&format!("project/saved-{format}.tar"));
        let file = file.to_str().unwrap();
        env.ok(&["save", "-o", file, "--format", format, &image]);
        let loaded = podman.ok(&["load", "-i", file]);
        assert!(loaded.contains(&image), "podman load ({format}): {loaded}");
        let ran = podman.ok(&[
            "run",
            "--rm",
            &image,
            "/bin/sh",
            "-c",
            "cat /etc/marker; echo \"$FROM_IMAGE\"",
        ]);
        assert_eq!(ran, format!("{MARKER}image value\n"), "{format}");
        podman.ok(&["rmi", "-f", &image]);
    }
});

e2e!(dev_loads_and_runs_podman_save_output, |env: Env| {
    let reg = Registry::start();
    let image = push_image(&reg);
    let podman = Podman::new(&env);
    // The test registry speaks plain HTTP.
    podman.ok(&["pull", "-q", "--tls-verify=false", &image]);
    for format in ["oci-archive", "docker-archive"] {
        let file = env.path(&format!("project/{format}.tar"));
        podman.ok(&[
            "save",
            "--format",
            format,
            "-o",
            file.to_str().unwrap(),
            &image,
        ]);
    }
    // From here on, the registry is gone: what dev runs comes from the archives.
    drop(reg);
    for format in ["oci-archive", "docker-archive"] {
        let file = env.path(&format!("project/{format}.tar"));
        let out = env.ok(&["load", "-i", file.to_str().unwrap()]);
        assert_eq!(stdout(&out), format!("Loaded image: {image}\n"), "{format}");
        let ran = env.ok(&[
            "run",
            "--image",
            &image,
            "--",
            "/bin/sh",
            "-c",
            "cat /etc/marker; echo \"$FROM_IMAGE\"",
        ]);
        assert_eq!(stdout(&ran), format!("{MARKER}image value\n"), "{format}");
        // The loaded image's blobs are kept: it saves again with no registry to fetch from.
        let again = env.path(&format!("project/{format}-again.tar"));
        env.ok(&["save", "-o", again.to_str().unwrap(), &image]);
        env.ok(&["rmi", &image]);
    }
    // Nothing of the archives is left behind in the store's temp dir.
    let tmp: Vec<_> = fs::read_dir(env.store().join("blobs-v1/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(tmp.is_empty(), "left in the store: {tmp:?}");
});

/// An OCI image layout tar of `layers` naming the image `localhost/archived:1`; `tamper` may
/// change each entry's bytes (by its name) as it is written.
fn oci_archive(layers: &[Layer], tamper: impl Fn(&str, Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let (blob, diff_id) = l.blob();
        let digest = sha256(&blob);
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": blob.len()}));
        diff_ids.push(diff_id);
        blobs.push((digest, blob));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": crate::common::image::host_arch(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let manifest_digest = sha256(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "localhost/archived:1"}}],
    }))
    .unwrap();
    blobs.push((config_digest, config));
    blobs.push((manifest_digest, manifest));
    let mut files = vec![
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_string(), index),
    ];
    for (d, b) in blobs {
        files.push((
            format!("blobs/sha256/{}", d.trim_start_matches("sha256:")),
            b,
        ));
    }
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let bytes = tamper(&name, bytes);
        let mut h = tar::Header::new_ustar();
        h.set_path(&name).unwrap();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, &bytes[..]).unwrap();
    }
    tar.into_inner().unwrap()
}

/// A docker-archive of `layers` (uncompressed, named by diff id) tagged `localhost/archived:1`.
fn docker_archive(layers: &[Layer]) -> Vec<u8> {
    let tars: Vec<Vec<u8>> = layers.iter().map(Layer::tar).collect();
    let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": crate::common::image::host_arch(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    let config_name = format!("{}.json", hex(&sha256(&config)));
    let names: Vec<String> = diff_ids.iter().map(|d| format!("{}.tar", hex(d))).collect();
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": config_name, "RepoTags": ["localhost/archived:1"], "Layers": names}
    ]))
    .unwrap();
    let mut files = vec![(config_name, config)];
    files.extend(names.into_iter().zip(tars));
    files.push(("manifest.json".into(), manifest));
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(&name).unwrap();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, &bytes[..]).unwrap();
    }
    tar.into_inner().unwrap()
}

/// Loads `archive` as the test user; returns (succeeded, stderr). Nothing outside the store
/// may change, and no layer of a refused archive is kept.
fn load_archive(env: &Env, archive: &[u8]) -> (bool, String) {
    let file = env.path("project/image.tar");
    fs::write(&file, archive).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let outside = env.path("outside");
    fs::write(outside.join("sentinel"), "keep\n").unwrap();
    env.chown_all(&outside);
    let before = snapshot(env.dir.path(), &env.store());
    let out = env.run(&["load", "-i", file.to_str().unwrap()]);
    assert_eq!(
        before,
        snapshot(env.dir.path(), &env.store()),
        "something outside the store changed"
    );
    let tmp: Vec<_> = fs::read_dir(env.store().join("blobs-v1/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(tmp.is_empty(), "left in the store: {tmp:?}");
    (out.status.success(), stderr(&out))
}

fn refused(env: &Env, archive: &[u8], what: &str) {
    let (ok, err) = load_archive(env, archive);
    assert!(!ok, "the archive was accepted");
    assert!(err.contains(what), "the error should say `{what}`: {err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(
        env.layer_dirs().is_empty(),
        "a refused archive's layer was kept"
    );
    assert!(env
        .fails(&["inspect", "localhost/archived:1"])
        .contains("error:"));
}

e2e!(load_refuses_hostile_layers_as_pull_does, |env: Env| {
    let out = env.path("outside").display().to_string();
    let escape = format!("../../../../../../../..{out}/pwned");
    refused(
        &env,
        &oci_archive(
            &[Layer::new(vec![Entry::File(escape, b"x".to_vec(), 0o644)])],
            |_, b| b,
        ),
        "points outside the layer",
    );
    refused(
        &env,
        &oci_archive(
            &[Layer::new(vec![
                Entry::Symlink("link".into(), out.clone()),
                Entry::File("link/pwned".into(), b"x".to_vec(), 0o644),
            ])],
            |_, b| b,
        ),
        "through the symlink",
    );
    refused(
        &env,
        &docker_archive(&[Layer::new(vec![Entry::Hardlink(
            "passwd".into(),
            format!("../../../../../../../..{out}/sentinel"),
        )])]),
        "hard link",
    );
    let (ok, err) = load_archive(&env, &docker_archive(&busybox_layers()));
    assert!(ok, "{err}");
    env.ok(&["rmi", "localhost/archived:1"]);
    env.ok(&["system", "prune"]);
    // The same archive, harmless (and gzipped, as `podman save | gzip` makes it), loads and
    // runs: the refusals above are about the layers.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &oci_archive(&busybox_layers(), |_, b| b)).unwrap();
    let (ok, err) = load_archive(&env, &gz.finish().unwrap());
    assert!(ok, "{err}");
    let ran = env.ok(&[
        "run",
        "--image",
        "localhost/archived:1",
        "--",
        "/bin/cat",
        "/etc/os-release",
    ]);
    assert_eq!(stdout(&ran), "ID=busybox\n");
});

e2e!(load_refuses_damaged_archives_naming_what, |env: Env| {
    let layers = busybox_layers();
    // A blob whose bytes are not those its name says: refused, naming the entry.
    let archive = oci_archive(&layers, |name, mut b| {
        if name.starts_with("blobs/") && b.len() > 100_000 {
            let i = b.len() / 2;
            b[i] ^= 0xff;
        }
        b
    });
    let (blob, _) = layers[0].blob();
    let layer_entry = format!(
        "blobs/sha256/{}",
        sha256(&blob).trim_start_matches("sha256:")
    );
    refused(
        &env,
        &archive,
        &format!("entry `{layer_entry}` does not match its digest"),
    );
    // A name that climbs out of the archive.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().unwrap();
        u.name[..13].copy_from_slice(b"../index.json");
    }
    h.set_size(0);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append(&h, &[][..]).unwrap();
    refused(
        &env,
        &tar.into_inner().unwrap(),
        "points outside the archive",
    );
    // Not an image archive at all.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("README").unwrap();
    h.set_size(2);
    h.set_cksum();
    tar.append(&h, &b"hi"[..]).unwrap();
    refused(&env, &tar.into_inner().unwrap(), "is not an image archive");
});

e2e!(podman_kube_play_runs_dev_kube_output, |env: Env| {
    let reg = Registry::start();
    let image = push_image(&reg);
    env.write_dev_toml(&format!(
        "image = \"{image}\"\n[env]\nGREETING = \"hello: from \\\"dev.toml\\\" # not a comment\"\n"
    ));
    fs::write(env.path("project/notes.txt"), "project file\n").unwrap();
    env.chown_all(&env.path("project"));
    env.ok(&["lock"]);
    let yaml = stdout(&env.ok(&["kube"]));
    assert!(
        yaml.contains("@sha256:"),
        "the image is pinned as dev.lock pins it: {yaml}"
    );
    let file = env.path("project/pod.yaml");
    fs::write(&file, &yaml).unwrap();
    env.chown_all(&env.path("project"));
    let podman = Podman::new(&env);
    podman.ok(&["kube", "play", "--tls-verify=false", file.to_str().unwrap()]);
    let seen = podman.ok(&[
        "exec",
        "project-dev-dev",
        "/bin/sh",
        "-c",
        "pwd; cat notes.txt; echo \"$GREETING\"; echo \"$FROM_IMAGE\"",
    ]);
    assert_eq!(
        seen,
        format!(
            "{}\nproject file\nhello: from \"dev.toml\" # not a comment\nimage value\n",
            env.path("project").display()
        )
    );
});

e2e!(
    podman_runs_the_saved_project_build_and_its_pod,
    |env: Env| {
        let reg = Registry::start();
        let image = push_image(&reg);
        env.write_dev_toml(&format!(
            "image = \"{image}\"\n[env]\nGREETING = \"built with [env]\"\n"
        ));
        fs::write(env.path("project/notes.txt"), "project file\n").unwrap();
        env.chown_all(&env.path("project"));
        env.ok(&["build"]);
        // No REF: the project's build (`localhost/project:latest`), [env] in its config.
        let file = env.path("project/build.tar");
        env.ok(&["save", "-o", file.to_str().unwrap()]);
        let podman = Podman::new(&env);
        let loaded = podman.ok(&["load", "-i", file.to_str().unwrap()]);
        assert!(loaded.contains("localhost/project:latest"), "{loaded}");
        let ran = podman.ok(&[
            "run",
            "--rm",
            "localhost/project:latest",
            "/bin/sh",
            "-c",
            "cat /etc/marker; echo \"$GREETING\"",
        ]);
        assert_eq!(ran, format!("{MARKER}built with [env]\n"));
        // And its pod, from the image podman now has.
        let yaml = stdout(&env.ok(&["kube"]));
        assert!(
            yaml.contains("image: \"localhost/project:latest\""),
            "{yaml}"
        );
        let pod = env.path("project/pod.yaml");
        fs::write(&pod, &yaml).unwrap();
        env.chown_all(&env.path("project"));
        podman.ok(&["kube", "play", pod.to_str().unwrap()]);
        let seen = podman.ok(&[
            "exec",
            "project-dev-dev",
            "/bin/sh",
            "-c",
            "cat notes.txt; echo \"$GREETING\"",
        ]);
        assert_eq!(seen, "project file\nbuilt with [env]\n");
    }
);

// An archive's entry names reach the error on the user's terminal: control characters in
// them are shown escaped, so a hostile archive cannot retitle, clear or rewrite the terminal.
e2e!(
    load_error_escapes_control_characters_of_entry_names,
    |env: Env| {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        let name = b"\x1b]0;owned\x07\x1b[2J/../index.json";
        {
            let u = h.as_ustar_mut().unwrap();
            u.name[..name.len()].copy_from_slice(name);
        }
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, &[][..]).unwrap();
        let (ok, err) = load_archive(&env, &tar.into_inner().unwrap());
        assert!(!ok, "the archive was accepted");
        assert!(err.contains("points outside the archive"), "{err}");
        assert!(
            !err.contains('\x1b') && !err.contains('\x07'),
            "control characters reached the terminal: {err:?}"
        );
        assert!(err.contains("\\u{1b}[2J"), "not shown escaped: {err:?}");
    }
);
