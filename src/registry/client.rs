//! One registry endpoint for one repository: requests with auth, redirects, retries.
//! Every body is read with a cap and a deadline for making progress; secrets go over plain
//! HTTP only to a loopback listener of the user's own or root's (or one the user vouched for).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::auth::{self, Challenge, Credential};
use super::error::RegistryError;
use super::loopback;
use crate::config::settings::{is_loopback, Settings};
use crate::oci::{Descriptor, Digest, Document, DocumentError, ImageConfig, MediaType};

const MAX_MANIFEST: u64 = 4 << 20;
const MAX_CONFIG: u64 = 16 << 20;
/// Token answers are a few KiB; a registry that sends more is not answering.
const MAX_TOKEN: u64 = 1 << 20;
const ATTEMPTS: u32 = 5;

/// The environment variable that sets the stall timeout, in seconds.
pub const STALL_TIMEOUT_VAR: &str = "DEV_REGISTRY_STALL_TIMEOUT";
const DEFAULT_STALL: Duration = Duration::from_secs(30);
/// A body must move at least this much in each stall window; a registry that trickles bytes
/// more slowly than that is cut off.
const MIN_PROGRESS: u64 = 32 << 10;
/// A small document (manifest, config, token) must arrive whole within this many windows.
const SMALL_BODY_WINDOWS: u32 = 4;

/// How long a transfer may go without making progress: `DEV_REGISTRY_STALL_TIMEOUT` seconds
/// (default 30; tests set a few seconds). It bounds the wait for a response to begin (twice
/// it), each socket read, each window in which a body must move [`MIN_PROGRESS`] bytes, and
/// (times [`SMALL_BODY_WINDOWS`]) the whole body of a manifest, config or token.
pub fn stall_timeout() -> Result<Duration, RegistryError> {
    let Some(raw) = std::env::var_os(STALL_TIMEOUT_VAR) else {
        return Ok(DEFAULT_STALL);
    };
    raw.to_str()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e6)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| RegistryError::BadSetting {
            name: STALL_TIMEOUT_VAR,
            value: raw.to_string_lossy().into_owned(),
        })
}

/// `https` always, `http` only where the user's settings (or loopback) allow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Https,
    Http,
}

pub struct Endpoint {
    pub(super) agent: ureq::Agent,
    /// The name credentials are filed under, e.g. `docker.io`.
    pub(super) registry: String,
    /// Where requests go, e.g. `registry-1.docker.io`.
    pub(super) host: String,
    pub(super) repository: String,
    pub(super) transport: Transport,
    credential: Option<Credential>,
    pub(super) authorization: Mutex<Option<String>>,
    /// The scopes a token is asked for, first the one some registries read alone; empty:
    /// the challenge's own (a pull's).
    pub(super) scopes: Vec<String>,
    /// Loopback hosts the user listed in `insecure-registries`: trusted whoever listens.
    vouched: Vec<String>,
    /// Set when credentials were kept from a token realm, to explain a refusal that follows.
    withheld: Mutex<Option<RegistryError>>,
    pub(super) stall: Duration,
}

/// A manifest or index as fetched: its bytes, their digest, and the checked document.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub document: Document,
}

fn agent(stall: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(stall)
        .timeout_write(stall)
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
        let stall = stall_timeout()?;
        let mut ep = Endpoint {
            agent: agent(stall),
            registry: registry.to_string(),
            host: host.to_string(),
            repository: repository.to_string(),
            transport: Transport::Https,
            credential,
            authorization: Mutex::new(None),
            vouched: settings
                .insecure_registries
                .iter()
                .filter(|r| is_loopback(r))
                .cloned()
                .collect(),
            withheld: Mutex::new(None),
            scopes: Vec::new(),
            stall,
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

    pub(super) fn url(&self, path: &str) -> String {
        let scheme = match self.transport {
            Transport::Https => "https",
            Transport::Http => "http",
        };
        format!("{scheme}://{}{path}", self.host)
    }

    /// Whether secrets (credentials, tokens) may go to `host` (`host[:port]`): over TLS, or
    /// over plain HTTP to a loopback port whose listening socket belongs to this user or to
    /// root, or that the user vouched for in `insecure-registries`. Any local user can listen
    /// on a free loopback port first; what they would catch is kept from them.
    pub(super) fn may_send_secrets(
        &self,
        host: &str,
        transport: Transport,
    ) -> Result<(), RegistryError> {
        if transport == Transport::Https {
            return Ok(());
        }
        if !is_loopback(host) {
            return Err(RegistryError::InsecureAuth {
                registry: self.registry.clone(),
            });
        }
        if self.vouched.iter().any(|v| v == host) {
            return Ok(());
        }
        let (name, port) = split_host_port(host);
        let me = nix::unistd::geteuid().as_raw();
        let uids = loopback::listener_uids(name, port);
        if !uids.is_empty() && uids.iter().all(|u| *u == me || *u == 0) {
            return Ok(());
        }
        let holder = match uids.iter().find(|u| **u != me && **u != 0) {
            Some(uid) => match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*uid)) {
                Ok(Some(u)) => format!("user `{}` (uid {uid})", u.name),
                _ => format!("uid {uid}"),
            },
            None => "no listener `dev` can see".to_string(),
        };
        Err(RegistryError::Withheld {
            registry: host.to_string(),
            holder,
        })
    }

    /// Fetches a manifest or index by tag or digest and checks it (see [`Document::parse`]).
    /// With `expect` (an index entry), the bytes must match its digest and size and the
    /// document must be of the media type the entry names.
    pub fn manifest(
        &self,
        reference: &str,
        expect: Option<&Descriptor>,
    ) -> Result<Fetched, RegistryError> {
        self.fetch_manifest(reference, expect, None)
    }

    /// Fetches an OCI artifact's manifest (a Dev Container Feature) by tag or digest, checked
    /// as [`Self::manifest`] checks an image's, its config being of `config_type`.
    pub fn artifact_manifest(
        &self,
        reference: &str,
        config_type: &str,
    ) -> Result<Fetched, RegistryError> {
        self.fetch_manifest(reference, None, Some(config_type))
    }

    fn fetch_manifest(
        &self,
        reference: &str,
        expect: Option<&Descriptor>,
        artifact: Option<&str>,
    ) -> Result<Fetched, RegistryError> {
        let what = format!("manifest `{}:{reference}`", self.repository);
        let url = self.url(&format!("/v2/{}/manifests/{reference}", self.repository));
        let (content_type, body) = self.with_retries(|| {
            let resp = self.get(&url, &[("Accept", MediaType::ACCEPT_MANIFESTS)], &what)?;
            let content_type = resp.header("content-type").unwrap_or("").to_string();
            let body = self.read_capped(resp, MAX_MANIFEST, &what)?;
            Ok((content_type, body))
        })?;
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
        let document = match artifact {
            Some(config_type) => Document::parse_artifact(&body, &content_type, config_type),
            None => Document::parse(&body, &content_type),
        }
        .map_err(|e| self.refused(&what, e))?;
        if let Some(entry) = expect {
            if document.media_type() != entry.media_type {
                return Err(self.refused(
                    &what,
                    DocumentError::NotAsListed {
                        expected: entry.media_type.clone(),
                        served: document.media_type().to_string(),
                    },
                ));
            }
        }
        Ok(Fetched {
            bytes: body,
            digest,
            document,
        })
    }

    /// Fetches and reads the image config a manifest names; returns its bytes too.
    pub fn config(&self, desc: &Descriptor) -> Result<(Vec<u8>, ImageConfig), RegistryError> {
        let what = format!("the image config of `{}`", self.repository);
        let bytes = self.small_blob(desc, &what)?;
        let config = ImageConfig::parse(&bytes).map_err(|e| self.refused(&what, e))?;
        Ok((bytes, config))
    }

    /// Fetches a small blob (an image config) into memory, verified.
    pub fn small_blob(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>, RegistryError> {
        if desc.size > MAX_CONFIG {
            return Err(self.malformed(what, "larger than 16 MiB"));
        }
        let url = self.url(&format!("/v2/{}/blobs/{}", self.repository, desc.digest));
        let body = self.with_retries(|| {
            let resp = self.get(&url, &[], what)?;
            self.read_small(resp, desc.size, what)?.ok_or_else(|| {
                let message = format!("longer than the {} bytes its descriptor says", desc.size);
                self.malformed(what, &message)
            })
        })?;
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

    /// Opens a blob as a stream: the body as it arrives (after auth and redirects, with
    /// retries until the first byte), at most `desc.size + 1` bytes of it, each read under the
    /// stall watchdog. The caller verifies the digest as it reads (`export::source`).
    pub fn blob_reader(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>, RegistryError> {
        let what = format!("blob {}", desc.digest);
        let url = self.url(&format!("/v2/{}/blobs/{}", self.repository, desc.digest));
        let resp = self.with_retries(|| self.get(&url, &[], &what))?;
        Ok(Box::new(
            Watchdog::new(resp.into_reader(), self.stall, None).take(desc.size + 1),
        ))
    }

    /// Reads a whole small body, each stall window moving enough and the whole within
    /// [`SMALL_BODY_WINDOWS`] windows; `None` when it is longer than `cap` (declared or sent).
    fn read_small(
        &self,
        resp: ureq::Response,
        cap: u64,
        what: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let declared = resp
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > cap) {
            return Ok(None);
        }
        let deadline = Instant::now() + self.stall.saturating_mul(SMALL_BODY_WINDOWS);
        let mut body = Vec::new();
        Watchdog::new(resp.into_reader(), self.stall, Some(deadline))
            .take(cap + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.read_error(&e, what))?;
        Ok((body.len() as u64 <= cap).then_some(body))
    }

    /// Like [`Self::read_small`], a body over `cap` being an error.
    fn read_capped(
        &self,
        resp: ureq::Response,
        cap: u64,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        self.read_small(resp, cap, what)?
            .ok_or_else(|| self.malformed(what, &format!("larger than {}", human(cap))))
    }

    /// Downloads a blob into `partial`, resuming what an earlier, interrupted run left there,
    /// and verifies digest and size. On a mismatch the partial file is deleted. The file is
    /// not flushed to disk: it is read once and deleted, and a copy torn by a power cut fails
    /// to verify next time and is fetched again. A partial that is already whole (a run killed
    /// after its download) is verified and kept.
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
        if std::fs::metadata(partial).is_ok_and(|m| m.len() == desc.size) {
            let mut hasher = Sha256::new();
            let f = File::open(partial).map_err(io_err)?;
            io::copy(&mut f.take(desc.size), &mut HashWriter(&mut hasher)).map_err(io_err)?;
            if Digest::from_hasher(hasher) == desc.digest {
                progress(desc.size, desc.size);
                return Ok(());
            }
        }
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
                let mut reader =
                    Watchdog::new(resp.into_reader(), self.stall, None).take(desc.size - have + 1);
                let mut buf = vec![0u8; 256 << 10];
                let mut total = have;
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(self.read_error(&e, &what)),
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
                Ok(())
            });
            match result {
                // A stalled layer is worth resuming: the bytes so far are kept.
                Err(e)
                    if (e.is_retryable() || matches!(e, RegistryError::Stalled { .. }))
                        && attempt < ATTEMPTS =>
                {
                    backoff(attempt)
                }
                // A resumed download that does not verify may have kept bad bytes from an
                // earlier run (the partial file is already gone): start over once.
                Err(RegistryError::Mismatch { .. }) if was_resumed && !restarted => {
                    restarted = true
                }
                other => return other,
            }
        }
    }

    pub(super) fn with_retries<T>(
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
                // Checked on every request: the listener could have changed hands since.
                self.may_send_secrets(&self.host, self.transport)?;
                req = req.set("Authorization", a);
            }
            match self.send(req, what)? {
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
            match self.send(req, what)? {
                Ok(r) if (300..400).contains(&r.status()) => resp = r,
                Ok(r) => return Ok(r),
                Err(e) => return Err(self.status_error(e, what)),
            }
        }
        Err(self.malformed(what, "too many redirects"))
    }

    /// Sends `req`, waiting at most two stall windows for the response to begin. The call
    /// runs on a thread of its own, so a server that trickles its status line and headers
    /// cannot hold `dev`; the thread is left to the socket's read timeout.
    pub(super) fn send(
        &self,
        req: ureq::Request,
        what: &str,
    ) -> Result<Result<ureq::Response, ureq::Error>, RegistryError> {
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let _ = tx.send(req.call());
        });
        let wait = self.stall.saturating_mul(2);
        rx.recv_timeout(wait).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => RegistryError::Stalled {
                registry: self.registry.clone(),
                what: what.to_string(),
                detail: format!("no answer within {}", secs(wait)),
                timeout: secs(self.stall),
            },
            mpsc::RecvTimeoutError::Disconnected => RegistryError::Transport {
                registry: self.registry.clone(),
                message: format!("the request for {what} ended without an answer"),
            },
        })
    }

    pub(super) fn authenticate(&self, challenge: &str) -> Result<(), RegistryError> {
        let bad = || RegistryError::BadChallenge {
            registry: self.registry.clone(),
            challenge: challenge.to_string(),
        };
        let header = match auth::parse_challenge(challenge).ok_or_else(bad)? {
            Challenge::Basic => match &self.credential {
                Some(c) => {
                    self.may_send_secrets(&self.host, self.transport)?;
                    c.basic_header()
                }
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
                let realm_transport = if realm.starts_with("https://") {
                    Transport::Https
                } else if realm.starts_with("http://") && is_loopback(url_host(&realm)) {
                    Transport::Http
                } else {
                    return Err(bad());
                };
                // The token will be sent to the registry: no use asking for one it must not get.
                self.may_send_secrets(&self.host, self.transport)?;
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let mut req = self.agent.get(&realm);
                if self.scopes.is_empty() {
                    req = req.query("scope", &scope);
                }
                for s in &self.scopes {
                    req = req.query("scope", s);
                }
                if let Some(s) = &service {
                    req = req.query("service", s);
                }
                if let Some(c) = &self.credential {
                    match self.may_send_secrets(url_host(&realm), realm_transport) {
                        Ok(()) => req = req.set("Authorization", &c.basic_header()),
                        // Ask without them; if the realm insists, say why they were kept.
                        Err(e) => {
                            if let Ok(mut w) = self.withheld.lock() {
                                *w = Some(e);
                            }
                        }
                    }
                }
                let what = "a token";
                let resp = match self.send(req, what)? {
                    Ok(resp) => resp,
                    Err(e) => return Err(self.status_error(e, what)),
                };
                let body = self.read_capped(resp, MAX_TOKEN, "the token answer")?;
                let body: serde_json::Value = serde_json::from_slice(&body)
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

    pub(super) fn status_error(&self, e: ureq::Error, what: &str) -> RegistryError {
        let registry = self.registry.clone();
        let what = what.to_string();
        if let ureq::Error::Status(401 | 403, _) = e {
            if let Some(withheld) = self.withheld.lock().ok().and_then(|mut w| w.take()) {
                return withheld;
            }
        }
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
            ureq::Error::Transport(t) if is_timeout(&t) => RegistryError::Stalled {
                registry,
                what,
                detail: format!("no answer for {}", secs(self.stall)),
                timeout: secs(self.stall),
            },
            ureq::Error::Transport(t) => RegistryError::Transport {
                registry,
                message: t.to_string(),
            },
        }
    }

    /// A failed body read: a stall (see [`Watchdog`]) or a broken connection.
    fn read_error(&self, e: &io::Error, what: &str) -> RegistryError {
        if e.kind() == io::ErrorKind::TimedOut {
            return RegistryError::Stalled {
                registry: self.registry.clone(),
                what: what.to_string(),
                detail: e.to_string(),
                timeout: secs(self.stall),
            };
        }
        RegistryError::Transport {
            registry: self.registry.clone(),
            message: e.to_string(),
        }
    }

    fn refused(&self, what: &str, reason: DocumentError) -> RegistryError {
        RegistryError::Refused {
            registry: self.registry.clone(),
            what: what.to_string(),
            reason,
        }
    }

    pub(super) fn malformed(&self, what: &str, message: &str) -> RegistryError {
        RegistryError::Malformed {
            registry: self.registry.clone(),
            what: what.to_string(),
            message: message.to_string(),
        }
    }
}

/// A body reader that fails (`TimedOut`, with a sentence saying why) when the body stops
/// making progress: a read that waits a whole stall window for a byte (the socket's read
/// timeout), a window that moves less than [`MIN_PROGRESS`] bytes, or a body still arriving
/// at its deadline. Reads return at least once a window, so each check comes in time.
struct Watchdog<R> {
    inner: R,
    stall: Duration,
    deadline: Option<Instant>,
    window: Instant,
    moved: u64,
}

impl<R: Read> Watchdog<R> {
    fn new(inner: R, stall: Duration, deadline: Option<Instant>) -> Self {
        Watchdog {
            inner,
            stall,
            deadline,
            window: Instant::now(),
            moved: 0,
        }
    }

    fn stalled(&self, detail: String) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, detail)
    }
}

impl<R: Read> Read for Watchdog<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                return Err(self.stalled(format!("nothing arrived for {}", secs(self.stall))))
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(0);
        }
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            let whole = self.stall.saturating_mul(SMALL_BODY_WINDOWS);
            return Err(self.stalled(format!("not complete after {}", secs(whole))));
        }
        self.moved += n as u64;
        if now.duration_since(self.window) >= self.stall {
            if self.moved < MIN_PROGRESS {
                return Err(self.stalled(format!(
                    "{} bytes in {}, less than {}",
                    self.moved,
                    secs(now.duration_since(self.window)),
                    human(MIN_PROGRESS)
                )));
            }
            self.window = now;
            self.moved = 0;
        }
        Ok(n)
    }
}

fn is_timeout(t: &ureq::Transport) -> bool {
    std::error::Error::source(t)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .is_some_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            )
        })
}

/// `2 s`, `0.5 s`: a duration as the user set it.
fn secs(d: Duration) -> String {
    format!("{} s", (d.as_secs_f64() * 10.0).round() / 10.0)
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// `host` and port of `host[:port]`, `[v6]:port`; port 80 (plain HTTP) when none is given.
fn split_host_port(host: &str) -> (&str, u16) {
    if let Some(rest) = host.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').unwrap_or((rest, ""));
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (h, port.unwrap_or(80));
    }
    match host.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or(80)),
        None => (host, 80),
    }
}

pub(super) fn backoff(attempt: u32) {
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
pub(super) fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or("")
}

/// Resolves a `Location` header against the URL it came from.
pub(super) fn join_url(base: &str, location: &str) -> String {
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

    #[test]
    fn splits_hosts_and_ports() {
        assert_eq!(split_host_port("127.0.0.1:5000"), ("127.0.0.1", 5000));
        assert_eq!(split_host_port("localhost"), ("localhost", 80));
        assert_eq!(split_host_port("[::1]:5000"), ("::1", 5000));
        assert_eq!(split_host_port("[::1]"), ("::1", 80));
    }

    /// Hands out `chunks`, sleeping `pause` before each: a registry that trickles.
    struct Trickle {
        chunks: Vec<Vec<u8>>,
        pause: Duration,
        rest: Vec<u8>,
    }

    impl Trickle {
        fn new(chunks: Vec<Vec<u8>>, pause_ms: u64) -> Self {
            Trickle {
                chunks,
                pause: Duration::from_millis(pause_ms),
                rest: Vec::new(),
            }
        }
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.rest.is_empty() {
                if self.chunks.is_empty() {
                    return Ok(0);
                }
                std::thread::sleep(self.pause);
                self.rest = self.chunks.remove(0);
            }
            let n = self.rest.len().min(buf.len());
            buf[..n].copy_from_slice(&self.rest[..n]);
            self.rest.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn watchdog_cuts_off_a_trickle_but_not_a_steady_body() {
        let stall = Duration::from_millis(100);
        let trickle = Trickle::new(vec![vec![b'x']; 100], 10);
        let started = Instant::now();
        let err = Watchdog::new(trickle, stall, None)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("less than 32 KiB"), "{err}");
        assert!(started.elapsed() < Duration::from_millis(500));

        // 64 KiB every 10 ms: each window moves enough even on a busy machine.
        let steady = Trickle::new(vec![vec![b'x'; 64 << 10]; 30], 10);
        let mut out = Vec::new();
        Watchdog::new(steady, stall, None)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), 30 * (64 << 10));

        // A small body must be whole by its deadline, however steadily it moves.
        let steady = Trickle::new(vec![vec![b'x'; 16 << 10]; 30], 10);
        let deadline = Instant::now() + Duration::from_millis(100);
        let err = Watchdog::new(steady, stall, Some(deadline))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("not complete"), "{err}");
    }
}
