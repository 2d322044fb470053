//! `dev init`: writes a commented dev.toml from a template (or for any image); never
//! overwrites one. What it writes is trusted: the user chose it here.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{Context, Result};

use crate::config::project::FILE_NAME;
use crate::config::trust::{dev_toml_path, Parts, TrustStore};
use crate::ui::UserError;

/// The templates, by name; the first is the default.
pub const TEMPLATES: [(&str, &str); 7] = [
    ("debian", include_str!("../../templates/debian.toml")),
    ("ubuntu", include_str!("../../templates/ubuntu.toml")),
    ("alpine", include_str!("../../templates/alpine.toml")),
    ("python", include_str!("../../templates/python.toml")),
    ("node", include_str!("../../templates/node.toml")),
    ("rust", include_str!("../../templates/rust.toml")),
    ("go", include_str!("../../templates/go.toml")),
];

pub fn run(template: Option<&str>, image: Option<&str>) -> Result<()> {
    let path = std::env::current_dir()
        .context("cannot read the current directory")?
        .join(FILE_NAME);
    refuse_existing(&path)?;
    let text = render(template, image)?;
    let config = write(&path, &text)?;
    let root = path.parent().unwrap_or(&path);
    let mut parts = Parts::of(&config);
    parts.features = crate::features::trust_lines(&config.features, root);
    TrustStore::open()?.trust(&dev_toml_path(root)?, &parts)?;
    crate::ui::note(format_args!(
        "wrote {}; `dev shell` enters the env",
        path.display()
    ));
    Ok(())
}

fn refuse_existing(path: &std::path::Path) -> Result<()> {
    if path.symlink_metadata().is_ok() {
        return Err(UserError::with_hint(
            format!("`{}` already exists", path.display()),
            "edit it, or remove it first to start over",
        ));
    }
    Ok(())
}

/// Writes a new dev.toml that must parse (a file dev cannot read helps nobody).
fn write(path: &std::path::Path, text: &str) -> Result<crate::config::project::DevToml> {
    let config = crate::config::project::parse(path, text)?;
    // Created, never opened: a dangling symlink planted at the name is not followed.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(config)
}

/// `dev init --from-devcontainer`: the dev.toml the project's devcontainer.json amounts to,
/// next to it (at the project root). What dev.toml cannot say is written as comments and
/// named. Its commands came from the repository: they are not trusted on the user's behalf.
pub fn from_devcontainer() -> Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let project = crate::config::project::Project::discover(&cwd)?;
    if let Some(p) = project.as_ref().filter(|p| p.devcontainer.is_none()) {
        refuse_existing(&p.file)?;
    }
    let Some((root, dc)) = project.and_then(|p| Some((p.root, p.devcontainer?))) else {
        return Err(UserError::with_hint(
            format!(
                "there is no devcontainer.json in `{}` or any directory above it",
                cwd.display()
            ),
            "run it in a project with `.devcontainer/devcontainer.json` (and no dev.toml)",
        ));
    };
    let path = root.join(FILE_NAME);
    refuse_existing(&path)?;
    let (text, left_out) = crate::config::devcontainer::to_dev_toml(&dc, &root);
    let config = write(&path, &text)?;
    for line in &left_out {
        crate::ui::note(format_args!("note: not carried over: {line}"));
    }
    let parts = Parts::of(&config);
    if parts.is_empty() {
        TrustStore::open()?.trust(&dev_toml_path(&root)?, &parts)?;
        crate::ui::note(format_args!(
            "wrote {}; `dev shell` enters the env",
            path.display()
        ));
    } else {
        crate::ui::note(format_args!(
            "wrote {}; it runs the devcontainer.json's commands: review them with `dev trust --show`, then run `dev trust`",
            path.display()
        ));
    }
    Ok(())
}

/// The dev.toml text for a template, or the debian one with `image` in place of its image.
pub fn render(template: Option<&str>, image: Option<&str>) -> Result<String> {
    let name = template.unwrap_or("debian");
    let Some((_, text)) = TEMPLATES.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = TEMPLATES.iter().map(|(n, _)| *n).collect();
        let near = names
            .iter()
            .min_by_key(|n| strsim::damerau_levenshtein(name, n))
            .filter(|n| strsim::damerau_levenshtein(name, n) <= 2);
        let mut msg = format!("there is no template `{name}`");
        if let Some(n) = near {
            msg.push_str(&format!("; did you mean `{n}`?"));
        }
        return Err(UserError::with_hint(
            msg,
            format!("templates: {}", names.join(", ")),
        ));
    };
    let Some(image) = image else {
        return Ok(text.to_string());
    };
    crate::oci::Reference::parse(image)?;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("image = ") {
            out.push_str(&format!("image = \"{}\"\n", image.replace('"', "")));
        } else if line.starts_with("packages = ") {
            out.push_str("packages = []\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn every_template_parses_and_has_tools() {
        for (name, text) in TEMPLATES {
            let c = crate::config::project::parse(Path::new(name), text)
                .unwrap_or_else(|e| panic!("template {name}: {e}"));
            assert!(!c.image.is_empty(), "{name}");
        }
    }

    #[test]
    fn any_image_and_unknown_names() {
        let t = render(None, Some("ghcr.io/x/y:1")).expect("renders");
        assert!(t.contains("image = \"ghcr.io/x/y:1\""));
        let c = crate::config::project::parse(Path::new("t"), &t).expect("parses");
        assert!(c.tools.packages.is_empty());
        let e = render(Some("pyhton"), None)
            .expect_err("unknown")
            .to_string();
        assert!(e.contains("did you mean `python`?"), "{e}");
    }
}
