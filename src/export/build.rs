//! `dev build`: the project's image, made from what dev.toml and dev.lock pin: the base
//! image's layers as they are (their blobs are the registry's, never recompressed), the tools
//! layer (`layer`), and a config with the image's `Env` plus `[env]`, its `User` and
//! `WorkingDir`, the shell as `Cmd`, and labels. Reproducible: nothing in it depends on who
//! builds it, where or when; its one time is `SOURCE_DATE_EPOCH`, else the base image's
//! creation time. It reads the project's git metadata beneath the project directory, bounded,
//! and never runs git there (a repository's config can run programs).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::layer::{export_layer, FLAT_LOSS};
use crate::beneath::Tree;
use crate::config::project::{find_root, read_project_file, DevToml};
use crate::ids::Identity;
use crate::oci::{Descriptor, Digest, ImageManifest, MediaType};
use crate::store::commit::rfc3339;
use crate::store::images::{ImageRecord, LayerRecord};
use crate::store::Store;
use crate::ui::UserError;

/// dev's own labels: the env's fingerprint, and the sha256 of dev.lock.
pub const LABEL_FINGERPRINT: &str = "dev.fingerprint";
pub const LABEL_LOCK: &str = "dev.lock.digest";

/// What a build is made of: the project's, as `session::prepare` resolved it.
pub struct BuildInput<'a> {
    pub store: &'a Store,
    pub identity: &'a Identity,
    pub root: &'a Path,
    pub config: &'a DevToml,
    pub base: &'a ImageRecord,
    /// The tools layer's key in the store (its diff id there), if dev.toml has tools.
    pub tools: Option<&'a Digest>,
    /// Base manifest digest and tools layer digest, as `dev status` shows them.
    pub fingerprint: String,
    /// The name the image is filed under.
    pub name: String,
}

/// The name a project's image is filed under without `--tag`, from the nearest dev.toml
/// above the current directory; `None` outside a project.
pub fn project_image_name() -> Result<Option<String>> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(find_root(&cwd).map(|root| default_name(&root)))
}

/// `localhost/<project directory's name, as a repository name>:latest`.
pub fn default_name(root: &Path) -> String {
    let dir = root
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut repo: String = dir
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    repo = repo
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if repo.is_empty() {
        repo = "project".to_string();
    }
    format!("localhost/{repo}:latest")
}

/// The build's one time: `SOURCE_DATE_EPOCH`, else the base image's `created`, else 0.
pub fn build_time(base_created: Option<&str>) -> Result<u64> {
    if let Some(raw) = std::env::var_os("SOURCE_DATE_EPOCH") {
        return raw
            .to_str()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                UserError::with_hint(
                    format!(
                        "SOURCE_DATE_EPOCH is `{}`, not a number of seconds",
                        raw.to_string_lossy()
                    ),
                    "set it to Unix seconds, e.g. `SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)`, or unset it",
                )
            });
    }
    Ok(base_created.and_then(parse_rfc3339).unwrap_or(0))
}

/// Builds the image and files it under `input.name`.
pub fn build(input: &BuildInput<'_>) -> Result<ImageRecord> {
    let store = input.store;
    let base = input.base;
    let _shared = store.lock_store(false)?;
    let base_config: Value = serde_json::from_slice(&store.read_blob(&base.config_digest)?)
        .context("the base image's config in the store is not valid JSON")?;
    let time = build_time(base_config["created"].as_str())?;
    let created = rfc3339(time);

    let mut layers: Vec<LayerRecord> = base
        .layers
        .iter()
        .map(|l| LayerRecord {
            source: Some(l.fetched_from(base)),
            // The same bytes under the OCI name of their type.
            media_type: if l.media_type == MediaType::DOCKER_LAYER_GZIP {
                MediaType::OCI_LAYER_GZIP.to_string()
            } else {
                l.media_type.clone()
            },
            ..l.clone()
        })
        .collect();
    if let Some(tools) = input.tools {
        if !input.identity.has_subordinate() {
            crate::ui::note(format_args!("{FLAT_LOSS}"));
        }
        layers.push(export_layer(store, input.identity, tools, time)?);
    }

    let lock = read_project_file(&input.root.join(crate::config::lock::FILE_NAME))?
        .map(|t| Digest::of_bytes(t.as_bytes()));
    let mut labels = BTreeMap::new();
    labels.insert(
        "org.opencontainers.image.created".to_string(),
        created.clone(),
    );
    labels.insert(
        "org.opencontainers.image.base.name".to_string(),
        input.config.image.clone(),
    );
    labels.insert(
        "org.opencontainers.image.base.digest".to_string(),
        base.manifest_digest.to_string(),
    );
    let git = git_facts(input.root);
    if let Some(url) = git.source {
        labels.insert("org.opencontainers.image.source".to_string(), url);
    }
    if let Some(rev) = git.revision {
        labels.insert("org.opencontainers.image.revision".to_string(), rev);
    }
    labels.insert(LABEL_FINGERPRINT.to_string(), input.fingerprint.clone());
    if let Some(d) = &lock {
        labels.insert(LABEL_LOCK.to_string(), d.to_string());
    }
    let shell = shell_of(store, input.identity, input.config, &layers);
    let added: Vec<&Digest> = layers[base.layers.len()..]
        .iter()
        .map(|l| &l.diff_id)
        .collect();
    let config = image_config(
        base_config,
        &input.config.env,
        &shell,
        &labels,
        &added,
        &created,
    );
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = Digest::of_bytes(&config_bytes);
    store.write_blob(&config_digest, &config_bytes)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MediaType::OCI_MANIFEST.to_string()),
        config: Descriptor::new(
            MediaType::OCI_CONFIG,
            &config_digest,
            config_bytes.len() as u64,
        ),
        layers: layers
            .iter()
            .map(|l| Descriptor::new(&l.media_type, &l.digest, l.size))
            .collect(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = Digest::of_bytes(&manifest_bytes);
    store.write_blob(&manifest_digest, &manifest_bytes)?;
    let record = ImageRecord {
        name: input.name.clone(),
        index_digest: None,
        manifest_digest,
        config_digest,
        platform: base.platform.clone(),
        created: Some(created),
        pulled: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        layers,
    };
    store.save_image(&record)?;
    Ok(record)
}

/// The shell the image starts: dev.toml's, else bash where the image has it, else sh.
fn shell_of(
    store: &Store,
    identity: &Identity,
    config: &DevToml,
    layers: &[LayerRecord],
) -> String {
    if let Some(s) = &config.shell {
        return s.clone();
    }
    let mapping = identity.store_key();
    // Any layer having it is enough for a default: a later whiteout of bash is unheard of.
    let has = |p: &str| {
        layers.iter().any(|l| {
            Tree::open(&store.layer_path(&mapping, &l.diff_id).join("root"))
                .and_then(|t| t.lstat(Path::new(p)))
                .ok()
                .flatten()
                .is_some()
        })
    };
    if has("bin/bash") || has("usr/bin/bash") {
        "/bin/bash".to_string()
    } else {
        "/bin/sh".to_string()
    }
}

/// The base's config with `[env]` over its `Env`, the shell as `Cmd` (its `Entrypoint`
/// dropped, as the shell is what runs), the labels added, the new layers' diff ids and
/// history entries appended, and `created` set.
fn image_config(
    mut config: Value,
    env: &BTreeMap<String, String>,
    shell: &str,
    labels: &BTreeMap<String, String>,
    added: &[&Digest],
    created: &str,
) -> Value {
    if !config.is_object() {
        config = json!({});
    }
    if !config["config"].is_object() {
        config["config"] = json!({});
    }
    let run = &mut config["config"];
    let mut vars: Vec<String> = run["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in env {
        let entry = format!("{k}={v}");
        match vars.iter_mut().find(|e| e.split('=').next() == Some(k)) {
            Some(e) => *e = entry,
            None => vars.push(entry),
        }
    }
    run["Env"] = json!(vars);
    run["Cmd"] = json!([shell]);
    if let Some(o) = run.as_object_mut() {
        o.remove("Entrypoint");
    }
    if !run["Labels"].is_object() {
        run["Labels"] = json!({});
    }
    for (k, v) in labels {
        run["Labels"][k] = json!(v);
    }
    crate::store::commit::derive_config(
        config,
        added.iter().copied(),
        created,
        "dev build: [tools]",
        &[],
    )
}

#[derive(Default)]
struct GitFacts {
    source: Option<String>,
    revision: Option<String>,
}

/// The checkout's `HEAD` commit and its `origin` URL (without credentials, as https), read
/// from `.git` beneath the project root; nothing when it is not a plain checkout.
fn git_facts(root: &Path) -> GitFacts {
    let Ok(git) = Tree::open(root).and_then(|t| t.dir(Path::new(".git"))) else {
        return GitFacts::default();
    };
    let read = |p: &str| {
        git.read_bounded(Path::new(p), 1 << 20)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let is_hex = |s: &str| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let revision = read("HEAD").and_then(|head| {
        let head = head.trim();
        if is_hex(head) {
            return Some(head.to_string());
        }
        let name = head.strip_prefix("ref: ")?.trim();
        let safe = name.starts_with("refs/")
            && !name.contains("..")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
        if !safe {
            return None;
        }
        if let Some(r) = read(name)
            .map(|r| r.trim().to_string())
            .filter(|r| is_hex(r))
        {
            return Some(r);
        }
        read("packed-refs")?.lines().find_map(|l| {
            let (hash, r) = l.split_once(' ')?;
            (r.trim() == name && is_hex(hash)).then(|| hash.to_string())
        })
    });
    let source = read("config").and_then(|c| origin_url(&c));
    GitFacts { source, revision }
}

/// `[remote "origin"] url = …` of a git config, as an https URL without credentials.
fn origin_url(config: &str) -> Option<String> {
    let mut in_origin = false;
    for line in config.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_origin = l.replace(' ', "") == "[remote\"origin\"]";
            continue;
        }
        if !in_origin {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        if k.trim() == "url" {
            return normalize_remote(v.trim());
        }
    }
    None
}

/// `git@host:owner/repo.git`, `ssh://git@host/owner/repo`, `https://user:pw@host/owner/repo.git`
/// all become `https://host/owner/repo`: teammates with different remotes get one label.
fn normalize_remote(url: &str) -> Option<String> {
    let (host, path) = if let Some((_, rest)) = url.split_once("://") {
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let (host, path) = rest.split_once('/')?;
        (host.split(':').next().unwrap_or(host), path)
    } else {
        let rest = url.rsplit_once('@').map_or(url, |(_, r)| r);
        rest.split_once(':')?
    };
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-~".contains(&b))
    };
    (ok(host) && ok(path)).then(|| format!("https://{host}/{path}"))
}

/// Unix seconds of an RFC 3339 time (`2024-01-02T03:04:05.123Z`, `+01:00` offsets too).
fn parse_rfc3339(s: &str) -> Option<u64> {
    let num = |r: &str| r.parse::<i64>().ok();
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let hms = time.get(0..8)?;
    let mut t = hms.splitn(3, ':');
    let (hh, mm, ss) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    let rest = &time[8..];
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match rest {
        "Z" | "z" | "" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o.get(1..)?.split_once(':')?;
            sign * (num(oh)? * 3600 + num(om)? * 60)
        }
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset;
    u64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for secs in [0u64, 951_782_400, 1_795_466_895] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
        }
        assert_eq!(
            parse_rfc3339("2026-11-23T21:48:15.123456789+01:00"),
            Some(1_795_466_895)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn remotes_become_one_https_url_without_credentials() {
        for url in [
            "git@example.org:team/app.git",
            "ssh://git@example.org:22/team/app",
            "https://me:secret@example.org/team/app.git",
        ] {
            assert_eq!(
                normalize_remote(url).as_deref(),
                Some("https://example.org/team/app"),
                "{url}"
            );
        }
        let cfg = "[core]\n\turl = no\n[remote \"origin\"]\n\turl = git@example.org:t/a.git\n";
        assert_eq!(origin_url(cfg).as_deref(), Some("https://example.org/t/a"));
    }

    #[test]
    fn env_overrides_the_image_and_the_shell_is_the_command() {
        let base = json!({
            "config": {"Env": ["PATH=/bin", "LANG=C"], "Entrypoint": ["/x"], "User": "1000"},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]},
            "history": [{"created_by": "base"}],
        });
        let env = BTreeMap::from([
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("GREETING".to_string(), "hi".to_string()),
        ]);
        let labels = BTreeMap::from([("a".to_string(), "b".to_string())]);
        let d = Digest::of_bytes(b"tools");
        let out = image_config(
            base,
            &env,
            "/bin/bash",
            &labels,
            &[&d],
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(
            out["config"]["Env"],
            json!(["PATH=/bin", "LANG=C.UTF-8", "GREETING=hi"])
        );
        assert_eq!(out["config"]["Cmd"], json!(["/bin/bash"]));
        assert!(out["config"].get("Entrypoint").is_none());
        assert_eq!(out["config"]["User"], "1000");
        assert_eq!(out["config"]["Labels"]["a"], "b");
        assert_eq!(out["rootfs"]["diff_ids"][1], json!(d.to_string()));
        assert_eq!(out["history"].as_array().map(Vec::len), Some(2));
    }
}
