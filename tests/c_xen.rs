//! `examples/c/xen_migrate.c`: the error paths of `perfplus_xen_migrate`
//! and its options from C, on a host without Xen (NULL and invalid
//! arguments, no hypervisor), linked shared and static, and under
//! valgrind. The migration itself runs in the Xen test bed
//! (`tests/xen_bed.rs`).

mod support;

use std::path::Path;

use support::c::{assert_passed, build, run, run_under_valgrind, Linkage};

const EXPECTED: &[&str] = &[
    "ok: options_new(NULL) gives PERFPLUS_RESULT_NULL_ARGUMENT",
    "ok: an unknown policy gives PERFPLUS_RESULT_INVALID_ARGUMENT",
    "ok: its message lists the policies",
    "ok: last error: perfplus_xen_migrate_options_set_policy: argument `options` is NULL",
    "ok: a negative downtime target gives PERFPLUS_RESULT_INVALID_ARGUMENT",
    "ok: Perf+ takes a downtime target",
    "ok: xen-default has no downtime target",
    "ok: valid options are taken",
    "ok: last error: perfplus_xen_migrate: argument `domain` is NULL",
    "ok: a domain that is not UTF-8 gives PERFPLUS_RESULT_INVALID_UTF8",
    "ok: without Xen: PERFPLUS_RESULT_HYPERVISOR_UNAVAILABLE (got PERFPLUS_RESULT_HYPERVISOR_UNAVAILABLE)",
    "ok: last error: no Xen hypervisor on this host (cannot open /dev/xen/privcmd)",
    "ok: no progress event before anything started",
    "ok: the report is untouched after failures",
    "PASSED: 0 failed",
];

/// These checks expect a host without a hypervisor.
fn skip_on_xen(test: &str) -> bool {
    let xen = Path::new("/dev/xen/privcmd").exists() || Path::new("/proc/xen/privcmd").exists();
    if xen {
        support::skip(test, "this host runs Xen (the checks expect none)");
    }
    xen
}

#[test]
fn xen_migrate_error_paths_pass_linked_shared() {
    if skip_on_xen("xen_migrate_error_paths_pass_linked_shared") {
        return;
    }
    let binary = build("xen_migrate", Linkage::Shared, &[]);
    assert_passed("xen_migrate (shared)", &run(&binary, &[]), EXPECTED);
}

#[test]
fn xen_migrate_error_paths_pass_linked_static() {
    if skip_on_xen("xen_migrate_error_paths_pass_linked_static") {
        return;
    }
    let binary = build("xen_migrate", Linkage::Static, &[]);
    assert_passed("xen_migrate (static)", &run(&binary, &[]), EXPECTED);
}

#[test]
fn xen_migrate_error_paths_are_clean_under_valgrind() {
    if skip_on_xen("xen_migrate_error_paths_are_clean_under_valgrind") {
        return;
    }
    let binary = build("xen_migrate", Linkage::Shared, &[]);
    if let Some(out) = run_under_valgrind(
        "xen_migrate_error_paths_are_clean_under_valgrind",
        &binary,
        &[],
    ) {
        assert_passed("xen_migrate (valgrind)", &out, EXPECTED);
    }
}
