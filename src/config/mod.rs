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

/// `file:line:col` out of a rendered TOML error.
pub(crate) fn located_prefix(located: &str) -> &str {
    located
        .char_indices()
        .filter(|&(_, c)| c == ':')
        .nth(2)
        .map_or(located, |(i, _)| &located[..i])
}

/// From serde's "unknown field `x`, expected one of `a`, `b`": the key and the nearest known one.
pub(crate) fn unknown_key(message: &str) -> Option<(String, Option<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let near = expected
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k.to_string());
    Some((key.to_string(), near))
}
