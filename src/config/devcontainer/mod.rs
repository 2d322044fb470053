//! `devcontainer.json`, a second front end to the same session plan: found where a project has
//! no dev.toml, read as JSONC, its variables substituted, and mapped onto what dev runs: the
//! image, the environment, the user, the lifecycle commands (once per env, each start, each
//! `dev shell`). What dev does not do is named, never dropped silently; a Dockerfile or compose
//! project is refused in one line. Parsing and discovery only: nothing here pulls or runs.

mod discover;
pub mod jsonc;
pub mod lifecycle;
mod variables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

pub use discover::{find, maybe_in, root_of};
pub use lifecycle::{Command, Step};
pub use variables::resolve_container_env;
use variables::Substitution;

use super::mounts::{check_target, check_volume_name, MountFrom, MountSpec};
use super::project::DevToml;
use crate::ui::UserError;

pub const FILE_NAME: &str = "devcontainer.json";
pub const DIR: &str = ".devcontainer";
/// The image label that carries devcontainer.json entries (the Dev Containers CLI writes it).
pub const METADATA_LABEL: &str = "devcontainer.metadata";

/// A property dev reads but does not act on, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ignored {
    pub property: String,
    pub reason: String,
}

/// A `mounts` entry as written (shown by `dev config`; bound as [`Mount::spec`] says).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub source: Option<String>,
    pub target: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
}

/// `hostRequirements`: what the machine should have.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostRequirements {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u64>,
    /// Bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<u64>,
}

/// The lifecycle commands, each kind in the order they run (the image's label first, then the
/// file's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hooks {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_create_command: Vec<Command>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub update_content_command: Vec<Command>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_create_command: Vec<Command>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_start_command: Vec<Command>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_attach_command: Vec<Command>,
}

impl Hooks {
    /// Once per env: onCreate, updateContent, postCreate.
    pub fn create(&self) -> Vec<(String, Command)> {
        labelled(&[
            ("onCreateCommand", &self.on_create_command),
            ("updateContentCommand", &self.update_content_command),
            ("postCreateCommand", &self.post_create_command),
        ])
    }

    pub fn start(&self) -> Vec<(String, Command)> {
        labelled(&[("postStartCommand", &self.post_start_command)])
    }

    pub fn attach(&self) -> Vec<(String, Command)> {
        labelled(&[("postAttachCommand", &self.post_attach_command)])
    }

    pub fn all(&self) -> Vec<(String, Command)> {
        let mut all = self.create();
        all.extend(self.start());
        all.extend(self.attach());
        all
    }
}

fn labelled(kinds: &[(&str, &Vec<Command>)]) -> Vec<(String, Command)> {
    kinds
        .iter()
        .flat_map(|(label, cmds)| cmds.iter().map(|c| (label.to_string(), c.clone())))
        .collect()
}

/// What a devcontainer.json says, variables substituted, mapped for dev.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DevContainer {
    pub file: PathBuf,
    pub image: String,
    /// Feature reference -> options (a string in the file is `{"version": …}`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub container_env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub remote_env: BTreeMap<String, String>,
    /// The user's name inside (remoteUser, else containerUser); their uid is always the host
    /// user's, as updateRemoteUserUID does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_user: Option<String>,
    /// Where the project is inside: its own path on the host, as always with dev.
    pub workspace_folder: PathBuf,
    pub hooks: Hooks,
    /// Run on the host, in the project, when the env starts (needs trust).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initialize_command: Option<Command>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forward_ports: Vec<String>,
    /// `overrideFeatureInstallOrder`: Feature ids installed first, in this order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub override_feature_install_order: Vec<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub host_requirements: HostRequirements,
    /// Host variables the file reads with `${localEnv:…}` (they enter the env: needs trust).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_env: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<Ignored>,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// The properties that build the image or shape the container in ways dev does not: the
/// first three make the project unusable; the others are named and left out.
const REFUSED: [(&str, &str); 3] = [
    (
        "build",
        "builds the image from a Dockerfile (`build.dockerfile`)",
    ),
    (
        "dockerFile",
        "builds the image from a Dockerfile (`dockerFile`)",
    ),
    (
        "dockerComposeFile",
        "runs a Docker Compose project (`dockerComposeFile`)",
    ),
];

const UNSUPPORTED: [(&str, &str); 5] = [
    ("runArgs", "docker run arguments are not supported: dev is not docker"),
    ("privileged", "not supported: the env never gets more privilege than you have"),
    ("capAdd", "not supported: the env gets no capabilities beyond its user namespace"),
    ("securityOpt", "not supported: dev sets no seccomp or LSM options"),
    ("appPort", "not supported: the env shares the host's network, so a port it listens on is already on the host"),
];

/// Read, with nothing to do for dev.
const NOTHING_TO_DO: [(&str, &str); 12] = [
    ("$schema", "a schema reference"),
    ("name", "a display name"),
    (
        "customizations",
        "settings for editors (VS Code, Codespaces)",
    ),
    (
        "shutdownAction",
        "dev stops the env when its last session ends (`dev start` keeps it)",
    ),
    (
        "overrideCommand",
        "dev runs no image command: the env's init waits for sessions",
    ),
    (
        "waitFor",
        "dev runs the lifecycle commands before the session's command",
    ),
    (
        "userEnvProbe",
        "dev does not probe a login shell's environment",
    ),
    (
        "portsAttributes",
        "for an editor's port forwarding; the env shares the host's network",
    ),
    (
        "otherPortsAttributes",
        "for an editor's port forwarding; the env shares the host's network",
    ),
    ("init", "dev always runs a small init as pid 1"),
    (
        "updateRemoteUserUID",
        "dev's user inside always has your uid",
    ),
    ("secrets", "recommended secrets for Codespaces"),
];

/// What the substitution of variables needs to know.
pub struct Context<'a> {
    /// The project directory on the host.
    pub local_workspace: &'a Path,
    /// A host variable, for `${localEnv:X}`.
    pub host_var: &'a dyn Fn(&str) -> Option<String>,
}

/// Parses the text of a devcontainer.json found at `file`, in the project `root`.
pub fn parse(file: &Path, text: &str, ctx: &Context) -> Result<DevContainer> {
    let value = jsonc::parse(file, text)?;
    let Value::Object(map) = value else {
        return Err(UserError::with_hint(
            format!("{}: the file is not a JSON object", file.display()),
            "a devcontainer.json is one object: `{ \"image\": \"debian:bookworm\" }`",
        ));
    };
    from_object(file, text, map, ctx)
}

fn from_object(
    file: &Path,
    text: &str,
    map: serde_json::Map<String, Value>,
    ctx: &Context,
) -> Result<DevContainer> {
    for (key, why) in REFUSED {
        let present = match (key, map.get(key)) {
            (_, None) | (_, Some(Value::Null)) => false,
            // `build` without a Dockerfile (only options) does not build anything.
            ("build", Some(b)) => b
                .get("dockerfile")
                .or_else(|| b.get("dockerFile"))
                .is_some(),
            _ => true,
        };
        if present {
            return Err(UserError::with_hint(
                format!(
                    "{}{}: this devcontainer.json {why}, which dev does not support",
                    file.display(),
                    place(text, key)
                ),
                "build the image elsewhere (`podman build`) and name it in `image`, or write a dev.toml (`dev init`)",
            ));
        }
    }
    let local = ctx.local_workspace;
    let basename = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id =
        crate::oci::Digest::of_bytes(format!("{}\0{}", local.display(), file.display()).as_bytes());
    let mut subst = Substitution {
        local_workspace: local.display().to_string(),
        basename,
        // The project is at its own path inside, as always with dev.
        container_workspace: local.display().to_string(),
        devcontainer_id: id.hex()[..32].to_string(),
        host_var: ctx.host_var,
        host_env: Vec::new(),
    };
    let mut dc = DevContainer {
        file: file.to_path_buf(),
        workspace_folder: local.to_path_buf(),
        ..DevContainer::default()
    };
    let wrong = |key: &str, what: &str| {
        UserError::with_hint(
            format!("{}{}: `{key}` {what}", file.display(), place(text, key)),
            "see the Dev Container specification for the property's form",
        )
    };
    for (key, raw) in &map {
        let value = subst.value(raw);
        let ignore = |dc: &mut DevContainer, reason: &str| {
            dc.ignored.push(Ignored {
                property: key.clone(),
                reason: reason.to_string(),
            })
        };
        match key.as_str() {
            "image" => {
                dc.image = value
                    .as_str()
                    .ok_or_else(|| wrong(key, "is not a string"))?
                    .to_string()
            }
            "features" => dc.features = features(&value).map_err(|e| wrong(key, &e))?,
            "containerEnv" => dc.container_env = env_map(&value).map_err(|e| wrong(key, &e))?,
            "remoteEnv" => dc.remote_env = env_map(&value).map_err(|e| wrong(key, &e))?,
            "remoteUser" | "containerUser" => {
                let name = value
                    .as_str()
                    .ok_or_else(|| wrong(key, "is not a string"))?;
                if !valid_user_name(name) {
                    return Err(wrong(key, "is not a user name"));
                }
                // remoteUser wins over containerUser: it is who the tools run as.
                if key == "remoteUser" || dc.remote_user.is_none() {
                    dc.remote_user = Some(name.to_string());
                }
            }
            "workspaceFolder" => {
                let wanted = value
                    .as_str()
                    .ok_or_else(|| wrong(key, "is not a string"))?;
                if Path::new(wanted) != local {
                    ignore(&mut dc, &format!("`{wanted}`: dev mounts the project at its own path, `{}`; `${{containerWorkspaceFolder}}` is that path", local.display()));
                }
            }
            "workspaceMount" => ignore(
                &mut dc,
                "dev mounts the project itself, read-write, at its own path",
            ),
            "mounts" => dc.mounts = mounts(&value).map_err(|e| wrong(key, &e))?,
            "overrideFeatureInstallOrder" => {
                dc.override_feature_install_order = value
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|v| v.as_str().map(String::from))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| wrong(key, "is not an array of Feature ids"))?
            }
            "forwardPorts" => {
                dc.forward_ports = value
                    .as_array()
                    .ok_or_else(|| wrong(key, "is not an array"))?
                    .iter()
                    .map(|p| p.as_str().map_or_else(|| p.to_string(), String::from))
                    .collect();
            }
            "hostRequirements" => {
                dc.host_requirements = host_requirements(&value).map_err(|e| wrong(key, &e))?;
                if value
                    .get("gpu")
                    .is_some_and(|g| !g.is_null() && g != &Value::Bool(false))
                {
                    dc.ignored.push(Ignored {
                        property: "hostRequirements.gpu".into(),
                        reason: "not checked: dev binds no GPU devices".into(),
                    });
                }
            }
            "initializeCommand" => {
                dc.initialize_command = Command::from_json(&value).map_err(|e| wrong(key, &e))?
            }
            "onCreateCommand"
            | "updateContentCommand"
            | "postCreateCommand"
            | "postStartCommand"
            | "postAttachCommand" => {
                if let Some(c) = Command::from_json(&value).map_err(|e| wrong(key, &e))? {
                    dc.hooks.push(key, c);
                }
            }
            k => {
                if let Some((_, why)) = UNSUPPORTED.iter().find(|(u, _)| *u == k) {
                    ignore(&mut dc, why);
                } else if let Some((_, why)) = NOTHING_TO_DO.iter().find(|(u, _)| *u == k) {
                    ignore(&mut dc, &format!("nothing to do: {why}"));
                } else {
                    ignore(&mut dc, "not a property dev knows");
                }
            }
        }
    }
    if dc.image.trim().is_empty() {
        return Err(UserError::with_hint(
            format!("{}: there is no `image`", file.display()),
            "name the image: `\"image\": \"mcr.microsoft.com/devcontainers/base:bookworm\"`",
        ));
    }
    if !dc.forward_ports.is_empty() {
        dc.ignored.push(Ignored {
            property: "forwardPorts".into(),
            reason:
                "nothing to forward: the env shares the host's network, so its ports are the host's"
                    .into(),
        });
    }
    let mut host_env = std::mem::take(&mut subst.host_env);
    host_env.sort();
    host_env.dedup();
    dc.host_env = host_env;
    Ok(dc)
}

impl Hooks {
    fn push(&mut self, key: &str, c: Command) {
        let list = match key {
            "onCreateCommand" => &mut self.on_create_command,
            "updateContentCommand" => &mut self.update_content_command,
            "postCreateCommand" => &mut self.post_create_command,
            "postStartCommand" => &mut self.post_start_command,
            _ => &mut self.post_attach_command,
        };
        list.push(c);
    }
}

/// `:line:col` of the property `key` in the file, when it is there.
fn place(text: &str, key: &str) -> String {
    let Ok(plain) = jsonc::strip(text) else {
        return String::new();
    };
    plain
        .find(&format!("\"{key}\""))
        .map(|at| {
            let (l, c) = jsonc::line_col(text, at);
            format!(":{l}:{c}")
        })
        .unwrap_or_default()
}

fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('-')
}

fn features(v: &Value) -> Result<BTreeMap<String, Value>, String> {
    let map = v.as_object().ok_or("is not an object")?;
    map.iter()
        .map(|(id, opts)| {
            let opts = match opts {
                Value::String(version) => serde_json::json!({ "version": version }),
                Value::Bool(true) | Value::Null => serde_json::json!({}),
                other => other.clone(),
            };
            // What the Features code takes, checked here so the session cannot fail on it.
            serde_json::from_value::<crate::features::FeatureOptions>(opts.clone())
                .map_err(|e| format!("has Feature `{id}` with options {e}"))?;
            Ok((id.clone(), opts))
        })
        .collect()
}

impl Mount {
    /// The mount as dev binds it: `bind` is a host path, `volume` a named volume of the store.
    pub fn spec(&self) -> Result<MountSpec, String> {
        let source = self.source.clone().filter(|s| !s.is_empty());
        let from = match (self.kind.as_str(), source) {
            ("bind", Some(s)) => MountFrom::Host(s),
            ("volume", Some(s)) => MountFrom::Volume(check_volume_name(&s)?),
            ("bind" | "volume", None) => {
                return Err(format!(
                    "has a {} mount at `{}` without a source (dev has no anonymous volumes)",
                    self.kind, self.target
                ))
            }
            (other, _) => {
                return Err(format!(
                    "has a mount of type `{other}`; dev binds `bind` and `volume` mounts"
                ))
            }
        };
        check_target(&self.target)?;
        Ok(MountSpec {
            from,
            target: self.target.clone(),
            readonly: self.readonly,
        })
    }
}

fn env_map(v: &Value) -> Result<BTreeMap<String, String>, String> {
    let map = v.as_object().ok_or("is not an object")?;
    let mut out = BTreeMap::new();
    for (k, val) in map {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!("has an invalid variable name `{k}`"));
        }
        match val {
            // null unsets a variable (remoteEnv): dev does not set it.
            Value::Null => {}
            Value::String(s) if !s.contains('\0') => {
                out.insert(k.clone(), s.clone());
            }
            Value::Number(_) | Value::Bool(_) => {
                out.insert(k.clone(), val.to_string());
            }
            _ => return Err(format!("has `{k}` that is not a string")),
        }
    }
    Ok(out)
}

fn mounts(v: &Value) -> Result<Vec<Mount>, String> {
    let items = v.as_array().ok_or("is not an array")?;
    items
        .iter()
        .map(|m| match m {
            Value::String(s) => {
                let mut mount = Mount {
                    source: None,
                    target: String::new(),
                    kind: "bind".into(),
                    readonly: false,
                };
                for part in s.split(',') {
                    let (k, val) = part.split_once('=').unwrap_or((part, ""));
                    match k.trim() {
                        "source" | "src" => mount.source = Some(val.to_string()),
                        "target" | "dst" | "destination" => mount.target = val.to_string(),
                        "type" => mount.kind = val.to_string(),
                        "readonly" | "ro" => mount.readonly = val != "false",
                        _ => {}
                    }
                }
                if mount.target.is_empty() {
                    return Err(format!("has `{s}` without a target"));
                }
                mount.spec()?;
                Ok(mount)
            }
            Value::Object(o) => {
                let s = |k: &str| o.get(k).and_then(Value::as_str).map(String::from);
                let mount = Mount {
                    source: s("source"),
                    target: s("target").ok_or("has an entry without a target")?,
                    kind: s("type").unwrap_or_else(|| "bind".into()),
                    readonly: o.get("readonly").and_then(Value::as_bool).unwrap_or(false),
                };
                mount.spec()?;
                Ok(mount)
            }
            _ => Err("has an entry that is neither a string nor an object".into()),
        })
        .collect()
}

fn host_requirements(v: &Value) -> Result<HostRequirements, String> {
    let o = v.as_object().ok_or("is not an object")?;
    let size = |k: &str| -> Result<Option<u64>, String> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => parse_size(s)
                .map(Some)
                .ok_or_else(|| format!("has `{k}` `{s}`, which is not a size such as `8gb`")),
            Some(Value::Number(n)) => Ok(n.as_u64()),
            Some(_) => Err(format!("has `{k}` that is not a size")),
        }
    };
    Ok(HostRequirements {
        cpus: match o.get("cpus") {
            None | Some(Value::Null) => None,
            Some(c) => Some(c.as_u64().ok_or("has `cpus` that is not a whole number")?),
        },
        memory: size("memory")?,
        storage: size("storage")?,
    })
}

/// `4gb`, `512mb`, `1tb`, `1024` (bytes), as the spec writes sizes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let n: f64 = digits.trim().parse().ok()?;
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        "t" | "tb" => 1 << 40,
        _ => return None,
    };
    (n >= 0.0).then_some((n * mult as f64) as u64)
}

impl DevContainer {
    /// The dev.toml this file amounts to: image and environment (containerEnv, then
    /// remoteEnv). The lifecycle commands, user and the rest stay on the [`DevContainer`].
    pub fn dev_toml(&self) -> DevToml {
        let mut env = self.container_env.clone();
        env.extend(self.remote_env.clone());
        DevToml {
            image: self.image.clone(),
            env,
            // Both checked when the file was read.
            features: self
                .features
                .iter()
                .filter_map(|(r, o)| Some((r.clone(), serde_json::from_value(o.clone()).ok()?)))
                .collect(),
            mounts: self.mounts.iter().filter_map(|m| m.spec().ok()).collect(),
            ..DevToml::default()
        }
    }

    /// Merges the image's `devcontainer.metadata` label (a JSON array of entries, or one
    /// entry) under this file, as the spec does: the label's entries first, this file last.
    /// The label's user and environment apply where the file says nothing; its lifecycle
    /// commands run before the file's. What else it asks for is named as ignored.
    pub fn merge_image_metadata(&mut self, label: &str) {
        let entries = match serde_json::from_str::<Value>(label) {
            Ok(Value::Array(a)) => a,
            Ok(o @ Value::Object(_)) => vec![o],
            _ => {
                self.ignored.push(Ignored {
                    property: "devcontainer.metadata (image label)".into(),
                    reason: "not a JSON array or object; left out".into(),
                });
                return;
            }
        };
        let mut hooks = Hooks::default();
        let (mut container_env, mut remote_env) = (BTreeMap::new(), BTreeMap::new());
        let mut user: Option<String> = None;
        for entry in entries {
            let Value::Object(o) = entry else { continue };
            for (k, v) in &o {
                match k.as_str() {
                    "containerEnv" => container_env.extend(env_map(v).unwrap_or_default()),
                    "remoteEnv" => remote_env.extend(env_map(v).unwrap_or_default()),
                    "remoteUser" | "containerUser" => {
                        if let Some(n) = v.as_str().filter(|n| valid_user_name(n)) {
                            if k == "remoteUser" || user.is_none() {
                                user = Some(n.to_string());
                            }
                        }
                    }
                    "onCreateCommand"
                    | "updateContentCommand"
                    | "postCreateCommand"
                    | "postStartCommand"
                    | "postAttachCommand" => {
                        if let Ok(Some(c)) = Command::from_json(v) {
                            hooks.push(k, c);
                        }
                    }
                    // Installed already (the image was built with them), or for editors.
                    "id" | "customizations" | "features" => {}
                    other => {
                        let property = format!("{other} (image label)");
                        if !self.ignored.iter().any(|i| i.property == property) {
                            self.ignored.push(Ignored {
                                property,
                                reason: "from the image's devcontainer.metadata; dev takes only its user, environment and lifecycle commands".into(),
                            });
                        }
                    }
                }
            }
        }
        container_env.extend(std::mem::take(&mut self.container_env));
        self.container_env = container_env;
        remote_env.extend(std::mem::take(&mut self.remote_env));
        self.remote_env = remote_env;
        if self.remote_user.is_none() {
            self.remote_user = user;
        }
        for (label, c) in self.hooks.all() {
            hooks.push(&label, c);
        }
        self.hooks = hooks;
    }

    /// The properties dev does not do, one line each, for the session to say.
    pub fn unsupported_lines(&self) -> Vec<String> {
        self.ignored
            .iter()
            .filter(|i| UNSUPPORTED.iter().any(|(u, _)| *u == i.property))
            .map(|i| format!("note: devcontainer.json: `{}` {}", i.property, i.reason))
            .collect()
    }

    /// The user's name inside, when the file names one dev can give (root stays yourself:
    /// `--root` enters as root).
    pub fn user_name(&self) -> Option<&str> {
        self.remote_user.as_deref().filter(|u| *u != "root")
    }
}

/// The dev.toml text `dc` amounts to, and a line for each thing dev.toml cannot say (also
/// written into the text as comments). onCreate, updateContent and postCreate become
/// `[setup] user` (an object's steps one after the other, arrays quoted for the shell).
pub fn to_dev_toml(dc: &DevContainer, root: &Path) -> (String, Vec<String>) {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let key = |k: &str| {
        if !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            k.to_string()
        } else {
            q(k)
        }
    };
    let rel = dc.file.strip_prefix(root).unwrap_or(&dc.file);
    let mut out = format!(
        "# Written by `dev init --from-devcontainer` from {}.\n\nimage = {}\n",
        rel.display(),
        q(&dc.image)
    );
    let env = dc.dev_toml().env;
    if !env.is_empty() {
        out.push_str("\n[env]\n");
        for (k, v) in &env {
            out.push_str(&format!("{} = {}\n", key(k), q(v)));
        }
    }
    let create = dc.hooks.create();
    let mut left_out = Vec::new();
    if !create.is_empty() {
        out.push_str("\n[setup]\n# ");
        out.push_str(
            &create
                .iter()
                .map(|(l, _)| l.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
        out.push_str(", once per env\nuser = [\n");
        for (_, c) in &create {
            if matches!(c, Command::Parallel(_)) {
                left_out.push(format!(
                    "the parallel steps of `{}` run one after the other",
                    c.lines().join("; ")
                ));
            }
            for line in c.shell_lines() {
                out.push_str(&format!("    {},\n", q(&line)));
            }
        }
        out.push_str("]\n");
    }
    for (label, c) in dc.hooks.start().into_iter().chain(dc.hooks.attach()) {
        left_out.push(format!(
            "{label} `{}` (dev.toml has no such hook)",
            c.lines().join("; ")
        ));
    }
    if let Some(c) = &dc.initialize_command {
        left_out.push(format!(
            "initializeCommand `{}` (dev.toml runs nothing on the host)",
            c.lines().join("; ")
        ));
    }
    if let Some(u) = &dc.remote_user {
        left_out.push(format!(
            "remoteUser `{u}` (with a dev.toml you are yourself inside)"
        ));
    }
    let toml = dc.dev_toml();
    if !toml.features.is_empty() {
        out.push_str("\n[features]\n");
        for (r, o) in &toml.features {
            match toml::Value::try_from(o) {
                Ok(v) => out.push_str(&format!("{} = {v}\n", q(r))),
                Err(_) => left_out.push(format!("the options of Feature `{r}`")),
            }
        }
    }
    for m in &toml.mounts {
        match toml::to_string(m) {
            Ok(t) => out.push_str(&format!("\n[[mounts]]\n{t}")),
            Err(_) => left_out.push(format!("the mount at {}", m.target)),
        }
    }
    if !left_out.is_empty() {
        out.push_str("\n# Not carried over from devcontainer.json:\n");
        for l in &left_out {
            out.push_str(&format!("#   {}\n", l.replace('\n', " ")));
        }
    }
    (out, left_out)
}

/// What the machine has, against `hostRequirements`: a line for each thing it lacks.
pub fn check_host(req: &HostRequirements, project: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(want) = req.cpus {
        let have = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        if have < want {
            out.push(format!(
                "hostRequirements: {want} cpus wanted, this machine has {have}"
            ));
        }
    }
    if let Some(want) = req.memory {
        let have = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
        });
        if let Some(have) = have.filter(|h| *h < want) {
            out.push(format!(
                "hostRequirements: {} of memory wanted, this machine has {}",
                crate::ui::human_bytes(want),
                crate::ui::human_bytes(have)
            ));
        }
    }
    if let Some(want) = req.storage {
        if let Ok(st) = nix::sys::statvfs::statvfs(project) {
            let have = st.blocks_available().saturating_mul(st.fragment_size());
            if have < want {
                out.push(format!(
                    "hostRequirements: {} of storage wanted, {} is free where the project is",
                    crate::ui::human_bytes(want),
                    crate::ui::human_bytes(have)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
