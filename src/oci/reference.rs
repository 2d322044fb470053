//! Image references as Docker and podman read them: `debian`, `debian:bookworm`,
//! `ghcr.io/o/r:tag`, `localhost:5000/x/y`, `repo@sha256:…`, `repo:tag@sha256:…`.

use std::fmt;

use super::digest::Digest;

pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's API actually lives.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host with optional port, e.g. `docker.io`, `localhost:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/debian`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid image reference `{reference}`: empty")]
    Empty { reference: String },
    #[error("invalid image reference `{reference}`: {digest}")]
    Digest { reference: String, digest: String },
    #[error("invalid image reference `{reference}`: tag `{tag}` may hold only letters, digits, `_`, `.` and `-` (at most 128, not starting with `.` or `-`)")]
    Tag { reference: String, tag: String },
    #[error("invalid image reference `{reference}`: registry `{registry}` is not a host name with an optional port")]
    Registry { reference: String, registry: String },
    #[error("invalid image reference `{reference}`: repository part `{part}` must be lowercase letters and digits, separated by `.`, `_`, `__` or `-`")]
    Path { reference: String, part: String },
}

impl Reference {
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let reference = input.to_string();
        if input.is_empty() {
            return Err(ReferenceError::Empty { reference });
        }
        let (name, digest) = match input.split_once('@') {
            Some((n, d)) => {
                let digest = Digest::parse(d).map_err(|e| ReferenceError::Digest {
                    reference: reference.clone(),
                    digest: e.to_string(),
                })?;
                (n, Some(digest))
            }
            None => (input, None),
        };
        // The tag is after the last `:` that comes after the last `/` (a `:` before it is a port).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &name[last_slash + i + 1..];
                if !valid_tag(tag) {
                    return Err(ReferenceError::Tag {
                        reference,
                        tag: tag.to_string(),
                    });
                }
                (&name[..last_slash + i], Some(tag.to_string()))
            }
            None => (name, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        if !valid_registry(&registry) {
            return Err(ReferenceError::Registry {
                reference,
                registry,
            });
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if repository.is_empty() {
            return Err(ReferenceError::Empty { reference });
        }
        for part in repository.split('/') {
            if !valid_path_component(part) {
                return Err(ReferenceError::Path {
                    reference,
                    part: part.to_string(),
                });
            }
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host to talk HTTP to.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `registry/repo:tag` without the digest: the name `dev images` lists.
    pub fn name(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}/{}:{}", self.registry, self.repository, t),
            None => format!("{}/{}", self.registry, self.repository),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_registry(reg: &str) -> bool {
    let (host, port) = if let Some(rest) = reg.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return false,
        }
    } else {
        match reg.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (reg, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    if reg.starts_with('[') {
        return host.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

fn valid_path_component(part: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
    let b = part.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_short_names() {
        for s in [
            "debian",
            "library/debian",
            "docker.io/library/debian",
            "index.docker.io/debian",
        ] {
            let x = r(s);
            assert_eq!(
                (x.registry.as_str(), x.repository.as_str()),
                ("docker.io", "library/debian")
            );
            assert_eq!(x.tag.as_deref(), Some("latest"));
        }
        assert_eq!(
            r("debian:bookworm").to_string(),
            "docker.io/library/debian:bookworm"
        );
        assert_eq!(r("debian").api_host(), "registry-1.docker.io");
        assert_eq!(r("someone/tool:1.0").repository, "someone/tool");
    }

    #[test]
    fn other_registries_and_ports() {
        let x = r("ghcr.io/owner/repo:tag");
        assert_eq!(
            (x.registry.as_str(), x.repository.as_str()),
            ("ghcr.io", "owner/repo")
        );
        let x = r("localhost:5000/x/y:tag");
        assert_eq!(
            (x.registry.as_str(), x.repository.as_str(), x.tag.as_deref()),
            ("localhost:5000", "x/y", Some("tag"))
        );
        let x = r("127.0.0.1:5000/busybox");
        assert_eq!(x.api_host(), "127.0.0.1:5000");
        assert_eq!(x.tag.as_deref(), Some("latest"));
        assert_eq!(r("[::1]:5000/a").registry, "[::1]:5000");
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "0".repeat(64));
        let x = r(&format!("debian@{d}"));
        assert_eq!(x.tag, None);
        assert_eq!(x.manifest_ref(), d);
        let x = r(&format!("quay.io/a/b:1.2@{d}"));
        assert_eq!(x.tag.as_deref(), Some("1.2"));
        assert_eq!(x.manifest_ref(), d);
    }

    #[test]
    fn bad_references_name_the_bad_part() {
        let e = Reference::parse("Debian").unwrap_err().to_string();
        assert!(e.contains("`Debian`"), "{e}");
        let e = Reference::parse("debian:-x").unwrap_err().to_string();
        assert!(e.contains("tag `-x`"), "{e}");
        let e = Reference::parse("debian@sha256:abc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256:abc"), "{e}");
        let e = Reference::parse("bad_host:99999999/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("registry"), "{e}");
        assert!(Reference::parse("a//b").is_err());
        assert!(Reference::parse("").is_err());
        assert!(Reference::parse("x/../y").is_err());
    }
}
