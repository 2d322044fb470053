//! `dev config`: the project's effective configuration, whichever file it came from (dev.toml
//! or devcontainer.json, with the image's devcontainer.metadata label when the image is in the
//! store), and what is ignored and why. Never touches the network.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::ConfigFormat;
use crate::config::devcontainer::{check_host, Command, Ignored, METADATA_LABEL};
use crate::config::project::{no_project, Project};
use crate::oci::ImageConfig;

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Effective {
    file: String,
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    shell: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    packages: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manager: Option<String>,
    ssh_agent: bool,
    user: User,
    workspace: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    features: BTreeMap<String, serde_json::Value>,
    /// What runs, by when: `[setup] root`, `[setup] user`, or a lifecycle command's name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    commands: BTreeMap<String, Vec<Shown>>,
    /// `[[mounts]]` (or a devcontainer.json's `mounts`), as written: config.toml's and
    /// `--mount`'s come on top at a session.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<String>,
    /// What the project or config.toml opens of the host (`gui`, `gpu`), found on this machine
    /// now: only what exists is passed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    opens: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    forward_ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    host_requirements_unmet: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ignored: Vec<Ignored>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Shown {
    Line(String),
    Command(Command),
}

#[derive(Serialize)]
struct User {
    name: String,
    uid: u32,
    note: String,
}

pub fn run(format: ConfigFormat) -> Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut project = Project::discover(&cwd)?.ok_or_else(|| {
        no_project(
            &cwd,
            "run `dev config` in a project (a directory with a dev.toml or a devcontainer.json)",
        )
    })?;
    merge_label(&mut project);
    let effective = effective(&project);
    match format {
        ConfigFormat::Json => crate::ui::json(&effective),
        ConfigFormat::Toml => {
            let text =
                toml::to_string(&effective).context("cannot show the configuration as TOML")?;
            crate::ui::out(format_args!("{}", text.trim_end()));
            Ok(())
        }
    }
}

/// The image's devcontainer.metadata label, when the image is in the store (no pull).
fn merge_label(project: &mut Project) {
    let Some(dc) = project.devcontainer.as_mut() else {
        return;
    };
    let config: Option<ImageConfig> = crate::store::Store::open()
        .ok()
        .and_then(|store| {
            let rec = store.find_image(&dc.image).ok().flatten()?;
            store.read_blob(&rec.config_digest).ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(config) = config else {
        dc.ignored.push(Ignored {
            property: format!("{METADATA_LABEL} (image label)"),
            reason:
                "the image is not in the store yet: a session merges its label when it pulls it"
                    .into(),
        });
        return;
    };
    if let Some(label) = config
        .config
        .labels
        .as_ref()
        .and_then(|l| l.get(METADATA_LABEL))
    {
        dc.merge_image_metadata(label);
    }
}

fn effective(project: &Project) -> Effective {
    let c = &project.config;
    let uid = nix::unistd::geteuid().as_raw();
    let me = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| format!("u{uid}"), |u| u.name);
    let dc = project.devcontainer.as_deref();
    let user = match dc.and_then(|d| d.remote_user.as_deref()) {
        Some("root") => User {
            name: me,
            uid,
            note: "remoteUser `root`: dev runs you as yourself; `--root` enters as root".into(),
        },
        Some(name) => User {
            name: name.to_string(),
            uid,
            note: format!("`{name}` gets your uid, as updateRemoteUserUID does"),
        },
        None => User {
            name: me,
            uid,
            note: "you, with your uid".into(),
        },
    };
    let mut commands: BTreeMap<String, Vec<Shown>> = BTreeMap::new();
    for (label, list) in [
        ("[setup] root", &c.setup.root),
        ("[setup] user", &c.setup.user),
    ] {
        if !list.is_empty() {
            commands.insert(
                label.into(),
                list.iter().cloned().map(Shown::Line).collect(),
            );
        }
    }
    let mut ignored = Vec::new();
    let mut env = c.env.clone();
    let mut features: BTreeMap<String, serde_json::Value> = c
        .features
        .iter()
        .filter_map(|(r, o)| Some((r.clone(), serde_json::to_value(o).ok()?)))
        .collect();
    let mounts = c.mounts.iter().map(ToString::to_string).collect();
    let (mut ports, mut unmet) = (Vec::new(), Vec::new());
    if let Some(dc) = dc {
        env = dc.dev_toml().env;
        let mut all = dc.hooks.all();
        if let Some(init) = &dc.initialize_command {
            all.insert(
                0,
                ("initializeCommand (on this machine)".into(), init.clone()),
            );
        }
        for (label, command) in all {
            commands
                .entry(label)
                .or_default()
                .push(Shown::Command(command));
        }
        features = dc.features.clone();
        ports = dc.forward_ports.clone();
        unmet = check_host(&dc.host_requirements, &project.root);
        ignored = dc.ignored.clone();
    }
    Effective {
        file: project.file.display().to_string(),
        image: c.image.clone(),
        shell: c.shell.clone(),
        packages: c.tools.packages.clone(),
        manager: c.tools.manager.clone(),
        ssh_agent: c.ssh_agent,
        user,
        workspace: project.root.display().to_string(),
        env,
        features,
        commands,
        mounts,
        opens: opens(c),
        forward_ports: ports,
        host_requirements_unmet: unmet,
        ignored,
    }
}

/// What `gui`/`gpu` (the project's or config.toml's) would open of this host now, and the notes
/// for what it lacks. Reads the host only: nothing is made.
fn opens(c: &crate::config::project::DevToml) -> Vec<String> {
    let Ok(asked) = crate::config::trust::openings_asked(false, None, Some(c)) else {
        return vec!["config.toml cannot be read: run `dev doctor`".into()];
    };
    if !asked.any() {
        return Vec::new();
    }
    let vars: BTreeMap<String, String> = std::env::vars().collect();
    let root = crate::host::host_root();
    let ldcache = (asked.gpu != crate::host::GpuMode::None)
        .then(|| crate::host::gpu::ldconfig_p(&root))
        .flatten();
    let opening = crate::host::open(
        asked,
        &crate::host::Facts {
            vars: &vars,
            root: &root,
            runtime: std::path::Path::new("/nonexistent"),
            uid: nix::unistd::getuid().as_raw(),
            ldcache: ldcache.as_deref(),
        },
    );
    match opening {
        Ok(o) => o
            .opened
            .into_iter()
            .chain(o.notes.into_iter().map(|n| format!("note: {n}")))
            .collect(),
        Err(e) => vec![format!("error: {}", crate::ui::render(&e))],
    }
}
