//! `dev ps`, `dev start`, `dev stop` and `dev exec`: envs by name, whether they run, their
//! sessions.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::cli::Format;
use crate::config::project::no_project;
use crate::ids::Identity;
use crate::sandbox::keeper::{request, RETIRE, STATUS, STOP};
use crate::session::{enter, env_of, prepare, project_of, session, EnterOptions, Update};
use crate::store::Store;
use crate::ui::{Table, UserError};

/// One env, as `dev ps` shows it.
#[derive(serde::Serialize)]
struct Row {
    name: String,
    project: PathBuf,
    image: String,
    fingerprint: String,
    /// `running`, `lingering` (no session in it: it stops at `lingers_until`) or `stopped`.
    state: &'static str,
    sessions: u64,
    /// Unix seconds at which a lingering env stops.
    #[serde(skip_serializing_if = "Option::is_none")]
    lingers_until: Option<f64>,
    uptime_seconds: u64,
    size_bytes: u64,
}

pub fn list(all: bool, format: Format) -> Result<()> {
    let store = Store::open()?;
    let mapping = Identity::detect().store_key();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut rows = Vec::new();
    for (dir, rec) in store.env_records(&mapping) {
        let run_dir = store.run_dir(&mapping, &rec.project);
        let running = store.running(&run_dir);
        if running.is_none() && !all {
            continue;
        }
        let status = running
            .as_ref()
            .and_then(|_| request(&run_dir, STATUS).ok())
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
        let sessions = status
            .as_ref()
            .and_then(|v| v["sessions"].as_u64())
            .unwrap_or(0);
        let lingers_until = status.as_ref().and_then(|v| v["lingers_until"].as_f64());
        rows.push(Row {
            name: rec.name.clone().unwrap_or_default(),
            project: rec.project.clone(),
            image: rec.image.clone(),
            fingerprint: running.as_ref().map_or_else(
                || rec.manifest_digest.short().to_string(),
                |s| s.fingerprint.clone(),
            ),
            state: match (&running, lingers_until) {
                (None, _) => "stopped",
                (Some(_), Some(_)) => "lingering",
                (Some(_), None) => "running",
            },
            sessions,
            lingers_until,
            uptime_seconds: running
                .as_ref()
                .map_or(0, |s| now.saturating_sub(s.started)),
            size_bytes: crate::store::envs::tree_bytes(&dir.join("upper")),
        });
    }
    if format == Format::Json {
        crate::ui::json(&rows)?;
        return Ok(());
    }
    let now_f = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut table = Table::new(&[
        "NAME",
        "PROJECT",
        "IMAGE",
        "FINGERPRINT",
        "STATE",
        ">SESSIONS",
        ">UPTIME",
        ">SIZE",
    ]);
    for r in rows {
        table.row(vec![
            r.name,
            r.project.display().to_string(),
            r.image,
            r.fingerprint,
            match r.lingers_until {
                Some(until) => format!(
                    "lingering, stops in {:.0}s",
                    (until - now_f).max(0.0).ceil()
                ),
                None => r.state.to_string(),
            },
            r.sessions.to_string(),
            format!("{}s", r.uptime_seconds),
            crate::ui::human_bytes(r.size_bytes),
        ]);
    }
    table.print();
    Ok(())
}

pub fn start(name: Option<String>) -> Result<()> {
    let opts = EnterOptions {
        start_only: true,
        name,
        ..EnterOptions::default()
    };
    let env = prepare(&opts, &Update::default())?;
    if env.project.is_none() {
        return Err(no_project(
            &env.cwd,
            "`dev start` runs in a project; `dev init` writes a dev.toml",
        ));
    }
    session(&env, &opts, Vec::new(), env.root.clone(), false)?;
    crate::ui::note(format_args!(
        "started {}; `dev stop` stops it",
        env.root.display()
    ));
    Ok(())
}

pub fn stop(name: Option<&str>) -> Result<()> {
    let store = Store::open()?;
    let mapping = Identity::detect().store_key();
    let project = project_of(&store, &mapping, name)?;
    let run_dir = store.run_dir(&mapping, &project);
    let Some(state) = store.running(&run_dir) else {
        crate::ui::note(format_args!("{} is not running", project.display()));
        return Ok(());
    };
    request(&run_dir, STOP)?;
    wait_stopped(&state)?;
    crate::ui::note(format_args!("stopped {}", state.name));
    Ok(())
}

/// Waits for the keeper of an env asked to stop to be gone.
fn wait_stopped(state: &crate::runtime::RunState) -> Result<()> {
    let deadline = Instant::now() + crate::runtime::STOP_TIMEOUT + Duration::from_secs(5);
    while state.keeper.alive() {
        if Instant::now() > deadline {
            anyhow::bail!("the env `{}` did not stop", state.name);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

pub fn exec(name: &str, argv: Vec<String>) -> Result<()> {
    let store = Store::open()?;
    let mapping = Identity::detect().store_key();
    let project = project_of(&store, &mapping, Some(name))?;
    std::env::set_current_dir(&project)
        .with_context(|| format!("cannot enter `{}`", project.display()))?;
    enter(&EnterOptions::default(), argv)
}

pub fn rm(name: Option<&str>, force: bool, reset: bool) -> Result<()> {
    let store = Store::open()?;
    let identity = Identity::detect();
    let mapping = identity.store_key();
    let project = project_of(&store, &mapping, name)?;
    let run_dir = store.run_dir(&mapping, &project);
    if let Some(state) = store.running(&run_dir) {
        // Lingering (no session in it, not kept by `dev start`): nothing is lost by stopping it.
        if request(&run_dir, RETIRE).is_ok_and(|a| a == "ok") {
            wait_stopped(&state)?;
        } else if !force {
            return Err(UserError::with_hint(
                format!("the env of `{}` is running", project.display()),
                "stop it first (`dev stop`), or use `-f`",
            ));
        } else {
            stop(name)?;
        }
    }
    let dir = store.env_dir(&mapping, &project);
    if !dir.exists() {
        crate::ui::note(format_args!("{} has no env", project.display()));
        return Ok(());
    }
    // Held while the env is deleted; its keeper, if it is still stopping, is waited for.
    let _lock = if dir.join("lock").exists() {
        Some(store.lock_stopped_env(&dir, &run_dir).ok_or_else(|| {
            UserError::with_hint(
                format!("the env of `{}` started meanwhile", project.display()),
                "stop it (`dev stop`), then remove it",
            )
        })?)
    } else {
        None
    };
    store.remove_trees(&identity, &[dir])?;
    if reset {
        crate::ui::note(format_args!(
            "reset {}: the next session starts it fresh from the image and tools",
            project.display()
        ));
    } else {
        crate::ui::note(format_args!(
            "removed the env of {} (its layer and home)",
            project.display()
        ));
    }
    Ok(())
}

/// `dev diff`: paths of the env's own layer against the layers under it, like `docker diff`.
pub fn diff(name: Option<&str>) -> Result<()> {
    let store = Store::open()?;
    let mapping = Identity::detect().store_key();
    let (dir, rec) = env_of(&store, &mapping, name)?;
    // The layers were shaped by the image: a name the env made is looked up beneath each
    // layer's root, so a symlink in a layer never makes the lookup land on the host.
    let lowers: Vec<crate::beneath::Tree> = rec
        .layers
        .iter()
        .filter_map(|d| {
            crate::beneath::Tree::open(&store.layer_path(&mapping, d).join("root")).ok()
        })
        .collect();
    let in_lower = |rel: &std::path::Path| {
        lowers.iter().any(|l| {
            l.lstat(rel)
                .ok()
                .flatten()
                .is_some_and(|st| !crate::beneath::is_whiteout(&st))
        })
    };
    for e in crate::store::envs::walk_env_tree(&dir.join("upper"))? {
        let kind = if crate::beneath::is_whiteout(&e.stat) {
            'D'
        } else if in_lower(&e.rel) {
            'C'
        } else {
            'A'
        };
        crate::ui::out(format_args!("{kind} /{}", e.rel.display()));
    }
    Ok(())
}
