//! The user's own settings, `$XDG_CONFIG_HOME/dev/config.toml`: registry mirrors, insecure
//! registries, paths whose projects are trusted, the ssh agent, mounts for every env, how long
//! an env lingers. Only this file (never a project's dev.toml) can loosen transport security or
//! trust a project.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::ui::UserError;

#[derive(Clone, Debug, Default, Deserialize)]
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
    /// `[[mounts]]` in every env (host paths and volumes, as in dev.toml; no trust asked).
    #[serde(default)]
    pub mounts: Vec<super::mounts::MountSpec>,
    /// How long a project's env keeps running after its last session (dev.toml's `linger`
    /// wins); [`Linger::DEFAULT`] when unset.
    #[serde(default)]
    pub linger: Option<Linger>,
    /// How long the holder of the user namespace starts join stays after the last start
    /// (`sandbox::holder`); [`Linger::USERNS_DEFAULT`] when unset, 0: no holder, every start
    /// has newuidmap and newgidmap map a namespace of its own.
    #[serde(default)]
    pub userns_linger: Option<Linger>,
    /// Open the host's display, sound and session bus to every env, as `--gui` does.
    #[serde(default)]
    pub gui: bool,
    /// Open the host's GPU to every env, as `--gpu` does (`auto`, `nvidia`, `none`).
    #[serde(default)]
    pub gpu: Option<crate::host::GpuMode>,
}

/// How long a project's env keeps running after its last session left, so that the next
/// `dev run` joins it instead of starting it: seconds, 0 to [`Linger::MAX_SECONDS`], fractions
/// allowed (`linger = 0.5`); 0 stops the env with its last session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linger(pub std::time::Duration);

impl Linger {
    /// Long enough for a script's or an editor's next call, short enough to be forgotten.
    pub const DEFAULT: Linger = Linger(std::time::Duration::from_secs(5));
    /// The user-namespace holder's: ten minutes, as a working session's pauses go.
    pub const USERNS_DEFAULT: Linger = Linger(std::time::Duration::from_secs(600));
    /// A cloned dev.toml may ask for it too: it cannot keep an env up for longer than this.
    pub const MAX_SECONDS: u64 = 3600;
}

impl<'de> Deserialize<'de> for Linger {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Seconds;
        impl serde::de::Visitor<'_> for Seconds {
            type Value = Linger;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(
                    f,
                    "seconds, a number from 0 to {} (`linger = 5`; 0 turns lingering off)",
                    Linger::MAX_SECONDS
                )
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Linger, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Linger, E> {
                self.visit_f64(v as f64)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Linger, E> {
                if !(0.0..=Linger::MAX_SECONDS as f64).contains(&v) {
                    return Err(E::invalid_value(serde::de::Unexpected::Float(v), &self));
                }
                Ok(Linger(std::time::Duration::from_secs_f64(v)))
            }
        }
        d.deserialize_any(Seconds)
    }
}

impl Settings {
    pub fn path() -> Option<PathBuf> {
        dirs::config_dir().map(|d| d.join("dev/config.toml"))
    }

    /// The user's settings, read once per process: a session asks for them in several places
    /// (trust, pull, mounts, linger, GUI), each a copy of the first read.
    pub fn load() -> Result<Self> {
        static LOADED: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();
        if let Some(s) = LOADED.get() {
            return Ok(s.clone());
        }
        let read = Self::read()?;
        Ok(LOADED.get_or_init(|| read).clone())
    }

    fn read() -> Result<Self> {
        let Some(path) = Self::path() else {
            return Ok(Settings::default());
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
        };
        parse(&path, &text)
    }

    /// Whether `registry` may be reached over plain HTTP.
    pub fn allows_http(&self, registry: &str) -> bool {
        is_loopback(registry) || self.insecure_registries.iter().any(|r| r == registry)
    }

    pub fn mirrors_for(&self, registry: &str) -> &[String] {
        self.mirrors.get(registry).map_or(&[], Vec::as_slice)
    }
}

/// Parses the text of a `config.toml`; errors name the file, line and column, and an unknown
/// key the nearest known one.
pub fn parse(path: &std::path::Path, text: &str) -> Result<Settings> {
    toml::from_str(text).map_err(|e| {
        let located = super::toml_error(path, text, &e);
        let hint = "the keys of config.toml are listed in the README, under \"Registries, credentials and your settings\"";
        match super::unknown_key(e.message()) {
            Some((key, near)) => UserError::with_hint(
                format!(
                    "{}: unknown key `{key}`{}",
                    super::located_prefix(&located),
                    near.map(|n| format!("; did you mean `{n}`?"))
                        .unwrap_or_default()
                ),
                hint,
            ),
            None => UserError::with_hint(located, "fix the value at that place in config.toml"),
        }
    })
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

    #[test]
    fn linger_is_seconds_from_0_to_an_hour() {
        let linger = |t: &str| toml::from_str::<Settings>(t).map(|s| s.linger);
        assert_eq!(linger("").expect("unset"), None);
        assert_eq!(
            linger("linger = 0").expect("0"),
            Some(Linger(std::time::Duration::ZERO))
        );
        assert_eq!(
            linger("linger = 2.5").expect("2.5"),
            Some(Linger(std::time::Duration::from_millis(2500)))
        );
        assert_eq!(
            linger("linger = 3600").expect("an hour"),
            Some(Linger(std::time::Duration::from_secs(3600)))
        );
        for bad in [
            "linger = -1",
            "linger = 3601",
            "linger = \"5s\"",
            "linger = true",
        ] {
            let e = linger(bad).expect_err(bad).to_string();
            assert!(
                e.contains("expected seconds, a number from 0 to 3600"),
                "{bad}: {e}"
            );
        }
        let e = parse(std::path::Path::new("/c/config.toml"), "lingr = 1\n")
            .expect_err("unknown")
            .to_string();
        assert_eq!(
            e,
            "/c/config.toml:1:1: unknown key `lingr`; did you mean `linger`?"
        );
    }
}
