//! The GUI and sound of the host, for `gui = true` / `--gui`: the Wayland socket, the X11 socket
//! and a cookie for that display only (never `xhost +`), PipeWire and PulseAudio, the session
//! D-Bus and `/dev/dri`; inside, they sit in the env's own runtime directory
//! (`/run/user/<uid>`) and the variables point there. Only what exists on the host is opened.
//! Reads the host's sockets and the cookie file; writes nothing.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{read_bounded, under, Facts, HostFile, Opening};
use crate::sandbox::plan::BindKind;

/// The largest `XAUTHORITY` file read (one holds a few entries of a hundred bytes).
const MAX_XAUTHORITY: u64 = 1 << 20;

/// The `XDG_RUNTIME_DIR` inside for a command running as `uid`.
pub fn runtime_inside(uid: u32) -> PathBuf {
    PathBuf::from(format!("/run/user/{uid}"))
}

fn is_socket(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// A socket's path as the host resolves it now (no symlink left for anyone to swap).
fn resolved(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok().filter(|p| is_socket(p))
}

/// Adds the GUI's sockets, cookie, devices and variables to `out`.
pub fn discover(f: &Facts, out: &mut Opening) {
    let inside = runtime_inside(f.uid);
    let xdg = f.runtime.join("xdg");
    out.files.push(HostFile::Dir(xdg.clone()));
    out.bind(xdg.clone(), inside.clone(), false, BindKind::Dir);
    out.set("XDG_RUNTIME_DIR", inside.display().to_string());
    let var = |k: &str| f.vars.get(k).filter(|v| !v.is_empty());
    let host_runtime = var("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let found = out.opened.len();

    if let Some(name) = var("WAYLAND_DISPLAY") {
        let path = match (Path::new(name).is_absolute(), &host_runtime) {
            (true, _) => Some(PathBuf::from(name)),
            (false, Some(rt)) if !name.contains('/') => Some(rt.join(name)),
            _ => None,
        };
        let base = path
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        match (path.as_deref().and_then(resolved), base) {
            (Some(source), Some(base)) => {
                out.bind(source, inside.join(&base), false, BindKind::File);
                out.set("WAYLAND_DISPLAY", base.clone());
                out.opened.push(format!("Wayland ({base})"));
            }
            _ => out.notes.push(format!(
                "WAYLAND_DISPLAY `{name}` names no socket in XDG_RUNTIME_DIR: Wayland is not opened"
            )),
        }
    }

    if let Some(display) = var("DISPLAY") {
        match parse_display(display) {
            Some(d) => x11(f, &d, &xdg, &inside, out),
            None => out.notes.push(format!(
                "DISPLAY `{display}` is not a display dev understands: X11 is not opened"
            )),
        }
    }

    let pulse = match var("PULSE_SERVER") {
        Some(s) => s
            .strip_prefix("unix:")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute()),
        None => host_runtime.as_ref().map(|rt| rt.join("pulse/native")),
    };
    if let Some(source) = pulse.as_deref().and_then(resolved) {
        // Made on the host as the user: init would make it as root inside, and the user could
        // not clean the runtime directory up.
        out.files.push(HostFile::Dir(xdg.join("pulse")));
        let target = inside.join("pulse/native");
        out.set("PULSE_SERVER", format!("unix:{}", target.display()));
        out.bind(source, target, false, BindKind::File);
        out.opened.push("PulseAudio".into());
    }
    if let Some(source) = host_runtime
        .as_ref()
        .and_then(|rt| resolved(&rt.join("pipewire-0")))
    {
        out.bind(source, inside.join("pipewire-0"), false, BindKind::File);
        out.opened.push("PipeWire".into());
    }

    if let Some(address) = var("DBUS_SESSION_BUS_ADDRESS") {
        match dbus_path(address) {
            Some(path) => {
                if let Some(source) = resolved(&path) {
                    let target = inside.join("bus");
                    out.set(
                        "DBUS_SESSION_BUS_ADDRESS",
                        format!("unix:path={}", target.display()),
                    );
                    out.bind(source, target, false, BindKind::File);
                    out.opened.push("D-Bus".into());
                }
            }
            // An abstract socket or TCP: the env shares the host's network namespace.
            None if !address.contains("path=") => {
                out.set("DBUS_SESSION_BUS_ADDRESS", address.clone());
                out.opened.push("D-Bus".into());
            }
            None => {}
        }
    }

    let dri = under(f.root, Path::new("/dev/dri"));
    if dri.is_dir() {
        out.bind(dri, "/dev/dri", false, BindKind::Dir);
        out.opened.push("/dev/dri".into());
    }
    if out.opened.len() == found {
        out.notes.push(
            "--gui: the host has no display, sound or D-Bus socket to open (no WAYLAND_DISPLAY, DISPLAY, pulse/native, pipewire-0 or session bus)"
                .into(),
        );
    }
}

/// A parsed `DISPLAY`: `[host]:number[.screen]`.
#[derive(Debug, PartialEq, Eq)]
pub struct Display {
    /// `None` (or `unix`): the local socket; anything else is reached over TCP.
    pub host: Option<String>,
    pub number: u32,
    pub screen: Option<u32>,
}

pub fn parse_display(s: &str) -> Option<Display> {
    let (host, rest) = s.rsplit_once(':')?;
    let (number, screen) = match rest.split_once('.') {
        Some((n, sc)) => (n, Some(sc.parse().ok()?)),
        None => (rest, None),
    };
    let number: u32 = number.parse().ok()?;
    let host = match host {
        "" | "unix" => None,
        h if h
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c)) =>
        {
            Some(h.to_string())
        }
        _ => return None,
    };
    Some(Display {
        host,
        number,
        screen,
    })
}

fn x11(f: &Facts, d: &Display, xdg: &Path, inside: &Path, out: &mut Opening) {
    let screen = d.screen.map(|s| format!(".{s}")).unwrap_or_default();
    match &d.host {
        None => {
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{}", d.number));
            let Some(source) = resolved(&socket) else {
                out.notes.push(format!(
                    "DISPLAY :{} has no socket {}: X11 is not opened",
                    d.number,
                    socket.display()
                ));
                return;
            };
            // /tmp/.X11-unix is everyone's: a socket another user made there first would get
            // the env's windows and keystrokes, and a symlink another user made would bind
            // whatever socket it names (the user's ssh agent, say). An X server runs as root
            // or as the user: the directory and the socket itself (never a symlink) are theirs.
            let me = nix::unistd::getuid().as_raw();
            let theirs = |p: &Path, is: fn(&std::fs::FileType) -> bool| {
                std::fs::symlink_metadata(p)
                    .ok()
                    .filter(|m| is(&m.file_type()))
                    .map(|m| m.uid())
                    .filter(|o| *o == 0 || *o == me)
            };
            let dir_ok = socket
                .parent()
                .and_then(|dir| theirs(dir, std::fs::FileType::is_dir))
                .is_some();
            if !dir_ok || theirs(&socket, FileTypeExt::is_socket).is_none() {
                let owner = std::fs::symlink_metadata(&socket).map(|m| m.uid()).ok();
                out.notes.push(format!(
                    "the X11 socket {} of DISPLAY :{} belongs to uid {}, neither you nor root, or is not a socket of its own: X11 is not opened",
                    socket.display(),
                    d.number,
                    owner.map_or_else(|| "?".to_string(), |o| o.to_string())
                ));
                return;
            }
            out.bind(source, socket, false, BindKind::File);
            out.set("DISPLAY", format!(":{}{screen}", d.number));
        }
        // Over TCP (ssh -X): the same network, the same address.
        Some(host) => out.set("DISPLAY", format!("{host}:{}{screen}", d.number)),
    }
    let file = f
        .vars
        .get("XAUTHORITY")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| f.vars.get("HOME").map(|h| Path::new(h).join(".Xauthority")));
    let cookie = file
        .and_then(|p| read_bounded(&p, MAX_XAUTHORITY).ok())
        .map(|bytes| cookie_for(&bytes, d.number))
        .filter(|c| !c.is_empty());
    match cookie {
        Some(bytes) => {
            let name = "Xauthority";
            out.files.push(HostFile::File {
                path: xdg.join(name),
                bytes,
            });
            out.set("XAUTHORITY", inside.join(name).display().to_string());
            out.opened
                .push(format!("X11 :{} (its cookie only)", d.number));
        }
        None => out.opened.push(format!("X11 :{} (no cookie)", d.number)),
    }
}

/// `FamilyWild`: the entry matches whatever the client's host name is (the env's differs).
const FAMILY_WILD: u16 = 0xffff;

/// One entry of an Xauthority file.
#[derive(Debug, PartialEq, Eq)]
pub struct XauthEntry {
    pub family: u16,
    pub address: Vec<u8>,
    pub number: Vec<u8>,
    pub name: Vec<u8>,
    pub data: Vec<u8>,
}

/// The entries of an Xauthority file, up to the first malformed one.
pub fn parse_xauthority(mut b: &[u8]) -> Vec<XauthEntry> {
    fn u16_at(b: &mut &[u8]) -> Option<u16> {
        let (head, rest) = b.split_first_chunk::<2>()?;
        *b = rest;
        Some(u16::from_be_bytes(*head))
    }
    fn field(b: &mut &[u8]) -> Option<Vec<u8>> {
        let n = usize::from(u16_at(b)?);
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head.to_vec())
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let entry = (|| {
            Some(XauthEntry {
                family: u16_at(&mut b)?,
                address: field(&mut b)?,
                number: field(&mut b)?,
                name: field(&mut b)?,
                data: field(&mut b)?,
            })
        })();
        match entry {
            Some(e) => out.push(e),
            None => break,
        }
    }
    out
}

/// The cookie file the env gets: the host's entries for display `number` only, made to match
/// any host name.
pub fn cookie_for(xauthority: &[u8], number: u32) -> Vec<u8> {
    let number = number.to_string();
    let mut out = Vec::new();
    for e in parse_xauthority(xauthority)
        .into_iter()
        .filter(|e| e.number == number.as_bytes())
    {
        out.extend_from_slice(&FAMILY_WILD.to_be_bytes());
        for f in [&e.address, &e.number, &e.name, &e.data] {
            out.extend_from_slice(&(f.len() as u16).to_be_bytes());
            out.extend_from_slice(f);
        }
    }
    out
}

/// The socket path of the first `unix:path=` address of a D-Bus address list.
pub fn dbus_path(address: &str) -> Option<PathBuf> {
    address.split(';').find_map(|a| {
        let params = a.strip_prefix("unix:")?;
        params
            .split(',')
            .find_map(|kv| kv.strip_prefix("path="))
            .and_then(unescape)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    })
}

/// D-Bus address values are %-escaped.
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::net::UnixListener;

    fn entry(family: u16, number: &str, data: &[u8]) -> Vec<u8> {
        let mut b = family.to_be_bytes().to_vec();
        for f in [
            b"box".as_slice(),
            number.as_bytes(),
            b"MIT-MAGIC-COOKIE-1",
            data,
        ] {
            b.extend_from_slice(&(f.len() as u16).to_be_bytes());
            b.extend_from_slice(f);
        }
        b
    }

    #[test]
    fn the_cookie_holds_only_that_display_and_matches_any_host() {
        let mut file = entry(256, "0", b"zero");
        file.extend(entry(256, "7", b"seven"));
        file.extend(entry(0, "70", b"seventy"));
        let cookie = parse_xauthority(&cookie_for(&file, 7));
        assert_eq!(cookie.len(), 1);
        assert_eq!(cookie[0].family, FAMILY_WILD);
        assert_eq!(cookie[0].number, b"7");
        assert_eq!(cookie[0].data, b"seven");
        assert!(cookie_for(&file, 3).is_empty());
        // A torn file: the entries before the tear.
        let torn = &file[..file.len() - 3];
        assert_eq!(parse_xauthority(torn).len(), 2);
    }

    #[test]
    fn displays() {
        let d = |s| parse_display(s);
        assert_eq!(
            d(":0"),
            Some(Display {
                host: None,
                number: 0,
                screen: None
            })
        );
        assert_eq!(
            d("unix:12.1").map(|d| (d.number, d.screen)),
            Some((12, Some(1)))
        );
        assert_eq!(
            d("localhost:10.0").and_then(|d| d.host),
            Some("localhost".to_string())
        );
        for bad in ["", "0", ":x", ":1.y", "a b:1", "$(x):1"] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dbus_addresses() {
        assert_eq!(
            dbus_path("unix:path=/run/user/1000/bus"),
            Some("/run/user/1000/bus".into())
        );
        assert_eq!(
            dbus_path("unix:abstract=/tmp/x;unix:guid=1,path=/tmp/my%20bus"),
            Some("/tmp/my bus".into())
        );
        assert_eq!(dbus_path("unix:abstract=/tmp/dbus-x,guid=1"), None);
        assert_eq!(dbus_path("unix:path=rel"), None);
    }

    #[test]
    fn only_what_exists_is_opened_and_lands_in_the_envs_runtime_dir() {
        let t = tempfile::tempdir().expect("tempdir");
        let rt = t.path().join("rt");
        std::fs::create_dir_all(rt.join("pulse")).expect("mkdir");
        let _w = UnixListener::bind(rt.join("wayland-1")).expect("bind");
        let _p = UnixListener::bind(rt.join("pulse/native")).expect("bind");
        let _b = UnixListener::bind(rt.join("bus")).expect("bind");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("dev/dri")).expect("mkdir");
        let vars: BTreeMap<String, String> = [
            ("XDG_RUNTIME_DIR", rt.display().to_string()),
            ("WAYLAND_DISPLAY", "wayland-1".into()),
            ("DISPLAY", ":99999".into()),
            (
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}/bus,guid=ab", rt.display()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let envrt = t.path().join("env");
        let facts = Facts {
            vars: &vars,
            root: &root,
            runtime: &envrt,
            uid: 1500,
            ldcache: None,
        };
        let mut out = Opening::default();
        discover(&facts, &mut out);
        let get = |k: &str| {
            out.env
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("XDG_RUNTIME_DIR"), Some("/run/user/1500"));
        assert_eq!(get("WAYLAND_DISPLAY"), Some("wayland-1"));
        assert_eq!(
            get("PULSE_SERVER"),
            Some("unix:/run/user/1500/pulse/native")
        );
        assert_eq!(
            get("DBUS_SESSION_BUS_ADDRESS"),
            Some("unix:path=/run/user/1500/bus")
        );
        // No X socket for :99999, no pipewire-0: neither is opened.
        assert_eq!(get("DISPLAY"), None);
        assert!(out.notes.iter().any(|n| n.contains(":99999")));
        let targets: Vec<String> = out
            .binds
            .iter()
            .map(|b| format!("{} {:?}", b.target.display(), b.kind))
            .collect();
        assert_eq!(
            targets,
            [
                "/run/user/1500 Dir",
                "/run/user/1500/wayland-1 File",
                "/run/user/1500/pulse/native File",
                "/run/user/1500/bus File",
                "/dev/dri Dir",
            ]
        );
        assert_eq!(out.binds[0].source, envrt.join("xdg"));
        assert_eq!(
            out.files,
            [
                HostFile::Dir(envrt.join("xdg")),
                HostFile::Dir(envrt.join("xdg/pulse"))
            ]
        );
    }

    #[test]
    fn nothing_on_the_host_says_so() {
        let t = tempfile::tempdir().expect("tempdir");
        let vars = BTreeMap::new();
        let facts = Facts {
            vars: &vars,
            root: t.path(),
            runtime: t.path(),
            uid: 0,
            ldcache: None,
        };
        let mut out = Opening::default();
        discover(&facts, &mut out);
        assert!(out.opened.is_empty());
        assert!(out.notes[0].contains("no display"), "{:?}", out.notes);
    }
}
