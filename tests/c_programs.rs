//! The C programs in `examples/c/`, compiled against `include/perfplus.h`,
//! linked against the shared and the static library, run, and run again
//! under valgrind.

mod support;

use support::c::{assert_passed, build, run, run_under_valgrind, Linkage};

const ERRORS_EXPECTED: &[&str] = &[
    "ok: NULL buf gives PERFPLUS_RESULT_NULL_ARGUMENT",
    "ok: last error: perfplus_last_error: argument `buf` is NULL",
    "ok: NULL out_len gives PERFPLUS_RESULT_NULL_ARGUMENT, buf untouched",
    "ok: last error: perfplus_last_error: argument `out_len` is NULL",
    "ok: len 0 gives PERFPLUS_RESULT_BUFFER_TOO_SMALL, out_len untouched",
    "ok: another thread sees no last error",
    "ok: name of 4242 is PERFPLUS_RESULT_UNKNOWN",
    "PASSED: 0 failed",
];

#[test]
fn errors_program_passes_linked_shared() {
    let binary = build("errors", Linkage::Shared, &[]);
    assert_passed("errors (shared)", &run(&binary, &[]), ERRORS_EXPECTED);
}

#[test]
fn errors_program_passes_linked_static() {
    let binary = build("errors", Linkage::Static, &[]);
    assert_passed("errors (static)", &run(&binary, &[]), ERRORS_EXPECTED);
}

#[test]
fn errors_program_is_clean_under_valgrind() {
    let binary = build("errors", Linkage::Shared, &[]);
    if let Some(out) = run_under_valgrind("errors_program_is_clean_under_valgrind", &binary, &[]) {
        assert_passed("errors (valgrind)", &out, ERRORS_EXPECTED);
    }
}
