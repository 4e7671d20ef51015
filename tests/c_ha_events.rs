//! `examples/c/ha_events.c`: two HA nodes on loopback (one in a forked
//! child: two hosts) keep an `ocf:heartbeat:Dummy` resource running, and
//! the C callback receives every decision with its reason: the cold start,
//! the evacuation of a host put in standby, the restart after a host left.
//! NULL and bad arguments refused with useful messages, stop refused from
//! inside the callback, a clean stop. Linked shared and static, and run
//! under valgrind. Needs resource-agents (installed by `.ci/run`).

mod support;

use std::path::Path;

use support::c::{assert_passed, build, run, run_under_valgrind, Linkage};
use support::{scratch_dir, skip};

const EXPECTED: &[&str] = &[
    "ok: last error: perfplus_ha_node_start: argument `config_path` is NULL",
    "ok: a failed start still releases the userdata",
    "ok: last error: perfplus_ha_node_start: argument `out` is NULL",
    "ok: last error: perfplus_ha_node_status_json: argument `node` is NULL",
    "ok: last error: perfplus_ha_node_standby: argument `node` is NULL",
    "ok: last error: perfplus_ha_node_stop: argument `node` is NULL",
    "ok: a missing configuration gives PERFPLUS_RESULT_IO naming the file",
    "ok: an unknown node name gives PERFPLUS_RESULT_UNKNOWN_NODE listing the nodes",
    "ok: one thread before any node starts (1)",
    "ok: alpha started: ok",
    "ok: svc runs on alpha, which decides",
    "ok: alpha took the cold start of its home resource",
    "ok: stopping from the callback gives PERFPLUS_RESULT_INVALID_STATE",
    "ok: alpha decided to migrate svc to beta because alpha is in standby",
    "ok: the migration finished",
    "ok: svc runs on beta",
    "ok: beta stopped cleanly (exit status 0)",
    "ok: alpha decided to start svc again on alpha",
    "ok: svc runs on alpha again",
    "ok: stop released the userdata once",
    "ok: every thread joined (1 left)",
    "PASSED: 0 failed",
];

fn dummy_available(test: &str) -> bool {
    let ok = Path::new("/usr/lib/ocf/resource.d/heartbeat/Dummy").is_file();
    if !ok {
        skip(
            test,
            "resource-agents is not installed (no ocf:heartbeat:Dummy)",
        );
    }
    ok
}

/// Scratch directory, two free UDP ports (heartbeats) and two free TCP
/// ports (control channels).
fn args(name: &str) -> Vec<String> {
    let udp: Vec<_> = (0..2)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp"))
        .collect();
    let tcp: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp"))
        .collect();
    let mut args = vec![scratch_dir(name).display().to_string()];
    for port in udp
        .iter()
        .map(|s| s.local_addr().expect("addr").port())
        .chain(tcp.iter().map(|s| s.local_addr().expect("addr").port()))
    {
        args.push(port.to_string());
    }
    args
}

#[test]
fn ha_events_program_passes_linked_shared() {
    if !dummy_available("ha_events_program_passes_linked_shared") {
        return;
    }
    let binary = build("ha_events", Linkage::Shared, &[]);
    let args = args("c-ha-events-shared");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_passed("ha_events (shared)", &run(&binary, &args), EXPECTED);
}

#[test]
fn ha_events_program_passes_linked_static() {
    if !dummy_available("ha_events_program_passes_linked_static") {
        return;
    }
    let binary = build("ha_events", Linkage::Static, &[]);
    let args = args("c-ha-events-static");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_passed("ha_events (static)", &run(&binary, &args), EXPECTED);
}

#[test]
fn ha_events_program_is_clean_under_valgrind() {
    if !dummy_available("ha_events_program_is_clean_under_valgrind") {
        return;
    }
    let binary = build("ha_events", Linkage::Shared, &[]);
    let args = args("c-ha-events-valgrind");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Some(out) =
        run_under_valgrind("ha_events_program_is_clean_under_valgrind", &binary, &args)
    {
        assert_passed("ha_events (valgrind)", &out, EXPECTED);
    }
}
