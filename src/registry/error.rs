//! Registry errors with predicates, so callers decide without matching strings.

use crate::oci::Digest;

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
            RegistryError::Transport { registry, .. } => Some(format!(
                "check your network connection; for a registry without TLS, add `insecure-registries = [\"{registry}\"]` to ~/.config/dev/config.toml"
            )),
            RegistryError::Io { .. } => Some("check free disk space with `df -h` and `dev system df`".to_string()),
            _ => None,
        }
    }
}
