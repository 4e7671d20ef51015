//! The key-value guest between two hosts (network namespaces, see
//! `support/ppmig_netns.rs`: a migration link shaped to 1 Gbit/s with
//! `tbf`, no added delay because this kernel has no `sch_netem`), moved by
//! the real engine and tool, its service address moving with it, under
//! client load from a third namespace; and the faults: the receiver killed
//! mid-stream, the link cut after the pause, the sender killed after the
//! pause. Every time the service must run on exactly one host afterwards
//! with every acknowledged write present.
//!
//! Needs root (skips loudly otherwise). Wall time: about 10 s per test on
//! a quiet machine (debug build, 64-128 MiB guests).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure

mod support;

#[path = "support/ppmig_netns.rs"]
mod ppmig_netns;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use perfplus::backend::arena::workload::kv_client::{
    check_writes_in, Load, LoadConfig, LoadReport,
};
use perfplus::backend::arena::workload::{GuestSpec, WorkloadKind};
use perfplus::backend::arena::{
    check_support, enter_netns, query_outcome, send_guest, Fate, GuestCommand, GuestProcess,
    Outcome, SendConfig,
};
use perfplus::migration::engine::{Progress, ProgressFlow};
use perfplus::migration::policy::PerfPlus;
use ppmig_netns::{Hosts, B_MIG, SERVICE_IP};

const SERVICE_PORT: u16 = 7000;
const RECEIVER_PORT: u16 = 7100;

fn service() -> SocketAddr {
    format!("{SERVICE_IP}:{SERVICE_PORT}").parse().unwrap()
}

fn receiver_addr() -> SocketAddr {
    format!("{B_MIG}:{RECEIVER_PORT}").parse().unwrap()
}

fn can_run(test: &str) -> bool {
    if let Some(why) = ppmig_netns::unavailable() {
        support::skip(test, &why);
        return false;
    }
    if let Err(e) = check_support() {
        support::skip(test, &e.to_string());
        return false;
    }
    true
}

/// The `migrate` example (cargo builds examples for `cargo test`).
fn migrate_tool() -> PathBuf {
    support::profile_dir().join("examples").join("migrate")
}

/// A child process whose output lines are collected (and echoed to stderr
/// for a failing test's log).
struct Tool {
    child: Child,
    lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Tool {
    fn start(name: &'static str, ns: &str, args: &[&str]) -> Self {
        let mut child = Hosts::command(ns, migrate_tool().to_str().unwrap())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the migrate tool");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[{name}] {line}");
                    let _ = tx.send(line);
                }
            });
        }
        Self { child, lines, name }
    }

    /// Wait (up to `within`) for a line starting with `prefix`.
    fn wait_for(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("{}: no line {prefix:?} ({e})", self.name),
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `migrate receive` on host b, taking the service address over before
/// each adopted guest starts.
fn start_receiver(hosts: &Hosts, io_timeout_ms: u64) -> Tool {
    let listen = receiver_addr().to_string();
    let take_over = hosts.take_over_command();
    let timeout = io_timeout_ms.to_string();
    let tool = Tool::start(
        "receiver",
        &hosts.b,
        &[
            "receive",
            "--listen",
            &listen,
            "--on-start",
            &take_over,
            "--io-timeout-ms",
            &timeout,
        ],
    );
    tool.wait_for("listening", Duration::from_secs(30));
    tool
}

/// Client load on the service from the client network c.
fn start_load(hosts: &Hosts, keys: u64) -> Load {
    let mut config = LoadConfig::new(service(), keys);
    config.connections = 3;
    config.netns = Some(Hosts::path(&hosts.c));
    Load::start(&config).unwrap()
}

/// Wait (generously, never asserting on time) until the load has more
/// than `n` acknowledged writes.
fn wait_for_writes_beyond(load: &Load, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.writes_acknowledged() <= n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stop the load after more writes went through, and check every
/// acknowledged write from the client network.
fn finish_load(hosts: &Hosts, load: Load) -> LoadReport {
    let before = load.writes_acknowledged();
    wait_for_writes_beyond(&load, before + 500);
    let report = load.stop();
    let check = check_writes_in(
        Some(&Hosts::path(&hosts.c)),
        service(),
        &report,
        Duration::from_secs(20),
    )
    .unwrap();
    eprintln!(
        "load: {} writes acknowledged, {} unknown, gap {:.1} ms; {check:?}",
        report.writes_acknowledged, report.writes_unknown, report.service_gap_ms
    );
    assert!(
        report.writes_acknowledged > before,
        "the service stopped taking writes"
    );
    assert_eq!(check.writes_lost, 0, "acknowledged writes lost: {check:?}");
    assert_eq!(check.writes_phantom, 0, "writes never sent: {check:?}");
    assert_eq!(check.writes_found, report.writes_acknowledged);
    report
}

/// Processes of a guest program (keeper and workload) in `ns`, beyond the
/// `expected_tools` tool processes there.
fn guest_processes(ns: &str, expected_tools: usize) -> usize {
    ppmig_netns::pids_in(ns)
        .len()
        .saturating_sub(expected_tools)
}

/// Wait until `ns` holds exactly `want` guest processes besides the tools.
fn wait_for_guest_processes(ns: &str, tools: usize, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = guest_processes(ns, tools);
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A kv guest of `pages` on host a, serving the service address.
fn start_source(hosts: &Hosts, pages: u64) -> (GuestProcess, GuestSpec) {
    let mut spec = GuestSpec::new(WorkloadKind::Kv, pages);
    spec.keys = 50_000;
    spec.listen = Some(service());
    let command = GuestCommand::new(
        "ip",
        &[
            "netns",
            "exec",
            &hosts.a,
            env!("CARGO_BIN_EXE_perfplus-arena-guest"),
        ],
    );
    (GuestProcess::spawn(&command, &spec).unwrap(), spec)
}

/// Run `f` on a thread inside host a's namespace (where the sender's
/// socket must live).
fn on_host_a<T: Send>(hosts: &Hosts, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(&Hosts::path(&hosts.a)).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn kv_guest_moves_to_another_host_with_the_tool_and_loses_no_acknowledged_write() {
    let test = "kv_guest_moves_to_another_host_with_the_tool_and_loses_no_acknowledged_write";
    if !can_run(test) {
        return;
    }
    let hosts = Hosts::create("move").unwrap();
    let _receiver = start_receiver(&hosts, 10_000);
    let json = support::scratch_dir("arena_netns_move").join("report.json");
    let to = receiver_addr().to_string();
    let svc = service().to_string();
    let mut sender = Tool::start(
        "sender",
        &hosts.a,
        &[
            "send",
            "--backend",
            "arena",
            "--workload",
            "kv",
            "--size-mib",
            "64",
            "--keys",
            "50000",
            "--to",
            &to,
            "--policy",
            "perfplus",
            "--service",
            &svc,
            "--client-netns",
            &hosts.c,
            "--connections",
            "3",
            "--warmup-ms",
            "1500",
            "--after-ms",
            "1500",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    let status = sender.child.wait().unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the tool wrote its report"))
            .unwrap();
    eprintln!("{report:#}");
    assert!(status.success(), "migrate send failed: {status}");
    assert_eq!(report["result"], "moved");
    assert_eq!(report["verified"], true);
    let acked = report["writes_acknowledged"].as_u64().unwrap();
    assert!(acked > 0, "the client saw no writes");
    assert_eq!(report["writes_lost"], 0);
    assert_eq!(report["writes_found"].as_u64(), Some(acked));
    // The service runs on b now (its guest: keeper and workload), nothing on a.
    assert_eq!(
        wait_for_guest_processes(&hosts.a, 0, 0),
        0,
        "a guest is left on host a"
    );
    assert_eq!(
        wait_for_guest_processes(&hosts.b, 1, 2),
        2,
        "the adopted guest does not run on host b"
    );
    // And it still answers at the service address, from the client network.
    let mut config = LoadConfig::new(service(), 50_000);
    config.connections = 1;
    config.netns = Some(Hosts::path(&hosts.c));
    let load = Load::start(&config).unwrap();
    wait_for_writes_beyond(&load, 100);
    assert!(load.stop().writes_acknowledged > 100);
}

#[test]
fn a_receiver_killed_mid_stream_leaves_the_guest_serving_at_the_source() {
    let test = "a_receiver_killed_mid_stream_leaves_the_guest_serving_at_the_source";
    if !can_run(test) {
        return;
    }
    let hosts = Hosts::create("rxkill").unwrap();
    let mut receiver = start_receiver(&hosts, 10_000);
    let (guest, spec) = start_source(&hosts, 32_768);
    let load = start_load(&hosts, spec.keys);
    wait_for_writes_beyond(&load, 1000);

    let receiver_pid = receiver.pid();
    let mut config = SendConfig::new(SendConfig::unique_id("rxkill"));
    config.io_timeout = Duration::from_secs(5);
    let result = on_host_a(&hosts, || {
        let mut observer = |p: &Progress| {
            if let Progress::Decided { stats, .. } = p {
                if stats.iteration == 1 {
                    // Mid-stream: the full pass is through, the rounds go on.
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &receiver_pid.to_string()])
                        .status();
                }
            }
            ProgressFlow::Continue
        };
        send_guest(
            guest,
            receiver_addr(),
            &PerfPlus::default(),
            &config,
            &mut observer,
        )
    });
    receiver.kill();
    let failure = result.expect_err("the migration cannot succeed without its receiver");
    eprintln!("sender: {}", failure.error);
    let Fate::RunsHere(source) = failure.fate else {
        panic!("the guest should run on at the source: {:?}", failure.fate);
    };
    assert!(source.listen().is_some());
    // Its incoming copy died with the receiver: nothing runs on b.
    assert_eq!(
        wait_for_guest_processes(&hosts.b, 0, 0),
        0,
        "a guest is left on host b"
    );
    finish_load(&hosts, load);
    drop(source);
}

#[test]
fn a_link_cut_after_the_pause_leaves_the_guest_serving_at_the_source() {
    let test = "a_link_cut_after_the_pause_leaves_the_guest_serving_at_the_source";
    if !can_run(test) {
        return;
    }
    let hosts = Hosts::create("cut").unwrap();
    let _receiver = start_receiver(&hosts, 3_000);
    let (guest, spec) = start_source(&hosts, 16_384);
    let load = start_load(&hosts, spec.keys);
    wait_for_writes_beyond(&load, 1000);

    let id = SendConfig::unique_id("cut");
    let mut config = SendConfig::new(id.clone());
    config.io_timeout = Duration::from_secs(3);
    config.settle_timeout = Duration::from_secs(2);
    let result = on_host_a(&hosts, || {
        let mut observer = |p: &Progress| {
            if let Progress::Paused { .. } = p {
                hosts.set_link(false).unwrap();
            }
            ProgressFlow::Continue
        };
        send_guest(
            guest,
            receiver_addr(),
            &PerfPlus::default(),
            &config,
            &mut observer,
        )
    });
    hosts.set_link(true).unwrap();
    let failure = result.expect_err("the migration cannot finish over a cut link");
    eprintln!("sender: {}", failure.error);
    let Fate::RunsHere(source) = failure.fate else {
        panic!("the guest should run on at the source: {:?}", failure.fate);
    };
    // The receiver gave the migration up and says so; its copy is gone.
    let outcome = on_host_a(&hosts, || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match query_outcome(receiver_addr(), &id, Duration::from_secs(5)) {
                Ok(o) => return o,
                Err(e) if Instant::now() > deadline => panic!("no status answer: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    assert_eq!(outcome, Outcome::Aborted);
    assert_eq!(
        wait_for_guest_processes(&hosts.b, 1, 0),
        0,
        "a guest is left on host b"
    );
    finish_load(&hosts, load);
    drop(source);
}

#[test]
fn a_sender_killed_after_the_pause_leaves_the_guest_on_exactly_one_host() {
    let test = "a_sender_killed_after_the_pause_leaves_the_guest_on_exactly_one_host";
    if !can_run(test) {
        return;
    }
    let hosts = Hosts::create("txkill").unwrap();
    let _receiver = start_receiver(&hosts, 10_000);
    // Stop-and-copy pauses first and then moves all 128 MiB over the
    // 1 Gbit/s link (about a second): the sender dies in the middle of it.
    let to = receiver_addr().to_string();
    let svc = service().to_string();
    let mut sender = Tool::start(
        "sender",
        &hosts.a,
        &[
            "send",
            "--backend",
            "arena",
            "--workload",
            "kv",
            "--size-mib",
            "128",
            "--keys",
            "50000",
            "--to",
            &to,
            "--policy",
            "stop-and-copy",
            "--service",
            &svc,
            "--connections",
            "0",
            "--warmup-ms",
            "3000",
            "--fill-pct",
            "100",
        ],
    );
    let load = start_load(&hosts, 50_000);
    wait_for_writes_beyond(&load, 1000);
    sender.wait_for("paused at", Duration::from_secs(60));
    let acked_at_kill = load.writes_acknowledged();
    sender.kill();
    // The guest's keeper learns from the receiver that the migration
    // aborted (its stream ended early) and continues the guest on host a.
    wait_for_writes_beyond(&load, acked_at_kill + 500);
    let report = finish_load(&hosts, load);
    assert!(report.writes_acknowledged > acked_at_kill);
    assert_eq!(
        wait_for_guest_processes(&hosts.a, 0, 2),
        2,
        "the guest should run on host a"
    );
    assert_eq!(
        wait_for_guest_processes(&hosts.b, 1, 0),
        0,
        "a guest is left on host b"
    );
}
