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
    let mut out = format!("error: {err}");
    let mut hint = None;
    for cause in err.chain() {
        if hint.is_none() {
            if let Some(u) = cause.downcast_ref::<UserError>() {
                hint = u.hint.clone();
            } else if let Some(r) = cause.downcast_ref::<RegistryError>() {
                hint = r.hint();
            } else if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                if io.raw_os_error() == Some(nix::libc::ENOSPC) {
                    hint =
                        Some("the disk is full; free space, or run `dev system prune`".to_string());
                }
            }
        }
    }
    // The unpack helper is another process: its errors arrive as text.
    if hint.is_none()
        && err
            .chain()
            .any(|c| c.to_string().contains("No space left on device"))
    {
        hint = Some("the disk is full; free space, or run `dev system prune`".to_string());
    }
    for cause in err.chain().skip(1) {
        out.push_str(&format!("\n  caused by: {cause}"));
    }
    if let Some(h) = hint {
        out.push_str(&format!("\nhint: {h}"));
    }
    out
}
