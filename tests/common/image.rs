//! Fixture images built in test code: tar layers (including hostile ones, written header by
//! header), gzip / zstd / plain, Docker or OCI media types, multi-arch indexes, pushed through the
//! registry's HTTP API.

use std::io::Write;

use sha2::{Digest as _, Sha256};

use super::Registry;

pub fn sha256(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// One tar entry. Names are written raw, so hostile names go through untouched.
#[derive(Clone)]
pub enum Entry {
    Dir(String, u32),
    File(String, Vec<u8>, u32),
    Owned(String, Vec<u8>, u32, u64, u64),
    Symlink(String, String),
    Hardlink(String, String),
    Fifo(String),
    CharDev(String, u32, u32),
    /// PAX records, then the entry they describe.
    Pax(Vec<(String, Vec<u8>)>, Box<Entry>),
    /// A regular file whose header claims `header_size` but whose data is `data`.
    Sized(String, Vec<u8>, u64),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Plain,
}

#[derive(Clone)]
pub struct Layer {
    pub entries: Vec<Entry>,
    pub compression: Compression,
    /// A ready-made tar (e.g. of a debootstrap tree) instead of `entries`.
    pub raw: Option<std::sync::Arc<Vec<u8>>>,
}

fn raw_header(
    name: &str,
    kind: tar::EntryType,
    size: u64,
    mode: u32,
    link: Option<&str>,
) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().expect("ustar");
        let n = name.as_bytes();
        assert!(n.len() <= 100, "test entry name too long: {name}");
        u.name[..n.len()].copy_from_slice(n);
        if let Some(l) = link {
            let l = l.as_bytes();
            assert!(l.len() <= 100);
            u.linkname[..l.len()].copy_from_slice(l);
        }
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

fn append(b: &mut tar::Builder<Vec<u8>>, e: &Entry) {
    use tar::EntryType as T;
    match e {
        Entry::Dir(p, m) => b.append(&raw_header(p, T::Directory, 0, *m, None), &[][..]),
        Entry::File(p, data, m) => b.append(
            &raw_header(p, T::Regular, data.len() as u64, *m, None),
            &data[..],
        ),
        Entry::Owned(p, data, m, uid, gid) => {
            let mut h = raw_header(p, T::Regular, data.len() as u64, *m, None);
            h.set_uid(*uid);
            h.set_gid(*gid);
            h.set_cksum();
            b.append(&h, &data[..])
        }
        Entry::Symlink(p, t) => b.append(&raw_header(p, T::Symlink, 0, 0o777, Some(t)), &[][..]),
        Entry::Hardlink(p, t) => b.append(&raw_header(p, T::Link, 0, 0o644, Some(t)), &[][..]),
        Entry::Fifo(p) => b.append(&raw_header(p, T::Fifo, 0, 0o644, None), &[][..]),
        Entry::CharDev(p, maj, min) => {
            let mut h = raw_header(p, T::Char, 0, 0o644, None);
            h.set_device_major(*maj).expect("major");
            h.set_device_minor(*min).expect("minor");
            h.set_cksum();
            b.append(&h, &[][..])
        }
        Entry::Pax(records, inner) => {
            let mut body = Vec::new();
            for (k, v) in records {
                // "LEN key=value\n", where LEN counts itself.
                let rest = k.len() + v.len() + 3;
                let mut len = rest + 1;
                while format!("{len}").len() + rest != len {
                    len += 1;
                }
                body.extend_from_slice(format!("{len} {k}=").as_bytes());
                body.extend_from_slice(v);
                body.push(b'\n');
            }
            b.append(
                &raw_header("PaxHeaders/x", T::XHeader, body.len() as u64, 0o644, None),
                &body[..],
            )
            .map(|()| append(b, inner))
        }
        Entry::Sized(p, data, header_size) => {
            let h = raw_header(p, T::Regular, *header_size, 0o644, None);
            b.append(&h, &data[..])
        }
    }
    .expect("append tar entry");
}

impl Layer {
    pub fn new(entries: Vec<Entry>) -> Layer {
        Layer {
            entries,
            compression: Compression::Gzip,
            raw: None,
        }
    }

    pub fn from_tar(tar: Vec<u8>) -> Layer {
        Layer {
            entries: Vec::new(),
            compression: Compression::Gzip,
            raw: Some(std::sync::Arc::new(tar)),
        }
    }

    pub fn with(mut self, c: Compression) -> Layer {
        self.compression = c;
        self
    }

    pub fn tar(&self) -> Vec<u8> {
        if let Some(raw) = &self.raw {
            return raw.to_vec();
        }
        let mut b = tar::Builder::new(Vec::new());
        for e in &self.entries {
            append(&mut b, e);
        }
        b.into_inner().expect("finish tar")
    }

    /// (blob, diff id, media type suffix)
    pub fn blob(&self) -> (Vec<u8>, String) {
        let tar = self.tar();
        let diff_id = sha256(&tar);
        let blob = match self.compression {
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&tar).expect("gzip");
                enc.finish().expect("gzip")
            }
            Compression::Zstd => zstd::encode_all(&tar[..], 3).expect("zstd"),
            Compression::Plain => tar,
        };
        (blob, diff_id)
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Clone)]
pub struct ImageBuilder {
    pub layers: Vec<Layer>,
    pub docker: bool,
    pub arch: String,
    /// Replace the config's diff ids (to make a lying image).
    pub diff_ids: Option<Vec<String>>,
    /// Fields merged into the config's `config` (Env, User, WorkingDir, …).
    pub run_config: serde_json::Map<String, serde_json::Value>,
}

/// What was pushed.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub manifest: String,
    pub config: String,
    /// (blob digest, diff id)
    pub layers: Vec<(String, String)>,
    pub manifest_bytes: Vec<u8>,
}

impl ImageBuilder {
    pub fn new(layers: Vec<Layer>) -> ImageBuilder {
        ImageBuilder {
            layers,
            docker: false,
            arch: host_arch().to_string(),
            diff_ids: None,
            run_config: serde_json::Map::new(),
        }
    }

    /// Sets one field of the image config's `config` (e.g. `"User"`, `"WorkingDir"`).
    pub fn run_config(mut self, key: &str, value: serde_json::Value) -> Self {
        self.run_config.insert(key.to_string(), value);
        self
    }

    pub fn docker(mut self) -> Self {
        self.docker = true;
        self
    }

    pub fn arch(mut self, a: &str) -> Self {
        self.arch = a.to_string();
        self
    }

    /// Pushes blobs and the manifest (under `tag`, if given); returns the digests.
    pub fn push(&self, reg: &Registry, repo: &str, tag: Option<&str>) -> Pushed {
        let mut layers = Vec::new();
        let mut descs = Vec::new();
        for l in &self.layers {
            let (blob, diff_id) = l.blob();
            let digest = push_blob(reg, repo, &blob);
            let mt = match (self.docker, l.compression) {
                (true, _) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
                (false, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
                (false, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
                (false, Compression::Plain) => "application/vnd.oci.image.layer.v1.tar",
            };
            descs.push(serde_json::json!({"mediaType": mt, "digest": digest, "size": blob.len()}));
            layers.push((digest, diff_id));
        }
        let diff_ids = self
            .diff_ids
            .clone()
            .unwrap_or_else(|| layers.iter().map(|l| l.1.clone()).collect());
        let mut run = serde_json::json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]});
        for (k, v) in &self.run_config {
            run[k] = v.clone();
        }
        let config = serde_json::json!({
            "architecture": self.arch, "os": "linux", "created": "2024-01-02T03:04:05Z",
            "config": run,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config_bytes = serde_json::to_vec(&config).expect("json");
        let config_digest = push_blob(reg, repo, &config_bytes);
        let (mt, cmt) = if self.docker {
            (
                DOCKER_MANIFEST,
                "application/vnd.docker.container.image.v1+json",
            )
        } else {
            (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": mt,
            "config": {"mediaType": cmt, "digest": config_digest, "size": config_bytes.len()},
            "layers": descs,
        });
        let bytes = serde_json::to_vec(&manifest).expect("json");
        let digest = sha256(&bytes);
        put_manifest(reg, repo, tag.unwrap_or(&digest), mt, &bytes);
        Pushed {
            manifest: digest,
            config: config_digest,
            layers,
            manifest_bytes: bytes,
        }
    }
}

/// Pushes an index of `(platform, image)`; returns the index digest and what each image pushed.
pub fn push_index(
    reg: &Registry,
    repo: &str,
    tag: &str,
    docker: bool,
    entries: &[(&str, &str, ImageBuilder)],
) -> (String, Vec<Pushed>) {
    let mut pushed = Vec::new();
    let mut manifests = Vec::new();
    for (os, arch, img) in entries {
        let p = img.push(reg, repo, None);
        let mt = if docker {
            DOCKER_MANIFEST
        } else {
            OCI_MANIFEST
        };
        manifests.push(serde_json::json!({
            "mediaType": mt, "digest": p.manifest, "size": p.manifest_bytes.len(),
            "platform": {"os": os, "architecture": arch},
        }));
        pushed.push(p);
    }
    let mt = if docker { DOCKER_LIST } else { OCI_INDEX };
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": mt, "manifests": manifests});
    let bytes = serde_json::to_vec(&index).expect("json");
    put_manifest(reg, repo, tag, mt, &bytes);
    (sha256(&bytes), pushed)
}

pub fn push_blob(reg: &Registry, repo: &str, blob: &[u8]) -> String {
    let digest = sha256(blob);
    let resp = ureq::post(&format!("{}/v2/{repo}/blobs/uploads/", reg.url()))
        .call()
        .expect("start upload");
    let loc = resp
        .header("location")
        .expect("upload location")
        .to_string();
    let loc = if loc.starts_with('/') {
        format!("{}{loc}", reg.url())
    } else {
        loc
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    ureq::put(&format!("{loc}{sep}digest={digest}"))
        .set("Content-Type", "application/octet-stream")
        .send_bytes(blob)
        .expect("finish upload");
    digest
}

pub fn put_manifest(reg: &Registry, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
    ureq::put(&format!("{}/v2/{repo}/manifests/{reference}", reg.url()))
        .set("Content-Type", media_type)
        .send_bytes(bytes)
        .expect("put manifest");
}

/// A small, ordinary image: a busybox-like tree.
pub fn basic_layers() -> Vec<Layer> {
    vec![
        Layer::new(vec![
            Entry::Dir("etc/".into(), 0o755),
            Entry::File("etc/os-release".into(), b"ID=fixture\n".to_vec(), 0o644),
            Entry::Dir("usr/".into(), 0o755),
            Entry::Dir("usr/bin/".into(), 0o755),
            Entry::File(
                "usr/bin/tool".into(),
                b"#!/bin/sh\necho tool\n".to_vec(),
                0o755,
            ),
            Entry::Symlink("bin".into(), "usr/bin".into()),
            Entry::Hardlink("usr/bin/tool2".into(), "usr/bin/tool".into()),
            Entry::Dir("var/".into(), 0o755),
            Entry::Dir("var/cache/".into(), 0o755),
            Entry::File("var/cache/old".into(), b"old".to_vec(), 0o644),
            Entry::Dir("opt/".into(), 0o755),
            Entry::File("opt/a".into(), b"a".to_vec(), 0o644),
        ]),
        Layer::new(vec![
            Entry::File("etc/.wh.os-release".into(), vec![], 0o644),
            Entry::Dir("opt/".into(), 0o755),
            Entry::File("opt/.wh..wh..opq".into(), vec![], 0o644),
            Entry::File("opt/b".into(), b"b".to_vec(), 0o644),
            Entry::Owned(
                "var/cache/apt-owned".into(),
                b"x".to_vec(),
                0o640,
                100,
                65534,
            ),
            Entry::Owned("usr/bin/suid".into(), b"#!/bin/sh\n".to_vec(), 0o4755, 0, 0),
        ])
        .with(Compression::Zstd),
    ]
}

/// A busybox image: the static busybox of the host (Debian's busybox-static) with every applet
/// linked in /bin, a minimal /etc, and nothing else.
pub fn busybox_layers() -> Vec<Layer> {
    let bin = std::fs::read("/bin/busybox").expect(
        "/bin/busybox is missing; run `./install.sh --dev` (Debian package busybox-static)",
    );
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut entries = vec![
        Entry::Dir("bin/".into(), 0o755),
        Entry::File("bin/busybox".into(), bin, 0o755),
        Entry::Dir("etc/".into(), 0o755),
        Entry::File(
            "etc/passwd".into(),
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
            0o644,
        ),
        Entry::File(
            "etc/group".into(),
            b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
            0o644,
        ),
        Entry::File("etc/os-release".into(), b"ID=busybox\n".to_vec(), 0o644),
        Entry::Dir("root/".into(), 0o700),
        Entry::Dir("tmp/".into(), 0o1777),
        Entry::Dir("usr/".into(), 0o755),
        Entry::Dir("usr/bin/".into(), 0o755),
    ];
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            entries.push(Entry::Symlink(format!("bin/{applet}"), "busybox".into()));
        }
    }
    entries.push(Entry::Symlink(
        "usr/bin/env".into(),
        "../../bin/busybox".into(),
    ));
    vec![Layer::new(entries)]
}

/// A real Debian bookworm minbase tree (debootstrap from Debian's package mirror, its default), as one layer. Built
/// once and cached in /var/cache/dev-tests, so later runs of the suite skip the bootstrap.
pub fn debian_minbase_layer() -> Layer {
    use std::process::Command;
    let dir = std::path::Path::new("/var/cache/dev-tests");
    std::fs::create_dir_all(dir).expect("create /var/cache/dev-tests");
    let tar = dir.join("minbase.tar");
    let lock = std::fs::File::create(dir.join("lock")).expect("lock file");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock /var/cache/dev-tests");
    if !tar.exists() {
        let tree = dir.join("minbase.tmp");
        let _ = std::fs::remove_dir_all(&tree);
        let out = Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&tree)
            .output()
            .expect("debootstrap is missing; run `./install.sh --dev`");
        assert!(
            out.status.success(),
            "debootstrap failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Device nodes and apt's caches do not belong in an image.
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd {} && rm -rf dev/* var/cache/apt/*.bin var/lib/apt/lists/* proc/* sys/* && tar --numeric-owner --xattrs -cf {}.tmp . && mv {}.tmp {}",
                tree.display(),
                tar.display(),
                tar.display(),
                tar.display()
            ))
            .status()
            .expect("tar");
        assert!(st.success(), "packing the minbase tree failed");
        let _ = std::fs::remove_dir_all(&tree);
    }
    Layer::from_tar(std::fs::read(&tar).expect("read minbase.tar"))
}
