//! The project's `dev.toml`: found by walking up from the current directory; its directory is
//! the project root. Parsing only: nothing here pulls, mounts or runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use super::devcontainer::{self, DevContainer};
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
    /// `[[mounts]]`: host paths and named volumes mounted into the env (need trust).
    #[serde(default)]
    pub mounts: Vec<super::mounts::MountSpec>,
    /// Dev Container Features: reference → options (a string is the `version` option).
    #[serde(default)]
    pub features: BTreeMap<String, crate::features::FeatureOptions>,
    /// How long the env keeps running after its last session (overrides config.toml's).
    #[serde(default)]
    pub linger: Option<super::settings::Linger>,
    /// Open the host's display, sound and session bus to the env (needs trust).
    #[serde(default)]
    pub gui: bool,
    /// Open the host's GPU to the env: `auto`, `nvidia` or `none` (needs trust).
    #[serde(default)]
    pub gpu: Option<crate::host::GpuMode>,
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

/// A project: its root directory and its parsed `dev.toml` (or the dev.toml its
/// devcontainer.json amounts to, with the rest of that file beside it).
#[derive(Clone, Debug)]
pub struct Project {
    pub root: PathBuf,
    pub config: DevToml,
    /// The file the configuration came from: `root/dev.toml`, or a devcontainer.json.
    pub file: PathBuf,
    /// What a devcontainer.json says beyond the dev.toml it amounts to.
    pub devcontainer: Option<Box<DevContainer>>,
}

/// The devcontainer.json the user picked with `--config`, for every lookup of this process.
static CHOSEN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes `file` (`--config`) the project's configuration for this process.
pub fn choose_config(file: PathBuf) {
    let _ = CHOSEN.set(file);
}

/// Whether `dir` holds a project's configuration: a `dev.toml` (a file, or a symlink, which
/// [`read_project_file`] then refuses), or what may be a devcontainer.json.
fn holds_config(dir: &Path) -> bool {
    dir.join(FILE_NAME)
        .symlink_metadata()
        .is_ok_and(|m| m.is_file() || m.is_symlink())
        || devcontainer::maybe_in(dir)
}

/// The nearest directory at or above `start` that holds a `dev.toml` or a devcontainer.json,
/// whoever owns it (a guess for `speculate`: [`Project::discover`] decides).
pub fn find_root(start: &Path) -> Option<PathBuf> {
    if let Some(file) = CHOSEN.get() {
        return Some(devcontainer::root_of(&start.join(file)));
    }
    start
        .ancestors()
        .find(|d| holds_config(d))
        .map(Path::to_path_buf)
}

impl Project {
    /// Finds and parses the nearest `dev.toml`, or where a directory has none, its
    /// devcontainer.json; `None` when there is neither. One that another user owns is refused,
    /// not skipped: it is the nearest, and what it asks for is not run.
    pub fn discover(start: &Path) -> Result<Option<Project>> {
        if let Some(chosen) = CHOSEN.get() {
            // The user's own argument: its directories may be links; the file may not.
            let given = start.join(chosen);
            let missing = || {
                UserError::with_hint(
                    format!("there is no `{}`", given.display()),
                    "give `--config` the path of a devcontainer.json",
                )
            };
            let dir = given
                .parent()
                .and_then(|d| std::fs::canonicalize(d).ok())
                .ok_or_else(missing)?;
            let file = dir.join(given.file_name().ok_or_else(missing)?);
            let root = devcontainer::root_of(&file);
            let Some(text) = read_project_file(&file)? else {
                return Err(missing());
            };
            return Project::from_devcontainer(root, file, &text).map(Some);
        }
        for dir in start.ancestors() {
            let path = dir.join(FILE_NAME);
            if path
                .symlink_metadata()
                .is_ok_and(|m| m.is_file() || m.is_symlink())
            {
                let Some(text) = read_project_file(&path)? else {
                    return Ok(None);
                };
                let config = parse(&path, &text)?;
                return Ok(Some(Project {
                    root: dir.to_path_buf(),
                    config,
                    file: path,
                    devcontainer: None,
                }));
            }
            if !devcontainer::maybe_in(dir) {
                continue;
            }
            if let Some(rel) = devcontainer::find(dir)? {
                let Some(text) = read_project_file_beneath(dir, &rel)? else {
                    continue;
                };
                return Project::from_devcontainer(dir.to_path_buf(), dir.join(rel), &text)
                    .map(Some);
            }
        }
        Ok(None)
    }

    fn from_devcontainer(root: PathBuf, file: PathBuf, text: &str) -> Result<Project> {
        let host_var = |name: &str| std::env::var(name).ok();
        let dc = devcontainer::parse(
            &file,
            text,
            &devcontainer::Context {
                local_workspace: &root,
                host_var: &host_var,
            },
        )?;
        Ok(Project {
            config: dc.dev_toml(),
            root,
            file,
            devcontainer: Some(Box::new(dc)),
        })
    }

    /// The name of the project's configuration file, for messages.
    pub fn file_name(&self) -> &'static str {
        if self.devcontainer.is_some() {
            devcontainer::FILE_NAME
        } else {
            FILE_NAME
        }
    }

    /// The canonical path of the configuration file: what a trust record is bound to.
    pub fn trust_path(&self) -> Result<PathBuf> {
        std::fs::canonicalize(&self.file)
            .with_context(|| format!("cannot resolve `{}`", self.file.display()))
    }
}

/// The most a dev.toml or dev.lock may hold.
const MAX_PROJECT_FILE: u64 = 1 << 20;

/// Reads a project's `dev.toml` or `dev.lock`; `None` when there is none. Like git's
/// `safe.directory`: the file must be owned by the user or by root, since one that another
/// user planted (in a world-writable directory above the project, say) would run its
/// `[setup]` as this user. It must be a regular file, not a symlink (the directory is the
/// repository's), and is read bounded, from the very file whose owner was checked.
pub fn read_project_file(path: &Path) -> Result<Option<String>> {
    use rustix::fs::{Mode, OFlags};
    let opened = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()));
    read_opened(opened, path)
}

/// [`read_project_file`] for `rel` beneath the directory `root`: no symlink is followed in any
/// component (a cloned `.devcontainer` may be a link anywhere).
pub fn read_project_file_beneath(root: &Path, rel: &Path) -> Result<Option<String>> {
    let path = root.join(rel);
    let opened = crate::beneath::Tree::open(root).and_then(|t| {
        t.open_at(
            rel,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
            0,
        )
    });
    read_opened(opened, &path)
}

fn read_opened(
    opened: std::io::Result<std::os::fd::OwnedFd>,
    path: &Path,
) -> Result<Option<String>> {
    use rustix::fs::FileType;
    let fd = match opened {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(UserError::with_hint(
                format!("`{}` is a symbolic link, or lies in a linked directory", path.display()),
                "dev reads its configuration files only as regular files, never through a link; replace the link with what it points to",
            ))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    };
    let st = rustix::fs::fstat(&fd)
        .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(UserError::with_hint(
            format!("`{}` is not a regular file", path.display()),
            "dev reads dev.toml and dev.lock only as regular files",
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if st.st_uid != me && st.st_uid != 0 {
        let owner = nix::unistd::User::from_uid(st.st_uid.into())
            .ok()
            .flatten()
            .map_or_else(
                || format!("uid {}", st.st_uid),
                |u| format!("`{}` (uid {})", u.name, st.st_uid),
            );
        return Err(UserError::with_hint(
            format!(
                "`{}` belongs to {owner}, not to you: dev refuses a dev.toml or dev.lock of another user",
                path.display()
            ),
            "if it is yours to use, copy it into a directory of your own; or run dev where no other user's dev.toml lies at or above the current directory",
        ));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::from(fd), MAX_PROJECT_FILE + 1),
        &mut bytes,
    )
    .with_context(|| format!("cannot read `{}`", path.display()))?;
    if bytes.len() as u64 > MAX_PROJECT_FILE {
        return Err(UserError::with_hint(
            format!(
                "`{}` is larger than {MAX_PROJECT_FILE} bytes",
                path.display()
            ),
            "dev.toml and dev.lock are small text files; check what wrote this one",
        ));
    }
    String::from_utf8(bytes).map(Some).map_err(|_| {
        UserError::with_hint(
            format!("`{}` is not UTF-8 text", path.display()),
            "dev.toml and dev.lock are TOML, which is UTF-8",
        )
    })
}

/// A hostname from the project directory's name: lowercase letters, digits and dashes.
pub fn hostname(project: &Path) -> String {
    let name = project
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let clean = clean.trim_matches('-').to_string();
    if clean.is_empty() {
        "dev".to_string()
    } else {
        clean
    }
}

/// The one wording of "there is no project here", with what to do instead.
pub fn no_project(cwd: &Path, hint: impl Into<String>) -> anyhow::Error {
    UserError::with_hint(
        format!(
            "no {FILE_NAME} in `{}` or any directory above it",
            cwd.display()
        ),
        hint,
    )
}

/// Parses the text of a `dev.toml`; errors name the file, line and column.
pub fn parse(path: &Path, text: &str) -> Result<DevToml> {
    let config: DevToml = toml::from_str(text).map_err(|e| {
        let located = super::toml_error(path, text, &e);
        match super::unknown_key(e.message()) {
            Some((key, Some(near))) => UserError::with_hint(
                format!(
                    "{}: unknown key `{key}`; did you mean `{near}`?",
                    super::located_prefix(&located)
                ),
                "the keys of dev.toml are listed in the README, under \"dev.toml\"",
            ),
            Some((key, None)) => UserError::with_hint(
                format!("{}: unknown key `{key}`", super::located_prefix(&located)),
                "the keys of dev.toml are `image`, `shell`, `ssh-agent`, `linger`, `[env]`, `[tools]` (`packages`, `manager`), `[setup]` (`root`, `user`), `[features]` and `[[mounts]]` (`source` or `volume`, `target`, `readonly`)",
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
    fn mounts_errors_have_line_and_column() {
        let e =
            err("image = \"x\"\n[[mounts]]\nsource = \"/a\"\ntarget = \"/b\"\nredonly = true\n");
        assert!(
            e.contains("/p/dev.toml:5:1: unknown key `redonly`; did you mean `readonly`?"),
            "{e}"
        );
        let e = err("image = \"x\"\n[[mounts]]\nvolume = \"Cargo\"\ntarget = \"/b\"\n");
        assert!(
            e.starts_with("/p/dev.toml:") && e.contains("`Cargo` is not a volume name"),
            "{e}"
        );
        let c = parse(
            Path::new("dev.toml"),
            "image = \"x\"\n[[mounts]]\nvolume = \"cargo\"\ntarget = \"~/.cargo/registry\"\n",
        )
        .expect("valid");
        assert_eq!(c.mounts.len(), 1);
    }

    #[test]
    fn empty_image_and_bad_env_names() {
        assert!(err("image = \"\"\n").contains("`image` is empty"));
        assert!(err("image = \"x\"\n[env]\n\"A=B\" = \"c\"\n").contains("invalid variable name"));
        assert!(err("shell = \"/bin/sh\"\n").contains("missing field `image`"));
    }

    #[test]
    fn project_files_that_are_links_or_not_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join(FILE_NAME);
        assert!(read_project_file(&p).expect("none").is_none());
        std::fs::write(&p, "image = \"x\"\n").expect("write");
        assert_eq!(
            read_project_file(&p).expect("mine").as_deref(),
            Some("image = \"x\"\n")
        );
        // Another user's file is refused too: see the end-to-end test
        // `foreign_dev_toml_above_is_refused` (it takes a second user).
        let link = dir.path().join("dev.lock");
        std::os::unix::fs::symlink(&p, &link).expect("symlink");
        assert!(read_project_file(&link)
            .expect_err("link")
            .to_string()
            .contains("is a symbolic link"));
        let sub = dir.path().join("sub");
        std::fs::create_dir_all(sub.join(FILE_NAME)).expect("mkdir");
        assert!(read_project_file(&sub.join(FILE_NAME))
            .expect_err("dir")
            .to_string()
            .contains("not a regular file"));
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
