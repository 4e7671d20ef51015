//! `examples/c/migration.c`: a simulated guest (16 MiB; 1 MiB under
//! valgrind) live-migrated over loopback
//! TCP from C, with progress, the report checked against the receiver's
//! (equal guest memory digests), NULL and bad arguments refused with useful
//! messages, a cancelling progress callback and a refusing receiver that
//! leave the guest at the source. Linked shared and static, and run under
//! valgrind.

mod support;

use support::c::{assert_passed, build, run, run_under_valgrind, Linkage};
use support::{repo_root, scratch_dir};

const EXPECTED: &[&str] = &[
    "ok: last error: perfplus_migration_config_new: argument `out` is NULL",
    "ok: last error: perfplus_migration_send_sim: argument `config` is NULL",
    "ok: last error: perfplus_migration_send_sim: argument `workload_path` is NULL",
    "ok: last error: perfplus_migration_send_sim: argument `to_address` is NULL",
    "ok: last error: perfplus_migration_send_sim: argument `out` is NULL",
    "ok: last error: perfplus_receiver_new: argument `listen_address` is NULL",
    "ok: a bad workload file gives PERFPLUS_RESULT_INVALID_CONFIG naming the field",
    "ok: no receiver gives PERFPLUS_RESULT_CONNECTION_LOST",
    "ok: one thread before the receiver starts (1)",
    "ok: the guest moved: ok",
    "ok: progress: rounds, then paused, verified, resumed, in order",
    "ok: progress: every batch sent, counted within its round",
    "ok: the report's numbers add up",
    "ok: the receiver's guest memory equals the source's, page for page",
    "ok: cancelling gives PERFPLUS_RESULT_MIGRATION_ABORTED",
    "ok: last error: migration aborted during pre-copy round 1; the guest is running at the source: cancelled by the caller",
    "ok: no report is written on failure",
    "ok: every thread joined (1 left)",
    "PASSED: 0 failed",
];

/// Lines only the full run (with the baseline migration) prints.
const BASELINE: &[&str] = &[
    "ok: xen-default moved the guest with raw pages only: ok",
    "ok: and the receiver holds the same memory",
];

/// The web workload at 1/`scale` of its size (4 GiB) and write rates.
fn args(name: &str, scale: u32) -> (Vec<String>, std::path::PathBuf) {
    let dir = scratch_dir(name);
    let workload = repo_root().join("benches/workloads/web.toml");
    (
        vec![
            workload.display().to_string(),
            scale.to_string(),
            dir.display().to_string(),
        ],
        dir,
    )
}

#[test]
fn migration_program_passes_linked_shared() {
    let binary = build("migration", Linkage::Shared, &[]);
    let (args, _dir) = args("c-migration-shared", 256);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&binary, &args);
    assert_passed("migration (shared)", &out, EXPECTED);
    assert_passed("migration (shared)", &out, BASELINE);
}

#[test]
fn migration_program_passes_linked_static() {
    let binary = build("migration", Linkage::Static, &[]);
    let (args, _dir) = args("c-migration-static", 256);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&binary, &args);
    assert_passed("migration (static)", &out, EXPECTED);
    assert_passed("migration (static)", &out, BASELINE);
}

#[test]
fn migration_program_is_clean_under_valgrind() {
    let binary = build("migration", Linkage::Shared, &[]);
    // A 1 MiB guest and no baseline run: memcheck runs the engine (a debug
    // build) about 50 times slower, on one core.
    let (mut args, _dir) = args("c-migration-valgrind", 4096);
    args.push("--no-baseline".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Some(out) =
        run_under_valgrind("migration_program_is_clean_under_valgrind", &binary, &args)
    {
        assert_passed("migration (valgrind)", &out, EXPECTED);
    }
}
