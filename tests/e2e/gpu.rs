//! `--gpu` (issue 16) against a synthetic host: device nodes made by the test (as root, with
//! mknod) under a test directory, stub driver libraries in a real ld.so cache, a stub
//! `nvidia-smi` and a CDI spec, selected with the debug build's DEV_TEST_HOST_ROOT. Checks what
//! is bound where inside, and that an env starts without a GPU.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::{describe, push_debian, stderr, stdout, Env, Registry};
use crate::e2e;

fn sh(script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh");
    assert!(out.status.success(), "{}", describe(script, &out));
}

/// A stub ELF shared library `name` (its soname) in `dir`.
fn stub_library(dir: &Path, name: &str) {
    fs::create_dir_all(dir).expect("mkdir");
    let c = dir.join("stub.c");
    fs::write(&c, "int dev_stub(void) { return 42; }\n").expect("write");
    sh(&format!(
        "gcc -shared -fPIC -Wl,-soname,{name} -o {}/{name} {}",
        dir.display(),
        c.display()
    ));
    fs::remove_file(c).expect("rm");
}

/// Device nodes under `root/dev` (name, major, minor), made as root.
fn nodes(root: &Path, nodes: &[(&str, u32, u32)]) {
    for (name, major, minor) in nodes {
        let p = root.join("dev").join(name);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        sh(&format!("mknod -m 666 {} c {major} {minor}", p.display()));
    }
}

const LIBS: &str = "usr/lib/x86_64-linux-gnu";

/// A host with NVIDIA's driver, and no CDI spec: nodes, two driver libraries and one that is
/// not the driver's in its ld.so cache, nvidia-smi, and /dev/dri.
fn nvidia_host(root: &Path) {
    nodes(
        root,
        &[
            ("nvidia0", 195, 0),
            ("nvidiactl", 195, 255),
            ("nvidia-modeset", 195, 254),
            ("nvidia-uvm", 235, 0),
            ("nvidia-uvm-tools", 235, 1),
            ("dri/renderD128", 226, 128),
        ],
    );
    for lib in ["libcuda.so.1", "libnvidia-ml.so.1", "libnotnvidia.so.1"] {
        stub_library(&root.join(LIBS), lib);
    }
    fs::create_dir_all(root.join("etc")).expect("mkdir");
    fs::write(root.join("etc/ld.so.conf"), format!("/{LIBS}\n")).expect("write");
    sh(&format!("ldconfig -X -r {}", root.display()));
    fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
    fs::write(
        root.join("usr/bin/nvidia-smi"),
        "#!/bin/sh\necho 'stub nvidia-smi: 1 GPU'\n",
    )
    .expect("write");
    fs::set_permissions(
        root.join("usr/bin/nvidia-smi"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
}

fn debian(env: &Env, reg: &Registry) {
    let r = push_debian(reg);
    env.write_dev_toml(&format!("image = \"{r}\"\n"));
}

fn run_on(env: &Env, root: &Path, args: &[&str]) -> std::process::Output {
    env.dev(args)
        .env("DEV_TEST_HOST_ROOT", root)
        .output()
        .expect("run dev")
}

const SHOW: &str = "for n in /dev/nvidia0 /dev/nvidiactl /dev/nvidia-modeset /dev/nvidia-uvm /dev/nvidia-uvm-tools /dev/dri; do stat -c '%n %F %t:%T' $n 2>/dev/null || echo \"$n absent\"; done; cat /etc/ld.so.conf.d/000-dev-gpu.conf 2>/dev/null; ldconfig -p | grep -E 'libcuda|libnvidia|libnotnvidia' | sed 's/^[[:space:]]*//'; nvidia-smi 2>&1 | head -1";

e2e!(
    nvidia_nodes_libraries_and_smi_are_bound_where_the_toolkit_puts_them,
    |env: Env| {
        let reg = Registry::start();
        debian(&env, &reg);
        let root = env.path("host");
        nvidia_host(&root);
        let out = run_on(&env, &root, &["run", "--gpu", "--", "sh", "-c", SHOW]);
        assert!(out.status.success(), "{}", describe("dev run --gpu", &out));
        assert_eq!(
            stdout(&out),
            "/dev/nvidia0 character special file c3:0
/dev/nvidiactl character special file c3:ff
/dev/nvidia-modeset character special file c3:fe
/dev/nvidia-uvm character special file eb:0
/dev/nvidia-uvm-tools character special file eb:1
/dev/dri absent
/run/dev/gpu/lib
libnvidia-ml.so.1 (libc6,x86-64) => /run/dev/gpu/lib/libnvidia-ml.so.1
libcuda.so.1 (libc6,x86-64) => /run/dev/gpu/lib/libcuda.so.1
stub nvidia-smi: 1 GPU
",
            "{}",
            stderr(&out)
        );
        assert!(
            stderr(&out)
                .contains("opened for the env: NVIDIA (5 device nodes, 2 libraries, nvidia-smi)"),
            "{}",
            stderr(&out)
        );
        // Without --gpu, none of it.
        let out = run_on(&env, &root, &["run", "--", "sh", "-c", SHOW]);
        assert!(out.status.success(), "{}", describe("dev run", &out));
        let text = stdout(&out);
        assert!(text.starts_with("/dev/nvidia0 absent\n"), "{text}");
        assert!(!text.contains("/run/dev/gpu"), "{text}");
    }
);

e2e!(
    auto_takes_dri_and_an_env_starts_without_a_gpu,
    |env: Env| {
        let reg = Registry::start();
        debian(&env, &reg);
        let root = env.path("host");
        nodes(&root, &[("dri/renderD128", 226, 128), ("kfd", 238, 0)]);
        let out = run_on(
            &env,
            &root,
            &[
                "run",
                "--gpu=auto",
                "--",
                "sh",
                "-c",
                "stat -c '%n %t:%T' /dev/dri/renderD128 /dev/kfd; ls /dev | grep -c nvidia",
            ],
        );
        assert_eq!(
            stdout(&out),
            "/dev/dri/renderD128 e2:80\n/dev/kfd ee:0\n0\n",
            "{}",
            describe("dev run --gpu=auto", &out)
        );
        // No GPU at all: auto starts the env and says so; nvidia refuses, with the fix.
        let empty = env.path("empty");
        fs::create_dir_all(&empty).expect("mkdir");
        let out = run_on(&env, &empty, &["run", "--gpu", "--", "true"]);
        assert!(out.status.success(), "{}", describe("dev run --gpu", &out));
        assert!(stderr(&out).contains("no GPU device"), "{}", stderr(&out));
        let out = run_on(&env, &empty, &["run", "--gpu=nvidia", "--", "true"]);
        assert!(
            !out.status.success(),
            "{}",
            describe("dev run --gpu=nvidia", &out)
        );
        let err = stderr(&out);
        assert!(
            err.contains("no NVIDIA device nodes") && err.contains("hint:"),
            "{err}"
        );
    }
);

e2e!(a_cdi_spec_is_applied_and_its_hooks_never_run, |env: Env| {
    let reg = Registry::start();
    debian(&env, &reg);
    let root = env.path("host");
    nodes(&root, &[("nvidia0", 195, 0), ("nvidiactl", 195, 255)]);
    stub_library(&root.join("drv"), "libcuda.so.1");
    // A hook that would leave a mark outside every store, were it run.
    let mark = env.path("outside/hook-ran");
    fs::create_dir_all(root.join("etc/cdi")).expect("mkdir");
    fs::write(
        root.join("etc/cdi/nvidia.json"),
        format!(
            r#"{{"cdiVersion":"0.6.0","kind":"nvidia.com/gpu",
              "devices":[{{"name":"all","containerEdits":{{"deviceNodes":[{{"path":"/dev/nvidia0"}},{{"path":"/dev/nvidiactl"}}]}}}}],
              "containerEdits":{{
                "env":["NVIDIA_VISIBLE_DEVICES=void","DEV_CDI=yes"],
                "mounts":[{{"hostPath":"/drv/libcuda.so.1","containerPath":"/usr/lib/x86_64-linux-gnu/libcuda.so.1","options":["ro","nosuid","nodev","bind"]}}],
                "hooks":[{{"hookName":"createContainer","path":"/bin/sh","args":["sh","-c","touch {}","update-ldcache","--folder","/usr/lib/x86_64-linux-gnu"]}},
                         {{"hookName":"createContainer","path":"/bin/sh","args":["sh","-c","touch {}"]}}]}}}}"#,
            mark.display(),
            mark.display()
        ),
    )
    .expect("write spec");
    let out = run_on(
        &env,
        &root,
        &["run", "--gpu=nvidia", "--", "sh", "-c", "stat -c '%n %t:%T' /dev/nvidia0 /dev/nvidiactl; echo $DEV_CDI; cat /etc/ld.so.conf.d/000-dev-gpu.conf; ldconfig -p | grep libcuda | sed 's/^[[:space:]]*//'; touch /usr/lib/x86_64-linux-gnu/libcuda.so.1 2>/dev/null || echo read-only"],
    );
    assert_eq!(
        stdout(&out),
        "/dev/nvidia0 c3:0
/dev/nvidiactl c3:ff
yes
/usr/lib/x86_64-linux-gnu
libcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1
read-only
",
        "{}",
        describe("dev run --gpu=nvidia (CDI)", &out)
    );
    assert!(!mark.exists(), "a hook of the CDI spec ran on the host");
    assert!(
        stderr(&out).contains("is not run by dev"),
        "{}",
        stderr(&out)
    );
    // A spec that mounts onto the env's /proc is refused, in one line with what to do.
    let spec = fs::read_to_string(root.join("etc/cdi/nvidia.json")).expect("read");
    fs::write(
        root.join("etc/cdi/nvidia.json"),
        spec.replace(
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1\"",
            "/proc/sys/kernel/core_pattern\"",
        ),
    )
    .expect("write");
    let out = run_on(&env, &root, &["run", "--gpu", "--", "true"]);
    assert!(
        !out.status.success(),
        "{}",
        describe("dev run --gpu (bad CDI)", &out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("/proc/sys/kernel/core_pattern") && err.contains("hint:"),
        "{err}"
    );
});

fn doctor(env: &Env, root: &Path, args: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let mut all = vec!["doctor", "--format", "json"];
    all.extend_from_slice(args);
    let out = run_on(env, root, &all);
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", describe("dev doctor --format json", &out)));
    (out.status.code().unwrap_or(-1), checks)
}

fn row<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no `{name}` check in {checks:#?}"))
}

e2e!(doctor_says_what_gui_and_gpu_would_open, |env: Env| {
    let empty = env.path("empty");
    fs::create_dir_all(&empty).expect("mkdir");
    // Not asked: no rows.
    let (_, checks) = doctor(&env, &empty, &[]);
    assert!(
        !checks
            .iter()
            .any(|c| c["check"] == "gui sockets" || c["check"] == "gpu (auto)"),
        "{checks:#?}"
    );
    // Asked, nothing there: warnings with the fix, and doctor still passes.
    let (code, checks) = doctor(&env, &empty, &["--gui", "--gpu"]);
    assert_eq!(code, 0, "{checks:#?}");
    let gui = row(&checks, "gui sockets");
    assert_eq!(gui["status"], "warn", "{gui}");
    assert!(
        gui["fix"].as_str().is_some_and(|f| f.contains("DISPLAY")),
        "{gui}"
    );
    assert_eq!(row(&checks, "gpu (auto)")["status"], "warn", "{checks:#?}");
    // A project that needs NVIDIA's GPU on a host without one: doctor fails, with the fix.
    let reg = Registry::start();
    crate::shell::busybox_project(&env, &reg, "gpu = \"nvidia\"\n");
    let (code, checks) = doctor(&env, &empty, &[]);
    let gpu = row(&checks, "gpu (nvidia)");
    assert_eq!(
        (code, &gpu["status"]),
        (1, &serde_json::json!("fail")),
        "{checks:#?}"
    );
    assert!(
        gpu["fix"]
            .as_str()
            .is_some_and(|f| f.contains("nvidia-smi")),
        "{gpu}"
    );
    // With the GPU there: ok, and what would be opened.
    let root = env.path("host");
    nvidia_host(&root);
    let (code, checks) = doctor(&env, &root, &[]);
    let gpu = row(&checks, "gpu (nvidia)");
    assert_eq!(code, 0, "{checks:#?}");
    assert!(
        gpu["detail"]
            .as_str()
            .is_some_and(|d| d.contains("NVIDIA (5 device nodes, 2 libraries, nvidia-smi)")),
        "{gpu}"
    );
    // `dev config` shows what the project's `gpu` opens of this host, and what it lacks.
    let opens = |root: &Path| {
        let out = run_on(&env, root, &["config", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", describe("dev config --format json", &out)));
        v["opens"].clone()
    };
    assert_eq!(
        opens(&root),
        serde_json::json!(["NVIDIA (5 device nodes, 2 libraries, nvidia-smi)"])
    );
    let none = opens(&empty);
    assert!(
        none.as_array().is_some_and(|a| a.len() == 1
            && a[0]
                .as_str()
                .is_some_and(|l| l.starts_with("error: ") && l.contains("NVIDIA"))),
        "{none}"
    );
});
