//! `dev doctor`: what works, what is missing and its fix, each broken on purpose.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::{describe, free_port, push_busybox, stdout, Env, Kind, Registry};
use crate::e2e;

fn doctor(env: &Env, cmd: &mut std::process::Command) -> (i32, Vec<serde_json::Value>) {
    let out = cmd.output().expect("run dev doctor");
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", describe("dev doctor --format json", &out)));
    let _ = env;
    (out.status.code().unwrap_or(-1), checks)
}

fn find<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no `{name}` check in {checks:#?}"))
}

e2e!(says_what_works_and_what_is_missing, |env: Env| {
    let (code, checks) = doctor(&env, &mut env.dev(&["doctor", "--format", "json"]));
    assert_eq!(code, 0, "{checks:#?}");
    assert_eq!(
        find(&checks, "user namespaces")["status"],
        "ok",
        "{checks:#?}"
    );
    let sub = find(&checks, "subordinate ids");
    match env.kind {
        Kind::NoSub => {
            assert_eq!(sub["status"], "warn", "{sub}");
            assert!(
                sub["fix"]
                    .as_str()
                    .is_some_and(|f| f.contains("usermod --add-subuids")),
                "{sub}"
            );
        }
        _ => assert_eq!(sub["status"], "ok", "{sub}"),
    }
    assert_eq!(find(&checks, "newuidmap")["status"], "ok");
    assert_eq!(find(&checks, "runtime dir")["status"], "ok");
    // The table says the same to a person.
    let table = stdout(&env.ok(&["doctor"]));
    assert!(table.starts_with("CHECK"), "{table}");
    assert!(table.contains("user namespaces"), "{table}");
});

// newuidmap and newgidmap that are not setuid (first on PATH): named, with the fix.
e2e!(names_a_newuidmap_that_is_not_setuid, |env: Env| {
    let fake = env.path("fakebin");
    fs::create_dir_all(&fake).unwrap();
    for p in ["newuidmap", "newgidmap"] {
        fs::copy(format!("/usr/bin/{p}"), fake.join(p)).unwrap();
        fs::set_permissions(fake.join(p), fs::Permissions::from_mode(0o755)).unwrap();
    }
    env.chown_all(&fake);
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        fake.display(),
        env.path("bin").display()
    );
    let (code, checks) = doctor(
        &env,
        env.dev(&["doctor", "--format", "json"]).env("PATH", path),
    );
    assert_eq!(code, 0, "a single id still works: {checks:#?}");
    let c = find(&checks, "newuidmap");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(
        c["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not setuid")),
        "{c}"
    );
    assert!(
        c["fix"].as_str().is_some_and(|f| f.contains("chmod u+s")),
        "{c}"
    );
});

// A fuse device the user cannot open: fuse-overlayfs cannot be the fallback.
e2e!(names_a_fuse_device_the_user_cannot_open, |env: Env| {
    let node = env.path("fuse");
    let st = std::process::Command::new("mknod")
        .arg(&node)
        .args(["c", "10", "229"])
        .status()
        .expect("mknod");
    assert!(st.success());
    fs::set_permissions(&node, fs::Permissions::from_mode(0o600)).unwrap();
    let (_, checks) = doctor(
        &env,
        env.dev(&["doctor", "--format", "json"])
            .env("DEV_DOCTOR_FUSE", &node),
    );
    let c = find(&checks, "fuse");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(
        c["fix"].as_str().is_some_and(|f| f.contains("chmod 0666")),
        "{c}"
    );
});

// The project's registry: answering, then nothing listening (the exit status says so).
e2e!(checks_the_projects_registry, |env: Env| {
    let reg = Registry::start();
    env.write_dev_toml(&format!("image = \"{}\"\n", push_busybox(&reg)));
    let (code, checks) = doctor(&env, &mut env.dev(&["doctor", "--format", "json"]));
    assert_eq!(code, 0, "{checks:#?}");
    assert_eq!(find(&checks, "project registry")["status"], "ok");
    env.write_dev_toml(&format!(
        "image = \"127.0.0.1:{}/none/here:1\"\n",
        free_port()
    ));
    let out = env.run(&["doctor"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        describe("dev doctor", &out)
    );
    let table = stdout(&out);
    assert!(
        table.contains("FAIL") && table.contains("nothing answers"),
        "{table}"
    );
});
