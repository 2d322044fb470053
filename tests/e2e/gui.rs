//! `--gui` (issue 16): a real X server (Xvfb, with a cookie), a real Wayland compositor
//! (weston's headless backend), a PulseAudio server with a null sink and a session D-Bus,
//! started on the host as the test user; inside the env, `xdpyinfo`, `wayland-info`, `pactl`
//! and `dbus-send` from the image's own packages (Debian's x11-utils, wayland-utils,
//! pulseaudio-utils, dbus-bin) reach them. Without `--gui`, none of it is visible.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{describe, push_debian, stderr, stdout, Env, Kind, Registry};
use crate::e2e;
use crate::shell::busybox_project;

const WAYLAND: &str = "wayland-dev";

/// The servers a desktop session has, run as the test user; killed (their process groups)
/// when dropped.
struct Desktop {
    children: Vec<Child>,
    display: u32,
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for c in &mut self.children {
            let pgid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

fn wait_for(path: &Path, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{what} did not make {} in 20 s: {}",
            path.display(),
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn program(name: &str) -> PathBuf {
    let p = ["/usr/bin", "/usr/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    p.unwrap_or_else(|| panic!("`{name}` is not installed on the host; run `./install.sh --dev`"))
}

/// Xvfb on a free display with a cookie in the user's ~/.Xauthority, weston on `wayland-dev`
/// and pulseaudio, all in the user's XDG_RUNTIME_DIR.
/// A display number no X server uses, in /tmp/.X11-unix as a desktop has it (root's, sticky;
/// Xvfb run as a user would make it the user's).
fn free_display() -> u32 {
    if !Path::new("/tmp/.X11-unix").exists() {
        fs::create_dir("/tmp/.X11-unix").expect("mkdir /tmp/.X11-unix");
        fs::set_permissions("/tmp/.X11-unix", fs::Permissions::from_mode(0o1777)).expect("chmod");
    }
    // Tests run in parallel threads of one process, and other test runs share /tmp: a number
    // of this test's own, then the first free one from there.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mine = std::process::id() * 16 + NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    (0..800)
        .map(|i| 100 + (mine + i * 16) % 800)
        .find(|n| {
            !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
        })
        .expect("a free X display")
}

fn desktop(env: &Env) -> Desktop {
    let display = free_display();
    let cookie = env.path("home/.Xauthority");
    let out = env
        .as_user(
            &program("xauth"),
            &[
                "-q",
                "-f",
                cookie.to_str().expect("utf-8"),
                "add",
                &format!(":{display}"),
                "MIT-MAGIC-COOKIE-1",
                "00112233445566778899aabbccddeeff",
            ],
        )
        .output()
        .expect("xauth");
    assert!(out.status.success(), "{}", describe("xauth add", &out));
    let log = |name: &str| {
        let p = env.path(name);
        (p.clone(), fs::File::create(p).expect("log"))
    };
    let mut d = Desktop {
        children: Vec::new(),
        display,
    };
    let mut start = |prog: &str, args: &[&str], log_name: &str| {
        let (path, file) = log(log_name);
        let child = env
            .as_user(&program(prog), args)
            .stdout(Stdio::null())
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {prog}: {e}"));
        d.children.push(child);
        path
    };
    let xlog = start(
        "Xvfb",
        &[
            &format!(":{display}"),
            "-auth",
            cookie.to_str().expect("utf-8"),
            "-nolisten",
            "tcp",
        ],
        "xvfb.log",
    );
    let wlog = start(
        "weston",
        &[
            "--backend=headless-backend.so",
            &format!("--socket={WAYLAND}"),
            "--idle-time=0",
        ],
        "weston.log",
    );
    let plog = start(
        "pulseaudio",
        &[
            "--daemonize=no",
            "-n",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "-L",
            "module-native-protocol-unix",
            "-L",
            "module-null-sink",
        ],
        "pulse.log",
    );
    let bus = env.path("run/bus");
    let blog = start(
        "dbus-daemon",
        &[
            "--session",
            "--nofork",
            "--nopidfile",
            &format!("--address=unix:path={}", bus.display()),
        ],
        "dbus.log",
    );
    wait_for(&bus, "dbus-daemon", &blog);
    wait_for(
        Path::new(&format!("/tmp/.X11-unix/X{display}")),
        "Xvfb",
        &xlog,
    );
    wait_for(&env.path(&format!("run/{WAYLAND}")), "weston", &wlog);
    wait_for(&env.path("run/pulse/native"), "pulseaudio", &plog);
    // Each is still running (not one that found its display or socket taken).
    for c in &mut d.children {
        assert!(
            c.try_wait().expect("try_wait").is_none(),
            "a desktop server exited: {}",
            fs::read_to_string(&xlog).unwrap_or_default()
        );
    }
    d
}

/// A `dev` command with the desktop session's variables, as a terminal of it has them.
fn in_session(env: &Env, d: &Desktop, args: &[&str]) -> std::process::Output {
    env.dev(args)
        .env("DISPLAY", format!(":{}", d.display))
        .env("WAYLAND_DISPLAY", WAYLAND)
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}", env.path("run/bus").display()),
        )
        .output()
        .expect("run dev")
}

#[test]
fn the_envs_own_tools_reach_the_hosts_display_compositor_sound_and_bus() {
    let env = Env::new(Kind::Sub);
    let reg = Registry::start();
    let image = push_debian(&reg);
    env.write_dev_toml(&format!(
        "image = \"{image}\"\n[tools]\npackages = [\"x11-utils\", \"wayland-utils\", \"pulseaudio-utils\", \"dbus-bin\"]\n"
    ));
    let d = desktop(&env);
    let uid = env.uid;
    let inside = format!(
        "echo \"XDG=$XDG_RUNTIME_DIR DISPLAY=$DISPLAY WAYLAND=$WAYLAND_DISPLAY PULSE=$PULSE_SERVER BUS=$DBUS_SESSION_BUS_ADDRESS\"; \
         xdpyinfo | grep -m1 'vendor string'; \
         wayland-info | grep -c wl_compositor; \
         pactl info | grep -m1 'Server Name'; \
         {GET_ID} >/dev/null && echo bus-reached; \
         stat -c '%u %a' \"$XDG_RUNTIME_DIR\"; \
         ls -A /tmp/.X11-unix"
    );
    let out = in_session(&env, &d, &["run", "--gui", "--", "sh", "-c", &inside]);
    assert!(out.status.success(), "{}", describe("dev run --gui", &out));
    assert_eq!(
        stdout(&out),
        format!(
            "XDG=/run/user/{uid} DISPLAY=:{n} WAYLAND={WAYLAND} PULSE=unix:/run/user/{uid}/pulse/native BUS=unix:path=/run/user/{uid}/bus\n\
             vendor string:    The X.Org Foundation\n1\nServer Name: pulseaudio\nbus-reached\n{uid} 700\nX{n}\n",
            n = d.display
        ),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!(
            "opened for the env: Wayland ({WAYLAND}), X11 :{} (its cookie only), PulseAudio, D-Bus",
            d.display
        )),
        "{}",
        stderr(&out)
    );

    // Without --gui: no variable, no socket, and the X server refuses a client without the
    // cookie (its abstract socket is on the shared network namespace).
    let none = format!(
        "echo \"DISPLAY=${{DISPLAY-unset}} WAYLAND=${{WAYLAND_DISPLAY-unset}} XDG=${{XDG_RUNTIME_DIR-unset}} BUS=${{DBUS_SESSION_BUS_ADDRESS-unset}}\"; \
         ls -A /tmp/.X11-unix 2>/dev/null | wc -l; \
         xdpyinfo -display :{} >/dev/null 2>&1 && echo x11-reached || echo no-x11; \
         WAYLAND_DISPLAY={WAYLAND} wayland-info >/dev/null 2>&1 && echo wayland-reached || echo no-wayland; \
         pactl info >/dev/null 2>&1 && echo pulse-reached || echo no-pulse; \
         {GET_ID} >/dev/null 2>&1 && echo bus-reached || echo no-bus",
        d.display
    );
    let out = in_session(&env, &d, &["run", "--", "sh", "-c", &none]);
    assert_eq!(
        stdout(&out),
        "DISPLAY=unset WAYLAND=unset XDG=unset BUS=unset\n0\nno-x11\nno-wayland\nno-pulse\nno-bus\n",
        "{}",
        describe("dev run (no --gui)", &out)
    );

    // A running env opened nothing: a session that asks for the GUI is told to restart it.
    env.ok(&["start"]);
    let out = in_session(&env, &d, &["run", "--gui", "--", "true"]);
    assert!(
        !out.status.success(),
        "{}",
        describe("dev run --gui (joining)", &out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("runs without") && err.contains("dev stop"),
        "{err}"
    );
    env.ok(&["stop"]);
}

/// A call on the session bus.
const GET_ID: &str = "dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.GetId";

/// With a single-id map x11-utils cannot be installed (fontconfig-config's postinst chowns to
/// group `staff`, which that map has not): Wayland and sound, with the image's tools.
#[test]
fn with_a_single_id_map_the_envs_tools_reach_the_compositor_and_sound() {
    let env = Env::new(Kind::NoSub);
    let reg = Registry::start();
    let image = push_debian(&reg);
    env.write_dev_toml(&format!(
        "image = \"{image}\"\n[tools]\npackages = [\"wayland-utils\", \"pulseaudio-utils\", \"dbus-bin\"]\n"
    ));
    let d = desktop(&env);
    let uid = env.uid;
    let inside = format!(
        "echo \"XDG=$XDG_RUNTIME_DIR DISPLAY=$DISPLAY WAYLAND=$WAYLAND_DISPLAY\"; \
        wayland-info | grep -c wl_compositor; \
        pactl info | grep -m1 'Server Name'; \
        {GET_ID} >/dev/null && echo bus-reached; \
        stat -c '%u %a' \"$XDG_RUNTIME_DIR\""
    );
    let out = in_session(&env, &d, &["run", "--gui", "--", "sh", "-c", &inside]);
    assert_eq!(
        stdout(&out),
        format!(
            "XDG=/run/user/{uid} DISPLAY=:{n} WAYLAND={WAYLAND}\n1\nServer Name: pulseaudio\nbus-reached\n{uid} 700\n",
            n = d.display
        ),
        "{}",
        describe("dev run --gui", &out)
    );
    let none = format!("WAYLAND_DISPLAY={WAYLAND} wayland-info >/dev/null 2>&1 && echo reached; pactl info >/dev/null 2>&1 && echo reached; {GET_ID} >/dev/null 2>&1 && echo reached; echo ${{DISPLAY-unset}}");
    let out = in_session(&env, &d, &["run", "--", "sh", "-c", &none]);
    assert_eq!(
        stdout(&out),
        "unset\n",
        "{}",
        describe("dev run (no --gui)", &out)
    );
}

e2e!(
    gui_from_dev_toml_needs_trust_and_from_config_toml_does_not,
    |env: Env| {
        let reg = Registry::start();
        busybox_project(&env, &reg, "gui = true\n");
        let show = ["run", "--", "sh", "-c", "echo $XDG_RUNTIME_DIR"];
        let err = env.fails(&show);
        assert!(
            err.contains("asks for your display and sound, which you have not trusted")
                && err.contains("dev trust"),
            "{err}"
        );
        let out = env.ok(&["trust", "--show"]);
        assert!(
            stdout(&out).contains("gui = true") || stderr(&out).contains("gui = true"),
            "{}",
            describe("dev trust --show", &out)
        );
        env.trust();
        let out = env.ok(&show);
        assert_eq!(stdout(&out), format!("/run/user/{}\n", env.uid));
        // The user's own config.toml asks without any trust.
        busybox_project(&env, &reg, "");
        env.settings("gui = true\n");
        let out = env.ok(&show);
        assert_eq!(stdout(&out), format!("/run/user/{}\n", env.uid));
        // A throwaway env's runtime directory, with the mount points in it, goes with it.
        let out = env.ok(&["run", "--rm", "--", "sh", "-c", "echo $XDG_RUNTIME_DIR"]);
        assert_eq!(stdout(&out), format!("/run/user/{}\n", env.uid));
        let tmps: Vec<PathBuf> = fs::read_dir(env.store().join("envs-v1"))
            .expect("envs")
            .flatten()
            .map(|m| m.path().join("tmp"))
            .filter(|t| t.is_dir())
            .collect();
        assert!(!tmps.is_empty(), "no throwaway env was made");
        let left: Vec<_> = tmps
            .iter()
            .flat_map(|t| fs::read_dir(t).into_iter().flatten().flatten())
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
);

e2e!(
    a_gui_session_right_after_a_plain_one_starts_the_env_again,
    |env: Env| {
        let reg = Registry::start();
        busybox_project(&env, &reg, "");
        // Each plain session's env is still stopping when the next one comes: that one must wait
        // and start the env with the GUI, not be told the env runs without it.
        for _ in 0..8 {
            env.ok(&["run", "--", "true"]);
            let out = env.ok(&["run", "--gui", "--", "sh", "-c", "echo $XDG_RUNTIME_DIR"]);
            assert_eq!(stdout(&out), format!("/run/user/{}\n", env.uid));
        }
    }
);

e2e!(an_x11_socket_another_user_made_is_not_opened, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg, "gui = true\n");
    // /tmp/.X11-unix is everyone's: another user can make a display's socket before its server.
    let n = free_display();
    let sock = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let config = |who: &str| {
        let out = env
            .dev(&["config"])
            .env("DISPLAY", format!(":{n}"))
            .output()
            .expect("dev config");
        assert!(out.status.success(), "{}", describe(who, &out));
        format!("{}{}", stdout(&out), stderr(&out))
    };
    std::os::unix::fs::chown(&sock, Some(4242), Some(4242)).expect("chown");
    let shown = config("another user's socket");
    assert!(
        shown.contains("belongs to uid 4242") && shown.contains("X11 is not opened"),
        "{shown}"
    );
    assert!(!shown.contains(&format!("X11 :{n} (")), "{shown}");
    // The user's own server's socket is opened.
    std::os::unix::fs::chown(&sock, Some(env.uid), Some(env.gid)).expect("chown");
    let shown = config("the user's socket");
    assert!(shown.contains(&format!("X11 :{n} (")), "{shown}");
    drop(listener);
    let _ = fs::remove_file(&sock);
    // Nor a symlink another user made there, though it names a socket of the user's own (an
    // ssh agent's, say): the env would get that socket as its display.
    let own = env.path("agent.sock");
    let agent = std::os::unix::net::UnixListener::bind(&own).expect("bind");
    std::os::unix::fs::chown(&own, Some(env.uid), Some(env.gid)).expect("chown");
    std::os::unix::fs::symlink(&own, &sock).expect("symlink");
    std::os::unix::fs::lchown(&sock, Some(4242), Some(4242)).expect("lchown");
    let shown = config("another user's symlink to the user's socket");
    assert!(shown.contains("X11 is not opened"), "{shown}");
    assert!(!shown.contains(&format!("X11 :{n} (")), "{shown}");
    drop(agent);
    let _ = fs::remove_file(&sock);
});
