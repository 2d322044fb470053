//! The project's `dev.toml`: found by walking up from the current directory; its directory is
//! the project root. Parsing only: nothing here pulls, mounts or runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::ui::UserError;

pub const FILE_NAME: &str = "dev.toml";

/// What a `dev.toml` says.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DevToml {
    /// Any reference `dev pull` accepts.
    pub image: String,
    /// The shell `dev shell` starts; default: `$SHELL` if the image has it, else bash, else sh.
    #[serde(default)]
    pub shell: Option<String>,
    /// Extra environment variables, applied after the image's own.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Packages built into the env's tools layer.
    #[serde(default)]
    pub tools: Tools,
    /// Commands run while building the tools layer (root) and once per env (user).
    #[serde(default)]
    pub setup: Setup,
    /// Forward the user's ssh agent into the env (needs the user's trust, like `[setup]`).
    #[serde(default, rename = "ssh-agent")]
    pub ssh_agent: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tools {
    /// `name` or `name=version`, for the image's package manager.
    #[serde(default)]
    pub packages: Vec<String>,
    /// `apt`, `apk` or `dnf`; detected from the image when absent.
    #[serde(default)]
    pub manager: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// Shell commands run as root inside, before the packages are installed.
    #[serde(default)]
    pub root: Vec<String>,
    /// Shell commands run as the user in the project, after the packages.
    #[serde(default)]
    pub user: Vec<String>,
}

impl DevToml {
    /// Whether the env has a tools layer to build.
    pub fn has_tools(&self) -> bool {
        !self.tools.packages.is_empty() || !self.setup.root.is_empty()
    }
}

/// A project: its root directory and its parsed `dev.toml`.
#[derive(Clone, Debug)]
pub struct Project {
    pub root: PathBuf,
    pub config: DevToml,
}

/// The nearest directory at or above `start` that holds a `dev.toml`.
pub fn find_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join(FILE_NAME).is_file())
        .map(Path::to_path_buf)
}

impl Project {
    /// Finds and parses the nearest `dev.toml`; `None` when there is none.
    pub fn discover(start: &Path) -> Result<Option<Project>> {
        let Some(root) = find_root(start) else {
            return Ok(None);
        };
        let path = root.join(FILE_NAME);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        let config = parse(&path, &text)?;
        Ok(Some(Project { root, config }))
    }
}

/// Parses the text of a `dev.toml`; errors name the file, line and column.
pub fn parse(path: &Path, text: &str) -> Result<DevToml> {
    let config: DevToml = toml::from_str(text).map_err(|e| {
        let located = super::toml_error(path, text, &e);
        match unknown_key(e.message()) {
            Some((key, Some(near))) => UserError::with_hint(
                format!(
                    "{}: unknown key `{key}`; did you mean `{near}`?",
                    located_prefix(&located)
                ),
                "the keys of dev.toml are listed in the README, under \"dev.toml\"",
            ),
            Some((key, None)) => UserError::with_hint(
                format!("{}: unknown key `{key}`", located_prefix(&located)),
                "the keys of dev.toml are `image`, `shell`, `ssh-agent`, `[env]`, `[tools]` (`packages`, `manager`) and `[setup]` (`root`, `user`)",
            ),
            None => UserError::with_hint(located, "fix the TOML syntax at that place in dev.toml"),
        }
    })?;
    if config.image.trim().is_empty() {
        return Err(UserError::with_hint(
            format!("{}: `image` is empty", path.display()),
            "set `image = \"debian:bookworm\"` (any reference `dev pull` accepts)",
        ));
    }
    for key in config.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(UserError::with_hint(
                format!(
                    "{}: `[env]` has an invalid variable name `{key}`",
                    path.display()
                ),
                "variable names cannot be empty or contain `=`",
            ));
        }
    }
    Ok(config)
}

/// `file:line:col` out of a rendered TOML error.
fn located_prefix(located: &str) -> &str {
    located
        .char_indices()
        .filter(|&(_, c)| c == ':')
        .nth(2)
        .map_or(located, |(i, _)| &located[..i])
}

/// From serde's "unknown field `x`, expected one of `a`, `b`": the key and the nearest known one.
fn unknown_key(message: &str) -> Option<(String, Option<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let near = expected
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k.to_string());
    Some((key.to_string(), near))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("/p/dev.toml"), text)
            .expect_err("should fail")
            .to_string()
    }

    #[test]
    fn parses_full_file() {
        let c = parse(
            Path::new("dev.toml"),
            "image = \"debian:bookworm\"\nshell = \"/bin/bash\"\n[env]\nRUST_LOG = \"debug\"\n",
        )
        .expect("valid");
        assert_eq!(c.image, "debian:bookworm");
        assert_eq!(c.shell.as_deref(), Some("/bin/bash"));
        assert_eq!(c.env.get("RUST_LOG").map(String::as_str), Some("debug"));
    }

    #[test]
    fn malformed_toml_has_line_and_column() {
        let e = err("image = \"debian\"\nshell = /bin/bash\n");
        assert!(e.starts_with("/p/dev.toml:2:9:"), "{e}");
    }

    #[test]
    fn unknown_key_suggests_nearest() {
        let e = err("imgae = \"debian\"\n");
        assert!(
            e.contains("/p/dev.toml:1:1: unknown key `imgae`; did you mean `image`?"),
            "{e}"
        );
        let e = err("image = \"debian\"\n[evn]\nA = \"b\"\n");
        assert!(e.contains("unknown key `evn`; did you mean `env`?"), "{e}");
        let e = err("image = \"debian\"\nfrobnicate = 1\n");
        assert!(
            e.contains("unknown key `frobnicate`") && !e.contains("did you mean"),
            "{e}"
        );
    }

    #[test]
    fn empty_image_and_bad_env_names() {
        assert!(err("image = \"\"\n").contains("`image` is empty"));
        assert!(err("image = \"x\"\n[env]\n\"A=B\" = \"c\"\n").contains("invalid variable name"));
        assert!(err("shell = \"/bin/sh\"\n").contains("missing field `image`"));
    }

    #[test]
    fn finds_nearest_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).expect("mkdir");
        assert_eq!(find_root(&sub), None);
        std::fs::write(dir.path().join("a/dev.toml"), "image = \"x\"\n").expect("write");
        assert_eq!(find_root(&sub), Some(dir.path().join("a")));
    }
}
