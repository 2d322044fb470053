//! Test harness: a real `docker-registry` on a free loopback port, fixture images built here and
//! pushed through the registry API, and `dev` run as the unprivileged test users that
//! `./install.sh --dev` creates (one with a subordinate id range, one without).

#![allow(dead_code)]

pub mod http;
pub mod image;
pub mod tarcmp;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use image::{Entry, ImageBuilder, Layer};

/// A `docker-registry` (CNCF distribution 2.8) serving from a temp dir on 127.0.0.1.
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

/// A loopback port nothing listens on, for a server started next. Below the kernel's range of
/// ephemeral ports (`ip_local_port_range`), so no outgoing connection of another test takes
/// it in between (a port from `bind(:0)` was, now and then: "Address already in use"), and
/// never the same twice in this process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768)
        .clamp(2048, 65535);
    let span = low.saturating_sub(1024).max(1);
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let port = 1024 + (start + NEXT.fetch_add(1, Ordering::SeqCst)) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with(|_| String::new())
    }

    /// A registry that demands basic credentials: `htpasswd` is the file's text (bcrypt).
    pub fn start_htpasswd(htpasswd: &str) -> Registry {
        let htpasswd = htpasswd.to_string();
        Self::start_with(move |dir| {
            let file = dir.join("htpasswd");
            fs::write(&file, &htpasswd).expect("write htpasswd");
            format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                file.display()
            )
        })
    }

    /// `extra` gives more of the config (top-level YAML) for the registry's directory.
    fn start_with(extra: impl Fn(&Path) -> String) -> Registry {
        let bin = which::which("docker-registry").unwrap_or_else(|_| {
            panic!("`docker-registry` is not installed; run `./install.sh --dev` (Debian package docker-registry)")
        });
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{}",
                dir.path().join("data").display(),
                extra(dir.path())
            );
            let cfg = dir.path().join("config.yml");
            fs::write(&cfg, config).expect("write registry config");
            let log = fs::File::create(dir.path().join("registry.log")).expect("registry log");
            let child = Command::new(&bin)
                .arg("serve")
                .arg(&cfg)
                .stdout(log.try_clone().expect("clone log"))
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let mut child = child;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let up = match ureq::get(&format!("http://127.0.0.1:{port}/v2/")).call() {
                    Ok(_) | Err(ureq::Error::Status(401, _)) => true,
                    Err(_) => false,
                };
                if up {
                    return Registry { child, dir, port };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "docker-registry did not start; log:\n{}",
            fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many times a blob was fetched with GET, from the registry's access log.
    pub fn blob_gets(&self, repo: &str, digest: &str) -> usize {
        let needle = format!("\"GET /v2/{repo}/blobs/{digest}");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// The file where the registry keeps a blob's bytes.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The two kinds of user the suite runs `dev` as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Has a subordinate id range in /etc/subuid and /etc/subgid.
    Sub,
    /// A second user with a range: the other teammate.
    Sub2,
    /// Has none.
    NoSub,
}

impl Kind {
    pub fn user(self) -> &'static str {
        match self {
            Kind::Sub => "devtest-sub",
            Kind::Sub2 => "devtest-sub2",
            Kind::NoSub => "devtest-nosub",
        }
    }
}

/// A sandbox for one test: a work dir the test user owns, with its own HOME, XDG dirs and a
/// copy of the `dev` binary (the checkout may sit where the test user cannot enter).
pub struct Env {
    pub kind: Kind,
    pub uid: u32,
    pub gid: u32,
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
}

fn lookup_user(name: &str) -> (u32, u32) {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
        _ => panic!("test user `{name}` does not exist; run `./install.sh --dev` first"),
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Env {
    pub fn new(kind: Kind) -> Env {
        assert!(
            is_root(),
            "the end-to-end suite runs `dev` as the unprivileged test users and must start as root (it drops privileges with setpriv); run it as root after `./install.sh --dev`"
        );
        let (uid, gid) = lookup_user(kind.user());
        let subuid = fs::read_to_string("/etc/subuid").unwrap_or_default();
        let has_range = subuid
            .lines()
            .any(|l| l.starts_with(&format!("{}:", kind.user())));
        assert_eq!(
            has_range,
            kind != Kind::NoSub,
            "/etc/subuid is not as `./install.sh --dev` leaves it for {}",
            kind.user()
        );
        let dir = tempfile::Builder::new()
            .prefix("dev-e2e-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let bin = dir.path().join("bin/dev");
        for d in ["bin", "home", "data", "config", "run", "project", "outside"] {
            fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        // A link, not a copy, where it can be: a copy's write fd, inherited for a moment by a
        // child another test thread forks, makes a later exec fail with "Text file busy".
        if fs::hard_link(env!("CARGO_BIN_EXE_dev"), &bin).is_err() {
            fs::copy(env!("CARGO_BIN_EXE_dev"), &bin).expect("copy dev binary");
        }
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::set_permissions(dir.path().join("run"), fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let env = Env {
            kind,
            uid,
            gid,
            dir,
            bin,
        };
        env.settings("");
        env.chown_all(env.dir.path());
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The store `dev` uses for this test.
    pub fn store(&self) -> PathBuf {
        self.path("data/dev")
    }

    pub fn chown_all(&self, p: &Path) {
        let st = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(p)
            .status()
            .expect("chown");
        assert!(st.success());
    }

    /// A `dev` command run as the test user, with no capabilities and a clean environment.
    pub fn dev(&self, args: &[&str]) -> Command {
        self.as_user(&self.bin, args)
    }

    /// Any program, run as the test user with no capabilities and a clean environment.
    pub fn as_user(&self, program: &Path, args: &[&str]) -> Command {
        self.user_command(Command::new("setpriv"), program, args)
    }

    fn user_command(&self, mut c: Command, program: &Path, args: &[&str]) -> Command {
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("--inh-caps=-all")
            .arg("--")
            .arg(program)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                    self.path("bin").display()
                ),
            )
            .env("HOME", self.path("home"))
            .env("USER", self.kind.user())
            .env("LANG", "C.UTF-8")
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .current_dir(self.path("project"))
            .stdin(Stdio::null());
        c
    }

    /// Runs a shell script as the test user (for checks that use other programs on the store).
    pub fn sh(&self, script: &str) -> Output {
        self.as_user(Path::new("/bin/sh"), &["-c", script])
            .output()
            .expect("run sh")
    }

    /// Runs `dev` and returns its output, whatever the status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_in(&self.path("project"), args)
    }

    /// Runs `dev` in `dir` instead of the project, whatever the status.
    pub fn run_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.dev(args).current_dir(dir).output().expect("run dev")
    }

    /// Runs `dev` in `dir` and fails the test, showing everything, unless it succeeds.
    pub fn ok_in(&self, dir: &Path, args: &[&str]) -> Output {
        let out = self.run_in(dir, args);
        assert!(
            out.status.success(),
            "{}",
            describe(&format!("dev {}", args.join(" ")), &out)
        );
        out
    }

    /// Runs `dev` and fails the test, showing everything, unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> Output {
        self.ok_in(&self.path("project"), args)
    }

    /// Runs `dev`, expects failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "expected failure: {}",
            describe(&format!("dev {}", args.join(" ")), &out)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// Writes the user's `config.toml`, with `linger = 0` first unless `text` sets `linger`:
    /// the suite's tests expect a project's env to stop with its last session (the tests of
    /// lingering, in `linger.rs`, say how long it lingers).
    pub fn settings(&self, text: &str) {
        let text = if text.contains("linger") {
            text.to_string()
        } else {
            format!("linger = 0\n{text}")
        };
        self.settings_exactly(&text);
    }

    /// Writes the user's `config.toml` as `text` is, nothing added.
    pub fn settings_exactly(&self, text: &str) {
        let p = self.path("config/dev/config.toml");
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, text).expect("write settings");
        self.chown_all(&self.path("config"));
    }

    /// Paths (relative to the store's layer dir for this user's mapping) of complete layers.
    pub fn layer_dirs(&self) -> Vec<PathBuf> {
        self.store_dirs("layers-v1")
    }

    /// Every env's directory in the store, of every id mapping.
    pub fn env_dirs(&self) -> Vec<PathBuf> {
        self.store_dirs("envs-v1")
    }

    /// The entries of `kind` (layers-v1, envs-v1) under each id mapping, but its tmp.
    fn store_dirs(&self, kind: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let base = self.store().join(kind);
        for map in fs::read_dir(&base).into_iter().flatten().flatten() {
            for l in fs::read_dir(map.path()).into_iter().flatten().flatten() {
                if l.file_name() != "tmp" {
                    out.push(l.path());
                }
            }
        }
        out
    }

    /// The unpacked tree of the layer with this diff id.
    pub fn layer_root(&self, diff_id: &str) -> PathBuf {
        let hex = diff_id.trim_start_matches("sha256:");
        self.layer_dirs()
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == hex))
            .unwrap_or_else(|| panic!("layer {diff_id} is not in the store"))
            .join("root")
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Pushes the busybox image; returns its reference.
pub fn push_busybox(reg: &Registry) -> String {
    ImageBuilder::new(image::busybox_layers()).push(reg, "fixture/busybox", Some("1"));
    format!("{}/fixture/busybox:1", reg.host())
}

/// Pushes the Debian minbase image; returns its reference.
pub fn push_debian(reg: &Registry) -> String {
    ImageBuilder::new(vec![image::debian_minbase_layer()]).push(
        reg,
        "library/debian",
        Some("bookworm"),
    );
    format!("{}/library/debian:bookworm", reg.host())
}

/// A test that failed half-way can leave an env running (`dev start`): its processes (keeper,
/// init, sessions: all forks of this test's `dev`) must not outlive the test and its directory.
impl Drop for Env {
    fn drop(&mut self) {
        let dir = self.dir.path().as_os_str().as_encoded_bytes().to_vec();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            if cmdline.windows(dir.len()).any(|w| w == dir.as_slice()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Env {
    /// Writes the project's dev.toml.
    pub fn write_dev_toml(&self, text: &str) {
        fs::write(self.path("project/dev.toml"), text).expect("write dev.toml");
        self.chown_all(&self.path("project"));
    }

    /// `dev trust` in the project: what its dev.toml runs and exposes may run.
    pub fn trust(&self) {
        self.ok(&["trust"]);
    }
}

pub fn describe(cmd: &str, out: &Output) -> String {
    format!(
        "command: {cmd}\nstatus: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A listing of every path under `root` (except `skip`) with its type, size, mode and content
/// hash, to prove that nothing outside the store changed.
pub fn snapshot(root: &Path, skip: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(p: &Path, skip: &Path, out: &mut Vec<String>) {
        if p.starts_with(skip) {
            return;
        }
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        let mut line = format!("{} {:o} {}", p.display(), m.permissions().mode(), m.len());
        if m.is_file() {
            line.push(' ');
            line.push_str(&fs::read(p).map(|b| image::sha256(&b)).unwrap_or_default());
        } else if m.file_type().is_symlink() {
            line.push_str(&format!(" -> {:?}", fs::read_link(p).ok()));
        }
        out.push(line);
        if m.is_dir() {
            let mut entries: Vec<_> = fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, skip, out);
            }
        }
    }
    walk(root, skip, &mut out);
    out
}

/// Runs a test body once as the user with a subordinate range and once as the one without.
#[macro_export]
macro_rules! e2e {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn with_subids() {
                let f: fn($crate::common::Env) = $body;
                f($crate::common::Env::new($crate::common::Kind::Sub));
            }
            #[test]
            fn without_subids() {
                let f: fn($crate::common::Env) = $body;
                f($crate::common::Env::new($crate::common::Kind::NoSub));
            }
        }
    };
}

/// `dev` on a pseudo-terminal, as a user at a terminal runs it: its own session with the pty as
/// controlling terminal (`setsid --ctty`), a window size, and a thread collecting the output.
pub struct Pty {
    master: std::fs::File,
    /// The terminal's own side (`/dev/pts/N` of the host), what `dev` has as its stdio.
    pub slave: PathBuf,
    pub child: Child,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// Set by the reader once the terminal said end of file (every slave closed): all output
    /// is in `output`.
    drained: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Env {
    pub fn pty(&self, args: &[&str], rows: u16, cols: u16) -> Pty {
        self.pty_program(&self.bin, args, rows, cols)
    }

    /// A shell script on a pseudo-terminal, as a user types it at their shell (`dev` is on
    /// its PATH).
    pub fn pty_sh(&self, script: &str, rows: u16, cols: u16) -> Pty {
        self.pty_program(Path::new("/bin/sh"), &["-c", script], rows, cols)
    }

    fn pty_program(&self, program: &Path, args: &[&str], rows: u16, cols: u16) -> Pty {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let ws = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
        let mut setsid = Command::new("setsid");
        setsid.arg("--ctty").arg("setpriv");
        let mut cmd = self.user_command(setsid, program, args);
        let slave = std::fs::File::from(pty.slave);
        let slave_path =
            fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).expect("the pty's name");
        cmd.stdin(slave.try_clone().expect("dup"))
            .stdout(slave.try_clone().expect("dup"))
            .stderr(slave)
            .env("TERM", "xterm");
        let child = cmd.spawn().expect("spawn dev on a pty");
        drop(cmd);
        let master = std::fs::File::from(pty.master);
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let drained = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (mut reader, sink) = (master.try_clone().expect("dup"), output.clone());
        let done = drained.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        Pty {
            master,
            slave: slave_path,
            child,
            output,
            drained,
        }
    }
}

impl Pty {
    pub fn send(&mut self, text: &str) {
        use std::io::Write;
        self.master
            .write_all(text.as_bytes())
            .expect("write to pty");
    }

    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("lock")).to_string()
    }

    /// Waits until the output (after byte `from`) contains `needle`; returns the end offset.
    pub fn expect(&self, needle: &str, from: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.output();
            if let Some(i) = out.get(from..).and_then(|o| o.find(needle)) {
                return from + i + needle.len();
            }
            assert!(
                Instant::now() < deadline,
                "no `{needle}` on the terminal after 20 s; it shows:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The terminal's modes as the program on it left them.
    pub fn termios(&self) -> nix::sys::termios::Termios {
        use std::os::unix::fs::OpenOptionsExt;
        let tty = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOCTTY)
            .open(&self.slave)
            .expect("open the pty");
        nix::sys::termios::tcgetattr(&tty).expect("tcgetattr")
    }

    /// Resizes the terminal, as a terminal emulator does (the kernel sends SIGWINCH to the
    /// terminal's foreground process group).
    pub fn resize(&self, rows: u16, cols: u16) {
        let st = Command::new("stty")
            .arg("-F")
            .arg(&self.slave)
            .args(["rows", &rows.to_string(), "cols", &cols.to_string()])
            .status()
            .expect("run stty");
        assert!(
            st.success(),
            "stty could not resize {}",
            self.slave.display()
        );
    }

    /// Waits until the program exits and the reader has taken all it wrote (the terminal
    /// says end of file once no process holds it; a process still holding it after 5 s is left
    /// to the caller's assertions).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !self.drained.load(std::sync::atomic::Ordering::Acquire)
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "dev did not exit; terminal:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Spawns `cmd` (a session whose script says `ready` first) with its stdout piped, and waits
/// until the script has said it.
pub fn spawn_ready(cmd: &mut Command) -> Child {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut child.stdout.take().expect("stdout"), &mut buf).expect("ready");
    child
}
