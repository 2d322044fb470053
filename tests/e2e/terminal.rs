//! `dev` at a terminal (issue 12, "The terminal"): the command gets a session of its own and,
//! when stdin is a terminal, a pseudo-terminal of the env's own devpts that `dev` relays; it can
//! never push input into the user's terminal (TIOCSTI, CVE-2017-5226 for bubblewrap).

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::termios::LocalFlags;
use nix::unistd::Pid;

use crate::common::{image, push_busybox, Entry, Env, ImageBuilder, Layer, Pty, Registry};
use crate::e2e;

/// The two ways a session runs its command: in a throwaway env whose init runs it (`--rm`),
/// and in the project's env, which the session joins (the keeper runs the env).
const SESSIONS: [&[&str]; 2] = [&["run", "--rm", "--"], &["run", "--"]];

/// A program that pushes each byte of its argument into the input of the terminal on its
/// stdin with ioctl(TIOCSTI), as code in an image (a .bashrc, a postinst) would.
const TIOCSTI_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
int main(int argc, char **argv) {
    int pushed = 0;
    for (const char *p = argv[1]; *p; p++)
        if (ioctl(0, TIOCSTI, p) == 0)
            pushed++;
    printf("tiocsti pushed %d of %zu bytes\n", pushed, strlen(argv[1]));
    return 0;
}
"#;

/// Builds the TIOCSTI program (static: the image has no libc) into a busybox image with it as
/// `/tiocsti`, and makes it the project's image.
fn tiocsti_project(env: &Env, reg: &Registry) {
    let src = env.path("tiocsti.c");
    let bin = env.path("tiocsti");
    fs::write(&src, TIOCSTI_C).expect("write tiocsti.c");
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run gcc (install gcc and libc6-dev): {e}"));
    assert!(
        out.status.success(),
        "gcc -static failed (install libc6-dev):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut layers = image::busybox_layers();
    layers.push(Layer::new(vec![Entry::File(
        "tiocsti".into(),
        fs::read(&bin).expect("read tiocsti"),
        0o755,
    )]));
    ImageBuilder::new(layers).push(reg, "fixture/tiocsti", Some("1"));
    env.write_dev_toml(&format!("image = \"{}/fixture/tiocsti:1\"\n", reg.host()));
}

fn busybox_project(env: &Env, reg: &Registry) {
    let r = push_busybox(reg);
    env.write_dev_toml(&format!("image = \"{r}\"\n"));
}

/// The `/dev/pts/N` line the command's `tty` printed, if any.
fn pts_line(output: &str) -> Option<String> {
    output
        .lines()
        .map(|l| l.trim_matches(['\r', '\n']))
        .find(|l| {
            l.strip_prefix("/dev/pts/")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
}

/// Whether the terminal is in cooked mode, as a shell leaves it for the programs it runs.
fn is_cooked(pty: &Pty) -> bool {
    let modes = pty.termios().local_flags;
    modes.contains(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG)
}

/// Waits until `dev` put the terminal into raw mode: its relay runs.
fn await_raw(pty: &Pty) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_cooked(pty) {
        assert!(
            Instant::now() < deadline,
            "dev did not put the terminal into raw mode; it shows:\n{}",
            pty.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// What the command pushes with TIOCSTI goes into its own terminal, never into the user's: the
// user's shell, which reads the next line after `dev` exits, reads what the user types, and
// the command the image planted does not run on the host.
e2e!(
    tiocsti_cannot_push_input_into_the_users_terminal,
    |env: Env| {
        let reg = Registry::start();
        tiocsti_project(&env, &reg);
        env.ok(&["run", "true"]);
        let victim = env.path("outside/PWNED");
        for how in SESSIONS {
            let script = format!(
            "dev {} /tiocsti 'touch {}\n'; echo dev-done:$?; read -r line; echo \"got:[$line]\"; eval \"$line\"",
            how.join(" "),
            victim.display()
        );
            let mut pty = env.pty_sh(&script, 24, 80);
            let at = pty.expect("tiocsti pushed", 0);
            let at = pty.expect("dev-done:0", at);
            pty.send("true\r");
            let _ = pty.expect("got:[", at);
            let st = pty.wait();
            let out = pty.output();
            assert!(
                out.contains("got:[true]"),
                "dev {how:?}: the host shell read injected input; terminal:\n{out}"
            );
            assert!(st.success(), "dev {how:?}: {st}; terminal:\n{out}");
            assert!(
                !victim.exists(),
                "dev {how:?}: the command the image pushed ran on the host; terminal:\n{out}"
            );
        }
    }
);

// On a terminal, the command's stdin is a terminal of its own (`tty` names it, so
// `GPG_TTY=$(tty)` works) on the env's devpts; a missing command is still said so; output into a pipe is not
// passed through a terminal; without a terminal on stdin, the command has no controlling
// terminal at all, even when dev has one (here: stdin redirected in a shell on a terminal).
e2e!(the_command_gets_a_terminal_of_its_own, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg);
    env.ok(&["run", "true"]);
    for how in SESSIONS {
        let mut args = how.to_vec();
        args.push("tty");
        let mut pty = env.pty(&args, 24, 80);
        let _ = pty.expect("\n", 0);
        let st = pty.wait();
        let out = pty.output();
        assert!(
            pts_line(&out).is_some(),
            "dev {how:?}: `tty` did not name a /dev/pts terminal; terminal:\n{out}"
        );
        assert_eq!(st.code(), Some(0), "dev {how:?}; terminal:\n{out}");

        // Its stdin, stdout and stderr are all on the env's own devpts: it holds nothing of
        // the user's terminal.
        let mut args = how.to_vec();
        args.extend([
            "sh",
            "-c",
            "for fd in 0 1 2; do stat -L -c fs:%d /proc/self/fd/$fd; done; stat -c fs:%d /dev/pts/ptmx",
        ]);
        let mut pty = env.pty(&args, 24, 80);
        pty.wait();
        let out = pty.output();
        let devices: Vec<&str> = out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("fs:"))
            .collect();
        assert!(
            devices.len() == 4 && devices.iter().all(|d| *d == devices[3]),
            "dev {how:?}: the command's stdio is not the env's pty; terminal:\n{out}"
        );

        // A command that is not there is said so, on the terminal too.
        let mut args = how.to_vec();
        args.push("no-such-program");
        let mut pty = env.pty(&args, 24, 80);
        let st = pty.wait();
        let out = pty.output();
        assert_eq!(st.code(), Some(127), "dev {how:?}; terminal:\n{out}");
        let _ = pty.expect("is not in the image", 0);

        // Output into a pipe goes there byte for byte, not through a terminal (no CR added).
        let script = format!(
            "dev {} printf 'a\\nb\\n' | od -An -tx1; echo dev-done",
            how.join(" ")
        );
        let mut pty = env.pty_sh(&script, 24, 80);
        let _ = pty.expect("dev-done", 0);
        pty.wait();
        let out = pty.output();
        assert!(
            out.contains(" 61 0a 62 0a"),
            "dev {how:?} into a pipe: terminal:\n{out}"
        );

        let inside = r#"tty; echo tty_nr:$(cut -d" " -f7 /proc/self/stat); (: </dev/tty) 2>/dev/null && echo ctty:yes || echo ctty:no"#;
        let script = format!(
            "dev {} sh -c '{inside}' </dev/null; echo dev-done:$?",
            how.join(" ")
        );
        let mut pty = env.pty_sh(&script, 24, 80);
        let _ = pty.expect("dev-done:", 0);
        pty.wait();
        let out = pty.output();
        for expected in ["not a tty", "tty_nr:0\r", "ctty:no", "dev-done:0"] {
            assert!(
                out.contains(expected),
                "dev {how:?} without a terminal: no `{expected}`; terminal:\n{out}"
            );
        }
    }
});

// The command's terminal has the user's window size at the start and follows it when the
// user's terminal is resized.
e2e!(the_window_size_follows_the_users_terminal, |env: Env| {
    let reg = Registry::start();
    busybox_project(&env, &reg);
    env.ok(&["run", "true"]);
    for how in SESSIONS {
        let mut args = how.to_vec();
        args.extend(["sh", "-c", "tty; stty size; read x; stty size"]);
        let mut pty = env.pty(&args, 33, 101);
        let at = pty.expect("33 101", 0);
        await_raw(&pty);
        pty.resize(47, 132);
        std::thread::sleep(Duration::from_millis(200));
        pty.send("\r");
        let _ = pty.expect("47 132", at);
        let st = pty.wait();
        let out = pty.output();
        assert!(pts_line(&out).is_some(), "dev {how:?}: terminal:\n{out}");
        assert!(st.success(), "dev {how:?}: {st}; terminal:\n{out}");
    }
});

// Ctrl-C reaches the foreground job inside (through the command's terminal) and the shell
// inside lives on; its exit code is dev's, and the user's terminal is as it was after dev
// ends, however it ends. Without a terminal on stdin, ^C still reaches the command.
e2e!(
    ctrl_c_exit_code_and_the_terminal_left_as_it_was,
    |env: Env| {
        let reg = Registry::start();
        busybox_project(&env, &reg);
        env.ok(&["run", "true"]);
        for how in [&["shell", "--rm"][..], &["shell"]] {
            let mut pty = env.pty(how, 24, 80);
            let at = pty.expect("(project)", 0);
            pty.send("tty; sleep 30\r");
            let at = pty.expect("/dev/pts/", at);
            std::thread::sleep(Duration::from_millis(300));
            pty.send("\x03");
            pty.send("echo alive-$((2+3))\r");
            let at = pty.expect("alive-5", at);
            pty.send("exit 7\r");
            let st = pty.wait();
            let out = pty.output();
            assert_eq!(st.code(), Some(7), "dev {how:?}; terminal:\n{}", &out[at..]);
            assert!(is_cooked(&pty), "dev {how:?} left the terminal in raw mode");
        }
        // Without a terminal on stdin, the command is in a session of its own, which the user's
        // terminal does not signal: its ^C reaches the command through dev.
        for how in SESSIONS {
            let script = format!(
                "exec dev {} sh -c 'echo started; exec sleep 30' </dev/null",
                how.join(" ")
            );
            let mut pty = env.pty_sh(&script, 24, 80);
            let _ = pty.expect("started", 0);
            std::thread::sleep(Duration::from_millis(300));
            pty.send("\x03");
            let st = pty.wait();
            assert_eq!(
                st.code(),
                Some(130),
                "dev {how:?}; terminal:\n{}",
                pty.output()
            );
        }
        // Signals sent to dev reach the command; raw mode does not outlive dev.
        for (how, sig) in SESSIONS
            .iter()
            .flat_map(|h| [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT].map(|s| (h, s)))
        {
            let mut args = how.to_vec();
            args.extend(["sleep", "30"]);
            let mut pty = env.pty(&args, 24, 80);
            await_raw(&pty);
            kill(Pid::from_raw(pty.child.id() as i32), sig).expect("kill dev");
            let st = pty.wait();
            assert_eq!(
                st.code(),
                Some(128 + sig as i32),
                "dev {how:?}, {sig}; terminal:\n{}",
                pty.output()
            );
            assert!(
                is_cooked(&pty),
                "dev {how:?} left the terminal in raw mode after {sig}"
            );
        }
    }
);

// Everything the command wrote is on the terminal before dev exits.
e2e!(
    the_commands_output_is_drained_before_dev_exits,
    |env: Env| {
        let reg = Registry::start();
        busybox_project(&env, &reg);
        env.ok(&["run", "true"]);
        for how in SESSIONS {
            let mut args = how.to_vec();
            args.extend(["sh", "-c", "seq 1 20000; tty"]);
            let mut pty = env.pty(&args, 24, 80);
            let st = pty.wait();
            // dev is gone: what it wrote is in the terminal's buffer, which the reader empties.
            let _ = pty.expect("/dev/pts/", 0);
            let out = pty.output();
            let numbers: Vec<&str> = out
                .lines()
                .map(|l| l.trim_end_matches('\r'))
                .filter(|l| l.bytes().all(|b| b.is_ascii_digit()) && !l.is_empty())
                .collect();
            assert_eq!(numbers.len(), 20000, "dev {how:?}: lines lost");
            assert_eq!(numbers.last(), Some(&"20000"), "dev {how:?}");
            assert!(st.success(), "dev {how:?}: {st}");
        }
    }
);
