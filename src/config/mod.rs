//! Configuration files: the project's `dev.toml` (or its `devcontainer.json`) and the user's settings
//! (`$XDG_CONFIG_HOME/dev/config.toml`). Parsing and discovery only.

pub mod devcontainer;
pub mod lock;
pub mod mounts;
pub mod project;
pub mod settings;
pub mod trust;

pub use settings::Settings;

/// Renders a TOML error as one line: file, line and column, and what is wrong.
pub fn toml_error(path: &std::path::Path, text: &str, err: &toml::de::Error) -> String {
    let msg = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{}:{line}:{col}: {msg}", path.display())
        }
        None => format!("{}: {msg}", path.display()),
    }
}
