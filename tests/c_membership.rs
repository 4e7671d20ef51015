//! `examples/c/membership.c`: two cluster nodes driven from C on loopback,
//! NULL and bad arguments refused with useful messages, no thread before
//! start, the callback's userdata released once. Linked shared and static,
//! and run under valgrind.

mod support;

use support::c::{assert_passed, build, run, run_under_valgrind, Linkage};
use support::scratch_dir;

const EXPECTED: &[&str] = &[
    "ok: NULL cluster_name gives PERFPLUS_RESULT_NULL_ARGUMENT",
    "ok: last error: perfplus_node_config_new: argument `cluster_name` is NULL",
    "ok: last error: perfplus_node_config_add_node: argument `config` is NULL",
    "ok: last error: perfplus_node_start: argument `config` is NULL",
    "ok: a failed start still releases the userdata",
    "ok: last error: perfplus_node_members: argument `node` is NULL",
    "ok: one thread before any node starts (1)",
    "ok: each node sees the other alive",
    "ok: node 1 saw node 2 leave cleanly",
    "ok: every thread joined (1 left)",
    "PASSED: 0 failed",
];

fn ports() -> [String; 2] {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    [
        a.local_addr().expect("local addr").port().to_string(),
        b.local_addr().expect("local addr").port().to_string(),
    ]
}

fn args(name: &str) -> (Vec<String>, std::path::PathBuf) {
    let [a, b] = ports();
    let dir = scratch_dir(name);
    (vec![a, b, dir.display().to_string()], dir)
}

#[test]
fn membership_program_passes_linked_shared() {
    let binary = build("membership", Linkage::Shared, &[]);
    let (args, _dir) = args("c-membership-shared");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_passed("membership (shared)", &run(&binary, &args), EXPECTED);
}

#[test]
fn membership_program_passes_linked_static() {
    let binary = build("membership", Linkage::Static, &[]);
    let (args, _dir) = args("c-membership-static");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_passed("membership (static)", &run(&binary, &args), EXPECTED);
}

#[test]
fn membership_program_is_clean_under_valgrind() {
    let binary = build("membership", Linkage::Shared, &[]);
    let (args, _dir) = args("c-membership-valgrind");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Some(out) =
        run_under_valgrind("membership_program_is_clean_under_valgrind", &binary, &args)
    {
        assert_passed("membership (valgrind)", &out, EXPECTED);
    }
}
