//! Feature references as the Dev Containers spec writes them: an OCI artifact
//! (`ghcr.io/devcontainers/features/node:1`, any registry, a tag or `@sha256:`), an https
//! tarball URL, or a local `./dir` relative to the config. Parsing only.

use std::path::{Component, Path, PathBuf};

use anyhow::Result;

use crate::oci::Reference;
use crate::ui::UserError;

/// Where a Feature comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Oci(Reference),
    /// `https://…` (or `http://` to a loopback host, as for registries).
    Tarball(String),
    /// A directory relative to the config's directory, inside it.
    Local(PathBuf),
}

/// A Feature reference as written, and what it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureRef {
    pub text: String,
    pub source: Source,
}

impl FeatureRef {
    pub fn parse(text: &str) -> Result<FeatureRef> {
        let source = if text.starts_with("./") || text.starts_with("../") {
            let rel = Path::new(text);
            if rel.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(UserError::with_hint(
                    format!("Feature `{text}`: a local Feature may not leave the config's directory (`..`)"),
                    "put the Feature's directory next to the config, e.g. `./features/name`",
                ));
            }
            Source::Local(
                rel.components()
                    .filter(|c| matches!(c, Component::Normal(_)))
                    .collect(),
            )
        } else if let Some(rest) = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
        {
            if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(UserError::with_hint(
                    format!("Feature `{}`: not a URL", text.escape_debug()),
                    "write a tarball Feature as `https://host/path/devcontainer-feature-x.tgz`",
                ));
            }
            Source::Tarball(text.to_string())
        } else {
            let first = text.split('/').next().unwrap_or_default();
            let hosted = text.contains('/')
                && (first.contains('.') || first.contains(':') || first == "localhost");
            if !hosted {
                return Err(UserError::with_hint(
                    format!("Feature `{}` names no registry", text.escape_debug()),
                    "write it in full, e.g. `ghcr.io/devcontainers/features/node:1`, or as `./dir` or an https URL",
                ));
            }
            Source::Oci(Reference::parse(text).map_err(|e| {
                UserError::with_hint(
                    format!("Feature `{}`: {e}", text.escape_debug()),
                    "write it as `registry/path:tag` or `registry/path@sha256:…`",
                )
            })?)
        };
        Ok(FeatureRef {
            text: text.to_string(),
            source,
        })
    }

    /// What `installsAfter` and `overrideFeatureInstallOrder` name: the Feature without its
    /// tag or digest (`ghcr.io/devcontainers/features/node`), the URL, or the path.
    pub fn resource(&self) -> String {
        match &self.source {
            Source::Oci(r) => format!("{}/{}", r.registry, r.repository),
            Source::Tarball(url) => url.clone(),
            Source::Local(p) => format!("./{}", p.display()),
        }
    }
}

/// The resource an id in `installsAfter` or `overrideFeatureInstallOrder` names; ids that do
/// not parse are compared as written (they then match nothing).
pub fn resource_of(id: &str) -> String {
    FeatureRef::parse(id).map_or_else(|_| id.to_string(), |r| r.resource())
}

/// The environment variable an option is passed as, as the Dev Containers CLI names it:
/// every non-word character becomes `_`, leading digits and underscores become one `_`, and
/// the whole is upper case.
pub fn option_env_name(option: &str) -> String {
    let word: String = option
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit() || c == '_');
    let name = if rest.len() < word.len() {
        format!("_{rest}")
    } else {
        word
    };
    name.to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_names_become_variables_as_the_cli_names_them() {
        assert_eq!(option_env_name("version"), "VERSION");
        assert_eq!(option_env_name("installTools"), "INSTALLTOOLS");
        assert_eq!(option_env_name("node-gyp.deps"), "NODE_GYP_DEPS");
        assert_eq!(option_env_name("3dLibs"), "_DLIBS");
        assert_eq!(option_env_name("__x"), "_X");
        assert_eq!(option_env_name("_1a-b"), "_A_B");
        assert_eq!(option_env_name("é"), "_");
    }

    #[test]
    fn references_of_each_kind() {
        let r = FeatureRef::parse("ghcr.io/devcontainers/features/node:1").expect("oci");
        assert_eq!(r.resource(), "ghcr.io/devcontainers/features/node");
        assert!(matches!(&r.source, Source::Oci(o) if o.tag.as_deref() == Some("1")));
        let d = format!("localhost:5000/f/x@sha256:{}", "a".repeat(64));
        let r = FeatureRef::parse(&d).expect("digest");
        assert_eq!(r.resource(), "localhost:5000/f/x");
        let r = FeatureRef::parse("https://example.com/f.tgz").expect("url");
        assert_eq!(
            r.source,
            Source::Tarball("https://example.com/f.tgz".into())
        );
        let r = FeatureRef::parse("./features/a").expect("local");
        assert_eq!(r.source, Source::Local("features/a".into()));
        assert_eq!(r.resource(), "./features/a");
        assert_eq!(
            resource_of("ghcr.io/devcontainers/features/node"),
            "ghcr.io/devcontainers/features/node"
        );
        for bad in ["node", "./a/../../x", "../x", "ghcr.io/UPPER/x", "https://"] {
            assert!(FeatureRef::parse(bad).is_err(), "{bad}");
        }
    }
}
