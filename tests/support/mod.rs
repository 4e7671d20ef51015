//! Shared helpers for integration tests: finding build outputs and skipping
//! loudly (never silently) when a test needs something this machine lacks.

#![allow(dead_code)]

pub mod c;
pub mod heartbeat;
pub mod lab;
pub mod netem;
pub mod netns;
pub mod ppmem_netns;

use std::path::{Path, PathBuf};
use std::process::Command;

/// True when running under CI (`CI=true`), where nothing may be skipped:
/// `.ci/run` installs everything the tests need.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skip the calling test with a loud message, or fail it in CI.
pub fn skip(test: &str, why: &str) {
    if in_ci() {
        panic!("{test}: cannot run in CI: {why} (.ci/run should have provided it)");
    }
    eprintln!("\n*** SKIPPED {test}: {why}\n");
}

/// Whether `program` can be run from PATH.
pub fn have_program(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The cargo profile directory holding the test binary (`target/debug`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The example program `name`, built for this test profile first (cargo
/// test builds the examples, but `cargo test --test X` alone does not
/// rebuild them, and a stale example would test old code). Cheap when it
/// is current.
pub fn example_binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = profile_dir().join("examples").join(name);
    if !built.iter().any(|b| b == name) {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(repo_root())
            .args(["build", "--quiet", "--example", name]);
        if profile_dir().file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        let out = cargo.output().expect("run cargo to build an example");
        assert!(
            out.status.success(),
            "cargo build --example {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        built.push(name.to_string());
    }
    path
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
