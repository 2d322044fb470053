//! Rootless sandboxing: id maps (pure) and the user-namespace helper process.
//! Everything that enters a namespace happens in a re-executed, single-threaded `dev` helper.

pub mod idmap;
pub mod spawn;

pub use spawn::Identity;
