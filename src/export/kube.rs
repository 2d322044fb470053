//! `dev kube`: a Kubernetes Pod manifest that runs a project's image as `dev shell` runs it:
//! the project mounted from a `hostPath` volume at its own path, the working directory in it,
//! the image's `Env` with the project's `[env]` over it, the host's network, a terminal and stdin kept open (as
//! `podman kube generate` writes them for an interactive container). Pure: the YAML is built
//! from data, every string a double-quoted scalar (JSON's escapes are YAML's), so no value
//! from a dev.toml or an image can change the document's structure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// What the pod is made of.
pub struct PodSpec<'a> {
    /// The image as a node pulls it (`registry/repo@sha256:…` or a tag).
    pub image: &'a str,
    pub project: &'a Path,
    /// The image's `Env`, `KEY=value` each.
    pub image_env: &'a [String],
    /// The project's `[env]`, over the image's.
    pub env: &'a BTreeMap<String, String>,
}

/// The Pod, as YAML.
pub fn pod_yaml(spec: &PodSpec<'_>) -> String {
    let project = spec.project.to_string_lossy();
    let name = pod_name(spec.project);
    // As the shell's: a PATH when the image sets none (`sandbox::plan::environment`).
    let mut vars: Vec<(String, String)> = vec![(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    )];
    let mut set = |k: &str, v: &str| match vars.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => vars.push((k.to_string(), v.to_string())),
    };
    for kv in spec.image_env {
        if let Some((k, v)) = kv.split_once('=') {
            if !k.is_empty() {
                set(k, v);
            }
        }
    }
    for (k, v) in spec.env {
        set(k, v);
    }
    let mut y = String::new();
    let q = quote;
    let _ = writeln!(y, "# Made by `dev kube` for {}", q(&project));
    y.push_str("apiVersion: v1\nkind: Pod\nmetadata:\n");
    let _ = writeln!(y, "  name: {}", q(&name));
    let _ = writeln!(y, "  labels:\n    app: {}", q(&name));
    // The env shares the host's network, as a `dev shell` does.
    y.push_str("spec:\n  hostNetwork: true\n  restartPolicy: Never\n  containers:\n");
    let _ = writeln!(y, "  - name: {}", q("dev"));
    let _ = writeln!(y, "    image: {}", q(spec.image));
    y.push_str("    stdin: true\n    tty: true\n");
    let _ = writeln!(y, "    workingDir: {}", q(&project));
    if !vars.is_empty() {
        y.push_str("    env:\n");
        for (k, v) in &vars {
            let _ = writeln!(y, "    - name: {}\n      value: {}", q(k), q(v));
        }
    }
    y.push_str("    volumeMounts:\n");
    let _ = writeln!(
        y,
        "    - name: {}\n      mountPath: {}",
        q("project"),
        q(&project)
    );
    y.push_str("  volumes:\n");
    let _ = writeln!(
        y,
        "  - name: {}\n    hostPath:\n      path: {}\n      type: {}",
        q("project"),
        q(&project),
        q("Directory")
    );
    y
}

/// A YAML double-quoted scalar: JSON's string syntax, which YAML 1.2 reads the same.
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A DNS-1123 label from the project directory's name (lowercase letters, digits, `-`).
fn pod_name(project: &Path) -> String {
    let base = project
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut name = String::new();
    for c in base.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name: String = name.trim_matches('-').chars().take(53).collect();
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        "dev".to_string()
    } else {
        format!("{name}-dev")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_string_is_quoted_and_env_overrides_the_image() {
        let env = BTreeMap::from([
            ("GREETING".to_string(), "a\"b\nc: d # e".to_string()),
            ("PATH".to_string(), "/opt/bin:/bin".to_string()),
        ]);
        let image_env = vec!["PATH=/bin".to_string(), "LANG=C".to_string()];
        let y = pod_yaml(&PodSpec {
            image: "127.0.0.1:5000/x@sha256:00",
            project: Path::new("/home/u/My Project"),
            image_env: &image_env,
            env: &env,
        });
        assert!(y.contains("  name: \"my-project-dev\"\n"), "{y}");
        assert!(y.contains("image: \"127.0.0.1:5000/x@sha256:00\""), "{y}");
        assert!(y.contains("workingDir: \"/home/u/My Project\""), "{y}");
        assert!(
            y.contains("- name: \"GREETING\"\n      value: \"a\\\"b\\nc: d # e\"\n"),
            "{y}"
        );
        assert!(y.contains("value: \"/opt/bin:/bin\""), "{y}");
        assert_eq!(y.matches("\"PATH\"").count(), 1, "{y}");
        assert!(y.contains("value: \"C\""), "{y}");
        // No line holds an unquoted value that came from the input.
        for line in y.lines().filter(|l| !l.starts_with('#')) {
            if let Some((_, v)) = line.split_once(": ") {
                assert!(
                    v.starts_with('"') || v == "true" || v == "v1" || v == "Pod" || v == "Never",
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn pod_names_are_dns_labels() {
        assert_eq!(pod_name(Path::new("/p/Web_App.2")), "web-app-2-dev");
        assert_eq!(pod_name(Path::new("/")), "dev");
        assert_eq!(pod_name(Path::new("/p/___")), "dev");
        assert!(pod_name(Path::new(&format!("/p/{}", "a".repeat(80)))).len() <= 63);
    }
}
