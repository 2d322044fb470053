//! `devcontainer-feature.json`: a Feature's id, version, options with their defaults, the
//! environment it sets, what it depends on and installs after, and the properties dev does
//! not support (named, never silently dropped). Parsing only.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Deserialize;

use super::reference::option_env_name;
use super::{FeatureOptions, OptionValue};
use crate::ui::UserError;

/// The most a `devcontainer-feature.json` may hold.
pub const MAX_METADATA: u64 = 1 << 20;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub options: BTreeMap<String, OptionSpec>,
    #[serde(default)]
    pub container_env: BTreeMap<String, String>,
    #[serde(default)]
    pub depends_on: BTreeMap<String, FeatureOptions>,
    #[serde(default)]
    pub installs_after: Vec<String>,
    /// Every other property, kept to name the ones dev does not support.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct OptionSpec {
    #[serde(default)]
    pub default: Option<OptionValue>,
}

/// Properties of a Feature that dev does not carry out; `init` needs nothing (dev's env has
/// an init as pid 1).
const UNSUPPORTED: [&str; 10] = [
    "mounts",
    "entrypoint",
    "privileged",
    "capAdd",
    "securityOpt",
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "postStartCommand",
    "postAttachCommand",
];

impl Metadata {
    /// Parses the file's bytes; `what` names the Feature in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Metadata> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let meta: Metadata = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            UserError::with_hint(
                format!(
                    "the Feature `{what}` has a malformed devcontainer-feature.json: {}: {}",
                    e.path(),
                    e.inner()
                ),
                "fix the Feature, or use another version of it",
            )
        })?;
        for (k, v) in &meta.container_env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(UserError::with_hint(
                    format!(
                        "the Feature `{what}` sets an invalid variable `{}` in containerEnv",
                        k.escape_debug()
                    ),
                    "variable names cannot be empty or hold `=`; fix the Feature",
                ));
            }
        }
        Ok(meta)
    }

    /// The properties this Feature has that dev does not carry out.
    pub fn unsupported(&self) -> Vec<&str> {
        UNSUPPORTED
            .iter()
            .copied()
            .filter(|k| {
                self.other
                    .get(*k)
                    .is_some_and(|v| !v.is_null() && *v != serde_json::Value::Bool(false))
            })
            .collect()
    }

    /// The option variables install.sh gets: each declared option's default, overridden by
    /// what the user gave, then options the user gave that the Feature does not declare (the
    /// CLI passes those too). Names as [`option_env_name`] makes them; sorted.
    pub fn option_env(&self, given: &FeatureOptions, what: &str) -> Result<Vec<(String, String)>> {
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        for (name, spec) in &self.options {
            if let Some(d) = &spec.default {
                values.insert(option_env_name(name), d.as_env());
            }
        }
        for (name, v) in given.options() {
            values.insert(option_env_name(&name), v.as_env());
        }
        if let Some((k, _)) = values.iter().find(|(_, v)| v.contains('\0')) {
            return Err(UserError::with_hint(
                format!("the option `{k}` of Feature `{what}` holds a NUL byte"),
                "option values are text without NUL bytes",
            ));
        }
        Ok(values.into_iter().collect())
    }
}

/// `value` with `${NAME}` and `$NAME` replaced from `env` (unset: empty), as Docker's `ENV`
/// expands a Feature's containerEnv (`"PATH": "/opt/x/bin:${PATH}"`).
pub fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) if !inner[..end].is_empty() && inner[..end].chars().all(is_name) => {
                    out.push_str(env.get(&inner[..end]).map_or("", String::as_str));
                    rest = &inner[end + 1..];
                    continue;
                }
                _ => {}
            }
        } else {
            let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
            if end > 0 && !after.starts_with(|c: char| c.is_ascii_digit()) {
                out.push_str(env.get(&after[..end]).map_or("", String::as_str));
                rest = &after[end..];
                continue;
            }
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_user_options_and_names() {
        let m = Metadata::parse(
            br#"{"id":"x","version":"1.2.0","options":{"version":{"type":"string","default":"lts"},
                "install-tools":{"type":"boolean","default":true},"noDefault":{"type":"string"}},
                "containerEnv":{"X_HOME":"/opt/x","PATH":"/opt/x/bin:${PATH}"},
                "mounts":[{"source":"a","target":"/b","type":"volume"}],"init":true,"privileged":false}"#,
            "x",
        )
        .expect("parses");
        let given = FeatureOptions::Table(
            [("version".to_string(), OptionValue::String("20".into()))].into(),
        );
        assert_eq!(
            m.option_env(&given, "x").expect("env"),
            [
                ("INSTALL_TOOLS".to_string(), "true".to_string()),
                ("VERSION".to_string(), "20".to_string())
            ]
        );
        assert_eq!(
            m.option_env(&FeatureOptions::Version("18".into()), "x")
                .expect("env")[1],
            ("VERSION".to_string(), "18".to_string())
        );
        assert_eq!(m.unsupported(), ["mounts"]);
        assert!(Metadata::parse(br#"{"options": 3}"#, "x")
            .expect_err("bad")
            .to_string()
            .contains("options"));
        assert!(Metadata::parse(br#"{"containerEnv": {"A=B": "c"}}"#, "x").is_err());
    }

    #[test]
    fn container_env_expands_like_docker_env() {
        let env: BTreeMap<String, String> =
            [("PATH".to_string(), "/usr/bin:/bin".to_string())].into();
        assert_eq!(
            expand("/opt/x/bin:${PATH}", &env),
            "/opt/x/bin:/usr/bin:/bin"
        );
        assert_eq!(expand("$PATH:/y", &env), "/usr/bin:/bin:/y");
        assert_eq!(expand("${NOPE}a$", &env), "a$");
        assert_eq!(expand("${bad name}", &env), "${bad name}");
        assert_eq!(expand("$1x", &env), "$1x");
    }
}
