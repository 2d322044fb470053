//! The mounts a session asks for, resolved on the host into the plan's binds: the user's
//! config.toml first, then the project's dev.toml (past the trust gate), then `--mount`, each
//! later one on top. `~` and `${VAR}` are expanded in a source, `~` in a target (the env's
//! home, at the path of the user's); a source is resolved once, here (what a symlink points to
//! is what is cloned); a volume is a directory of the store, made on first use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::config::mounts::{MountFrom, MountSpec};
use crate::config::trust::printable;
use crate::sandbox::plan::{check_bind_target, Bind, BindKind};
use crate::ui::UserError;

/// Where a mount was asked for: errors say which file or flag to change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Settings,
    Project,
    CommandLine,
}

impl Origin {
    fn name(self) -> &'static str {
        match self {
            Origin::Settings => "your config.toml",
            Origin::Project => "dev.toml",
            Origin::CommandLine => "--mount",
        }
    }
}

/// A bind and, for a volume, its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub bind: Bind,
    pub volume: Option<String>,
}

/// What resolving needs of the host: the home (`~`, outside and in), the host's variables,
/// the directory a relative source is taken from for each origin, and the store's volumes.
pub struct Context<'a> {
    pub home: &'a Path,
    pub vars: &'a BTreeMap<String, String>,
    /// The project root for dev.toml's mounts; the current directory for the others.
    pub project: &'a Path,
    pub cwd: &'a Path,
    /// A volume's directory, made on first use.
    pub volume: &'a dyn Fn(&str) -> Result<PathBuf>,
}

/// Resolves every asked mount, in order.
pub fn resolve(asked: &[(Origin, &MountSpec)], cx: &Context<'_>) -> Result<Vec<Resolved>> {
    asked
        .iter()
        .map(|(origin, spec)| resolve_one(*origin, spec, cx))
        .collect()
}

fn resolve_one(origin: Origin, spec: &MountSpec, cx: &Context<'_>) -> Result<Resolved> {
    let hint_fix = format!("change the mount in {}", origin.name());
    let target = PathBuf::from(expand_home(&spec.target, cx.home));
    check_bind_target(&target).map_err(|e| {
        UserError::with_hint(
            format!("cannot mount {}: the target {e}", shown(spec)),
            hint_fix.clone(),
        )
    })?;
    let (source, volume) = match &spec.from {
        MountFrom::Volume(name) => ((cx.volume)(name)?, Some(name.clone())),
        MountFrom::Host(written) => {
            let expanded = expand(written, cx.home, cx.vars).map_err(|e| {
                UserError::with_hint(
                    format!("cannot mount {}: {e}", shown(spec)),
                    hint_fix.clone(),
                )
            })?;
            let base = if origin == Origin::Project {
                cx.project
            } else {
                cx.cwd
            };
            let path = base.join(&expanded);
            // Once, here: the env gets the tree the link pointed to now, and no link is left
            // for anyone to swap between this and the clone.
            let real = std::fs::canonicalize(&path).map_err(|e| {
                let what = if e.kind() == std::io::ErrorKind::NotFound {
                    "does not exist".to_string()
                } else {
                    format!("cannot be read: {e}")
                };
                UserError::with_hint(
                    format!(
                        "the mount source `{}` (from {}) {what}",
                        printable(&path.display().to_string()),
                        origin.name()
                    ),
                    format!("create it, or {hint_fix}"),
                )
            })?;
            if origin == Origin::Project {
                within_project(&path, &real, cx.project).map_err(|real| {
                    UserError::with_hint(
                        format!(
                            "the mount source `{}` (from dev.toml) is reached through a symlink (it is `{}`)",
                            printable(&path.display().to_string()),
                            printable(&real.display().to_string())
                        ),
                        "a project path is mounted only as it is; write the real path in dev.toml (and trust it again)",
                    )
                })?;
            }
            (real, None)
        }
    };
    let kind = if volume.is_some() || source.is_dir() {
        BindKind::Dir
    } else {
        BindKind::File
    };
    Ok(Resolved {
        bind: Bind {
            source,
            target,
            readonly: spec.readonly,
            kind,
        },
        volume,
    })
}

/// Refuses (with the real path) a source written inside the project that a symlink takes
/// elsewhere: the trust the user gave is for dev.toml's text, and the project's links change
/// with every pull without changing it. Paths outside the project are the user's to follow.
fn within_project(path: &Path, real: &Path, project: &Path) -> Result<(), PathBuf> {
    let mut lexical = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                lexical.pop();
            }
            std::path::Component::CurDir => {}
            c => lexical.push(c),
        }
    }
    let Ok(rest) = lexical.strip_prefix(project) else {
        return Ok(());
    };
    let root = std::fs::canonicalize(project).map_err(|_| real.to_path_buf())?;
    if root.join(rest) == real {
        Ok(())
    } else {
        Err(real.to_path_buf())
    }
}

fn shown(spec: &MountSpec) -> String {
    printable(&spec.to_string())
}

/// `~` or `~/…` at the start is the home.
fn expand_home(s: &str, home: &Path) -> String {
    match s.strip_prefix('~') {
        Some("") => home.display().to_string(),
        Some(rest) if rest.starts_with('/') => format!("{}{rest}", home.display()),
        _ => s.to_string(),
    }
}

/// `~` at the start, and every `${VAR}` (an unset one is an error naming it).
pub fn expand(s: &str, home: &Path, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let s = expand_home(s, home);
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("`${{` without its `}}` in `{}`", printable(&s)));
        };
        let name = &after[..end];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => {
                return Err(format!(
                    "the variable `{}` in its source is not set",
                    printable(name)
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What a running env's mounts are compared by: source, target, read-only, one line each.
pub fn key(binds: &[Bind]) -> Vec<String> {
    binds
        .iter()
        .map(|b| {
            format!(
                "{}:{}:{}",
                b.source.display(),
                b.target.display(),
                if b.readonly { "ro" } else { "rw" }
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("DATA".to_string(), "/srv/d".to_string())].into()
    }

    #[test]
    fn home_and_variables_are_expanded() {
        let home = Path::new("/home/ann");
        assert_eq!(expand("~/x", home, &vars()), Ok("/home/ann/x".into()));
        assert_eq!(expand("~", home, &vars()), Ok("/home/ann".into()));
        assert_eq!(expand("~bob/x", home, &vars()), Ok("~bob/x".into()));
        assert_eq!(
            expand("${DATA}/a/${DATA}", home, &vars()),
            Ok("/srv/d/a//srv/d".into())
        );
        assert!(expand("${NOPE}/a", home, &vars())
            .unwrap_err()
            .contains("`NOPE`"));
        assert!(expand("${DATA", home, &vars()).is_err());
    }

    fn cx<'a>(
        home: &'a Path,
        vars: &'a BTreeMap<String, String>,
        volume: &'a dyn Fn(&str) -> Result<PathBuf>,
    ) -> Context<'a> {
        Context {
            home,
            vars,
            project: home,
            cwd: home,
            volume,
        }
    }

    #[test]
    fn sources_are_resolved_once_and_must_exist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::fs::write(dir.path().join("file"), "x").expect("write");
        std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("ln");
        let vars = BTreeMap::new();
        let volume = |n: &str| Ok(PathBuf::from(format!("/store/volumes/{n}/data")));
        let cx = cx(dir.path(), &vars, &volume);
        let spec = |s: &str| MountSpec::parse_cli(s).expect("spec");
        let (a, b, c, d) = (
            spec("~/link:/data:ro"),
            spec("~/file:~/f"),
            spec("cache:~/.cache"),
            spec("~/missing:/m"),
        );
        let got = resolve(
            &[
                (Origin::CommandLine, &a),
                (Origin::Project, &b),
                (Origin::Settings, &c),
            ],
            &cx,
        )
        .expect("resolves");
        assert_eq!(got[0].bind.source, real.canonicalize().expect("real"));
        assert_eq!(got[0].bind.target, Path::new("/data"));
        assert!(got[0].bind.readonly);
        assert_eq!(got[1].bind.kind, BindKind::File);
        assert_eq!(got[1].bind.target, dir.path().join("f"));
        assert_eq!(got[2].volume.as_deref(), Some("cache"));
        assert_eq!(got[2].bind.kind, BindKind::Dir);
        let e = resolve(&[(Origin::Project, &d)], &cx).expect_err("missing");
        assert!(
            e.to_string()
                .contains("missing` (from dev.toml) does not exist"),
            "{e}"
        );
        let e =
            resolve(&[(Origin::CommandLine, &spec("~/link:/proc/x"))], &cx).expect_err("reserved");
        assert!(e.to_string().contains("under /proc"), "{e}");
    }
}
