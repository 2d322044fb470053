//! The host's GPU, for `gpu = "auto" | "nvidia"` / `--gpu`: NVIDIA's device nodes, the driver's
//! user-space libraries (found in the host's `ldconfig -p` by the names NVIDIA's container
//! toolkit uses, of the host's ELF class) bound read-only into one directory with an
//! `ld.so.conf.d` drop-in, and `nvidia-smi` — or, where the host has a CDI spec for
//! `nvidia.com/gpu`, what that spec says (see `cdi`); AMD and Intel: `/dev/dri` and `/dev/kfd`.
//! No root and no setup on the host. Reads the host's `/dev` and driver files; writes nothing.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Result;

use super::{cdi, under, Facts, GpuMode, HostFile, Opening};
use crate::sandbox::plan::BindKind;
use crate::ui::UserError;

pub use crate::sandbox::plan::{
    GPU_DROP_IN_INSIDE as DROP_IN_INSIDE, GPU_LIB_INSIDE as LIB_INSIDE,
};
/// Where `nvidia-smi` is bound inside (appended to PATH).
pub const BIN_INSIDE: &str = "/run/dev/gpu/bin";

/// The user-space libraries of NVIDIA's driver a CUDA program needs: libnvidia-container's
/// `utility_libs` and `compute_libs` (the toolkit's default capabilities, compute and utility).
pub const NVIDIA_LIBS: [&str; 15] = [
    "libnvidia-ml.so",
    "libnvidia-cfg.so",
    "libnvidia-nscq.so",
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-opencl.so",
    "libnvidia-gpucomp.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-fatbinaryloader.so",
    "libnvidia-allocator.so",
    "libnvidia-compiler.so",
    "libnvidia-pkcs11.so",
    "libnvidia-pkcs11-openssl3.so",
    "libnvidia-nvvm.so",
    "libnvidia-tileiras.so",
];

/// The device nodes of NVIDIA's driver besides `nvidia<N>`.
const NVIDIA_NODES: [&str; 4] = [
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];

/// The largest `ldconfig -p` output read.
const MAX_LDCACHE: u64 = 8 << 20;

pub fn is_device_node(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| {
        let t = m.file_type();
        t.is_char_device() || t.is_block_device()
    })
}

/// NVIDIA's device nodes under `root`'s `/dev`, sorted.
pub fn nvidia_nodes(root: &Path) -> Vec<String> {
    let dev = under(root, Path::new("/dev"));
    let mut nodes: Vec<String> = std::fs::read_dir(&dev)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            NVIDIA_NODES.contains(&n.as_str())
                || n.strip_prefix("nvidia")
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|n| is_device_node(&dev.join(n)))
        .collect();
    nodes.sort();
    nodes
}

/// The flag `ldconfig -p` shows for libraries of this build's ELF class and machine.
fn host_class() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "aarch64" => "AArch64",
        _ => "64bit",
    }
}

/// The driver's libraries in an `ldconfig -p` listing: (name, path), the first of each name,
/// of `class` only.
pub fn nvidia_libraries(ldcache: &str, class: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for line in ldcache.lines().map(str::trim) {
        let Some((left, path)) = line.split_once(" => ") else {
            continue;
        };
        let Some((name, flags)) = left.split_once(" (") else {
            continue;
        };
        let wanted = NVIDIA_LIBS.iter().any(|l| {
            name.strip_prefix(l)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        });
        let of_class = flags
            .trim_end_matches(')')
            .split(',')
            .any(|f| f.trim() == class);
        if wanted && of_class && !name.contains('/') && !out.iter().any(|(n, _)| n == name) {
            if let Some(p) = super::plain_absolute(path.trim()) {
                out.push((name.to_string(), p));
            }
        }
    }
    out
}

/// `ldconfig -p` of the host (of `root`'s cache under a test root), bounded.
pub fn ldconfig_p(root: &Path) -> Option<String> {
    let program = ["/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .into_iter()
        .find(|p| Path::new(p).is_file())?;
    let mut cmd = Command::new(program);
    cmd.arg("-p");
    if root != Path::new("/") {
        cmd.arg("-C")
            .arg(under(root, Path::new("/etc/ld.so.cache")));
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut text = Vec::new();
    use std::io::Read;
    let read = child
        .stdout
        .take()
        .map(|out| out.take(MAX_LDCACHE).read_to_end(&mut text));
    // (Past the cap the pipe is closed: ldconfig ends on SIGPIPE.)
    let _ = child.wait();
    read?.ok()?;
    Some(String::from_utf8_lossy(&text).into_owned())
}

/// Adds the GPU `mode` asks for to `out`.
pub fn discover(mode: GpuMode, f: &Facts, out: &mut Opening) -> Result<()> {
    if let Some(spec) = cdi::find(f.root, &mut out.notes)? {
        cdi::apply(&spec, f, out)?;
        return Ok(());
    }
    let nodes = nvidia_nodes(f.root);
    if !nodes.is_empty() {
        nvidia(&nodes, f, out);
        return Ok(());
    }
    if mode == GpuMode::Nvidia {
        return Err(UserError::with_hint(
            "--gpu=nvidia: this host has no NVIDIA device nodes (/dev/nvidiactl, /dev/nvidia0) and no CDI spec for nvidia.com/gpu",
            "load NVIDIA's driver (`nvidia-smi` on the host shows it), or use `--gpu=auto` for /dev/dri",
        ));
    }
    let before = out.opened.len();
    let dri = under(f.root, Path::new("/dev/dri"));
    if dri.is_dir() {
        out.bind(dri, "/dev/dri", false, BindKind::Dir);
        out.opened.push("/dev/dri".into());
    }
    let kfd = under(f.root, Path::new("/dev/kfd"));
    if is_device_node(&kfd) {
        out.bind(kfd, "/dev/kfd", false, BindKind::File);
        out.opened.push("/dev/kfd".into());
    }
    if out.opened.len() == before {
        out.notes.push(
            "--gpu=auto: this host has no GPU device (no /dev/nvidia*, /dev/dri or /dev/kfd); the env starts without one".into(),
        );
    }
    Ok(())
}

/// NVIDIA's driver without a CDI spec: its nodes, libraries and `nvidia-smi`.
fn nvidia(nodes: &[String], f: &Facts, out: &mut Opening) {
    let dev = under(f.root, Path::new("/dev"));
    for n in nodes {
        out.bind(
            dev.join(n),
            Path::new("/dev").join(n),
            false,
            BindKind::File,
        );
    }
    let libs = nvidia_libraries(f.ldcache.unwrap_or_default(), host_class());
    let mut bound = 0;
    for (name, path) in &libs {
        let Some(source) = std::fs::canonicalize(under(f.root, path))
            .ok()
            .filter(|p| p.is_file())
        else {
            continue;
        };
        out.bind(
            source,
            Path::new(LIB_INSIDE).join(name),
            true,
            BindKind::File,
        );
        bound += 1;
    }
    if bound > 0 {
        let drop_in = f.runtime.join("ld.so.conf");
        out.files.push(HostFile::File {
            path: drop_in.clone(),
            bytes: format!("{LIB_INSIDE}\n").into_bytes(),
        });
        out.bind(drop_in, DROP_IN_INSIDE, true, BindKind::File);
        out.ldconfig = true;
    } else {
        out.notes.push(
            "--gpu: ldconfig -p lists none of NVIDIA's driver libraries (libcuda, libnvidia-ml, …); only the device nodes are opened".into(),
        );
    }
    let smi = ["/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .filter_map(|d| std::fs::canonicalize(under(f.root, &Path::new(d).join("nvidia-smi"))).ok())
        .find(|p| p.is_file());
    if let Some(smi) = smi {
        out.bind(
            smi,
            Path::new(BIN_INSIDE).join("nvidia-smi"),
            true,
            BindKind::File,
        );
        out.path.push(BIN_INSIDE.into());
    }
    out.opened.push(format!(
        "NVIDIA ({} device nodes, {bound} libraries{})",
        nodes.len(),
        if out.path.iter().any(|p| p == BIN_INSIDE) {
            ", nvidia-smi"
        } else {
            ""
        }
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const LDCACHE: &str = "1234 libs found in cache `/etc/ld.so.cache'
\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1
\tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1
\tlibnvidia-ml.so.1 (libc6) => /usr/lib/i386-linux-gnu/libnvidia-ml.so.1
\tlibnvidia-mlx.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-mlx.so.1
\tlibcuda.so.1 (libc6,x86-64, OS ABI: Linux 3.2.0) => /usr/lib/x86_64-linux-gnu/libcuda.so.1
\tlibcuda.so.1 (libc6,x86-64) => /usr/local/lib/libcuda.so.1
\tlibcuda.so (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so
\tlibnvidia-ptxjitcompiler.so.1 (libc6,x86-64) => ../evil/libnvidia-ptxjitcompiler.so.1
Cache generated by: ldconfig (GNU libc) stable release version 2.36
";

    #[test]
    fn libraries_by_the_toolkits_names_of_the_hosts_class() {
        let libs = nvidia_libraries(LDCACHE, "x86-64");
        let names: Vec<&str> = libs.iter().map(|(n, _)| n.as_str()).collect();
        // Not libz, not libnvidia-mlx (another name), not the i386 one, the first libcuda.so.1
        // only, not a relative path.
        assert_eq!(names, ["libnvidia-ml.so.1", "libcuda.so.1", "libcuda.so"]);
        assert_eq!(
            libs[1].1,
            Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so.1")
        );
        assert!(nvidia_libraries(LDCACHE, "AArch64").is_empty());
    }

    #[test]
    fn no_gpu_is_a_note_for_auto_and_an_error_for_nvidia() {
        let t = tempfile::tempdir().expect("tempdir");
        let vars = BTreeMap::new();
        let f = Facts {
            vars: &vars,
            root: t.path(),
            runtime: t.path(),
            uid: 1000,
            ldcache: None,
        };
        let mut out = Opening::default();
        discover(GpuMode::Auto, &f, &mut out).expect("auto");
        assert!(out.binds.is_empty());
        assert!(out.notes[0].contains("no GPU device"), "{:?}", out.notes);
        let err = discover(GpuMode::Nvidia, &f, &mut Opening::default()).expect_err("nvidia");
        assert!(err.to_string().contains("no NVIDIA device nodes"));
        // /dev/dri alone: AMD or Intel.
        std::fs::create_dir_all(t.path().join("dev/dri")).expect("mkdir");
        let mut out = Opening::default();
        discover(GpuMode::Auto, &f, &mut out).expect("auto");
        assert_eq!(out.opened, ["/dev/dri"]);
    }
}
