//! Links GCC's unwinder (libgcc_eh) into `dev` on GNU targets instead of loading libgcc_s.so at
//! every start: that load, with its constructor's CPUID probes, costs about 0.1 ms, and a start
//! of an env is a few ms (see README, Performance). Panics and backtraces work as before.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "gnu");
    // A static build (crt-static) links libgcc_eh already.
    let static_crt = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|f| f.split(',').any(|f| f == "crt-static"));
    if gnu && !static_crt {
        println!("cargo:rustc-link-lib=static=gcc_eh");
    }
}
