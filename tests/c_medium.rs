//! `examples/c/medium.c`: the redundant authenticated medium through the C
//! ABI (NULL checks, fork before use, dedup, wrong key, link health), linked
//! shared and static, and under valgrind.

mod support;

use std::os::unix::fs::PermissionsExt as _;

use support::c::{assert_passed, build, run, run_under_valgrind, Linkage};

const EXPECTED: &[&str] = &[
    "ok: config_new(NULL) is NULL_ARGUMENT",
    "ok: last error: perfplus_medium_config_new: argument `out` is NULL",
    "ok: no thread started by open (1 threads)",
    "ok: the forked child sent 4 messages",
    "ok: the parent received the 3 messages in order, once each",
    "ok: then nothing: TIMEOUT, len untouched",
    "ok: 3 delivered, 4 duplicates from the second link (3, 4)",
    "ok: the forged frame is counted, not delivered",
    "PASSED: 0 failed",
];

fn keyfile(name: &str) -> String {
    let dir = support::scratch_dir(name);
    let path = dir.join("key");
    std::fs::write(&path, "a key file holding sixteen+ bytes\n").expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    path.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn medium_program_passes_linked_shared() {
    let binary = build("medium", Linkage::Shared, &[]);
    let key = keyfile("c-medium-shared");
    assert_passed(
        "medium (shared)",
        &run(&binary, &["47811", "47812", &key]),
        EXPECTED,
    );
}

#[test]
fn medium_program_passes_linked_static() {
    let binary = build("medium", Linkage::Static, &[]);
    let key = keyfile("c-medium-static");
    assert_passed(
        "medium (static)",
        &run(&binary, &["47821", "47822", &key]),
        EXPECTED,
    );
}

#[test]
fn medium_program_is_clean_under_valgrind() {
    let binary = build("medium", Linkage::Shared, &[]);
    let key = keyfile("c-medium-valgrind");
    if let Some(out) = run_under_valgrind(
        "medium_program_is_clean_under_valgrind",
        &binary,
        &["47831", "47832", &key],
    ) {
        assert_passed("medium (valgrind)", &out, EXPECTED);
    }
}
