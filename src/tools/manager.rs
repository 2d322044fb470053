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

impl Package {
    /// The package as one argument of the install script: `name` or `name=version`. The
    /// script makes the manager's own spelling of a pin out of it.
    pub fn arg(&self) -> String {
        match &self.version {
            Some(v) => format!("{}={v}", self.name),
            None => self.name.clone(),
        }
    }
}

/// The longest package name or version dev accepts (real ones are far shorter).
const MAX_LEN: usize = 200;

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

    /// Whose packages these are, for messages.
    pub fn family(self) -> &'static str {
        match self {
            Manager::Apt => "Debian",
            Manager::Apk => "Alpine",
            Manager::Dnf => "RPM",
        }
    }

    /// The image's package manager, from whether paths (relative to its root) exist.
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

    /// Whether `name` is a package name of this manager's grammar.
    pub fn valid_name(self, name: &str) -> bool {
        let b = name.as_bytes();
        if b.is_empty() || b.len() > MAX_LEN {
            return false;
        }
        let first_ok = match self {
            Manager::Apt | Manager::Apk => b[0].is_ascii_lowercase() || b[0].is_ascii_digit(),
            Manager::Dnf => b[0].is_ascii_alphanumeric(),
        };
        let rest_ok = |c: &u8| match self {
            // Debian policy 5.6.7: `[a-z0-9][a-z0-9+.-]+`.
            Manager::Apt => c.is_ascii_lowercase() || c.is_ascii_digit() || b"+.-".contains(c),
            // abuild: lowercase, digits and `._+-`.
            Manager::Apk => c.is_ascii_lowercase() || c.is_ascii_digit() || b"._+-".contains(c),
            // Fedora's naming guidelines: `A-Za-z0-9._+-`.
            Manager::Dnf => c.is_ascii_alphanumeric() || b"._+-".contains(c),
        };
        first_ok && b[1..].iter().all(rest_ok) && (self != Manager::Apt || b.len() >= 2)
    }

    /// What a package name of this manager may be, for messages.
    pub fn name_grammar(self) -> &'static str {
        match self {
            Manager::Apt => "a Debian package name is two or more of `a-z 0-9 + . -`, starting with a letter or digit",
            Manager::Apk => "an Alpine package name is `a-z 0-9 . _ + -`, starting with a letter or digit",
            Manager::Dnf => "an RPM package name is `A-Z a-z 0-9 . _ + -`, starting with a letter or digit",
        }
    }

    /// Whether `v` is a version of this manager's grammar.
    pub fn valid_version(self, v: &str) -> bool {
        if v.is_empty() || v.len() > MAX_LEN {
            return false;
        }
        match self {
            Manager::Apt => debian_version(v),
            Manager::Apk => alpine_version(v),
            Manager::Dnf => rpm_version(v),
        }
    }

    /// What a version of this manager may be, for messages.
    pub fn version_grammar(self) -> &'static str {
        match self {
            Manager::Apt => "a Debian version is `[epoch:]upstream[-revision]`: the epoch digits, the upstream starting with a digit, then `A-Z a-z 0-9 . + ~ -` (`:` only after an epoch), the revision `A-Z a-z 0-9 . + ~`",
            Manager::Apk => "an Alpine version is `digits{.digits}[letter]{_suffix[digits]}[~hash][-rN]`, e.g. `2.39.2-r0` or `1.2_rc1`",
            Manager::Dnf => "an RPM version is `[epoch:]version[-release]`: the epoch digits, version and release `A-Z a-z 0-9 . _ + ~ ^`",
        }
    }

    /// The script run as root inside the sandbox: `setup.root`, then the packages, then the
    /// versions that got installed written to [`RESOLVED`], then the caches cleaned. Its text
    /// depends on no package: they are its positional parameters (see [`Package::arg`]), each
    /// one argument, expanded only inside double quotes, so no name or version is ever read
    /// as shell text. `any_packages`: whether there are packages at all (none: no install).
    pub fn install_script(self, setup_root: &[String], any_packages: bool) -> String {
        let mut s = String::from("set -eu\n");
        for cmd in setup_root {
            s.push_str(&format!("( {cmd} )\n"));
        }
        if !any_packages {
            return s;
        }
        match self {
            Manager::Apt => {
                s.push_str("export DEBIAN_FRONTEND=noninteractive\n");
                s.push_str("apt-get update\n");
                // Pins first: a version the mirror no longer has is named, not a generic failure.
                s.push_str(&format!(
                    r#"for p in "$@"; do
  case $p in *=*)
    n=${{p%%=*}} v=${{p#*=}}
    apt-cache madison "$n" | cut -d'|' -f2 | tr -d ' ' | grep -qxF -e "$v" || {{ printf '%s\n' "$n" > {MISSING_PIN}; printf 'dev: %s is not on the package mirror\n' "$p" >&2; exit {MISSING_PIN_STATUS}; }}
  esac
done
apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
"#
                ));
                s.push_str(NAMES_ONLY);
                s.push_str(&format!(
                    "dpkg-query -W -f '${{Package}}=${{Version}}\\n' \"$@\" > {RESOLVED}\n"
                ));
                s.push_str("apt-get clean\nrm -rf /var/lib/apt/lists/*\n");
            }
            Manager::Apk => {
                s.push_str("apk add --no-cache \"$@\"\n");
                s.push_str(NAMES_ONLY);
                s.push_str(&format!(
                    "for n in \"$@\"; do v=$(apk info -v \"$n\" 2>/dev/null | head -n1); printf '%s=%s\\n' \"$n\" \"${{v#\"$n\"-}}\"; done > {RESOLVED}\n"
                ));
            }
            Manager::Dnf => {
                // dnf spells a pin `name-version`; the subshell keeps the arguments as they were.
                s.push_str(
                    r#"(
  for p in "$@"; do case $p in *=*) set -- "$@" "${p%%=*}-${p#*=}" ;; *) set -- "$@" "$p" ;; esac; shift; done
  if command -v dnf >/dev/null; then dnf install -y --setopt=install_weak_deps=False "$@"; dnf clean all; else microdnf install -y "$@"; microdnf clean all; fi
)
"#,
                );
                s.push_str(NAMES_ONLY);
                s.push_str(&format!(
                    "rpm -q --qf '%{{NAME}}=%{{EPOCHNUM}}:%{{VERSION}}-%{{RELEASE}}\\n' \"$@\" > {RESOLVED}\n"
                ));
            }
        }
        s
    }
}

/// Replaces each `name=version` argument by its name, in place.
const NAMES_ONLY: &str = "for p in \"$@\"; do set -- \"$@\" \"${p%%=*}\"; shift; done\n";

/// Debian policy 5.6.12: `[epoch:]upstream_version[-debian_revision]`.
fn debian_version(v: &str) -> bool {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => (true, r),
        Some(_) => return false,
        None => (false, v),
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) => (u, Some(r)),
        None => (rest, None),
    };
    let up = upstream.as_bytes();
    !up.is_empty()
        && up[0].is_ascii_digit()
        && up
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b".+~-".contains(c) || (epoch && *c == b':'))
        && revision.is_none_or(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b".+~".contains(&c))
        })
}

/// apk-tools' version grammar: `digit{.digit}...{letter}{_suf{#}}...{~hash}{-r#}`.
fn alpine_version(v: &str) -> bool {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let mut rest = v;
    // digits{.digits}
    loop {
        let n = digits(rest);
        if n == 0 {
            return false;
        }
        rest = &rest[n..];
        match rest.strip_prefix('.') {
            Some(r) => rest = r,
            None => break,
        }
    }
    // [letter]
    if rest.as_bytes().first().is_some_and(u8::is_ascii_lowercase) {
        rest = &rest[1..];
    }
    // {_suffix[digits]}
    while let Some(r) = rest.strip_prefix('_') {
        let Some(s) = ["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"]
            .iter()
            .find_map(|s| r.strip_prefix(s))
        else {
            return false;
        };
        rest = &s[digits(s)..];
    }
    // [~hash]
    if let Some(r) = rest.strip_prefix('~') {
        let n = r.bytes().take_while(u8::is_ascii_hexdigit).count();
        if n == 0 {
            return false;
        }
        rest = &r[n..];
    }
    // [-rN]
    if let Some(r) = rest.strip_prefix("-r") {
        let n = digits(r);
        if n == 0 {
            return false;
        }
        rest = &r[n..];
    }
    rest.is_empty()
}

/// rpm's EVR: `[epoch:]version[-release]`, version and release of `A-Za-z0-9._+~^`.
fn rpm_version(v: &str) -> bool {
    let rest = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => r,
        Some(_) => return false,
        None => v,
    };
    let part = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._+~^".contains(&c))
    };
    match rest.split_once('-') {
        Some((ver, rel)) => part(ver) && part(rel),
        None => part(rest),
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
    use std::os::unix::fs::PermissionsExt;

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
            true,
        );
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[1], "( echo deb x > /etc/apt/sources.list.d/x.list )",
            "setup.root runs first"
        );
        assert!(s.contains("DEBIAN_FRONTEND=noninteractive"));
        assert!(s.contains("apt-get install -y --no-install-recommends"));
        assert!(
            s.contains("apt-cache madison \"$n\""),
            "pins are checked first: {s}"
        );
        assert!(s.contains("rm -rf /var/lib/apt/lists/*"), "lists cleaned");
        assert!(s.contains(RESOLVED));
        assert_eq!(
            pkgs().iter().map(Package::arg).collect::<Vec<_>>(),
            ["git", "build-essential=12.9"]
        );
    }

    #[test]
    fn apk_and_dnf_scripts() {
        let s = Manager::Apk.install_script(&[], true);
        assert!(s.contains("apk add --no-cache \"$@\""), "{s}");
        let s = Manager::Dnf.install_script(&[], true);
        assert!(s.contains("install_weak_deps=False \"$@\""), "{s}");
        assert!(s.contains("rpm -q --qf"), "{s}");
        assert_eq!(Manager::Apt.install_script(&[], false), "set -eu\n");
    }

    /// The scripts run by /bin/sh against fake package managers that log their arguments: a
    /// name or version made of shell syntax arrives as one literal argument and never runs.
    #[test]
    fn packages_reach_the_manager_as_arguments_never_as_shell_text() {
        for manager in [Manager::Apt, Manager::Apk, Manager::Dnf] {
            let d = tempfile::tempdir().expect("tempdir");
            let (bin, log) = (d.path().join("bin"), d.path().join("log"));
            std::fs::create_dir_all(&bin).expect("mkdir");
            std::fs::create_dir_all(d.path().join("lists")).expect("mkdir");
            let marker = d.path().join("marker");
            // No spaces: madison's output is compared with them taken out.
            let evil = format!("1.0$(:>{m})`:>{m}`;:>{m}", m = marker.display());
            let fake = format!(
                "#!/bin/sh\nprintf '%s\\n' \"${{0##*/}} $*\" >> {log}\ncase ${{0##*/}}:$1 in\n  apt-cache:madison) printf '%s | %s | x\\n' \"$2\" \"$DEV_FAKE_VERSION\" ;;\n  dpkg-query:*|rpm:*) shift 3; for n in \"$@\"; do printf '%s=9\\n' \"$n\"; done ;;\n  apk:info) printf '%s-9\\n' \"$3\" ;;\nesac\n",
                log = log.display()
            );
            for name in ["apt-get", "apt-cache", "dpkg-query", "apk", "dnf", "rpm"] {
                let p = bin.join(name);
                std::fs::write(&p, &fake).expect("write fake");
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
            }
            for tool in ["cut", "tr", "grep", "head", "rm"] {
                let real = which::which(tool).expect("a coreutils tool");
                std::os::unix::fs::symlink(real, bin.join(tool)).expect("symlink");
            }
            let resolved = d.path().join("resolved");
            let script = manager
                .install_script(&["true".into()], true)
                .replace(RESOLVED, &resolved.display().to_string())
                .replace(MISSING_PIN, &d.path().join("missing").display().to_string())
                .replace(
                    "/var/lib/apt/lists/",
                    &format!("{}/", d.path().join("lists").display()),
                );
            let packages = [
                Package {
                    name: "hello".into(),
                    version: Some(evil.clone()),
                },
                Package {
                    name: format!("x;:>{}", marker.display()),
                    version: None,
                },
            ];
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&script)
                .arg("dev-tools")
                .args(packages.iter().map(Package::arg))
                .env_clear()
                .env("PATH", &bin)
                .env("DEV_FAKE_VERSION", &evil)
                .output()
                .expect("run sh");
            assert!(
                out.status.success(),
                "{manager:?}: {}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!marker.exists(), "{manager:?}: a package ran as shell text");
            let log = std::fs::read_to_string(&log).expect("log");
            let install = log
                .lines()
                .find(|l| l.contains(" install ") || l.starts_with("apk add"))
                .unwrap_or_else(|| panic!("{manager:?}: no install in {log}"));
            let pin = match manager {
                Manager::Dnf => format!("hello-{evil}"),
                _ => format!("hello={evil}"),
            };
            assert!(
                install.ends_with(&format!(" {pin} x;:>{}", marker.display())),
                "{manager:?}: {install}"
            );
            let resolved = std::fs::read_to_string(&resolved).expect("resolved");
            assert!(
                resolved.starts_with("hello") && resolved.lines().count() == 2,
                "{manager:?}: {resolved}"
            );
        }
    }

    #[test]
    fn names_and_versions_follow_each_managers_grammar() {
        let apt = Manager::Apt;
        for n in ["git", "g++", "libc6.1-dev", "python3.11", "0ad"] {
            assert!(apt.valid_name(n), "{n}");
        }
        for n in [
            "", "a", "A", "Git", "-x", "+x", "a_b", "a b", "a=b", "$(x)", "a;b",
        ] {
            assert!(!apt.valid_name(n), "{n}");
        }
        for v in [
            "1:2.39.5-0+deb12u2",
            "3.11.2-1+b1",
            "2.10-3",
            "1.0~rc1",
            "1:2:3-1",
            "2:3",
            "1.2-3-4",
            "12.9",
        ] {
            assert!(apt.valid_version(v), "{v}");
        }
        for v in [
            "",
            "2.3:4",
            "a1.0",
            "1.0-",
            "1.0 1",
            "$(touch /x)",
            "1.0-a_b",
            ":1",
            "x:1",
            "1.0`id`",
            "1.0\n",
        ] {
            assert!(!apt.valid_version(v), "{v:?}");
        }
        let apk = Manager::Apk;
        assert!(apk.valid_name("py3-setuptools") && apk.valid_name("libstdc++"));
        assert!(!apk.valid_name("Py3") && !apk.valid_name("-x") && !apk.valid_name("a$b"));
        for v in [
            "2.39.2-r0",
            "1.2_rc1",
            "6.5_p20250503-r0",
            "1.0a",
            "1.2.3_alpha2_p1~abc123-r10",
        ] {
            assert!(apk.valid_version(v), "{v}");
        }
        for v in [
            "2.39.0-", "foo", "1.0-r", "1.0_x1", "1..0", "1.0;x", "1.0-r0 ",
        ] {
            assert!(!apk.valid_version(v), "{v:?}");
        }
        let dnf = Manager::Dnf;
        assert!(dnf.valid_name("perl-IO-Socket-SSL") && dnf.valid_name("gcc-c++"));
        assert!(!dnf.valid_name("-x") && !dnf.valid_name("a b") && !dnf.valid_name("a/b"));
        for v in ["0:2.39.1-1.fc39", "2.39.1", "1.0~rc1^20200101-3.el9"] {
            assert!(dnf.valid_version(v), "{v}");
        }
        for v in ["1.0-1-2", "$(x)", "a:1", "1.0 1", "1.0-", "%{x}"] {
            assert!(!dnf.valid_version(v), "{v:?}");
        }
        assert!(!apt.valid_version(&"1".repeat(MAX_LEN + 1)));
    }

    #[test]
    fn resolved() {
        assert_eq!(
            parse_resolved("git=1:2.39.5-0+deb12u2\nbad\npython3=3.11.2-1+b1\n"),
            vec![
                ("git".into(), "1:2.39.5-0+deb12u2".into()),
                ("python3".into(), "3.11.2-1+b1".into())
            ]
        );
    }
}
