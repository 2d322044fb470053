//! One registry endpoint for one repository: requests with auth, redirects, retries.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::auth::{self, Challenge, Credential};
use super::error::RegistryError;
use crate::config::settings::{is_loopback, Settings};
use crate::oci::{Descriptor, Digest, MediaType};

const MAX_MANIFEST: u64 = 4 << 20;
const ATTEMPTS: u32 = 5;

/// `https` always, `http` only where the user's settings (or loopback) allow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Https,
    Http,
}

pub struct Endpoint {
    agent: ureq::Agent,
    /// The name credentials are filed under, e.g. `docker.io`.
    registry: String,
    /// Where requests go, e.g. `registry-1.docker.io`.
    host: String,
    repository: String,
    transport: Transport,
    credential: Option<Credential>,
    authorization: Mutex<Option<String>>,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(Duration::from_secs(60))
        .user_agent(concat!("dev/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl Endpoint {
    /// Prepares talking to `host` (the HTTP host of `registry`) about `repository`.
    pub fn new(
        registry: &str,
        host: &str,
        repository: &str,
        settings: &Settings,
    ) -> Result<Self, RegistryError> {
        let credential = auth::lookup(registry).map_err(|e| RegistryError::Malformed {
            registry: registry.to_string(),
            what: "the credentials".to_string(),
            message: format!("{e:#}"),
        })?;
        let mut ep = Endpoint {
            agent: agent(),
            registry: registry.to_string(),
            host: host.to_string(),
            repository: repository.to_string(),
            transport: Transport::Https,
            credential,
            authorization: Mutex::new(None),
        };
        if settings.allows_http(registry) {
            // Like Docker: try TLS first, fall back to plain HTTP for hosts that may use it.
            let probe = ep
                .agent
                .get(&ep.url("/v2/"))
                .timeout(Duration::from_secs(5))
                .call();
            if let Err(ureq::Error::Transport(_)) = probe {
                ep.transport = Transport::Http;
            }
        }
        Ok(ep)
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn url(&self, path: &str) -> String {
        let scheme = match self.transport {
            Transport::Https => "https",
            Transport::Http => "http",
        };
        format!("{scheme}://{}{path}", self.host)
    }

    /// Whether secrets may travel to this endpoint: TLS, or a registry on this machine.
    fn may_send_secrets(&self) -> bool {
        self.transport == Transport::Https || is_loopback(&self.host)
    }

    /// Fetches a manifest or index by tag or digest; returns its bytes, media type and digest.
    pub fn manifest(
        &self,
        reference: &str,
        expect: Option<&Descriptor>,
    ) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let what = format!("manifest `{}:{reference}`", self.repository);
        let url = self.url(&format!("/v2/{}/manifests/{reference}", self.repository));
        let resp = self
            .with_retries(|| self.get(&url, &[("Accept", MediaType::ACCEPT_MANIFESTS)], &what))?;
        let header_type = resp
            .header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let mut body = Vec::new();
        resp.into_reader()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.transport_error(&e))?;
        if body.len() as u64 > MAX_MANIFEST {
            return Err(self.malformed(&what, "larger than 4 MiB"));
        }
        let digest = Digest::of_bytes(&body);
        let pinned = match (expect, reference.starts_with("sha256:")) {
            (Some(d), _) => Some((d.digest.clone(), d.size)),
            (None, true) => Digest::parse(reference)
                .ok()
                .map(|d| (d, body.len() as u64)),
            _ => None,
        };
        if let Some((expected, size)) = pinned {
            if expected != digest || size != body.len() as u64 {
                return Err(RegistryError::Mismatch {
                    registry: self.registry.clone(),
                    what,
                    expected,
                    expected_size: size,
                    actual: digest,
                    actual_size: body.len() as u64,
                });
            }
        }
        // The document's own mediaType wins over the header, which some registries get wrong.
        let media_type = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or(header_type);
        Ok((body, media_type, digest))
    }

    /// Fetches a small blob (an image config) into memory, verified.
    pub fn small_blob(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>, RegistryError> {
        if desc.size > MAX_MANIFEST * 4 {
            return Err(self.malformed(what, "larger than 16 MiB"));
        }
        let url = self.url(&format!("/v2/{}/blobs/{}", self.repository, desc.digest));
        let resp = self.with_retries(|| self.get(&url, &[], what))?;
        let mut body = Vec::new();
        resp.into_reader()
            .take(desc.size + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.transport_error(&e))?;
        let actual = Digest::of_bytes(&body);
        if actual != desc.digest || body.len() as u64 != desc.size {
            return Err(RegistryError::Mismatch {
                registry: self.registry.clone(),
                what: what.to_string(),
                expected: desc.digest.clone(),
                expected_size: desc.size,
                actual,
                actual_size: body.len() as u64,
            });
        }
        Ok(body)
    }

    /// Downloads a blob into `partial`, resuming what an earlier, interrupted run left there,
    /// and verifies digest and size. On a mismatch the partial file is deleted.
    pub fn download(
        &self,
        desc: &Descriptor,
        partial: &Path,
        progress: &dyn Fn(u64, u64),
    ) -> Result<(), RegistryError> {
        let what = format!("layer {}", desc.digest);
        let url = self.url(&format!("/v2/{}/blobs/{}", self.repository, desc.digest));
        let io_err = |e: io::Error| RegistryError::Io {
            path: partial.display().to_string(),
            source: e,
        };
        let mut attempt = 0;
        let mut restarted = false;
        loop {
            attempt += 1;
            let mut have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
            if have > desc.size {
                have = 0;
            }
            let range = format!("bytes={have}-");
            let headers: Vec<(&str, &str)> = if have > 0 && have < desc.size {
                vec![("Range", range.as_str())]
            } else {
                vec![]
            };
            let mut was_resumed = false;
            let result = self.get(&url, &headers, &what).and_then(|resp| {
                let resumed = resp.status() == 206 && !headers.is_empty();
                was_resumed = resumed;
                let mut hasher = Sha256::new();
                let mut file = if resumed {
                    let mut f = File::open(partial).map_err(io_err)?;
                    io::copy(&mut (&mut f).take(have), &mut HashWriter(&mut hasher))
                        .map_err(io_err)?;
                    let f = OpenOptions::new()
                        .append(true)
                        .open(partial)
                        .map_err(io_err)?;
                    f.set_len(have).map_err(io_err)?;
                    f
                } else {
                    have = 0;
                    File::create(partial).map_err(io_err)?
                };
                progress(have, desc.size);
                let mut reader = resp.into_reader().take(desc.size - have + 1);
                let mut buf = vec![0u8; 256 << 10];
                let mut total = have;
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(self.transport_error(&e)),
                    };
                    file.write_all(&buf[..n]).map_err(io_err)?;
                    hasher.update(&buf[..n]);
                    total += n as u64;
                    progress(total, desc.size);
                }
                if total < desc.size {
                    return Err(RegistryError::Transport {
                        registry: self.registry.clone(),
                        message: format!(
                            "the connection closed after {total} of {} bytes of {what}",
                            desc.size
                        ),
                    });
                }
                let actual = Digest::from_hasher(hasher);
                if actual != desc.digest || total != desc.size {
                    drop(file);
                    let _ = std::fs::remove_file(partial);
                    return Err(RegistryError::Mismatch {
                        registry: self.registry.clone(),
                        what: what.clone(),
                        expected: desc.digest.clone(),
                        expected_size: desc.size,
                        actual,
                        actual_size: total,
                    });
                }
                file.sync_all().map_err(io_err)?;
                Ok(())
            });
            match result {
                Err(e) if e.is_retryable() && attempt < ATTEMPTS => backoff(attempt),
                // A resumed download that does not verify may have kept bad bytes from an
                // earlier run (the partial file is already gone): start over once.
                Err(RegistryError::Mismatch { .. }) if was_resumed && !restarted => {
                    restarted = true
                }
                other => return other,
            }
        }
    }

    fn with_retries<T>(
        &self,
        mut f: impl FnMut() -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f() {
                Err(e) if e.is_retryable() && attempt < ATTEMPTS => backoff(attempt),
                other => return other,
            }
        }
    }

    /// One GET with the endpoint's authorization, answering one auth challenge and following
    /// redirects without credentials.
    fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<ureq::Response, RegistryError> {
        let mut answered = false;
        loop {
            let mut req = self.agent.get(url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let authz = self.authorization.lock().ok().and_then(|a| a.clone());
            if let Some(a) = &authz {
                req = req.set("Authorization", a);
            }
            match req.call() {
                Ok(resp) if (300..400).contains(&resp.status()) => {
                    return self.follow(resp, headers, what)
                }
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if !answered => {
                    let challenge = resp.header("www-authenticate").unwrap_or("").to_string();
                    self.authenticate(&challenge)?;
                    answered = true;
                }
                Err(e) => return Err(self.status_error(e, what)),
            }
        }
    }

    /// Follows a redirect (a blob CDN, usually) with no `Authorization` header: the target is
    /// another host and the blob is verified by digest anyway.
    fn follow(
        &self,
        mut resp: ureq::Response,
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<ureq::Response, RegistryError> {
        for _ in 0..5 {
            let base = resp.get_url().to_string();
            let location = resp
                .header("location")
                .ok_or_else(|| self.malformed(what, "a redirect without a Location"))?
                .to_string();
            let target = join_url(&base, &location);
            let mut req = self.agent.get(&target);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            match req.call() {
                Ok(r) if (300..400).contains(&r.status()) => resp = r,
                Ok(r) => return Ok(r),
                Err(e) => return Err(self.status_error(e, what)),
            }
        }
        Err(self.malformed(what, "too many redirects"))
    }

    fn authenticate(&self, challenge: &str) -> Result<(), RegistryError> {
        if !self.may_send_secrets() {
            return Err(RegistryError::InsecureAuth {
                registry: self.registry.clone(),
            });
        }
        let bad = || RegistryError::BadChallenge {
            registry: self.registry.clone(),
            challenge: challenge.to_string(),
        };
        let header = match auth::parse_challenge(challenge).ok_or_else(bad)? {
            Challenge::Basic => match &self.credential {
                Some(c) => c.basic_header(),
                None => {
                    return Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        what: format!("`{}`", self.repository),
                        status: 401,
                    })
                }
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let realm_ok = realm.starts_with("https://")
                    || (realm.starts_with("http://") && is_loopback(url_host(&realm)));
                if !realm_ok {
                    return Err(bad());
                }
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let mut req = self.agent.get(&realm).query("scope", &scope);
                if let Some(s) = &service {
                    req = req.query("service", s);
                }
                if let Some(c) = &self.credential {
                    req = req.set("Authorization", &c.basic_header());
                }
                let resp = req.call().map_err(|e| self.status_error(e, "a token"))?;
                let body: serde_json::Value = resp
                    .into_json()
                    .map_err(|e| self.malformed("the token answer", &e.to_string()))?;
                let token = body
                    .get("token")
                    .or_else(|| body.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| self.malformed("the token answer", "no `token` field"))?;
                format!("Bearer {token}")
            }
        };
        if let Ok(mut a) = self.authorization.lock() {
            *a = Some(header);
        }
        Ok(())
    }

    fn status_error(&self, e: ureq::Error, what: &str) -> RegistryError {
        let registry = self.registry.clone();
        let what = what.to_string();
        match e {
            ureq::Error::Status(404, _) => RegistryError::NotFound { registry, what },
            ureq::Error::Status(429, _) => RegistryError::RateLimited { registry },
            ureq::Error::Status(status @ (401 | 403), _) => RegistryError::Unauthorized {
                registry,
                what,
                status,
            },
            ureq::Error::Status(status, _) => RegistryError::Status {
                registry,
                what,
                status,
            },
            ureq::Error::Transport(t) => RegistryError::Transport {
                registry,
                message: t.to_string(),
            },
        }
    }

    fn transport_error(&self, e: &io::Error) -> RegistryError {
        RegistryError::Transport {
            registry: self.registry.clone(),
            message: e.to_string(),
        }
    }

    fn malformed(&self, what: &str, message: &str) -> RegistryError {
        RegistryError::Malformed {
            registry: self.registry.clone(),
            what: what.to_string(),
            message: message.to_string(),
        }
    }
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(100 << attempt.min(5)));
}

struct HashWriter<'a>(&'a mut Sha256);
impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The `host[:port]` of an absolute URL.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or("")
}

/// Resolves a `Location` header against the URL it came from.
fn join_url(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if location.starts_with('/') {
        format!("{scheme}://{host}{location}")
    } else {
        let dir = match rest.rfind('/') {
            Some(i) if i > host.len() => &rest[..=i],
            _ => "",
        };
        if dir.is_empty() {
            format!("{scheme}://{host}/{location}")
        } else {
            format!("{scheme}://{dir}{location}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_redirects() {
        assert_eq!(
            join_url("http://a:1/v2/x/blobs/y", "http://b:2/z"),
            "http://b:2/z"
        );
        assert_eq!(
            join_url("http://a:1/v2/x/blobs/y", "/z?q=1"),
            "http://a:1/z?q=1"
        );
        assert_eq!(
            join_url("http://a:1/v2/x/blobs/y", "z"),
            "http://a:1/v2/x/blobs/z"
        );
        assert_eq!(url_host("http://127.0.0.1:99/token?x"), "127.0.0.1:99");
    }
}
