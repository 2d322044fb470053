//! Registry errors with predicates, so callers decide without matching strings.

use crate::config::settings::is_loopback;
use crate::oci::{Digest, DocumentError};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{what} not found on `{registry}`")]
    NotFound { registry: String, what: String },
    #[error("`{registry}` refused access to {what} (HTTP {status})")]
    Unauthorized {
        registry: String,
        what: String,
        status: u16,
    },
    #[error("`{registry}` is rate-limiting pulls (HTTP 429)")]
    RateLimited { registry: String },
    #[error("`{registry}` answered HTTP {status} for {what}")]
    Status {
        registry: String,
        what: String,
        status: u16,
    },
    #[error("cannot reach `{registry}`: {message}")]
    Transport { registry: String, message: String },
    #[error("`{registry}` asks for credentials over plain HTTP; refusing to send them")]
    InsecureAuth { registry: String },
    #[error("`{registry}` asks for credentials, but `dev` sent none: it is plain HTTP on a port of this machine held by {holder}, not by you or root")]
    Withheld { registry: String, holder: String },
    #[error("`{registry}` stopped sending {what}: {detail}")]
    Stalled {
        registry: String,
        what: String,
        detail: String,
        /// The stall timeout in force, as the user would write it.
        timeout: String,
    },
    #[error("{what} from `{registry}` is refused: {reason}")]
    Refused {
        registry: String,
        what: String,
        reason: DocumentError,
    },
    #[error("`{name}` is `{value}`, not a number of seconds")]
    BadSetting { name: &'static str, value: String },
    #[error("`{registry}` sent an authentication challenge `dev` cannot answer: {challenge}")]
    BadChallenge { registry: String, challenge: String },
    #[error("{what} from `{registry}` does not match its descriptor: expected {expected} ({expected_size} bytes), got {actual} ({actual_size} bytes); nothing of it was kept")]
    Mismatch {
        registry: String,
        what: String,
        expected: Digest,
        expected_size: u64,
        actual: Digest,
        actual_size: u64,
    },
    #[error("{what} from `{registry}` is malformed: {message}")]
    Malformed {
        registry: String,
        what: String,
        message: String,
    },
    #[error("cannot write `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl RegistryError {
    /// Worth trying again after a pause: the network or the server hiccuped.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Transport { .. } | RegistryError::RateLimited { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// What the user can do about it, when there is something.
    pub fn hint(&self) -> Option<String> {
        match self {
            RegistryError::RateLimited { registry } => Some(format!(
                "log in with `docker login {registry}` or `podman login {registry}`, or set a mirror for it in ~/.config/dev/config.toml ([mirrors])"
            )),
            RegistryError::Unauthorized { registry, .. } => Some(format!(
                "check the name; if the image is private, log in with `docker login {registry}` or `podman login {registry}`"
            )),
            RegistryError::NotFound { .. } => Some("check the image name and tag".to_string()),
            RegistryError::Transport { registry, .. } if is_loopback(registry) => Some(format!(
                "nothing answers on `{registry}`: start the registry there or fix the port (a registry on this machine needs no `insecure-registries` entry)"
            )),
            RegistryError::Transport { registry, .. } => Some(format!(
                "check your network connection; for a registry without TLS, add `insecure-registries = [\"{registry}\"]` to ~/.config/dev/config.toml"
            )),
            RegistryError::Withheld { registry, .. } => Some(format!(
                "if you trust what listens there, add `insecure-registries = [\"{registry}\"]` to ~/.config/dev/config.toml"
            )),
            RegistryError::Stalled { timeout, .. } => Some(format!(
                "the registry or the network is stalling; try again later, or give it longer with DEV_REGISTRY_STALL_TIMEOUT=SECONDS (now {timeout})"
            )),
            RegistryError::Refused {
                reason: DocumentError::Schema1,
                ..
            } => Some(
                "push the image again with a current docker, podman or buildah; they write schema 2 or OCI manifests".to_string(),
            ),
            RegistryError::Refused { .. } => Some(
                "nothing of it was used; the image or the registry is broken or hostile, so ask its publisher to push it again".to_string(),
            ),
            RegistryError::BadSetting { name, .. } => {
                Some(format!("set `{name}` to a number of seconds, e.g. 30, or unset it"))
            }
            RegistryError::Io { .. } => Some("check free disk space with `df -h` and `dev system df`".to_string()),
            _ => None,
        }
    }
}
