//! `examples/c/policy.c`: Perf+'s stop rule and the baselines called from C
//! on hand-made round stats and from a C pre-copy loop through the round
//! tracker; NULL and bad stats refused by name. Linked shared and static,
//! and run under valgrind.

mod support;

use support::c::{assert_passed, build, run, run_under_valgrind, Linkage};

const EXPECTED: &[&str] = &[
    "ok: last error: perfplus_policy_new: argument `name` is NULL",
    "ok: last error: perfplus_policy_decide: argument `policy` is NULL",
    "ok: last error: perfplus_policy_decide: argument `stats` is NULL",
    "ok: last error: perfplus_policy_decide: argument `out` is NULL",
    "ok: last error: perfplus_round_tracker_snapshot: argument `tracker` is NULL",
    "ok: a NaN field is refused by name, nothing written",
    "ok: perfplus, prediction 60 ms after 90: CONTINUE (the dirty set is still shrinking)",
    "ok: perfplus, prediction 85 ms after 90, for a while: STOP_AND_COPY (the dirty set stopped shrinking)",
    "ok: perfplus before anything was sent: CONTINUE (first full pass)",
    "ok: xen-default after 5 rounds: STOP_AND_COPY (5 rounds done)",
    "ok: xen-default with 49 dirty pages: STOP_AND_COPY (under 50 dirty pages)",
    "ok: qemu-default, 73000 pages at 1 GB/s: STOP_AND_COPY (pending bytes fit in the downtime limit)",
    "ok: qemu-default after 30 minutes above its limit: ABORT (did not converge within 30 minutes)",
    "ok: stop-and-copy: STOP_AND_COPY (non-live)",
    "ok: perfplus stops once more rounds cannot lower the downtime (3 rounds: more rounds cannot lower the downtime)",
    "ok: xen-default stops by its rule (4 rounds: under 50 dirty pages)",
    "ok: perfplus stops when the dirty set stops shrinking (4 rounds: the dirty set stopped shrinking)",
    "PASSED: 0 failed",
];

#[test]
fn policy_program_passes_linked_shared() {
    let binary = build("policy", Linkage::Shared, &[]);
    assert_passed("policy (shared)", &run(&binary, &[]), EXPECTED);
}

#[test]
fn policy_program_passes_linked_static() {
    let binary = build("policy", Linkage::Static, &[]);
    assert_passed("policy (static)", &run(&binary, &[]), EXPECTED);
}

#[test]
fn policy_program_is_clean_under_valgrind() {
    let binary = build("policy", Linkage::Shared, &[]);
    if let Some(out) = run_under_valgrind("policy_program_is_clean_under_valgrind", &binary, &[]) {
        assert_passed("policy (valgrind)", &out, EXPECTED);
    }
}
