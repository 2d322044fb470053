//! The user namespace a holder keeps between starts (`dev __userns-hold`, like podman's pause
//! process): a start that had newuidmap and newgidmap map its own leaves one; the next start's
//! env gets a user namespace of its own beneath it, with no setuid program run. Only a holder
//! whose record, mount namespace and maps all check out is joined; `userns-linger` ends it.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{spawn_ready, stdout, Env, Kind, Registry};
use crate::e2e;

fn record(env: &Env) -> PathBuf {
    env.path("run/dev/userns-holder")
}

/// The holder's record once it is there (its pid, start time and user namespace), or None
/// after 5 s.
fn wait_for_record(env: &Env) -> Option<(i32, u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(text) = fs::read_to_string(record(env)) {
            let f: Vec<u64> = text
                .split_whitespace()
                .map(|n| n.parse().expect("a number"))
                .collect();
            assert_eq!(f.len(), 3, "the record: {text:?}");
            return Some((f[0] as i32, f[1], f[2]));
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `lsns`'s NS and PNS of process `pid`'s user namespace: its inode and its parent's.
fn userns_of(pid: i32) -> (u64, u64) {
    let out = Command::new("lsns")
        .args(["-t", "user", "-n", "-o", "NS,PNS", "-p", &pid.to_string()])
        .output()
        .expect("lsns (util-linux)");
    assert!(out.status.success(), "lsns: {out:?}");
    let f: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|n| n.parse().expect("an inode"))
        .collect();
    assert_eq!(f.len(), 2, "lsns -o NS,PNS: {out:?}");
    (f[0], f[1])
}

/// Field `n` (counted from 1, as proc(5) does) of `/proc/PID/stat`, past the command's name.
fn stat_field(pid: i32, n: usize) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit_once(')').expect(")").1;
    after
        .split_whitespace()
        .nth(n - 3)
        .unwrap_or_else(|| panic!("no field {n} in {stat}"))
        .to_string()
}

fn ino(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).expect(path).ino()
}

/// The host pid of the one process of this test whose command line is `cmdline` (NULs as
/// spaces) and whose environment names the test's directory, waiting up to 5 s for it.
fn host_pid(env: &Env, cmdline: &str) -> i32 {
    let mark = env.dir.path().display().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found: Vec<i32> = fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|pid: &i32| {
                let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let envs = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                String::from_utf8_lossy(&cmd).replace('\0', " ").trim_end() == cmdline
                    && String::from_utf8_lossy(&envs).contains(&mark)
            })
            .collect();
        if found.len() == 1 {
            return found[0];
        }
        assert!(
            Instant::now() < deadline,
            "processes `{cmdline}`: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The process the record names is the holder: `dev __userns-hold`, in the host's mount
/// namespace, at `/`, with nothing of the `dev` that left it open and no environment but PATH,
/// in a user namespace of its own whose parent is the host's.
fn assert_is_the_holder(pid: i32, ns: u64) {
    let cmd = fs::read(format!("/proc/{pid}/cmdline")).expect("the holder runs");
    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
    assert!(cmd.contains(" __userns-hold "), "{cmd}");
    assert_eq!(
        ino(&format!("/proc/{pid}/ns/mnt")),
        ino("/proc/self/ns/mnt"),
        "in the host's mount namespace"
    );
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd"),
        PathBuf::from("/")
    );
    let envs = fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let envs: Vec<String> = String::from_utf8_lossy(&envs)
        .split('\0')
        .filter(|v| !v.is_empty())
        .map(|v| v.split('=').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(envs, ["PATH"], "its environment");
    let mut fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .flatten()
        .map(|e| {
            let target = fs::read_link(e.path()).unwrap_or_default();
            format!("{}:{}", e.file_name().to_string_lossy(), target.display())
        })
        .collect();
    fds.sort();
    assert_eq!(
        fds,
        ["0:/dev/null", "1:/dev/null", "2:/dev/null"],
        "its descriptors"
    );
    assert_eq!(stat_field(pid, 7), "0", "no controlling terminal (tty_nr)");
    let (its, parent) = userns_of(pid);
    assert_eq!(its, ns, "the record names its user namespace");
    assert_eq!(parent, ino("/proc/self/ns/user"), "beneath the host's");
}

e2e!(
    a_start_leaves_a_holder_and_the_next_start_maps_beneath_it,
    |env: Env| {
        let reg = Registry::start();
        crate::shell::busybox_project(&env, &reg, "");
        env.ok(&["run", "--", "true"]);
        if env.kind == Kind::NoSub {
            // A single id needs no setuid program: no holder.
            std::thread::sleep(Duration::from_millis(500));
            assert!(!record(&env).exists(), "no holder without a range");
            return;
        }
        let (pid, _, ns) = wait_for_record(&env).expect("the start left a holder");
        assert_is_the_holder(pid, ns);
        let used = fs::metadata(record(&env))
            .expect("record")
            .modified()
            .expect("mtime");
        std::thread::sleep(Duration::from_millis(20));
        // The next start: the env's user namespace is its own, beneath the holder's, with the
        // holder's ids one to one; the holder's record is touched and still names it.
        let show = "cat /proc/self/uid_map /proc/self/gid_map | tr -s ' ' | sed 's/^ //'; \
                echo ready; exec sleep 30";
        let mut session = env.dev(&["run", "--", "sh", "-c", show]);
        let mut child = session
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut text = String::new();
        {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
            for line in lines.by_ref() {
                let line = line.expect("line");
                if line == "ready" {
                    break;
                }
                text.push_str(&line);
                text.push('\n');
            }
        }
        let sleeper = host_pid(&env, "sleep 30");
        let (env_ns, env_parent) = userns_of(sleeper);
        assert_eq!(
            env_parent, ns,
            "the env's user namespace is beneath the holder's"
        );
        assert_ne!(env_ns, ns, "and not the holder's own");
        let (uid, gid) = (env.uid, env.gid);
        // The whole subordinate range of 65536 ids (`install.sh --dev`), as with maps of its own.
        let one_to_one = format!(
            "0 0 {uid}\n{uid} {uid} 1\n{} {} {}\n",
            uid + 1,
            uid + 1,
            65536 - uid
        );
        let groups = format!(
            "0 0 {gid}\n{gid} {gid} 1\n{} {} {}\n",
            gid + 1,
            gid + 1,
            65536 - gid
        );
        assert_eq!(text, format!("{one_to_one}{groups}"), "the env's maps");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            wait_for_record(&env).map(|r| r.0),
            Some(pid),
            "the same holder"
        );
        let touched = fs::metadata(record(&env))
            .expect("record")
            .modified()
            .expect("mtime");
        assert!(touched > used, "the start touched the record");
        // What the env writes is the user's on the host, as with maps of its own.
        env.ok(&["run", "--", "sh", "-c", "echo x > made-inside"]);
        let made = fs::metadata(env.path("project/made-inside")).expect("made inside");
        use std::os::unix::fs::MetadataExt;
        assert_eq!((made.uid(), made.gid()), (env.uid, env.gid));
        let owners =
            stdout(&env.ok(&["run", "--root", "--", "stat", "-c", "%u:%g", "/etc/passwd"]));
        assert_eq!(owners, "0:0\n", "root inside is root");
    }
);

/// A record that names another process of the user's is not joined, even with its start
/// time and user namespace right: a session's process in a running env (in that env's mount
/// namespace, with the user's maps), and one in a user namespace of other maps. The next start
/// maps its own namespace, and a holder of its own replaces the record.
#[test]
fn a_record_naming_anything_but_a_holder_is_not_joined() {
    let env = Env::new(Kind::Sub);
    let reg = Registry::start();
    crate::shell::busybox_project(&env, &reg, "");
    env.ok(&["run", "--", "true"]);
    wait_for_record(&env).expect("a holder");
    let mut running =
        spawn_ready(&mut env.dev(&["run", "--", "sh", "-c", "echo ready; exec sleep 60"]));
    let in_env = host_pid(&env, "sleep 60");
    let mut other = spawn_ready(&mut env.as_user(
        std::path::Path::new("/usr/bin/unshare"),
        &[
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            "echo ready; exec sleep 61",
        ],
    ));
    let outside = host_pid(&env, "sleep 61");
    for forged in [in_env, outside] {
        let start = stat_field(forged, 22);
        let (ns, _) = userns_of(forged);
        fs::write(record(&env), format!("{forged} {start} {ns}\n")).expect("forge the record");
        env.chown_all(&env.path("run"));
        env.ok(&["run", "--rm", "--", "true"]);
        // The holder that start left replaces the forged record.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (holder, holder_ns) = loop {
            let (pid, _, ns) = wait_for_record(&env).expect("a record");
            if pid != forged {
                break (pid, ns);
            }
            assert!(Instant::now() < deadline, "the forged record stays");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_is_the_holder(holder, holder_ns);
        let mut s = spawn_ready(&mut env.dev(&[
            "run",
            "--rm",
            "--",
            "sh",
            "-c",
            "echo ready; exec sleep 62",
        ]));
        let (_, parent) = userns_of(host_pid(&env, "sleep 62"));
        let _ = s.kill();
        let _ = s.wait();
        assert_eq!(
            parent, holder_ns,
            "the next start is beneath the new holder"
        );
        assert_ne!(
            parent, ns,
            "a start joined the namespace of process {forged}"
        );
    }
    let _ = running.kill();
    let _ = running.wait();
    let _ = other.kill();
    let _ = other.wait();
}

/// `userns-linger = 0`: no holder, every start maps its own. A holder leaves once its record has
/// gone unused for its time, and removes it.
#[test]
fn userns_linger_ends_the_holder() {
    let env = Env::new(Kind::Sub);
    let reg = Registry::start();
    crate::shell::busybox_project(&env, &reg, "");
    env.settings_exactly("linger = 0\nuserns-linger = 0\n");
    env.ok(&["run", "--", "true"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!record(&env).exists(), "no holder with userns-linger = 0");
    env.settings_exactly("linger = 0\nuserns-linger = 1\n");
    env.ok(&["run", "--", "true"]);
    let (pid, _, ns) = wait_for_record(&env).expect("a holder");
    assert_is_the_holder(pid, ns);
    let written = fs::metadata(record(&env))
        .and_then(|m| m.modified())
        .expect("the record's time");
    let start = Instant::now();
    while fs::metadata(format!("/proc/{pid}/cmdline")).is_ok()
        && !fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .is_empty()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the holder stays"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let lived = std::time::SystemTime::now()
        .duration_since(written)
        .unwrap_or_default();
    assert!(
        lived >= Duration::from_millis(900),
        "it left {lived:?} after its record was written, before its second"
    );
    assert!(!record(&env).exists(), "it removed its record");
}
