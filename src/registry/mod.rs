//! The registry client (OCI distribution spec v2) on a small blocking HTTP stack: manifests,
//! blobs with resume and retries, bearer and basic auth, mirrors and the HTTP policy.
//! Credentials and tokens go only to the registry host they belong to, never to a redirect
//! target, and never over plain HTTP except to a loopback registry.

pub mod auth;
mod client;
mod error;

pub use client::Endpoint;
pub use error::RegistryError;
