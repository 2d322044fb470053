//! Trust in a project's `dev.toml`, like direnv's `allow`: the parts of it that run commands or
//! open the host ([`Parts`]) are used only once the user has trusted them. The record lives in
//! the user's data directory, bound to the file's canonical path and to those parts, never in
//! the repository: a change to any of them revokes it. Nothing here prompts or prints.
//!
//! ```text
//! $XDG_DATA_HOME/dev/trust-v1/<sha256(canonical path of dev.toml)>.json
//!     {"path": …, "hash": sha256(path, parts), "parts": {"setup-root": […], …}}
//! ```

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::project::{DevToml, Project, FILE_NAME};
use super::Settings;
use crate::oci::Digest;
use crate::ui::UserError;

/// What in a dev.toml needs trust: what runs commands and what exposes the host beyond the
/// project directory. Image, shell, packages and `[env]` do not: they change what is inside.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Parts {
    /// `[setup] root`: run as root inside the tools build.
    #[serde(default)]
    pub setup_root: Vec<String>,
    /// `[setup] user`: run as the user in the project.
    #[serde(default)]
    pub setup_user: Vec<String>,
    /// `ssh-agent = true`: the user's agent socket inside the env.
    #[serde(default)]
    pub ssh_agent: bool,
    /// `[[mounts]]`: host paths (and named volumes, which other projects' envs share), one line
    /// each. Left out of the record when empty, so records made before mounts still hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
    /// `[features]`: each Feature's install.sh runs as root inside its layer's build
    /// (`reference options`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    // A devcontainer.json's parts. Left out of the record when empty, so that a dev.toml's
    // record (and its hash) is what it was before they existed.
    /// Lifecycle commands (`postCreateCommand: npm ci`), run as the user in the env.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifecycle: Vec<String>,
    /// `initializeCommand`: run on the host, in the project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initialize: Vec<String>,
    /// Host variables read with `${localEnv:…}`, which enter the env.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_env: Vec<String>,
    /// `gui = true`: the host's display, sound and session bus inside the env. (Left out of
    /// the record when false, so records made before it still hold.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gui: bool,
    /// `gpu = "auto" | "nvidia"`: the host's GPU devices and driver inside the env.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<crate::host::GpuMode>,
}

impl Parts {
    pub fn of(config: &DevToml) -> Parts {
        Parts {
            setup_root: config.setup.root.clone(),
            setup_user: config.setup.user.clone(),
            ssh_agent: config.ssh_agent,
            mounts: config.mounts.iter().map(ToString::to_string).collect(),
            features: config
                .features
                .iter()
                .map(|(r, o)| format!("{r} {}", o.canonical()))
                .collect(),
            gui: config.gui,
            gpu: config.gpu.filter(|g| *g != crate::host::GpuMode::None),
            ..Parts::default()
        }
    }

    /// The parts of a project, from dev.toml or devcontainer.json.
    pub fn of_project(project: &Project) -> Parts {
        let mut parts = Parts::of(&project.config);
        // A local Feature is bound to its files as well: a change to its install.sh changes
        // what runs. Its `./dir` is relative to the file that names it.
        let base = project.file.parent().unwrap_or(&project.root);
        parts.features = crate::features::trust_lines(&project.config.features, base);
        let Some(dc) = &project.devcontainer else {
            return parts;
        };
        for (label, command) in dc.hooks.all() {
            parts
                .lifecycle
                .extend(command.lines().into_iter().map(|l| format!("{label}: {l}")));
        }
        if let Some(c) = &dc.initialize_command {
            parts.initialize = c.lines();
        }
        parts.host_env = dc.host_env.clone();
        parts
    }

    /// Nothing that runs and nothing that opens the host: no trust is needed.
    pub fn is_empty(&self) -> bool {
        *self == Parts::default()
    }

    pub fn runs_commands(&self) -> bool {
        !self.setup_root.is_empty()
            || !self.setup_user.is_empty()
            || !self.features.is_empty()
            || !self.lifecycle.is_empty()
            || !self.initialize.is_empty()
    }
}

/// Where a dev.toml stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    Trusted,
    /// No record (or an unreadable one).
    Untrusted,
    /// Trusted before with these parts; they changed since.
    Changed(Parts),
}

#[derive(Serialize, Deserialize)]
struct Record {
    /// For the reader: the file name is its hash.
    path: String,
    hash: String,
    parts: Parts,
}

/// A record is a few hundred bytes; a bigger file is not one of ours.
const MAX_RECORD: u64 = 1 << 20;

/// The trust records of this user.
pub struct TrustStore {
    dir: PathBuf,
}

impl TrustStore {
    pub fn open() -> Result<TrustStore> {
        let base = dirs::data_dir()
            .context("cannot find the data directory; set $XDG_DATA_HOME or $HOME")?;
        Ok(TrustStore {
            dir: base.join("dev/trust-v1"),
        })
    }

    fn record_path(&self, dev_toml: &Path) -> PathBuf {
        let name = Digest::of_bytes(dev_toml.as_os_str().as_bytes());
        self.dir.join(format!("{}.json", name.hex()))
    }

    /// One small file read; no record is `Untrusted`.
    pub fn standing(&self, dev_toml: &Path, parts: &Parts) -> Standing {
        let Some(record) = self.load(dev_toml) else {
            return Standing::Untrusted;
        };
        if record.hash == hash(dev_toml, parts) {
            Standing::Trusted
        } else if record.hash == hash(dev_toml, &record.parts) {
            Standing::Changed(record.parts)
        } else {
            Standing::Untrusted
        }
    }

    fn load(&self, dev_toml: &Path) -> Option<Record> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(self.record_path(dev_toml))
            .ok()?;
        // One read for a record of the usual size (read_to_end would stat and read twice).
        let mut bytes = vec![0u8; 4096];
        let mut len = 0;
        loop {
            match file.read(&mut bytes[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
            if len < bytes.len() {
                // A short read of a regular file: its end (a longer one is read on).
                break;
            }
            if bytes.len() as u64 >= MAX_RECORD {
                return None;
            }
            bytes.resize(bytes.len() * 2, 0);
        }
        serde_json::from_slice(&bytes[..len]).ok()
    }

    /// Records that the user trusts these parts of this file.
    pub fn trust(&self, dev_toml: &Path, parts: &Parts) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("cannot create `{}`", self.dir.display()))?;
        let record = Record {
            path: dev_toml.display().to_string(),
            hash: hash(dev_toml, parts),
            parts: parts.clone(),
        };
        let path = self.record_path(dev_toml);
        crate::atomic::write(
            &path,
            &serde_json::to_vec_pretty(&record)?,
            0o600,
            crate::atomic::Durability::Durable,
        )
        .with_context(|| format!("cannot write `{}`", path.display()))
    }

    /// Forgets the trust in this file; whether there was any.
    pub fn untrust(&self, dev_toml: &Path) -> Result<bool> {
        let path = self.record_path(dev_toml);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot remove `{}`", path.display())),
        }
    }
}

/// The file's path and its parts, hashed together: the record holds for this file and this
/// content only.
fn hash(dev_toml: &Path, parts: &Parts) -> String {
    let mut text = dev_toml.as_os_str().as_bytes().to_vec();
    text.push(0);
    text.extend_from_slice(serde_json::json!(parts).to_string().as_bytes());
    Digest::of_bytes(&text).to_string()
}

/// The canonical path of the project's dev.toml: what a record is bound to (for a project's
/// own file, whichever it is: `Project::trust_path`).
pub fn dev_toml_path(root: &Path) -> Result<PathBuf> {
    let path = root.join(FILE_NAME);
    fs::canonicalize(&path).with_context(|| format!("cannot resolve `{}`", path.display()))
}

/// Whether the project lies under one of the user's `trusted-paths` (`~` is their home).
pub fn under_trusted_path(settings: &Settings, root: &Path) -> Result<bool> {
    for entry in &settings.trusted_paths {
        let path = match entry.strip_prefix('~') {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                let home =
                    dirs::home_dir().context("cannot find your home directory; set $HOME")?;
                home.join(rest.trim_start_matches('/'))
            }
            _ => PathBuf::from(entry),
        };
        if !path.is_absolute() {
            return Err(UserError::with_hint(
                format!("`trusted-paths` in your config.toml has `{entry}`, which is not an absolute path"),
                "write it as `~/work` or `/home/you/work`",
            ));
        }
        // A path that does not exist holds no project.
        if fs::canonicalize(&path).is_ok_and(|p| root.starts_with(p)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The host's agent socket, when the user asks for it (`--ssh-agent`, or `ssh-agent = true` in
/// config.toml) or the project does (`ssh-agent = true` in dev.toml, which needs trust and was
/// checked with the rest of it). Without SSH_AUTH_SOCK nothing is read.
pub fn ssh_agent_socket(asked: bool, project: Option<&DevToml>) -> Result<Option<PathBuf>> {
    let Some(sock) = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from) else {
        return Ok(None);
    };
    if !sock.metadata().is_ok_and(|m| m.file_type().is_socket()) {
        return Ok(None);
    }
    let wanted = asked || project.is_some_and(|p| p.ssh_agent) || Settings::load()?.ssh_agent;
    Ok(wanted.then_some(sock))
}

/// What the session opens of the host: `--gui`/`--gpu` (a given `--gpu` wins), the project's
/// `gui`/`gpu` (trusted with the rest of it), or the user's config.toml.
pub fn openings_asked(
    gui: bool,
    gpu: Option<crate::host::GpuMode>,
    project: Option<&DevToml>,
) -> Result<crate::host::Asked> {
    let settings = Settings::load()?;
    Ok(crate::host::Asked {
        gui: gui || project.is_some_and(|p| p.gui) || settings.gui,
        gpu: gpu
            .or(project.and_then(|p| p.gpu))
            .or(settings.gpu)
            .unwrap_or_default(),
    })
}

/// The lines that show `parts`, and against `before` (what was trusted) what changed:
/// `+` added, `-` removed. Control characters are shown escaped, so the text cannot move the
/// cursor or hide a line on the terminal.
pub fn describe(parts: &Parts, before: Option<&Parts>) -> Vec<String> {
    let mut out = Vec::new();
    let lists = [
        (
            "[setup] root, run as root inside when the tools layer is built:",
            &parts.setup_root,
            before.map(|b| &b.setup_root),
        ),
        (
            "[setup] user, run as you in the project:",
            &parts.setup_user,
            before.map(|b| &b.setup_user),
        ),
        (
            "[[mounts]], host paths and shared volumes mounted into the env:",
            &parts.mounts,
            before.map(|b| &b.mounts),
        ),
        (
            "[features], each Feature's install.sh run as root inside when its layer is built:",
            &parts.features,
            before.map(|b| &b.features),
        ),
        (
            "lifecycle commands, run as you in the env:",
            &parts.lifecycle,
            before.map(|b| &b.lifecycle),
        ),
        (
            "initializeCommand, run on this machine (outside the env) in the project:",
            &parts.initialize,
            before.map(|b| &b.initialize),
        ),
        (
            "host environment variables (${localEnv:…}) that enter the env:",
            &parts.host_env,
            before.map(|b| &b.host_env),
        ),
    ];
    for (title, now, was) in lists {
        if now.is_empty() && was.is_none_or(|w| w.is_empty()) {
            continue;
        }
        out.push(title.to_string());
        match was {
            None => out.extend(now.iter().map(|c| format!("    {}", printable(c)))),
            Some(was) => {
                for (mark, line) in line_diff(was, now) {
                    out.push(format!("  {mark} {}", printable(line)));
                }
            }
        }
    }
    const AGENT: &str = "ssh-agent = true: your ssh agent (SSH_AUTH_SOCK) is reachable inside";
    const GUI: &str =
        "gui = true: your display (Wayland, X11), sound and session D-Bus are reachable inside";
    let gpu = |p: &Parts| {
        p.gpu.map(|g| {
            format!(
                "gpu = \"{}\": your GPU's devices and driver libraries are reachable inside",
                g.name()
            )
        })
    };
    let flags = [
        (
            parts.ssh_agent.then(|| AGENT.to_string()),
            before.map(|b| b.ssh_agent.then(|| AGENT.to_string())),
        ),
        (
            parts.gui.then(|| GUI.to_string()),
            before.map(|b| b.gui.then(|| GUI.to_string())),
        ),
        (gpu(parts), before.map(gpu)),
    ];
    for (now, was) in flags {
        match (now, was) {
            (Some(n), None) => out.push(n),
            (Some(n), Some(Some(w))) if n == w => out.push(format!("  {n}")),
            (Some(n), Some(w)) => {
                if let Some(w) = w {
                    out.push(format!("- {w}"));
                }
                out.push(format!("+ {n}"));
            }
            (None, Some(Some(w))) => out.push(format!("- {w}")),
            (None, _) => {}
        }
    }
    out
}

/// A line diff by longest common subsequence (the lists are a few lines long).
fn line_diff<'a>(old: &'a [String], new: &'a [String]) -> Vec<(char, &'a str)> {
    let (n, m) = (old.len(), new.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            out.push((' ', old[i].as_str()));
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(('-', old[i].as_str()));
            i += 1;
        } else {
            out.push(('+', new[j].as_str()));
            j += 1;
        }
    }
    out
}

/// `s` with control and bidirectional-override characters escaped.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(root: &[&str], user: &[&str], agent: bool) -> Parts {
        Parts {
            setup_root: root.iter().map(|s| s.to_string()).collect(),
            setup_user: user.iter().map(|s| s.to_string()).collect(),
            ssh_agent: agent,
            ..Parts::default()
        }
    }

    #[test]
    fn image_packages_and_env_need_no_trust() {
        let text = "image = \"x\"\nshell = \"/bin/sh\"\n[env]\nA = \"b\"\n[tools]\npackages = [\"git\"]\nmanager = \"apt\"\n";
        let c = super::super::project::parse(Path::new("dev.toml"), text).expect("parses");
        assert!(Parts::of(&c).is_empty());
        let c = super::super::project::parse(
            Path::new("dev.toml"),
            "ssh-agent = true\nimage = \"x\"\n[setup]\nroot = [\"a\"]\nuser = [\"b\"]\n",
        )
        .expect("parses");
        assert_eq!(Parts::of(&c), parts(&["a"], &["b"], true));
    }

    #[test]
    fn a_record_holds_for_its_path_and_parts_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TrustStore {
            dir: dir.path().join("trust-v1"),
        };
        let (a, b) = (Path::new("/p/a/dev.toml"), Path::new("/p/b/dev.toml"));
        let p = parts(&["echo hi"], &[], false);
        assert_eq!(store.standing(a, &p), Standing::Untrusted);
        store.trust(a, &p).expect("trust");
        assert_eq!(store.standing(a, &p), Standing::Trusted);
        assert_eq!(store.standing(b, &p), Standing::Untrusted);
        let changed = parts(&["echo hi"], &[], true);
        assert_eq!(store.standing(a, &changed), Standing::Changed(p.clone()));
        assert!(store.untrust(a).expect("untrust"));
        assert!(!store.untrust(a).expect("untrust"));
        assert_eq!(store.standing(a, &p), Standing::Untrusted);
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(&store.dir).expect("dir").collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn a_dev_toml_record_is_what_it_was_before_devcontainer_parts() {
        // The record of a dev.toml trusted by an earlier dev must still match.
        assert_eq!(
            serde_json::json!(parts(&["a"], &[], true)).to_string(),
            r#"{"setup-root":["a"],"setup-user":[],"ssh-agent":true}"#
        );
    }

    #[test]
    fn the_diff_shows_what_changed() {
        let was = parts(&["a", "b"], &["u"], true);
        let now = parts(&["a", "c"], &[], false);
        assert_eq!(
            describe(&now, Some(&was)),
            [
                "[setup] root, run as root inside when the tools layer is built:",
                "    a",
                "  - b",
                "  + c",
                "[setup] user, run as you in the project:",
                "  - u",
                "- ssh-agent = true: your ssh agent (SSH_AUTH_SOCK) is reachable inside",
            ]
        );
        assert_eq!(
            describe(&parts(&[], &["x"], false), None),
            ["[setup] user, run as you in the project:", "    x"]
        );
    }

    #[test]
    fn mounts_need_trust_and_records_without_them_still_hold() {
        let c = super::super::project::parse(
            Path::new("dev.toml"),
            "image = \"x\"\n[[mounts]]\nsource = \"~/.ssh\"\ntarget = \"~/.ssh\"\nreadonly = true\n",
        )
        .expect("parses");
        let p = Parts::of(&c);
        assert!(!p.is_empty());
        assert_eq!(p.mounts, ["`~/.ssh` at `~/.ssh` (read-only)"]);
        assert_eq!(
            describe(&p, None),
            [
                "[[mounts]], host paths and shared volumes mounted into the env:",
                "    `~/.ssh` at `~/.ssh` (read-only)"
            ]
        );
        // The hash of a record made before mounts existed is the same.
        let old = parts(&["a"], &[], false);
        assert_eq!(
            serde_json::json!(old).to_string(),
            r#"{"setup-root":["a"],"setup-user":[],"ssh-agent":false}"#
        );
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(
            printable("echo ok\r\u{1b}[2Kcurl x|sh\u{202e}"),
            "echo ok\\u{d}\\u{1b}[2Kcurl x|sh\\u{202e}"
        );
    }
}
