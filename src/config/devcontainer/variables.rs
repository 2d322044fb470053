//! devcontainer.json's variables: `${localEnv:X[:default]}`, the workspace folders, `${devcontainerId}`
//! substituted when the file is read, and `${containerEnv:X}` resolved against the image's
//! environment when the session is planned. Pure: the host's variables come in as a function.

use std::collections::BTreeMap;

use serde_json::Value;

/// What the variables stand for in one file, and which host variables it read.
pub(super) struct Substitution<'a> {
    pub(super) local_workspace: String,
    pub(super) basename: String,
    pub(super) container_workspace: String,
    pub(super) devcontainer_id: String,
    pub(super) host_var: &'a dyn Fn(&str) -> Option<String>,
    /// The `${localEnv:…}` names read.
    pub(super) host_env: Vec<String>,
}

impl Substitution<'_> {
    pub(super) fn value(&mut self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.string(s)),
            Value::Array(a) => Value::Array(a.iter().map(|i| self.value(i)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, val)| (k.clone(), self.value(val)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `${localEnv:X[:default]}`, `${localWorkspaceFolder}`, `${containerWorkspaceFolder}`,
    /// `${localWorkspaceFolderBasename}`, `${containerWorkspaceFolderBasename}` and
    /// `${devcontainerId}` replaced; `${containerEnv:X}` is left for the env (see
    /// [`resolve_container_env`]), anything else as written.
    fn string(&mut self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let inner = &after[..end];
            match self.variable(inner) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push_str("${");
                    out.push_str(inner);
                    out.push('}');
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn variable(&mut self, inner: &str) -> Option<String> {
        let (kind, arg) = inner.split_once(':').unwrap_or((inner, ""));
        match kind {
            "localEnv" | "env" => {
                let (name, default) = arg.split_once(':').unwrap_or((arg, ""));
                self.host_env.push(name.to_string());
                Some((self.host_var)(name).unwrap_or_else(|| default.to_string()))
            }
            "localWorkspaceFolder" => Some(self.local_workspace.clone()),
            "containerWorkspaceFolder" => Some(self.container_workspace.clone()),
            "localWorkspaceFolderBasename" | "containerWorkspaceFolderBasename" => {
                Some(self.basename.clone())
            }
            "devcontainerId" => Some(self.devcontainer_id.clone()),
            _ => None,
        }
    }
}

/// `${containerEnv:X[:default]}` in `env`'s values, from the image's environment and the
/// values of `env` that refer to nothing (one level, as the spec's remoteEnv does).
pub fn resolve_container_env(
    env: &BTreeMap<String, String>,
    image_env: &[String],
) -> BTreeMap<String, String> {
    if !env.values().any(|v| v.contains("${containerEnv:")) {
        return env.clone();
    }
    let mut base: BTreeMap<&str, &str> = image_env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    for (k, v) in env {
        if !v.contains("${containerEnv:") {
            base.insert(k, v);
        }
    }
    env.iter()
        .map(|(k, v)| {
            let mut out = String::new();
            let mut rest = v.as_str();
            while let Some(start) = rest.find("${containerEnv:") {
                out.push_str(&rest[..start]);
                let after = &rest[start + "${containerEnv:".len()..];
                let Some(end) = after.find('}') else {
                    out.push_str(&rest[start..]);
                    rest = "";
                    break;
                };
                let (name, default) = after[..end].split_once(':').unwrap_or((&after[..end], ""));
                out.push_str(base.get(name).copied().unwrap_or(default));
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            (k.clone(), out)
        })
        .collect()
}
