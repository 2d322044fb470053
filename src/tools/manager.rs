//! Package-manager backends (apt, apk, dnf): detection from the image's files and the shell
//! scripts that install, pin and report versions. Pure: only text is made here.

/// Where the install script leaves `name=version` lines, in the layer being built.
pub const RESOLVED: &str = "/.dev-tools-resolved";
/// Where it leaves the name of a pinned package the mirror no longer has.
pub const MISSING_PIN: &str = "/.dev-tools-missing-pin";
/// The script's exit status when a pinned version is gone.
pub const MISSING_PIN_STATUS: i32 = 97;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    Apt,
    Apk,
    Dnf,
}

/// A package to install: its name and, if pinned (by dev.toml or dev.lock), the version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: Option<String>,
}

/// Single-quotes `s` for sh.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Manager {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "apt" | "apt-get" | "dpkg" => Some(Manager::Apt),
            "apk" => Some(Manager::Apk),
            "dnf" | "microdnf" | "yum" => Some(Manager::Dnf),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Manager::Apt => "apt",
            Manager::Apk => "apk",
            Manager::Dnf => "dnf",
        }
    }

    /// The manager an image has, from whether paths (relative to its root) exist.
    pub fn detect(exists: impl Fn(&str) -> bool) -> Result<Self, String> {
        if exists("usr/bin/apt-get") && exists("usr/bin/dpkg") {
            return Ok(Manager::Apt);
        }
        if exists("sbin/apk") || exists("usr/sbin/apk") || exists("bin/apk") {
            return Ok(Manager::Apk);
        }
        if exists("usr/bin/dnf") || exists("usr/bin/microdnf") || exists("usr/bin/dnf5") {
            return Ok(Manager::Dnf);
        }
        let seen: Vec<&str> = [
            "usr/bin/dpkg",
            "usr/bin/rpm",
            "usr/bin/pacman",
            "usr/bin/zypper",
            "usr/bin/nix-env",
        ]
        .into_iter()
        .filter(|p| exists(p))
        .collect();
        Err(if seen.is_empty() {
            "the image has no package manager dev knows (apt, apk, dnf)".to_string()
        } else {
            format!(
                "the image has {} but no package manager dev knows (apt, apk, dnf)",
                seen.iter()
                    .map(|p| format!("`/{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// `name=version` as this manager spells a pin.
    pub fn spec(self, p: &Package) -> String {
        match (&p.version, self) {
            (None, _) => p.name.clone(),
            (Some(v), Manager::Apt | Manager::Apk) => format!("{}={v}", p.name),
            (Some(v), Manager::Dnf) => format!("{}-{v}", p.name),
        }
    }

    /// The script run as root inside the sandbox: `setup.root`, then the packages, then the
    /// versions that got installed written to [`RESOLVED`], then the caches cleaned.
    pub fn install_script(self, setup_root: &[String], packages: &[Package]) -> String {
        let mut s = String::from("set -eu\n");
        for cmd in setup_root {
            s.push_str(&format!("( {cmd} )\n"));
        }
        if packages.is_empty() {
            return s;
        }
        let specs: Vec<String> = packages.iter().map(|p| quote(&self.spec(p))).collect();
        let names: Vec<String> = packages.iter().map(|p| quote(&p.name)).collect();
        let (specs, names) = (specs.join(" "), names.join(" "));
        match self {
            Manager::Apt => {
                s.push_str("export DEBIAN_FRONTEND=noninteractive\n");
                s.push_str("apt-get update\n");
                for p in packages {
                    if let Some(v) = &p.version {
                        s.push_str(&format!(
                            "apt-cache madison {n} | cut -d'|' -f2 | tr -d ' ' | grep -qxF {v} || {{ echo {n} > {MISSING_PIN}; echo \"dev: {pn}={pv} is not on the package mirror\" >&2; exit {MISSING_PIN_STATUS}; }}\n",
                            n = quote(&p.name),
                            v = quote(v),
                            pn = p.name.replace('"', ""),
                            pv = v.replace('"', ""),
                        ));
                    }
                }
                s.push_str(&format!(
                    "apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold {specs}\n"
                ));
                s.push_str(&format!(
                    "dpkg-query -W -f '${{Package}}=${{Version}}\\n' {names} > {RESOLVED}\n"
                ));
                s.push_str("apt-get clean\nrm -rf /var/lib/apt/lists/*\n");
            }
            Manager::Apk => {
                s.push_str(&format!("apk add --no-cache {specs}\n"));
                s.push_str(&format!(
                    "for n in {names}; do v=$(apk info -v \"$n\" 2>/dev/null | head -n1); echo \"$n=${{v#\"$n\"-}}\"; done > {RESOLVED}\n"
                ));
            }
            Manager::Dnf => {
                s.push_str(&format!(
                    "if command -v dnf >/dev/null; then dnf install -y --setopt=install_weak_deps=False {specs}; dnf clean all; else microdnf install -y {specs}; microdnf clean all; fi\n"
                ));
                s.push_str(&format!(
                    "rpm -q --qf '%{{NAME}}=%{{EPOCHNUM}}:%{{VERSION}}-%{{RELEASE}}\\n' {names} > {RESOLVED}\n"
                ));
            }
        }
        s
    }
}

/// Parses the [`RESOLVED`] file: `name=version` per line.
pub fn parse_resolved(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkgs() -> Vec<Package> {
        vec![
            Package {
                name: "git".into(),
                version: None,
            },
            Package {
                name: "build-essential".into(),
                version: Some("12.9".into()),
            },
        ]
    }

    #[test]
    fn detects_from_files() {
        let has = |set: &'static [&'static str]| move |p: &str| set.contains(&p);
        assert_eq!(
            Manager::detect(has(&["usr/bin/apt-get", "usr/bin/dpkg"])),
            Ok(Manager::Apt)
        );
        assert_eq!(Manager::detect(has(&["sbin/apk"])), Ok(Manager::Apk));
        assert_eq!(
            Manager::detect(has(&["usr/bin/microdnf"])),
            Ok(Manager::Dnf)
        );
        let e = Manager::detect(has(&["usr/bin/pacman"])).expect_err("unknown");
        assert!(e.contains("`/usr/bin/pacman`"), "{e}");
        assert!(Manager::detect(has(&[]))
            .expect_err("none")
            .contains("no package manager"));
    }

    #[test]
    fn apt_script() {
        let s = Manager::Apt.install_script(
            &["echo deb x > /etc/apt/sources.list.d/x.list".into()],
            &pkgs(),
        );
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[1], "( echo deb x > /etc/apt/sources.list.d/x.list )",
            "setup.root runs first"
        );
        assert!(s.contains("DEBIAN_FRONTEND=noninteractive"));
        assert!(s.contains("apt-get install -y --no-install-recommends"));
        assert!(s.contains("'git' 'build-essential=12.9'"));
        assert!(
            s.contains("apt-cache madison 'build-essential'"),
            "pins are checked first: {s}"
        );
        assert!(!s.contains("apt-cache madison 'git'"));
        assert!(s.contains("rm -rf /var/lib/apt/lists/*"), "lists cleaned");
        assert!(s.contains(RESOLVED));
    }

    #[test]
    fn apk_and_dnf_scripts() {
        let s = Manager::Apk.install_script(&[], &pkgs());
        assert!(
            s.contains("apk add --no-cache 'git' 'build-essential=12.9'"),
            "{s}"
        );
        let s = Manager::Dnf.install_script(&[], &pkgs());
        assert!(
            s.contains("install_weak_deps=False 'git' 'build-essential-12.9'"),
            "{s}"
        );
        assert!(s.contains("rpm -q --qf"), "{s}");
        assert_eq!(Manager::Apt.install_script(&[], &[]), "set -eu\n");
    }

    #[test]
    fn quoting_and_resolved() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
        assert_eq!(
            parse_resolved("git=1:2.39.5-0+deb12u2\nbad\npython3=3.11.2-1+b1\n"),
            vec![
                ("git".into(), "1:2.39.5-0+deb12u2".into()),
                ("python3".into(), "3.11.2-1+b1".into())
            ]
        );
    }
}
