//! The printer: the one place `dev` writes to stdout and stderr (clippy's `print_stdout` and
//! `print_stderr` are denied everywhere else). Output for programs goes to stdout (`out`,
//! `json`, tables); what a person reads while dev works goes to stderr (`note`, `prompt`).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Display;
use std::io::Write;

/// A line of output (stdout): what the command produced.
pub fn out(line: impl Display) {
    println!("{line}");
}

/// A line for the person at the terminal (stderr): progress, notes, what dev did.
pub fn note(line: impl Display) {
    eprintln!("{line}");
}

/// Bytes on stderr as they are: what another process of dev rendered (init's error, passed on
/// by the helper).
pub fn raw_err(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes);
    let _ = err.flush();
}

/// A question on stderr, without a newline, flushed before the answer is read.
pub fn prompt(text: impl Display) {
    eprint!("{text}");
    let _ = std::io::stderr().flush();
}

/// A value as pretty JSON on stdout (`--format json`).
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    out(serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Columns sized to their widest cell, so a long value never shifts the rest of its row.
pub struct Table {
    headers: Vec<&'static str>,
    /// Columns aligned right (numbers, sizes).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `headers`, a `>` prefix on a header aligns its column right.
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.trim_start_matches('>')).collect(),
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table's lines, without trailing spaces.
    pub fn lines(&self) -> Vec<String> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                if i > 0 {
                    s.push_str("   ");
                }
                let pad = w.saturating_sub(c.chars().count());
                if self.right[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad));
                }
            }
            s.trim_end().to_string()
        };
        let mut out = vec![line(self.headers.clone())];
        for r in &self.rows {
            out.push(line(r.iter().map(String::as_str).collect()));
        }
        out
    }

    pub fn print(&self) {
        for l in self.lines() {
            out(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell() {
        let mut t = Table::new(&["NAME", "IMAGE", ">SIZE"]);
        t.row(vec![
            "a".into(),
            "registry.example:5000/some/long/image:tag".into(),
            "1 kB".into(),
        ]);
        t.row(vec!["bb".into(), "x".into(), "10.5 MB".into()]);
        let lines = t.lines();
        assert_eq!(lines.len(), 3);
        // The right-aligned size column ends at the same place in every row, whatever the
        // image's length; the left-aligned columns start at the same place.
        assert!(
            lines.iter().all(|l| l.len() == lines[0].len()),
            "{lines:#?}"
        );
        let image_at: Vec<usize> = lines
            .iter()
            .map(|l| l.find(['I', 'r', 'x']).unwrap_or(0))
            .collect();
        assert!(image_at.iter().all(|i| *i == image_at[0]), "{lines:#?}");
    }
}
