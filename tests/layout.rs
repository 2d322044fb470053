//! The rules of the code's layout (ARCHITECTURE.md, "Rules"), checked on the sources: `store`
//! and `sandbox` do not import each other, no command imports another command, only
//! `sandbox/sys/` makes namespace, set-id and prctl calls, and only `ui` prints.

use std::fs;
use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read src").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = fs::read_to_string(&p).expect("read source");
                out.push((p, text));
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The lines of `text` that are code (not comments), with their numbers.
fn code(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

fn offenders(under: &str, needles: &[&str], except: &[&str]) -> Vec<String> {
    let root = src();
    let mut out = Vec::new();
    for (path, text) in sources(&root.join(under)) {
        let rel = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .display()
            .to_string();
        if except.iter().any(|e| rel.starts_with(e)) {
            continue;
        }
        for (n, line) in code(&text) {
            if needles.iter().any(|needle| line.contains(needle)) {
                out.push(format!("src/{rel}:{n}: {}", line.trim()));
            }
        }
    }
    out
}

#[test]
fn store_and_sandbox_do_not_import_each_other() {
    let a = offenders("store", &["crate::sandbox"], &[]);
    let b = offenders("sandbox", &["crate::store"], &[]);
    assert!(a.is_empty() && b.is_empty(), "{a:#?}\n{b:#?}");
}

#[test]
fn no_command_imports_another() {
    let root = src().join("commands");
    let mut bad = Vec::new();
    for (path, text) in sources(&root) {
        if path.file_name().is_some_and(|n| n == "mod.rs") {
            continue;
        }
        for (n, line) in code(&text) {
            // (`use super::*;` is a file's own test module.)
            let sibling = line.contains("super::") && !line.contains("use super::*;");
            if line.contains("crate::commands::") || sibling {
                bad.push(format!("{}:{n}: {}", path.display(), line.trim()));
            }
        }
    }
    // Outside commands/, nothing but main.rs reaches into a command.
    for (path, text) in sources(&src()) {
        if path.starts_with(&root) || path.ends_with("main.rs") {
            continue;
        }
        for (n, line) in code(&text) {
            if line.contains("crate::commands::") {
                bad.push(format!("{}:{n}: {}", path.display(), line.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn only_sandbox_sys_makes_namespace_id_and_prctl_calls() {
    let needles = [
        "nix::sched",
        "setresuid",
        "setresgid",
        "setgroups(",
        "prctl",
        "libc::syscall",
    ];
    let bad = offenders("", &needles, &["sandbox/sys/"]);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn all_unsafe_is_in_sandbox_sys_with_a_safety_note() {
    let bad = offenders("", &["unsafe {", "unsafe fn"], &["sandbox/sys/"]);
    assert!(bad.is_empty(), "{bad:#?}");
    for (path, text) in sources(&src().join("sandbox/sys")) {
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.contains("unsafe {") && !l.trim_start().starts_with("//") {
                let above = &lines[i.saturating_sub(12)..i];
                assert!(
                    above.iter().any(|a| a.contains("SAFETY")) || l.contains("SAFETY"),
                    "{}:{}: `unsafe` without a SAFETY note above it",
                    path.display(),
                    i + 1
                );
            }
        }
    }
}

#[test]
fn only_ui_prints() {
    let main = fs::read_to_string(src().join("main.rs")).expect("main.rs");
    assert!(
        main.contains("#![deny(clippy::print_stdout, clippy::print_stderr)]"),
        "main.rs denies printing outside ui (clippy)"
    );
    let bad = offenders(
        "",
        &["println!", "eprintln!", "print!(", "eprint!("],
        &["ui/"],
    );
    assert!(bad.is_empty(), "{bad:#?}");
}
