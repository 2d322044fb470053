//! Dev Container Features: references (OCI artifacts, tarballs, local directories) resolved
//! and fetched into the store, ordered by their dependencies, and each installed as root in
//! the build sandbox into a layer of its own, cached under (layers below, the Feature's digest,
//! its options and environment) as the tools layer is. Never runs a Feature outside the
//! sandbox, never splices anything of one into shell text (options reach install.sh as
//! environment variables), never reads a Feature's files but beneath a directory fd, bounded.

pub mod fetch;
// Read and written by the devcontainer.json front end; dev.toml's Features lock in dev.lock.
pub mod lockfile;
pub mod metadata;
pub mod order;
pub mod reference;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::ids::Identity;
use crate::oci::Digest;
use crate::sandbox::parent::run_sandbox;
use crate::sandbox::plan::Backend;
use crate::store::images::ImageRecord;
use crate::store::stack::LayerStack;
use crate::store::tools::ToolsRecord;
use crate::store::Store;
use crate::ui::UserError;
use metadata::expand;
use order::{install_order, Node};
use reference::{resource_of, FeatureRef};

/// A Feature's options as a config gives them: a string is its `version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FeatureOptions {
    Version(String),
    Table(BTreeMap<String, OptionValue>),
}

impl Default for FeatureOptions {
    fn default() -> Self {
        FeatureOptions::Table(BTreeMap::new())
    }
}

/// An option's value: text, a boolean, or a whole number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum OptionValue {
    Bool(bool),
    Int(i64),
    String(String),
}

// By hand rather than `untagged`, so that a wrong value says what is expected.
impl<'de> Deserialize<'de> for FeatureOptions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FeatureOptions;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Feature's options: a version string or a table of options")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FeatureOptions::Version(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut table = BTreeMap::new();
                while let Some((k, v)) = m.next_entry::<String, OptionValue>()? {
                    table.insert(k, v);
                }
                Ok(FeatureOptions::Table(table))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for OptionValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = OptionValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an option value: a string, a boolean or a whole number")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(OptionValue::Bool(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(OptionValue::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(OptionValue::Int)
                    .map_err(|_| E::custom("the number is too large for an option"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OptionValue::String(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl OptionValue {
    /// The value as install.sh sees it.
    pub fn as_env(&self) -> String {
        match self {
            OptionValue::Bool(b) => b.to_string(),
            OptionValue::Int(n) => n.to_string(),
            OptionValue::String(s) => s.clone(),
        }
    }
}

impl FeatureOptions {
    /// (option name, value) pairs.
    pub fn options(&self) -> Vec<(String, OptionValue)> {
        match self {
            FeatureOptions::Version(v) => vec![("version".into(), OptionValue::String(v.clone()))],
            FeatureOptions::Table(t) => t.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// The options as one canonical line (for trust, ties and keys).
    pub fn canonical(&self) -> String {
        let map: BTreeMap<String, OptionValue> = self.options().into_iter().collect();
        serde_json::to_string(&map).unwrap_or_default()
    }
}

/// What a lock pins of one Feature: `resolved` is `registry/path@sha256:…` (the URL of a
/// tarball, the path of a local Feature), `integrity` the digest of what was fetched (the
/// manifest's; the tarball's; the local directory's deterministic tar).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub reference: String,
    pub version: Option<String>,
    pub resolved: String,
    pub integrity: Digest,
}

/// Who Features install for: `_REMOTE_USER` and `_CONTAINER_USER` (their homes are read
/// from the image's `/etc/passwd` inside the build).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Users {
    pub remote: String,
    pub container: String,
}

impl Users {
    /// dev.toml's: the image's `User` when it is a name, else root.
    pub fn of_image(user: Option<&str>) -> Users {
        let name = user
            .map(|u| u.split(':').next().unwrap_or_default())
            .filter(|u| !u.is_empty() && !u.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or("root");
        Users {
            remote: name.to_string(),
            container: name.to_string(),
        }
    }
}

/// What to install: the config's Features and everything needed to resolve them.
pub struct Request<'a> {
    /// Reference → options, as the config lists them.
    pub features: &'a BTreeMap<String, FeatureOptions>,
    /// The directory local `./dir` references are relative to (the config's).
    pub base: &'a Path,
    /// The lock's pins, by reference.
    pub pins: &'a BTreeMap<String, Resolved>,
    /// `overrideFeatureInstallOrder`: ids installed first, in this order.
    pub overrides: &'a [String],
    pub users: Users,
}

/// The installed Features of an env.
#[derive(Clone, Debug, Default)]
pub struct Features {
    /// Their layers' diff ids, in installation order (the first lies on the layers below).
    pub layers: Vec<Digest>,
    /// Their `containerEnv`, expanded, for the env (under the config's own variables).
    pub env: BTreeMap<String, String>,
    /// Each Feature as resolved, for dev.lock and devcontainer-lock.json, by reference.
    pub resolved: Vec<Resolved>,
}

/// What trust is bound to for each Feature: its reference and options, and for a local
/// Feature the digest of its files (read beneath `base`; unreadable ones say so, and then
/// `ensure` refuses them with the reason).
pub fn trust_lines(features: &BTreeMap<String, FeatureOptions>, base: &Path) -> Vec<String> {
    features
        .iter()
        .map(|(r, o)| {
            let line = format!("{r} {}", o.canonical());
            match FeatureRef::parse(r).map(|f| f.source) {
                Ok(reference::Source::Local(rel)) => match fetch::local_digest(base, &rel, r) {
                    Ok(d) => format!("{line} (files {d})"),
                    Err(_) => format!("{line} (files unreadable)"),
                },
                _ => line,
            }
        })
        .collect()
}

/// At most this many Features, dependencies included, in one env.
const MAX_FEATURES: usize = 64;

/// Where a Feature's files are inside its build, as the Dev Containers CLI has them.
const INSIDE: &str = "/tmp/dev-container-features";

/// Runs one Feature's install.sh in its directory as the CLI does; the user names come as
/// variables, the homes from the image's passwd, nothing spliced into this text.
const INSTALL_SCRIPT: &str = r#"exec </dev/null 1>&2
home_of() {
    while IFS=: read -r name _ _ _ _ home _; do
        if [ "$name" = "$1" ]; then printf '%s' "$home"; return; fi
    done < /etc/passwd
    if [ "$1" = root ]; then printf /root; fi
}
_REMOTE_USER_HOME=$(home_of "$_REMOTE_USER")
_CONTAINER_USER_HOME=$(home_of "$_CONTAINER_USER")
export _REMOTE_USER_HOME _CONTAINER_USER_HOME
cd "$1" || exit 1
chmod +x ./install.sh || exit 1
exec ./install.sh
"#;

/// One Feature of the graph.
struct Planned {
    fetched: fetch::Fetched,
    options: FeatureOptions,
}

/// Resolves, orders and installs the Features of `request` on `below` (the image's layers and
/// the tools layer); each layer is built when the cache has none for its key.
pub fn ensure(
    store: &Store,
    identity: &Identity,
    image: &ImageRecord,
    image_env: &[String],
    below: &LayerStack,
    request: &Request,
    backend: Option<Backend>,
) -> Result<Features> {
    if request.features.is_empty() {
        return Ok(Features::default());
    }
    let (planned, nodes) = resolve(store, request)?;
    let overrides: Vec<String> = request.overrides.iter().map(|o| resource_of(o)).collect();
    let order = install_order(&nodes, &overrides)?;
    let mapping = identity.store_key();
    let mut stack: Vec<Digest> = below.top_first().to_vec();
    let mut env: BTreeMap<String, String> = image_env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // The env's PATH when the image sets none (`sandbox::plan::environment`).
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut out = Features::default();
    let mut container_env = BTreeMap::new();
    for (n, &i) in order.iter().enumerate() {
        let p = &planned[i];
        let what = p.fetched.resolved.reference.as_str();
        for (k, v) in &p.fetched.meta.container_env {
            let value = expand(v, &env);
            env.insert(k.clone(), value.clone());
            container_env.insert(k.clone(), value);
        }
        let mut build_env = container_env.clone();
        build_env.extend(p.fetched.meta.option_env(&p.options, what)?);
        build_env.insert("_REMOTE_USER".into(), request.users.remote.clone());
        build_env.insert("_CONTAINER_USER".into(), request.users.container.clone());
        let key = Digest::of_bytes(
            serde_json::json!({
                "v": 1,
                "below": stack.iter().map(|d| d.hex()).collect::<Vec<_>>(),
                "feature": p.fetched.resolved.integrity.to_string(),
                "blob": p.fetched.blob.to_string(),
                "env": build_env,
            })
            .to_string()
            .as_bytes(),
        );
        let diff_id = match store.tools_record(&mapping, &key) {
            Some(rec) => rec.diff_id,
            None => {
                let unsupported = p.fetched.meta.unsupported();
                if !unsupported.is_empty() {
                    crate::ui::note(format_args!(
                        "the Feature `{what}` asks for {}, which dev does not support; installing it without",
                        unsupported.iter().map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", ")
                    ));
                }
                let diff_id = build(
                    store,
                    identity,
                    image,
                    image_env,
                    &stack,
                    p,
                    (n, request.base),
                    build_env,
                    backend,
                )?;
                store.save_tools_record(
                    &mapping,
                    &ToolsRecord {
                        key,
                        diff_id: diff_id.clone(),
                        manager: "feature".into(),
                        resolved: BTreeMap::new(),
                    },
                )?;
                diff_id
            }
        };
        stack.insert(0, diff_id.clone());
        out.layers.push(diff_id);
    }
    out.env = container_env;
    let mut resolved: Vec<Resolved> = planned.iter().map(|p| p.fetched.resolved.clone()).collect();
    resolved.sort_by(|a, b| a.reference.cmp(&b.reference));
    resolved.dedup_by(|a, b| a.reference == b.reference);
    out.resolved = resolved;
    Ok(out)
}

/// Fetches the Features of the request and, recursively, what they `dependsOn`; one node per
/// (reference, options).
fn resolve(store: &Store, request: &Request) -> Result<(Vec<Planned>, Vec<Node>)> {
    let mut planned: Vec<Planned> = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut fetched: BTreeMap<String, fetch::Fetched> = BTreeMap::new();
    let mut queue: Vec<(String, FeatureOptions, Option<usize>)> = request
        .features
        .iter()
        .map(|(r, o)| (r.clone(), o.clone(), None))
        .collect();
    while let Some((text, options, parent)) = queue.pop() {
        let canonical = options.canonical();
        let existing = nodes
            .iter()
            .position(|n| n.id == text && n.options == canonical);
        let index = match existing {
            Some(i) => i,
            None => {
                if nodes.len() >= MAX_FEATURES {
                    return Err(UserError::with_hint(
                        format!("more than {MAX_FEATURES} Features, dependencies included"),
                        "install fewer Features",
                    ));
                }
                let f = match fetched.get(&text) {
                    Some(f) => f.clone(),
                    None => {
                        let fref = FeatureRef::parse(&text)?;
                        let f = fetch::fetch(store, &fref, request.base, request.pins.get(&text))?;
                        fetched.insert(text.clone(), f.clone());
                        f
                    }
                };
                let i = nodes.len();
                nodes.push(Node {
                    id: text.clone(),
                    resource: resource_of(&text),
                    options: canonical,
                    depends_on: Vec::new(),
                    installs_after: f
                        .meta
                        .installs_after
                        .iter()
                        .map(|s| resource_of(s))
                        .collect(),
                });
                for (dep, opts) in &f.meta.depends_on {
                    if dep.starts_with("./") || dep.starts_with("../") {
                        // The project's files would run without having been trusted.
                        return Err(UserError::with_hint(
                            format!("the Feature `{text}` depends on the local Feature `{dep}`; a dependency must be published (OCI or a tarball)"),
                            "list the local Feature in the config yourself instead",
                        ));
                    }
                    queue.push((dep.clone(), opts.clone(), Some(i)));
                }
                planned.push(Planned {
                    fetched: f,
                    options,
                });
                i
            }
        };
        if let Some(p) = parent {
            if !nodes[p].depends_on.contains(&index) {
                nodes[p].depends_on.push(index);
            }
        }
    }
    Ok((planned, nodes))
}

/// Builds one Feature's layer: its files unpacked afresh into the build's scratch directory
/// and mounted at `/tmp/dev-container-features/<n>`, its install.sh run as root on `stack`.
#[allow(clippy::too_many_arguments)]
fn build(
    store: &Store,
    identity: &Identity,
    image: &ImageRecord,
    image_env: &[String],
    stack: &[Digest],
    p: &Planned,
    (n, base): (usize, &Path),
    env: BTreeMap<String, String>,
    backend: Option<Backend>,
) -> Result<Digest> {
    let what = &p.fetched.resolved.reference;
    crate::ui::note(format_args!("installing the Feature `{what}`"));
    let scratch = store.scratch_env(&identity.store_key())?;
    let built = (|| {
        let files = scratch.dir.join("feature");
        if !store.has_blob(&p.fetched.blob) {
            // `dev system prune` deleted it; the pin brings back the very same.
            fetch::download(store, &p.fetched.source, base, Some(&p.fetched.resolved))?;
        }
        fetch::unpack_blob(store, &p.fetched.blob, &files, what)?;
        let inside = PathBuf::from(format!("{INSIDE}/{n}"));
        let build = crate::tools::Build {
            lowers: stack
                .iter()
                .map(|d| Path::new(d.hex()).join("root"))
                .collect(),
            shares: vec![(inside.clone(), files)],
            env,
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                INSTALL_SCRIPT.into(),
                "dev-feature".into(),
                inside.display().to_string(),
            ],
        };
        let plan =
            crate::tools::build_plan(store, identity, image, image_env, &scratch, backend, build);
        match run_sandbox(identity, &plan)? {
            0 => store.capture(identity, &scratch.upper).map(|(d, _)| d),
            code => Err(UserError::with_hint(
                format!("the Feature `{what}` failed: its install.sh exited with {code}; the env is unchanged"),
                "its output is above; fix the Feature or its options in the config",
            )),
        }
    })();
    let _ = store.remove_trees(identity, std::slice::from_ref(&scratch.dir));
    built
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_in_toml_and_json() {
        #[derive(Deserialize)]
        struct T {
            features: BTreeMap<String, FeatureOptions>,
        }
        let t: T = toml::from_str(
            "[features]\n\"r.io/f/a:1\" = \"20\"\n\"r.io/f/b:1\" = { flag = true, n = 3, s = \"x\" }\n",
        )
        .expect("toml");
        assert_eq!(
            t.features["r.io/f/a:1"],
            FeatureOptions::Version("20".into())
        );
        assert_eq!(
            t.features["r.io/f/b:1"].canonical(),
            r#"{"flag":true,"n":3,"s":"x"}"#
        );
        let j: T = serde_json::from_str(r#"{"features": {"r.io/f/a:1": {}, "r.io/f/b:1": "lts"}}"#)
            .expect("json");
        assert_eq!(j.features["r.io/f/a:1"].canonical(), "{}");
        assert_eq!(j.features["r.io/f/b:1"].options()[0].1.as_env(), "lts");
        let e = crate::config::project::parse(
            Path::new("dev.toml"),
            "image = \"x\"\n[features]\n\"r.io/f/a:1\" = 3\n",
        )
        .expect_err("number")
        .to_string();
        assert!(
            e.contains("dev.toml:3:16") && e.contains("a version string or a table of options"),
            "{e}"
        );
        let e = crate::config::project::parse(
            Path::new("dev.toml"),
            "image = \"x\"\n[features]\n\"r.io/f/a:1\" = { v = [1] }\n",
        )
        .expect_err("array")
        .to_string();
        assert!(e.contains("a string, a boolean or a whole number"), "{e}");
    }

    #[test]
    fn users_from_the_image() {
        assert_eq!(Users::of_image(None).remote, "root");
        assert_eq!(Users::of_image(Some("1000:1000")).remote, "root");
        assert_eq!(Users::of_image(Some("vscode")).container, "vscode");
    }
}
