//! End-to-end tests: `dev` as an unprivileged user against a real local registry.

#[path = "../common/mod.rs"]
pub mod common;

mod auth;
mod debian;
mod devcontainer;
mod doctor;
mod durability;
mod export_archive;
mod export_build;
mod features;
mod gpu;
mod gui;
mod holder;
mod hostile;
mod lifecycle;
mod linger;
mod mounts;
mod output;
mod project_safety;
mod pull;
mod registry_safety;
mod shell;
mod terminal;
mod tools;
mod trust;
mod unpack_fidelity;
