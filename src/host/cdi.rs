//! CDI (the Container Device Interface) specs for `nvidia.com/gpu` in the host's `/etc/cdi`
//! and `/var/run/cdi`: read bounded, validated, and turned into binds and variables — device
//! nodes, mounts, env, and the `update-ldcache` hook replayed by dev (a drop-in and `ldconfig`
//! inside). No hook of the spec is ever run. JSON specs only: dev has no YAML parser.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;

use super::{plain_absolute, read_bounded, under, Facts, HostFile, Opening};
use crate::sandbox::plan::BindKind;
use crate::ui::UserError;

/// The kind dev looks for.
pub const KIND: &str = "nvidia.com/gpu";
const DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];
/// The largest spec read, and the most files looked at in a directory.
const MAX_SPEC: u64 = 4 << 20;
const MAX_FILES: usize = 64;
/// The most edits one spec may make.
const MAX_EDITS: usize = 4096;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub container_edits: Edits,
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub name: String,
    #[serde(default)]
    pub container_edits: Edits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Edits {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub hooks: Vec<Hook>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    pub path: String,
    #[serde(default)]
    pub host_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    #[serde(default)]
    pub args: Vec<String>,
}

/// The first JSON spec of kind `nvidia.com/gpu` under `root`'s CDI directories (files in name
/// order, `/etc/cdi` first). A YAML one is named in a note.
pub fn find(root: &Path, notes: &mut Vec<String>) -> Result<Option<Spec>> {
    for dir in DIRS {
        let dir = under(root, Path::new(dir));
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .take(MAX_FILES)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                let yaml = read_bounded(&path, MAX_SPEC).unwrap_or_default();
                if String::from_utf8_lossy(&yaml).contains(KIND) {
                    notes.push(format!(
                        "the CDI spec `{}` is YAML, which dev does not read: `nvidia-ctk cdi generate --format=json --output=/etc/cdi/nvidia.json` makes one dev uses",
                        path.display()
                    ));
                }
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let bad = |what: String| {
                UserError::with_hint(
                    format!("the CDI spec `{}` {what}", path.display()),
                    "regenerate it (`nvidia-ctk cdi generate --format=json`), or move it away to use the driver's files directly",
                )
            };
            let bytes = read_trusted(&path).map_err(|e| {
                if e.is::<UserError>() {
                    e
                } else {
                    bad(format!("cannot be read: {e}"))
                }
            })?;
            let mut spec: Spec = serde_json::from_slice(&bytes)
                .map_err(|e| bad(format!("is not a CDI spec: {e}")))?;
            if spec.kind != KIND {
                continue;
            }
            if !spec.cdi_version.starts_with("0.") && !spec.cdi_version.starts_with("1.") {
                return Err(bad(format!(
                    "has cdiVersion `{}`, which dev does not know",
                    crate::config::trust::printable(&spec.cdi_version)
                )));
            }
            spec.file = path;
            return Ok(Some(spec));
        }
    }
    Ok(None)
}

/// The spec at `path`, bounded, if only root or the user could have written it: a spec
/// another user can write would choose the host paths bound into the user's env.
fn read_trusted(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::open(path)?;
    let st = file.metadata()?;
    let me = nix::unistd::getuid().as_raw();
    let writable_by_others = st.mode() & 0o022 != 0;
    if (st.uid() != 0 && st.uid() != me) || writable_by_others {
        return Err(UserError::with_hint(
            format!(
                "the CDI spec `{}` is writable by someone other than root and you (owner uid {}, mode {:o}); dev does not use it",
                path.display(),
                st.uid(),
                st.mode() & 0o7777
            ),
            format!(
                "make it root's and writable by root only (`sudo chown root: {0}; sudo chmod 644 {0}`), or remove it",
                path.display()
            ),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SPEC + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SPEC {
        anyhow::bail!("larger than {MAX_SPEC} bytes");
    }
    Ok(bytes)
}

/// Variables a spec may not set inside: dev's own, and the loader's.
const PROTECTED: [&str; 7] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LD_PRELOAD",
    "LD_AUDIT",
    "XDG_RUNTIME_DIR",
];

/// Adds the spec's edits (the spec's own and device `all`'s, else every device's) to `out`.
pub fn apply(spec: &Spec, f: &Facts, out: &mut Opening) -> Result<()> {
    let bad = |what: String| {
        UserError::with_hint(
            format!("the CDI spec `{}` {what}", spec.file.display()),
            "fix or regenerate it (`nvidia-ctk cdi generate --format=json`)",
        )
    };
    let mut edits: Vec<&Edits> = vec![&spec.container_edits];
    match spec.devices.iter().find(|d| d.name == "all") {
        Some(all) => edits.push(&all.container_edits),
        None => edits.extend(spec.devices.iter().map(|d| &d.container_edits)),
    }
    let count: usize = edits
        .iter()
        .map(|e| e.env.len() + e.device_nodes.len() + e.mounts.len() + e.hooks.len())
        .sum();
    if count > MAX_EDITS {
        return Err(bad(format!("makes {count} edits (at most {MAX_EDITS})")));
    }
    let show = crate::config::trust::printable;
    let (mut nodes, mut mounts, mut folders) = (0, 0, Vec::<PathBuf>::new());
    for e in edits {
        for kv in &e.env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(format!("sets `{}`, which is not KEY=VALUE", show(kv))))?;
            let name_ok = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !name_ok || v.contains('\0') || PROTECTED.contains(&k) {
                return Err(bad(format!(
                    "sets `{}`, which dev does not let it set",
                    show(k)
                )));
            }
            out.set(k, v);
        }
        for d in &e.device_nodes {
            let target = plain_absolute(&d.path)
                .filter(|p| p.starts_with("/dev/") && p != Path::new("/dev/"))
                .ok_or_else(|| {
                    bad(format!(
                        "has a device node `{}` outside /dev",
                        show(&d.path)
                    ))
                })?;
            let host = match &d.host_path {
                Some(h) => plain_absolute(h)
                    .ok_or_else(|| bad(format!("has a device hostPath `{}`", show(h))))?,
                None => target.clone(),
            };
            let source = std::fs::canonicalize(under(f.root, &host))
                .ok()
                .filter(|p| super::gpu::is_device_node(p))
                .ok_or_else(|| {
                    bad(format!(
                        "names `{}`, which is no device node here",
                        host.display()
                    ))
                })?;
            out.bind(source, target, false, BindKind::File);
            nodes += 1;
        }
        for m in &e.mounts {
            let target = plain_absolute(&m.container_path)
                .filter(|p| {
                    p != Path::new("/")
                        && !["/proc", "/sys", "/dev"].iter().any(|r| p.starts_with(r))
                })
                .ok_or_else(|| {
                    bad(format!(
                        "mounts onto `{}`, which dev does not allow",
                        show(&m.container_path)
                    ))
                })?;
            let host = plain_absolute(&m.host_path).ok_or_else(|| {
                bad(format!(
                    "mounts `{}`, not an absolute path",
                    show(&m.host_path)
                ))
            })?;
            let source = std::fs::canonicalize(under(f.root, &host)).map_err(|_| {
                bad(format!(
                    "mounts `{}`, which does not exist here",
                    host.display()
                ))
            })?;
            let kind = if source.is_dir() {
                BindKind::Dir
            } else {
                BindKind::File
            };
            let readonly = m.options.iter().any(|o| o == "ro");
            out.bind(source, target, readonly, kind);
            mounts += 1;
        }
        for h in &e.hooks {
            if h.args.iter().any(|a| a == "update-ldcache") {
                let mut args = h.args.iter();
                while let Some(a) = args.next() {
                    if a == "--folder" {
                        let folder =
                            args.next().and_then(|d| plain_absolute(d)).ok_or_else(|| {
                                bad("has an update-ldcache hook with a bad --folder".into())
                            })?;
                        folders.push(folder);
                    }
                }
            } else {
                out.notes.push(format!(
                    "the CDI spec's {} hook `{}` is not run by dev",
                    show(&h.hook_name),
                    show(&h.args.iter().take(3).cloned().collect::<Vec<_>>().join(" "))
                ));
            }
        }
    }
    if !folders.is_empty() {
        let drop_in = f.runtime.join("ld.so.conf");
        let text: String = folders
            .iter()
            .map(|d| format!("{}\n", d.display()))
            .collect();
        out.files.push(HostFile::File {
            path: drop_in.clone(),
            bytes: text.into_bytes(),
        });
        out.bind(drop_in, super::gpu::DROP_IN_INSIDE, true, BindKind::File);
        out.ldconfig = true;
    }
    out.opened.push(format!(
        "NVIDIA from CDI {} ({nodes} device nodes, {mounts} mounts)",
        spec.file.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec_in(root: &Path, text: &str) {
        std::fs::create_dir_all(root.join("etc/cdi")).expect("mkdir");
        std::fs::write(root.join("etc/cdi/nvidia.json"), text).expect("write");
    }

    fn facts<'a>(vars: &'a BTreeMap<String, String>, root: &'a Path) -> Facts<'a> {
        Facts {
            vars,
            root,
            runtime: root,
            uid: 1000,
            ldcache: None,
        }
    }

    #[test]
    fn a_spec_becomes_binds_env_and_a_replayed_ldcache_hook() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        std::fs::create_dir_all(root.join("usr/lib/nv")).expect("mkdir");
        std::fs::write(root.join("usr/lib/nv/libcuda.so.1"), b"x").expect("write");
        spec_in(
            root,
            r#"{"cdiVersion":"0.6.0","kind":"nvidia.com/gpu",
               "devices":[{"name":"0","containerEdits":{"deviceNodes":[{"path":"/dev/nvidia0"}]}},
                          {"name":"all","containerEdits":{}}],
               "containerEdits":{"env":["NVIDIA_VISIBLE_DEVICES=void"],
                 "mounts":[{"hostPath":"/usr/lib/nv/libcuda.so.1","containerPath":"/usr/lib/x86_64-linux-gnu/libcuda.so.1","options":["ro","nosuid","nodev","bind"]}],
                 "hooks":[{"hookName":"createContainer","path":"/usr/bin/nvidia-ctk","args":["nvidia-ctk","hook","update-ldcache","--folder","/usr/lib/x86_64-linux-gnu"]},
                          {"hookName":"createContainer","path":"/usr/bin/nvidia-ctk","args":["nvidia-ctk","hook","create-symlinks"]}]}}"#,
        );
        let vars = BTreeMap::new();
        let f = facts(&vars, root);
        let mut notes = Vec::new();
        let spec = find(root, &mut notes).expect("reads").expect("found");
        let mut out = Opening::default();
        apply(&spec, &f, &mut out).expect("applies");
        // Device `all` only: not device 0's node.
        let targets: Vec<_> = out
            .binds
            .iter()
            .map(|b| (b.target.display().to_string(), b.readonly))
            .collect();
        assert_eq!(
            targets,
            [
                ("/usr/lib/x86_64-linux-gnu/libcuda.so.1".to_string(), true),
                (super::super::gpu::DROP_IN_INSIDE.to_string(), true),
            ]
        );
        assert_eq!(out.env, [("NVIDIA_VISIBLE_DEVICES".into(), "void".into())]);
        assert!(out.ldconfig);
        assert!(
            matches!(&out.files[0], HostFile::File { bytes, .. } if bytes == b"/usr/lib/x86_64-linux-gnu\n")
        );
        assert!(out.notes.iter().any(|n| n.contains("create-symlinks")));
    }

    #[test]
    fn a_hostile_spec_is_refused() {
        let vars = BTreeMap::new();
        for (edits, says) in [
            (
                r#"{"mounts":[{"hostPath":"/etc","containerPath":"/proc/x"}]}"#,
                "/proc/x",
            ),
            (
                r#"{"mounts":[{"hostPath":"/etc/../x","containerPath":"/x"}]}"#,
                "/etc/../x",
            ),
            (r#"{"env":["LD_PRELOAD=/x.so"]}"#, "LD_PRELOAD"),
            (
                r#"{"deviceNodes":[{"path":"/etc/shadow"}]}"#,
                "outside /dev",
            ),
            (
                r#"{"deviceNodes":[{"path":"/dev/nvidia9"}]}"#,
                "no device node",
            ),
        ] {
            let t = tempfile::tempdir().expect("tempdir");
            spec_in(
                t.path(),
                &format!(
                    r#"{{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","containerEdits":{edits}}}"#
                ),
            );
            let spec = find(t.path(), &mut Vec::new())
                .expect("reads")
                .expect("found");
            let err =
                apply(&spec, &facts(&vars, t.path()), &mut Opening::default()).expect_err(edits);
            assert!(err.to_string().contains(says), "{err}");
        }
        let t = tempfile::tempdir().expect("tempdir");
        spec_in(t.path(), "{not json");
        assert!(find(t.path(), &mut Vec::new()).is_err());
        std::fs::remove_file(t.path().join("etc/cdi/nvidia.json")).expect("rm");
        std::fs::write(
            t.path().join("etc/cdi/nvidia.yaml"),
            "kind: nvidia.com/gpu\n",
        )
        .expect("write");
        let mut notes = Vec::new();
        assert!(find(t.path(), &mut notes).expect("reads").is_none());
        assert!(notes[0].contains("--format=json"), "{notes:?}");
    }

    #[test]
    fn a_spec_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        // Any user could make it bind their choice of host paths into the victim's env.
        let t = tempfile::tempdir().expect("tempdir");
        spec_in(
            t.path(),
            r#"{"cdiVersion":"0.6.0","kind":"nvidia.com/gpu","containerEdits":{}}"#,
        );
        let file = t.path().join("etc/cdi/nvidia.json");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let err = find(t.path(), &mut Vec::new()).expect_err("refused");
        assert!(err.to_string().contains("other than root and you"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(find(t.path(), &mut Vec::new()).expect("reads").is_some());
    }
}
