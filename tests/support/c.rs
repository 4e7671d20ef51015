//! Building and running the C programs in `examples/c/` against the
//! library, the way a C user would: `#include "perfplus.h"`, link with
//! `-lperfplus` (shared) or `libperfplus.a` (static).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{have_program, profile_dir, repo_root, scratch_dir, skip};

/// How a C program is linked against perfplus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// `-lperfplus` against `libperfplus.so`, found through an rpath.
    Shared,
    /// `libperfplus.a` plus the system libraries Rust's std needs.
    Static,
}

/// The directory holding the libraries `cargo test` built.
pub fn lib_dir() -> PathBuf {
    // `cargo test` builds the cdylib and staticlib next to the test
    // binaries (target/<profile>/deps); only `cargo build` copies them up.
    profile_dir().join("deps")
}

/// gcc arguments that link a program or plugin against this build's
/// `libperfplus.so`, found at run time through an rpath.
pub fn shared_link_args() -> Vec<String> {
    let dir = lib_dir();
    vec![
        format!("-L{}", dir.display()),
        // DT_RPATH, not DT_RUNPATH: cargo test sets LD_LIBRARY_PATH to
        // target/<profile>, where a stale copy from `cargo build` may sit,
        // and LD_LIBRARY_PATH outranks DT_RUNPATH (also in children such as
        // heartbeat, which inherit it).
        "-Wl,--disable-new-dtags".into(),
        format!("-Wl,-rpath,{}", dir.display()),
        "-lperfplus".into(),
    ]
}

/// Compile `examples/c/<name>.c` (plus `extra_sources`) and return the binary.
pub fn build(name: &str, linkage: Linkage, extra_args: &[&str]) -> PathBuf {
    let lib_dir = lib_dir();
    // One directory per build: tests running in parallel may build the same
    // program, and overwriting a binary another test is running fails with
    // ETXTBSY ("Text file busy").
    static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let build = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_dir = scratch_dir(&format!("c-{name}-{linkage:?}-{build}"));
    let binary = out_dir.join(name);
    let source = repo_root().join("examples/c").join(format!("{name}.c"));
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "gcc".into()));
    cc.args([
        "-std=c11",
        "-D_GNU_SOURCE",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-g",
        "-O1",
    ])
    .arg("-I")
    .arg(repo_root().join("include"))
    .arg(&source)
    .args(extra_args)
    .arg("-o")
    .arg(&binary);
    match linkage {
        Linkage::Shared => {
            cc.args(shared_link_args());
        }
        Linkage::Static => {
            cc.arg(lib_dir.join("libperfplus.a")).args([
                "-lgcc_s",
                "-lutil",
                "-lrt",
                "-lpthread",
                "-lm",
                "-ldl",
                "-lc",
            ]);
        }
    }
    cc.arg("-lpthread");
    let out = cc.output().expect("run the C compiler (gcc)");
    assert!(
        out.status.success(),
        "compiling {} ({linkage:?}) failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

/// Run a built program, with `args`, and return its output.
pub fn run(binary: &Path, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()))
}

/// Run under valgrind (memcheck, full leak check, errors fail the run), or
/// skip loudly if valgrind is not installed. Returns `None` when skipped.
pub fn run_under_valgrind(test: &str, binary: &Path, args: &[&str]) -> Option<Output> {
    if !have_program("valgrind") {
        skip(test, "valgrind is not installed (apt-get install valgrind)");
        return None;
    }
    let out = Command::new("valgrind")
        .args([
            // Valgrind runs one thread at a time; its default lock lets a
            // busy thread starve the others for seconds, which a cluster
            // node's timers see as multi-second pauses.
            "--fair-sched=yes",
            "--quiet",
            "--error-exitcode=99",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
        ])
        .arg(binary)
        .args(args)
        .output()
        .expect("run valgrind");
    Some(out)
}

/// Assert that a program exited 0 and printed every line in `expected`.
pub fn assert_passed(what: &str, out: &Output, expected: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} exited with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for line in expected {
        assert!(
            stdout.lines().any(|l| l == *line),
            "{what}: expected the line {line:?}\nstdout:\n{stdout}"
        );
    }
}
