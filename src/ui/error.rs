//! Error rendering: `error: what failed`, `  caused by: …`, `hint: what to do`.

use std::fmt;

use crate::registry::RegistryError;

/// An error with the sentence that tells the user what to do next.
#[derive(Debug)]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
}

impl UserError {
    pub fn with_hint(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(UserError {
            message: message.into(),
            hint: Some(hint.into()),
        })
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// The text printed for an error, one line per cause, the hint last.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = format!("error: {}", shown(&err.to_string()));
    let hint = err
        .chain()
        .find_map(|c| {
            if let Some(u) = c.downcast_ref::<UserError>() {
                u.hint.clone()
            } else if let Some(f) = c.downcast_ref::<crate::store::inside::Failure>() {
                // Work the helper did, its kind and hint kept across the process boundary.
                f.hint()
            } else {
                c.downcast_ref::<RegistryError>()
                    .and_then(RegistryError::hint)
            }
        })
        .or_else(|| {
            crate::store::inside::failed_for_disk_full(err)
                .then(|| "the disk is full; free space, or run `dev system prune`".to_string())
        });
    for cause in err.chain().skip(1) {
        out.push_str(&format!("\n  caused by: {}", shown(&cause.to_string())));
    }
    if let Some(h) = hint {
        out.push_str(&format!("\nhint: {}", shown(&h)));
    }
    out
}

/// `text` with its control characters escaped (line breaks kept): errors quote names from
/// images, archives, registries and configs, which must not drive the user's terminal.
fn shown(text: &str) -> String {
    text.split('\n')
        .map(crate::config::trust::printable)
        .collect::<Vec<_>>()
        .join("\n")
}

/// An exit status to return without printing an error.
#[derive(Debug)]
pub struct ExitCode(pub i32);

impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitCode {}
