//! The user's own settings, `$XDG_CONFIG_HOME/dev/config.toml`: registry mirrors, insecure
//! registries, paths whose projects are trusted, the ssh agent. Only this file (never a
//! project's dev.toml) can loosen transport security or trust a project.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Registries reached over plain HTTP (loopback ones always may be). A loopback one listed
    /// here also gets credentials whoever listens on its port; unlisted, only a listener of
    /// the user's own or root's does.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// Registry → mirrors tried first, e.g. `"docker.io" = ["mirror.example:5000"]`.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Directories under which every project's dev.toml is trusted, e.g. `["~/work"]`.
    #[serde(default)]
    pub trusted_paths: Vec<String>,
    /// Forward the ssh agent into every env, as `--ssh-agent` does.
    #[serde(default)]
    pub ssh_agent: bool,
    /// Open the host's display, sound and session bus to every env, as `--gui` does.
    #[serde(default)]
    pub gui: bool,
    /// Open the host's GPU to every env, as `--gpu` does (`auto`, `nvidia`, `none`).
    #[serde(default)]
    pub gpu: Option<crate::host::GpuMode>,
}

impl Settings {
    pub fn path() -> Option<PathBuf> {
        dirs::config_dir().map(|d| d.join("dev/config.toml"))
    }

    pub fn load() -> Result<Self> {
        let Some(path) = Self::path() else {
            return Ok(Settings::default());
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
        };
        toml::from_str(&text).map_err(|e| anyhow!("{}", super::toml_error(&path, &text, &e)))
    }

    /// Whether `registry` may be reached over plain HTTP.
    pub fn allows_http(&self, registry: &str) -> bool {
        is_loopback(registry) || self.insecure_registries.iter().any(|r| r == registry)
    }

    pub fn mirrors_for(&self, registry: &str) -> &[String] {
        self.mirrors.get(registry).map_or(&[], Vec::as_slice)
    }
}

/// `localhost`, 127.0.0.0/8 and ::1, with or without a port: traffic that never leaves the machine.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    if host == "localhost" {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.9.9.9",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "localhost.evil.com",
            "[::2]:1",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Settings>("insecure = [\"x\"]").is_err());
        let s: Settings = toml::from_str(
            "insecure-registries = [\"r:5000\"]\n[mirrors]\n\"docker.io\" = [\"m:5000\"]",
        )
        .unwrap();
        assert!(s.allows_http("r:5000") && !s.allows_http("other:5000"));
        assert_eq!(s.mirrors_for("docker.io"), ["m:5000".to_string()]);
        let s: Settings =
            toml::from_str("trusted-paths = [\"~/work\"]\nssh-agent = true\n").unwrap();
        assert_eq!(s.trusted_paths, ["~/work".to_string()]);
        assert!(s.ssh_agent);
    }
}
