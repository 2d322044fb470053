//! What commands print, as a new user reads it: tables whose columns line up, totals that add up.

use crate::common::{stdout, Env, Registry};
use crate::e2e;

/// busybox has no package manager; `manager` lets a tools layer of `[setup] root` alone build.
const TOOLS: &str = "[tools]\nmanager = \"apk\"\n[setup]\nroot = [\"touch /tools-ran\"]\n";

e2e!(df_groups_add_up_to_the_layers_total, |env: Env| {
    let reg = Registry::start();
    crate::shell::busybox_project(&env, &reg, TOOLS);
    env.trust();
    env.ok(&["run", "--", "true"]);
    let u: serde_json::Value =
        serde_json::from_slice(&env.ok(&["system", "df", "--format", "json"]).stdout)
            .expect("json");
    let n = |k: &str| u[k].as_u64().unwrap_or_else(|| panic!("no `{k}` in {u}"));
    assert!(n("tools_layers") >= 1, "the tools layer is counted: {u}");
    assert_eq!(
        n("shared_layers") + n("unique_layers") + n("tools_layers") + n("unused_layers"),
        n("layers"),
        "{u}"
    );
    assert_eq!(
        n("shared_bytes") + n("unique_bytes") + n("tools_bytes") + n("unused_bytes"),
        n("layers_bytes"),
        "{u}"
    );
    let table = stdout(&env.ok(&["system", "df"]));
    assert!(
        table.lines().any(|l| l.trim_start().starts_with("tools")),
        "{table}"
    );
});

e2e!(ps_columns_line_up_whatever_the_image_name, |env: Env| {
    let reg = Registry::start();
    let long = format!("{}/a/rather/long/repository/name/for/busybox", reg.host());
    crate::common::ImageBuilder::new(crate::common::image::busybox_layers()).push(
        &reg,
        long.split_once('/').map_or("", |(_, r)| r),
        Some("with-a-long-tag"),
    );
    env.write_dev_toml(&format!("image = \"{long}:with-a-long-tag\"\n"));
    env.ok(&["start"]);
    let table = stdout(&env.ok(&["ps"]));
    env.ok(&["stop"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    // Every column starts where its header does.
    for header in ["FINGERPRINT", "STATE"] {
        let at = lines[0].find(header).expect("header");
        let cell = &lines[1][at..];
        assert!(
            !cell.starts_with(' ') && lines[1].as_bytes()[at - 1] == b' ',
            "`{header}` is not above its column:\n{table}"
        );
    }
});
