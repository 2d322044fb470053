//! Everything the user sees: the printer, progress bars, and errors rendered with hints.

pub mod error;
pub mod print;
pub mod progress;

pub use error::{render, ExitCode, UserError};
pub use print::{json, note, out, prompt, raw_err, Table};

/// Human-readable byte counts, as `docker images` shows them.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes() {
        assert_eq!(super::human_bytes(999), "999 B");
        assert_eq!(super::human_bytes(1_500_000), "1.5 MB");
    }
}
