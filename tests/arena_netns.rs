//! The key-value guest between two "hosts": network namespaces joined by a
//! veth pair shaped with `tc` to 1 Gbit/s, the service address moving with
//! the guest. Needs root (skips loudly otherwise); namespaces are named
//! `ppmig-*`, addresses are in 10.202.0.0/16.
//!
//! ```text
//!   ppmig-<tag>-a (source host)               ppmig-<tag>-b (destination host)
//!   lo: 10.202.1.1/32 (service)  ──move──▶    lo: 10.202.1.1/32
//!   mig0 10.202.0.1/24 ══ veth, tbf 1 Gbit/s ══ mig0 10.202.0.2/24
//!   kv guest, client load                      incoming guest
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use perfplus::backend::arena::workload::kv_client::{check_writes_in, Load, LoadConfig};
use perfplus::backend::arena::workload::{GuestSpec, WorkloadKind};
use perfplus::backend::arena::{check_support, ArenaDomain, GuestCommand, GuestProcess};
use perfplus::backend::{DirtyBitmap, Domain, Pfn};

/// Service address and port.
const SERVICE_IP: &str = "10.202.1.1";
const SERVICE_PORT: u16 = 7000;

/// Run a command, panicking with its output on failure.
fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run ip/tc");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a shaped veth; removed (with every process in
/// them) on drop, also when the test panics.
struct Hosts {
    a: String,
    b: String,
}

impl Hosts {
    fn create(tag: &str) -> Self {
        let pid = std::process::id();
        let hosts = Self {
            a: format!("ppmig-{tag}-a-{pid}"),
            b: format!("ppmig-{tag}-b-{pid}"),
        };
        Self::remove_stale(tag);
        for ns in [&hosts.a, &hosts.b] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip", "-n", &hosts.a, "link", "add", "mig0", "type", "veth", "peer", "name", "mig0",
            "netns", &hosts.b,
        ]);
        for (ns, ip) in [(&hosts.a, "10.202.0.1/24"), (&hosts.b, "10.202.0.2/24")] {
            sh(&["ip", "-n", ns, "addr", "add", ip, "dev", "mig0"]);
            sh(&["ip", "-n", ns, "link", "set", "mig0", "up"]);
            // 1 Gbit/s each way. (No added delay: this kernel has no sch_netem.)
            sh(&[
                "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "mig0", "root", "tbf",
                "rate", "1gbit", "burst", "256kb", "latency", "10ms",
            ]);
        }
        sh(&[
            "ip",
            "-n",
            &hosts.a,
            "addr",
            "add",
            &format!("{SERVICE_IP}/32"),
            "dev",
            "lo",
        ]);
        sh(&[
            "ip",
            "-n",
            &hosts.b,
            "route",
            "add",
            &format!("{SERVICE_IP}/32"),
            "via",
            "10.202.0.1",
        ]);
        hosts
    }

    /// Namespaces of an earlier run of this test whose process is gone.
    fn remove_stale(tag: &str) {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let prefix = format!("ppmig-{tag}-");
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let owner = rest.rsplit('-').next().unwrap_or("");
            if !std::path::Path::new(&format!("/proc/{owner}")).exists() {
                Self::remove(name);
            }
        }
    }

    fn remove(ns: &str) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }

    fn netns_path(ns: &str) -> PathBuf {
        PathBuf::from(format!("/run/netns/{ns}"))
    }

    /// Move the service address from a to b.
    fn move_service_to_b(&self) {
        sh(&[
            "ip",
            "-n",
            &self.b,
            "route",
            "del",
            &format!("{SERVICE_IP}/32"),
        ]);
        sh(&[
            "ip",
            "-n",
            &self.b,
            "addr",
            "add",
            &format!("{SERVICE_IP}/32"),
            "dev",
            "lo",
        ]);
        sh(&[
            "ip",
            "-n",
            &self.a,
            "addr",
            "del",
            &format!("{SERVICE_IP}/32"),
            "dev",
            "lo",
        ]);
        sh(&[
            "ip",
            "-n",
            &self.a,
            "route",
            "add",
            &format!("{SERVICE_IP}/32"),
            "via",
            "10.202.0.2",
        ]);
    }

    fn guest_command(ns: &str) -> GuestCommand {
        GuestCommand::new(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                env!("CARGO_BIN_EXE_perfplus-arena-guest"),
            ],
        )
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        Self::remove(&self.a);
        Self::remove(&self.b);
    }
}

fn can_run(test: &str) -> bool {
    if !support::is_root() {
        support::skip(test, "network namespaces need root");
        return false;
    }
    if !support::have_program("ip") || !support::have_program("tc") {
        support::skip(test, "iproute2 (ip, tc) is not installed");
        return false;
    }
    if let Err(e) = check_support() {
        support::skip(test, &e.to_string());
        return false;
    }
    true
}

/// Wait (up to 10 s, never asserting on time) until the load has more than
/// `n` acknowledged writes.
fn wait_for_writes_beyond(load: &Load, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while load.writes_acknowledged() <= n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn copy(src: &mut ArenaDomain, dst: &mut ArenaDomain, pfns: &[Pfn]) {
    let page = src.page_size();
    let mut buf = vec![0_u8; 256 * page];
    for chunk in pfns.chunks(256) {
        let buf = &mut buf[..chunk.len() * page];
        src.read_pages(chunk, buf).unwrap();
        dst.write_pages(chunk, buf).unwrap();
    }
}

#[test]
fn kv_guest_moves_to_another_host_with_its_address_and_loses_no_acknowledged_write() {
    let test = "kv_guest_moves_to_another_host_with_its_address_and_loses_no_acknowledged_write";
    if !can_run(test) {
        return;
    }
    let hosts = Hosts::create("kv");
    let service: SocketAddr = format!("{SERVICE_IP}:{SERVICE_PORT}").parse().unwrap();
    let mut spec = GuestSpec::new(WorkloadKind::Kv, 16_384);
    spec.keys = 50_000;
    spec.listen = Some(service);
    let source = GuestProcess::spawn(&Hosts::guest_command(&hosts.a), &spec).unwrap();
    let mut src = ArenaDomain::process(source).unwrap();
    let mut config = LoadConfig::new(service, spec.keys);
    config.connections = 3;
    config.netns = Some(Hosts::netns_path(&hosts.a));
    let load = Load::start(&config).unwrap();
    wait_for_writes_beyond(&load, 2000);

    // The move, driven by hand through the Domain (the engine's job in
    // `examples/migrate.rs`): full copy, three dirty rounds, pause, rest.
    let mut dst = ArenaDomain::process(
        GuestProcess::spawn_incoming(&Hosts::guest_command(&hosts.b), spec.pages).unwrap(),
    )
    .unwrap();
    src.enable_dirty_log().unwrap();
    copy(&mut src, &mut dst, &(0..spec.pages).collect::<Vec<_>>());
    let mut dirty = DirtyBitmap::new(spec.pages);
    for _ in 0..3 {
        dirty.clear();
        src.harvest_dirty(&mut dirty).unwrap();
        copy(&mut src, &mut dst, &dirty.iter().collect::<Vec<_>>());
    }
    src.pause().unwrap();
    dirty.clear();
    src.harvest_dirty(&mut dirty).unwrap();
    copy(&mut src, &mut dst, &dirty.iter().collect::<Vec<_>>());
    dst.restore_state(&src.save_state().unwrap()).unwrap();
    let acked_at_pause = load.writes_acknowledged();
    src.into_process().unwrap().kill().unwrap();
    hosts.move_service_to_b();
    dst.resume().unwrap();
    wait_for_writes_beyond(&load, acked_at_pause + 2000);

    let report = load.stop();
    let check = check_writes_in(
        Some(&Hosts::netns_path(&hosts.a)),
        service,
        &report,
        Duration::from_secs(10),
    )
    .unwrap();
    eprintln!(
        "netns kv move: {} acknowledged ({} at the pause), gap {:.1} ms; {check:?}",
        report.writes_acknowledged, acked_at_pause, report.service_gap_ms
    );
    assert!(
        report.writes_acknowledged > acked_at_pause,
        "no writes after the move"
    );
    assert_eq!(check.writes_lost, 0, "{check:?}");
    assert_eq!(check.writes_phantom, 0, "{check:?}");
    // The service now runs in b: a runs no guest any more.
    let out = Command::new("ip")
        .args(["netns", "pids", &hosts.a])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "processes left in a"
    );
}
