//! The registry client (OCI distribution spec v2) on a small blocking HTTP stack: manifests,
//! blobs with resume and retries, bearer and basic auth, mirrors and the HTTP policy.
//! Credentials and tokens go only to the registry host they belong to, never to a redirect
//! target, and never over plain HTTP except to a loopback port whose listener is the user's
//! own or root's (or that the user listed in `insecure-registries`). Every body read is capped
//! and every transfer has a deadline for making progress (`DEV_REGISTRY_STALL_TIMEOUT`).

pub mod auth;
mod client;
mod error;
mod follow;
mod loopback;
mod push;

pub use client::{stall_timeout, Endpoint};
pub use error::RegistryError;
pub use follow::{Follow, Landed, Landing, News};
pub use push::Pushed;
