//! devcontainer.json's lifecycle commands in their three forms, and the one runner that runs
//! them inside the env: a string through `/bin/sh -c`, an array as argv (no shell), an object
//! as named commands run in parallel with their output prefixed by name. The commands reach
//! the runner as arguments, never as part of its shell text. Pure: builds argv, runs nothing.

use std::collections::BTreeMap;

use serde::Serialize;

/// One command: shell text, or argv run without a shell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Step {
    Shell(String),
    Argv(Vec<String>),
}

/// A lifecycle command as devcontainer.json writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Command {
    One(Step),
    /// Named steps, run in parallel, output prefixed by name.
    Parallel(BTreeMap<String, Step>),
}

impl Step {
    fn from_json(v: &serde_json::Value) -> Result<Step, String> {
        match v {
            serde_json::Value::String(s) => Ok(Step::Shell(s.clone())),
            serde_json::Value::Array(items) => {
                let argv: Option<Vec<String>> =
                    items.iter().map(|i| i.as_str().map(String::from)).collect();
                match argv {
                    Some(a) if !a.is_empty() => Ok(Step::Argv(a)),
                    Some(_) => Err("is an empty array".into()),
                    None => Err("is an array with an item that is not a string".into()),
                }
            }
            _ => Err("is neither a string nor an array of strings".into()),
        }
    }

    /// What the runner executes.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Step::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
            Step::Argv(a) => a.clone(),
        }
    }

    /// The step as one line of shell text, for the user to read (arrays quoted).
    pub fn display(&self) -> String {
        match self {
            Step::Shell(s) => s.clone(),
            Step::Argv(a) => a.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "),
        }
    }
}

impl Command {
    /// A string, an array of strings, or an object of them; `None` for an empty one.
    pub fn from_json(v: &serde_json::Value) -> Result<Option<Command>, String> {
        match v {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) if s.trim().is_empty() => Ok(None),
            serde_json::Value::Object(map) => {
                let mut steps = BTreeMap::new();
                for (name, step) in map {
                    if step.is_null() {
                        continue;
                    }
                    let step = Step::from_json(step).map_err(|e| format!("`{name}` {e}"))?;
                    steps.insert(name.clone(), step);
                }
                Ok((!steps.is_empty()).then_some(Command::Parallel(steps)))
            }
            other => Step::from_json(other).map(|s| Some(Command::One(s))),
        }
    }

    /// The lines that show it: one per step, a named one as `name: step`.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Command::One(s) => vec![s.display()],
            Command::Parallel(steps) => steps
                .iter()
                .map(|(n, s)| format!("{n}: {}", s.display()))
                .collect(),
        }
    }

    /// Each step as shell text, one after the other (for a dev.toml's `[setup] user`).
    pub fn shell_lines(&self) -> Vec<String> {
        match self {
            Command::One(s) => vec![s.display()],
            Command::Parallel(steps) => steps.values().map(Step::display).collect(),
        }
    }
}

/// `s` quoted for sh when it needs it.
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The runner: groups (`G LABEL COUNT`, then COUNT entries `NAME ARGC ARGV...`) run one after
/// the other, the entries of a group at once; a named entry's output lines are prefixed with
/// its name. Stops at the first group that fails, naming it, with its status.
const RUNNER: &str = r#"exec </dev/null 1>&2
exec 3>&1
one() {
    name=$1 n=$2
    shift 2
    i=0
    for a do
        [ "$i" -eq 0 ] && set --
        i=$((i + 1))
        [ "$i" -le "$n" ] && set -- "$@" "$a"
    done
    if [ -z "$name" ]; then
        "$@"
        return
    fi
    rc=$( { { "$@" 2>&1 3>&- 4>&-; echo $? >&4; } | while IFS= read -r l || [ -n "$l" ]; do printf '%s | %s\n' "$name" "$l"; done >&3; } 4>&1 )
    return "$rc"
}
while [ $# -gt 0 ]; do
    label=$2 count=$3
    shift 3
    pids= k=0 status=0
    while [ "$k" -lt "$count" ]; do
        k=$((k + 1))
        n=$2
        if [ "$count" -eq 1 ]; then
            one "$@" || status=$?
        else
            one "$@" &
            pids="$pids $!"
        fi
        shift $((n + 2))
    done
    for p in $pids; do
        wait "$p" || status=$?
    done
    if [ "$status" -ne 0 ]; then
        printf 'dev: %s failed (exit %s)\n' "$label" "$status"
        exit "$status"
    fi
done
"#;

/// The argv that runs `commands` (label, command) in order inside the env, stdin from
/// /dev/null, stdout to stderr.
pub fn runner_argv(commands: &[(String, Command)]) -> Vec<String> {
    let mut argv = vec!["/bin/sh".into(), "-c".into(), RUNNER.into(), "sh".into()];
    for (label, command) in commands {
        let entries: Vec<(String, &Step)> = match command {
            Command::One(s) => vec![(String::new(), s)],
            Command::Parallel(steps) => steps.iter().map(|(n, s)| (n.clone(), s)).collect(),
        };
        argv.extend(["G".into(), label.clone(), entries.len().to_string()]);
        for (name, step) in entries {
            let step_argv = step.argv();
            argv.push(name);
            argv.push(step_argv.len().to_string());
            argv.extend(step_argv);
        }
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_forms() {
        assert_eq!(
            Command::from_json(&json!("make")).expect("ok"),
            Some(Command::One(Step::Shell("make".into())))
        );
        assert_eq!(
            Command::from_json(&json!(["npm", "ci"])).expect("ok"),
            Some(Command::One(Step::Argv(vec!["npm".into(), "ci".into()])))
        );
        let c = Command::from_json(&json!({"a": "x", "b": ["y", "z w"]}))
            .expect("ok")
            .expect("some");
        assert_eq!(c.lines(), ["a: x", "b: y 'z w'"]);
        assert_eq!(Command::from_json(&json!("")).expect("ok"), None);
        assert!(Command::from_json(&json!(3)).is_err());
        assert!(Command::from_json(&json!([])).is_err());
        assert!(Command::from_json(&json!({"a": {"b": "c"}})).is_err());
    }

    #[test]
    fn the_runner_gets_commands_as_arguments() {
        let argv = runner_argv(&[
            (
                "onCreateCommand".into(),
                Command::One(Step::Shell("echo $(id)".into())),
            ),
            (
                "postCreateCommand".into(),
                Command::Parallel(BTreeMap::from([
                    ("a".into(), Step::Argv(vec!["true".into()])),
                    ("b".into(), Step::Shell("x".into())),
                ])),
            ),
        ]);
        assert_eq!(&argv[..2], ["/bin/sh", "-c"]);
        assert!(
            !argv[2].contains("$(id)"),
            "no command in the runner's text"
        );
        assert_eq!(
            &argv[3..],
            [
                "sh",
                "G",
                "onCreateCommand",
                "1",
                "",
                "3",
                "/bin/sh",
                "-c",
                "echo $(id)",
                "G",
                "postCreateCommand",
                "2",
                "a",
                "1",
                "true",
                "b",
                "3",
                "/bin/sh",
                "-c",
                "x"
            ]
        );
    }

    #[test]
    fn runs_in_a_real_shell() {
        let argv = runner_argv(&[
            (
                "one".into(),
                Command::One(Step::Argv(vec![
                    "printf".into(),
                    "%s\\n".into(),
                    "a b".into(),
                ])),
            ),
            (
                "two".into(),
                Command::Parallel(BTreeMap::from([
                    ("x".into(), Step::Shell("echo hi; printf tail".into())),
                    ("y".into(), Step::Shell("exit 3".into())),
                ])),
            ),
            (
                "three".into(),
                Command::One(Step::Shell("echo never".into())),
            ),
        ]);
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .expect("sh");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("a b\n"), "{err}");
        assert!(
            err.contains("x | hi\nx | tail\n") || err.contains("x | hi\n"),
            "{err}"
        );
        assert!(err.contains("x | tail"), "{err}");
        assert!(err.contains("dev: two failed (exit 3)"), "{err}");
        assert!(!err.contains("never"), "{err}");
        assert!(out.stdout.is_empty());
    }
}
