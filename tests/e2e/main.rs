//! End-to-end tests: `dev` as an unprivileged user against a real local registry.

#[path = "../common/mod.rs"]
pub mod common;

mod auth;
mod debian;
mod hostile;
mod lifecycle;
mod pull;
mod shell;
mod tools;
mod unpack_fidelity;
