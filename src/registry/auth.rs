//! Registry credentials: podman's `auth.json`, Docker's `config.json` (`auths`, `credHelpers`,
//! `credsStore` through `docker-credential-<name>`), and parsing of `WWW-Authenticate` challenges.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde::Deserialize;

#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}, <secret>)", self.username)
    }
}

impl Credential {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The files searched, in order: podman's, then Docker's.
pub fn credential_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(p));
    }
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(run).join("containers/auth.json"));
    }
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => files.push(PathBuf::from(d).join("config.json")),
        None => {
            if let Some(h) = dirs::home_dir() {
                files.push(h.join(".docker/config.json"));
            }
        }
    }
    files
}

/// The registries the credential files have an entry for (names only, never secrets), with
/// the file that names each.
pub fn registries_with_credentials() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for file in credential_files() {
        let Ok(text) = read_bounded(&file) else {
            continue;
        };
        let Ok(parsed) = serde_json::from_slice::<AuthFile>(&text) else {
            continue;
        };
        for key in parsed.auths.keys().chain(parsed.cred_helpers.keys()) {
            let name = normalize_key(key).to_string();
            if !out.iter().any(|(n, _)| n == &name) {
                out.push((name, file.clone()));
            }
        }
    }
    out
}

/// A credential file, at most 1 MiB.
fn read_bounded(file: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(file)?
        .take(1 << 20)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// The key a credential file uses for a registry (`docker.io` is stored under its v1 URL).
fn normalize_key(key: &str) -> &str {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

fn helper_server(registry: &str) -> String {
    if registry == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// Finds credentials for `registry` (as written in references, e.g. `docker.io`, `ghcr.io`).
pub fn lookup(registry: &str) -> Result<Option<Credential>> {
    for path in credential_files() {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read credentials file `{}`", path.display()))
            }
        };
        let file: AuthFile = serde_json::from_str(&text)
            .with_context(|| format!("credentials file `{}` is not valid JSON", path.display()))?;
        if let Some((_, helper)) = file
            .cred_helpers
            .iter()
            .find(|(k, _)| normalize_key(k) == registry)
        {
            return run_helper(helper, registry).map(Some);
        }
        if let Some((_, entry)) = file
            .auths
            .iter()
            .find(|(k, _)| normalize_key(k) == registry)
        {
            if let Some(c) =
                decode_entry(entry).with_context(|| format!("in `{}`", path.display()))?
            {
                return Ok(Some(c));
            }
        }
        if let Some(store) = &file.creds_store {
            if let Some(c) = run_helper_opt(store, registry)? {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

fn decode_entry(e: &AuthEntry) -> Result<Option<Credential>> {
    if let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .context("an `auth` entry is not valid base64")?;
        let raw = String::from_utf8(raw).context("an `auth` entry is not UTF-8")?;
        let (u, p) = raw
            .split_once(':')
            .context("an `auth` entry is not `user:password`")?;
        return Ok(Some(Credential {
            username: u.into(),
            secret: p.into(),
        }));
    }
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Ok(Some(Credential {
            username: u.clone(),
            secret: p.clone(),
        }));
    }
    Ok(None)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

fn run_helper(helper: &str, registry: &str) -> Result<Credential> {
    run_helper_opt(helper, registry)?.with_context(|| {
        format!("`docker-credential-{helper}` has no credentials for `{registry}`")
    })
}

fn run_helper_opt(helper: &str, registry: &str) -> Result<Option<Credential>> {
    if !helper
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        bail!("credential helper name `{helper}` is not a plain program name");
    }
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("cannot run credential helper `{program}`; is it installed and on PATH?")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(helper_server(registry).as_bytes());
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("credential helper `{program}` failed"))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout);
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        bail!("credential helper `{program}` failed: {}", msg.trim());
    }
    let ans: HelperAnswer = serde_json::from_slice(&out.stdout).with_context(|| {
        format!("credential helper `{program}` printed something that is not its JSON answer")
    })?;
    Ok(Some(Credential {
        username: ans.username,
        secret: ans.secret,
    }))
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key.trim().to_ascii_lowercase(), value.to_string());
        s = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/debian:pull".into()),
            })
        );
        assert_eq!(parse_challenge("Basic realm=\"x\""), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn normalizes_keys() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("ghcr.io"), "ghcr.io");
        assert_eq!(normalize_key("https://quay.io"), "quay.io");
    }

    #[test]
    fn decodes_auth_entries() {
        let e = AuthEntry {
            auth: Some("dXNlcjpwYXNz".into()),
            username: None,
            password: None,
        };
        assert_eq!(
            decode_entry(&e).unwrap(),
            Some(Credential {
                username: "user".into(),
                secret: "pass".into()
            })
        );
    }
}
