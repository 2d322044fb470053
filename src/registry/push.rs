//! The OCI distribution push flow for one repository: `HEAD` a blob first and skip it when
//! the registry has it; a cross-repository mount (`POST ?mount=&from=`) when it came from
//! another repository of the same registry; else a monolithic `POST` + `PUT ?digest=`, or
//! chunked `PATCH`es when the registry asks for them (`OCI-Chunk-Min-Length`); the manifest
//! `PUT` last, with its media type. Tokens are asked for `repository:NAME:pull,push` first
//! (some registries read only the first scope), plus `pull` on each mount source.
//! Credentials go only to the registry's own host: an upload `Location` elsewhere gets none.
//! It never reads the store: a blob's bytes come from the `open` the caller gives.

use std::io::Read;

use super::client::{backoff, join_url, url_host, Endpoint};
use super::error::RegistryError;
use crate::oci::{Descriptor, Digest};

const ATTEMPTS: u32 = 5;
/// A chunk when the registry asks for chunks, unless it asks for larger ones.
const CHUNK: u64 = 16 << 20;
/// The largest chunk a registry may ask for (`OCI-Chunk-Min-Length`): each is held in memory
/// as it is sent. A registry asking more gets the blob in one monolithic `PUT` instead, which
/// the distribution spec lets every client send.
const MAX_CHUNK: u64 = 64 << 20;

/// What a blob push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The registry had it already.
    Present,
    /// Mounted from another repository of the registry: no byte sent.
    Mounted,
    /// Sent.
    Uploaded,
}

/// Opens a blob's bytes, verified as they are read; called again for each attempt.
pub type Opener<'a> = &'a (dyn Fn() -> anyhow::Result<Box<dyn Read + Send>> + Sync);

enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    Stream(Box<dyn Read + Send + 'a>, u64),
}

impl Endpoint {
    /// Asks tokens for pushing to this repository, and for pulling from `mount_sources`
    /// (other repositories of the same registry that blobs are mounted from).
    pub fn for_push(mut self, mount_sources: &[String]) -> Self {
        let mut scopes = vec![format!("repository:{}:pull,push", self.repository)];
        for s in mount_sources {
            let scope = format!("repository:{s}:pull");
            if s != &self.repository && !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        self.scopes = scopes;
        self
    }

    /// Whether the registry has the blob in this repository.
    pub fn has_blob(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/v2/{}/blobs/{digest}", self.repository));
        let what = format!("blob {}", digest.short());
        self.with_retries(|| match self.call("HEAD", &url, &[], Body::Empty, &what) {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        })
    }

    /// Pushes one blob: skipped when present, mounted from `mount_from` (a repository of
    /// this registry) when it can be, else uploaded from `open`, retried with backoff.
    /// `progress` gets the bytes sent so far.
    pub fn push_blob(
        &self,
        desc: &Descriptor,
        mount_from: Option<&str>,
        open: Opener<'_>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> anyhow::Result<Pushed> {
        if self.has_blob(&desc.digest)? {
            return Ok(Pushed::Present);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.upload_once(desc, mount_from, open, progress) {
                Err(e)
                    if attempt < ATTEMPTS
                        && e.downcast_ref::<RegistryError>()
                            .is_some_and(RegistryError::is_retryable) =>
                {
                    backoff(attempt)
                }
                other => return other,
            }
        }
    }

    fn upload_once(
        &self,
        desc: &Descriptor,
        mount_from: Option<&str>,
        open: Opener<'_>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> anyhow::Result<Pushed> {
        let what = format!("the upload of blob {}", desc.digest.short());
        let mut path = format!("/v2/{}/blobs/uploads/", self.repository);
        if let Some(from) = mount_from.filter(|f| *f != self.repository) {
            path.push_str(&format!("?mount={}&from={from}", desc.digest));
        }
        let started = self.call("POST", &self.url(&path), &[], Body::Empty, &what)?;
        if started.status() == 201 {
            return Ok(Pushed::Mounted);
        }
        let mut location = self.location(&started, &what)?;
        let chunk_min = started
            .header("oci-chunk-min-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|min| *min <= MAX_CHUNK);
        let body = open()?;
        match chunk_min {
            None => {
                let put = with_digest(&location, &desc.digest);
                self.call(
                    "PUT",
                    &put,
                    &[("Content-Type", "application/octet-stream")],
                    Body::Stream(Box::new(Counting::new(body, progress)), desc.size),
                    &what,
                )?;
            }
            Some(min) => {
                let size = min.max(CHUNK);
                let mut body = Counting::new(body, progress);
                let mut sent = 0u64;
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    (&mut body).take(size).read_to_end(&mut buf)?;
                    if buf.is_empty() {
                        break;
                    }
                    let range = format!("{sent}-{}", sent + buf.len() as u64 - 1);
                    let resp = self.call(
                        "PATCH",
                        &location,
                        &[
                            ("Content-Type", "application/octet-stream"),
                            ("Content-Range", &range),
                        ],
                        Body::Bytes(&buf),
                        &what,
                    )?;
                    location = self.location(&resp, &what)?;
                    sent += buf.len() as u64;
                }
                self.call(
                    "PUT",
                    &with_digest(&location, &desc.digest),
                    &[],
                    Body::Empty,
                    &what,
                )?;
            }
        }
        Ok(Pushed::Uploaded)
    }

    /// Puts the manifest under `reference` (a tag or its digest), last, with its media
    /// type; returns its digest.
    pub fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let url = self.url(&format!("/v2/{}/manifests/{reference}", self.repository));
        let what = format!("the manifest `{}:{reference}`", self.repository);
        self.with_retries(|| {
            self.call(
                "PUT",
                &url,
                &[("Content-Type", media_type)],
                Body::Bytes(bytes),
                &what,
            )
        })?;
        Ok(Digest::of_bytes(bytes))
    }

    /// The absolute URL in a response's `Location`.
    fn location(&self, resp: &ureq::Response, what: &str) -> Result<String, RegistryError> {
        let loc = resp
            .header("location")
            .ok_or_else(|| self.malformed(what, "an answer without a Location"))?;
        Ok(join_url(resp.get_url(), loc))
    }

    /// One request with the endpoint's authorization (only to its own host), answering one
    /// auth challenge when the body can be sent again. Redirects are not followed.
    fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        what: &str,
    ) -> Result<ureq::Response, RegistryError> {
        let own = url_host(url) == self.host;
        let mut body = Some(body);
        let mut answered = false;
        loop {
            let mut req = self.agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let authz = self.authorization.lock().ok().and_then(|a| a.clone());
            if let (true, Some(a)) = (own, &authz) {
                self.may_send_secrets(&self.host, self.transport)?;
                req = req.set("Authorization", a);
            }
            let replay = match &body {
                Some(Body::Empty) => Some(Body::Empty),
                Some(Body::Bytes(b)) => Some(Body::Bytes(b)),
                _ => None,
            };
            let sent = match body.take() {
                Some(Body::Empty) | None if method == "HEAD" => self.send(req, what)?,
                Some(Body::Empty) | None => self.send(req.set("Content-Length", "0"), what)?,
                Some(Body::Bytes(b)) => req.send_bytes(b),
                Some(Body::Stream(r, len)) => req.set("Content-Length", &len.to_string()).send(r),
            };
            match sent {
                Ok(resp) if (200..300).contains(&resp.status()) => return Ok(resp),
                Ok(resp) => {
                    return Err(RegistryError::Status {
                        registry: self.registry.clone(),
                        what: what.to_string(),
                        status: resp.status(),
                    })
                }
                Err(ureq::Error::Status(401, resp)) if !answered && replay.is_some() => {
                    let challenge = resp.header("www-authenticate").unwrap_or("").to_string();
                    self.authenticate(&challenge)?;
                    answered = true;
                    body = replay;
                }
                Err(e) => return Err(self.status_error(e, what)),
            }
        }
    }
}

/// `location` with `digest=` added to its query.
fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// Tells `progress` how many bytes went through.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl<'a, R> Counting<'a, R> {
    fn new(inner: R, progress: &'a (dyn Fn(u64) + Sync)) -> Self {
        Counting {
            inner,
            done: 0,
            progress,
        }
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(self.done);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_joins_the_upload_query() {
        let d = Digest::of_bytes(b"x");
        assert_eq!(
            with_digest("http://r/v2/a/blobs/uploads/u1", &d),
            format!("http://r/v2/a/blobs/uploads/u1?digest={d}")
        );
        assert_eq!(
            with_digest("http://r/v2/a/blobs/uploads/u1?_state=s", &d),
            format!("http://r/v2/a/blobs/uploads/u1?_state=s&digest={d}")
        );
    }
}
