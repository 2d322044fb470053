//! What a user or a project asks to mount: `[[mounts]]` in dev.toml or config.toml, and
//! `--mount` on the command line. A host path (`source`) or a named volume of the store
//! (`volume`), at `target` inside, perhaps read-only. Parsing and checking only: nothing here
//! expands, resolves or mounts (that is `session::mounts`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// One mount as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawMount", into = "RawMount")]
pub struct MountSpec {
    pub from: MountFrom,
    /// Absolute, or under `~` (the env's home); `..` never.
    pub target: String,
    pub readonly: bool,
}

/// Where a mount's tree comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountFrom {
    /// A host path as written: `~` and `${VAR}` are expanded on the host.
    Host(String),
    /// A named volume: a directory of the store, kept across `dev reset`, shared by every env
    /// that names it.
    Volume(String),
}

/// A `[[mounts]]` table as TOML has it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    volume: Option<String>,
    target: String,
    #[serde(default)]
    readonly: bool,
}

impl TryFrom<RawMount> for MountSpec {
    type Error = String;
    fn try_from(r: RawMount) -> Result<MountSpec, String> {
        let from = match (r.source, r.volume) {
            (Some(_), Some(_)) => {
                return Err(
                    "a mount has either `source` (a host path) or `volume` (a name), not both"
                        .into(),
                )
            }
            (None, None) => {
                return Err("a mount needs `source` (a host path) or `volume` (a name)".into())
            }
            (Some(s), None) if s.is_empty() => return Err("a mount's `source` is empty".into()),
            (Some(s), None) => MountFrom::Host(s),
            (None, Some(v)) => MountFrom::Volume(check_volume_name(&v)?),
        };
        check_target(&r.target)?;
        Ok(MountSpec {
            from,
            target: r.target,
            readonly: r.readonly,
        })
    }
}

impl From<MountSpec> for RawMount {
    fn from(m: MountSpec) -> RawMount {
        let (source, volume) = match m.from {
            MountFrom::Host(s) => (Some(s), None),
            MountFrom::Volume(v) => (None, Some(v)),
        };
        RawMount {
            source,
            volume,
            target: m.target,
            readonly: m.readonly,
        }
    }
}

/// A volume's name: `[a-z0-9][a-z0-9_.-]*`, at most 64 bytes (it is a directory's name).
pub fn check_volume_name(name: &str) -> Result<String, String> {
    let ok = name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
    if ok {
        Ok(name.to_string())
    } else {
        Err(format!(
            "`{}` is not a volume name: use up to 64 of a-z, 0-9, `_`, `.` and `-`, starting with a letter or digit",
            crate::config::trust::printable(name)
        ))
    }
}

/// A target as written: absolute or `~`/`~/…`, without `..`. (Where it lands is checked
/// again once `~` is expanded: not under the sandbox's own trees.)
pub fn check_target(target: &str) -> Result<(), String> {
    let shown = crate::config::trust::printable(target);
    if !(target.starts_with('/') || target == "~" || target.starts_with("~/")) {
        return Err(format!(
            "the mount target `{shown}` is neither an absolute path nor under `~`"
        ));
    }
    if target.split('/').any(|c| c == "..") {
        return Err(format!("the mount target `{shown}` contains `..`"));
    }
    if target.contains('\0') {
        return Err(format!("the mount target `{shown}` has a NUL byte"));
    }
    Ok(())
}

impl MountSpec {
    /// `--mount` as podman reads it (`type=bind,source=/a,target=/b,readonly`; `src`, `dst`,
    /// `destination`, `ro`, `readonly=true`; `type=volume,source=NAME`) or as `-v` does
    /// (`SRC:DST[:ro]`, where a SRC that is not a path is a volume's name).
    pub fn parse_cli(s: &str) -> Result<MountSpec, String> {
        let raw = if s.contains('=') {
            parse_keyed(s)?
        } else {
            parse_colons(s)?
        };
        MountSpec::try_from(raw)
    }
}

fn parse_colons(s: &str) -> Result<RawMount, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, opt) = match parts.as_slice() {
        [src, dst] => (*src, *dst, None),
        [src, dst, opt] => (*src, *dst, Some(*opt)),
        _ => {
            return Err(format!(
                "`{}` is not a mount: write `SRC:DST[:ro]` or `type=bind,source=SRC,target=DST[,readonly]`",
                crate::config::trust::printable(s)
            ))
        }
    };
    let readonly = match opt {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(o) => {
            return Err(format!(
                "`{}`: the mount option after the second `:` is `ro` or `rw`",
                crate::config::trust::printable(o)
            ))
        }
    };
    let is_path = src.starts_with(['/', '~', '.', '$']);
    Ok(RawMount {
        source: is_path.then(|| src.to_string()),
        volume: (!is_path).then(|| src.to_string()),
        target: dst.to_string(),
        readonly,
    })
}

fn parse_keyed(s: &str) -> Result<RawMount, String> {
    let mut raw = RawMount::default();
    let mut kind = "bind";
    let mut name = None;
    for field in s.split(',') {
        let (key, value) = field.split_once('=').unwrap_or((field, "true"));
        match key {
            "type" => kind = value,
            "source" | "src" => name = Some(value.to_string()),
            "target" | "dst" | "destination" => raw.target = value.to_string(),
            "readonly" | "ro" => {
                raw.readonly = match value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    v => {
                        return Err(format!(
                            "`{key}={}`: readonly is `true` or `false`",
                            crate::config::trust::printable(v)
                        ))
                    }
                }
            }
            k => {
                return Err(format!(
                    "`{}` is not a mount option dev knows (type, source, target, readonly)",
                    crate::config::trust::printable(k)
                ))
            }
        }
    }
    match kind {
        "bind" => raw.source = name,
        "volume" => raw.volume = name,
        k => {
            return Err(format!(
                "mount type `{}`: dev mounts `bind` and `volume`",
                crate::config::trust::printable(k)
            ))
        }
    }
    if raw.target.is_empty() {
        return Err("the mount has no `target`".into());
    }
    Ok(raw)
}

/// One line for `dev trust --show` and the restart notice.
impl fmt::Display for MountSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ro = if self.readonly { " (read-only)" } else { "" };
        match &self.from {
            MountFrom::Host(s) => write!(f, "`{s}` at `{}`{ro}", self.target),
            MountFrom::Volume(v) => write!(f, "volume `{v}` at `{}`{ro}", self.target),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str, t: &str, ro: bool) -> MountSpec {
        MountSpec {
            from: MountFrom::Host(s.into()),
            target: t.into(),
            readonly: ro,
        }
    }

    #[test]
    fn both_command_line_forms() {
        assert_eq!(
            MountSpec::parse_cli("/srv/data:/data:ro"),
            Ok(host("/srv/data", "/data", true))
        );
        assert_eq!(
            MountSpec::parse_cli("~/notes:/notes"),
            Ok(host("~/notes", "/notes", false))
        );
        assert_eq!(
            MountSpec::parse_cli("type=bind,source=/a,target=/b,readonly"),
            Ok(host("/a", "/b", true))
        );
        assert_eq!(
            MountSpec::parse_cli("type=bind,src=/a,dst=/b,ro=false"),
            Ok(host("/a", "/b", false))
        );
        let v = MountSpec::parse_cli("cargo-registry:~/.cargo/registry").expect("volume");
        assert_eq!(v.from, MountFrom::Volume("cargo-registry".into()));
        let v = MountSpec::parse_cli("type=volume,source=pip,target=~/.cache/pip").expect("v");
        assert_eq!(v.from, MountFrom::Volume("pip".into()));
        for bad in [
            "/a",
            "/a:/b:rx",
            "/a:relative",
            "/a:/x/../etc",
            "type=tmpfs,target=/t",
            "type=bind,source=/a",
            "type=bind,source=/a,target=/b,z",
            "Bad_Name:/x",
            "type=bind,target=/b",
        ] {
            assert!(MountSpec::parse_cli(bad).is_err(), "{bad}");
        }
    }

    #[derive(Deserialize)]
    struct Doc {
        mounts: Vec<MountSpec>,
    }

    #[test]
    fn toml_tables() {
        let d: Doc = toml::from_str(
            "[[mounts]]\nsource = \"${HOME}/x\"\ntarget = \"/x\"\nreadonly = true\n[[mounts]]\nvolume = \"go-mod\"\ntarget = \"~/go/pkg/mod\"\n",
        )
        .expect("parses");
        assert_eq!(d.mounts[0], host("${HOME}/x", "/x", true));
        assert_eq!(d.mounts[1].from, MountFrom::Volume("go-mod".into()));
        for (bad, says) in [
            (
                "source = \"/a\"\nvolume = \"v\"\ntarget = \"/x\"",
                "not both",
            ),
            ("target = \"/x\"", "needs `source`"),
            ("volume = \"-v\"\ntarget = \"/x\"", "not a volume name"),
            (
                "source = \"/a\"\ntarget = \"x\"",
                "neither an absolute path",
            ),
            (
                "source = \"/a\"\ntarget = \"/x\"\nredonly = true",
                "unknown field `redonly`",
            ),
        ] {
            let e = toml::from_str::<Doc>(&format!("[[mounts]]\n{bad}\n"))
                .err()
                .unwrap_or_else(|| panic!("{bad} parsed"));
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn shown_in_one_line() {
        assert_eq!(
            host("~/.ssh", "~/.ssh", true).to_string(),
            "`~/.ssh` at `~/.ssh` (read-only)"
        );
    }
}
