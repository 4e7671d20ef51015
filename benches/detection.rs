//! Failure-detection benchmark: how fast a crash is convicted, and how
//! often a live node is, with the default settings and no tuning per
//! scenario.
//!
//! ```sh
//! cargo bench --bench detection -- [--quick] [--json FILE] [--sim-only | --real-only]
//! ```
//!
//! Simulated (virtual time, the real cores):
//! - detection: a 16-node cluster of `Membership` cores on the simulated
//!   network of `membership::sim`; after a 120 s warm-up, a random node
//!   crashes at a random phase, every other node's conviction time is one
//!   sample, the node restarts with a new incarnation and gets 120 s to
//!   learn its links again (a just-restarted node detects more slowly: its
//!   detectors start from cautious priors), and so on;
//! - false convictions: each of the 240 monitoring pairs of a 16-node
//!   cluster runs the per-peer verdict (`detector::PeerMonitor`, exactly
//!   what each `Membership` core runs per peer) on its own simulated
//!   heartbeat stream for `member_hours / 16` hours; a member-hour is one
//!   member watched for an hour by all 15 others;
//! - a fixed-deadline detector at the same clean detection time, on the
//!   same streams, for comparison;
//! - bytes per second per node at 16 nodes (70-byte heartbeats + 28 bytes
//!   of IPv4/UDP headers; multicast sends one datagram per interval,
//!   unicast one per peer).
//!
//! Real (root, iproute2, nftables): three `hanode` processes in network
//! namespaces; `kill -9` one, the others' conviction times; at 0 % and 5 %
//! random loss (nftables `numgen`, the kernel has no `sch_netem`); bytes per
//! second per node from the nodes' own counters.

#[path = "../tests/support/mod.rs"]
#[allow(missing_docs)]
mod support;

use support::ppmem_netns;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use perfplus::detector::{us_from_f64, DetectorConfig, Method, PeerMonitor, PeerTransition};
use perfplus::membership::sim::{Cluster, Loss, LossState, NetworkModel, Rng};
use perfplus::membership::{Event, Fencing, NodeId};

const SECOND: u64 = 1_000_000;
const ETA_US: u64 = 50_000;
const NODES: usize = 16;
const WARM_UP_US: u64 = 120 * SECOND;
const WIRE_BYTES: f64 = 70.0 + 28.0;

struct Options {
    quick: bool,
    json: Option<PathBuf>,
    sim: bool,
    real: bool,
}

fn options() -> Options {
    let mut o = Options {
        quick: false,
        json: None,
        sim: true,
        real: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--json" => o.json = args.next().map(PathBuf::from),
            "--sim-only" => o.real = false,
            "--real-only" => o.sim = false,
            _ => {} // cargo bench passes --bench
        }
    }
    o
}

#[derive(Default)]
struct Row {
    kind: &'static str,
    scenario: String,
    method: &'static str,
    loss: f64,
    trials: usize,
    detect_p50_ms: Option<f64>,
    detect_p99_ms: Option<f64>,
    detect_max_ms: Option<f64>,
    false_convictions: u64,
    false_suspicions: u64,
    member_hours: f64,
    bytes_per_s_per_node: Option<f64>,
    note: String,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = usize::try_from(us_from_f64((p / 100.0 * sorted.len() as f64).ceil()))
        .unwrap_or(usize::MAX);
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn scenarios() -> Vec<(&'static str, NetworkModel)> {
    let base = NetworkModel::default();
    let jitter = NetworkModel {
        delay_us: 10_000,
        jitter_us: 5_000,
        ..base
    };
    vec![
        ("clean", base),
        (
            "loss 1%",
            NetworkModel {
                loss: Loss::Independent(0.01),
                ..base
            },
        ),
        (
            "loss 5%",
            NetworkModel {
                loss: Loss::Independent(0.05),
                ..base
            },
        ),
        (
            "loss 10%",
            NetworkModel {
                loss: Loss::Independent(0.10),
                ..base
            },
        ),
        (
            "bursty 5% (GE, mean burst 3)",
            NetworkModel {
                loss: Loss::bursty(0.05, 3.0),
                ..base
            },
        ),
        ("jitter 10±5 ms", jitter),
        (
            "loss 5% + jitter 10±5 ms",
            NetworkModel {
                loss: Loss::Independent(0.05),
                ..jitter
            },
        ),
    ]
}

/// Crash-detection trials on a 16-node cluster of real cores.
fn detection(model: NetworkModel, trials: usize, seed: u64) -> (Vec<f64>, f64) {
    let mut c = Cluster::uniform(NODES, model, seed, |c| c.fencing = Fencing::Disabled);
    c.record_events(true);
    c.run_until(WARM_UP_US);
    c.drain_events();
    let mut rng = Rng::new(seed ^ 0xdead);
    let mut started_at = [0u64; NODES];
    let mut samples = Vec::new();
    let sent_before: u64 = (0..NODES).map(|n| c.heartbeats_sent(n)).sum();
    let t_before = c.now_us();
    for _ in 0..trials {
        c.run_for(rng.below(ETA_US));
        let victim = usize::try_from(rng.below(NODES as u64)).unwrap_or(0);
        let crash = c.now_us();
        c.crash(victim);
        let target = NodeId(u16::try_from(victim + 1).unwrap_or(0));
        let observers: Vec<usize> = (0..NODES)
            .filter(|o| *o != victim && crash >= started_at[*o] + WARM_UP_US)
            .collect();
        let mut found = vec![None; NODES];
        let limit = crash + 20 * SECOND;
        while c.now_us() < limit && observers.iter().any(|o| found[*o].is_none()) {
            c.run_for(10_000);
            for (o, t, e) in c.drain_events() {
                if let Event::MemberDead { node, .. } = e {
                    if node == target && found[o].is_none() {
                        found[o] = Some(t);
                    }
                }
            }
        }
        for o in observers {
            // A miss within 20 s counts as 20 s: it is not silently dropped.
            let t = found[o].unwrap_or(limit);
            samples.push((t - crash) as f64 / 1_000.0);
        }
        // The restarted node's own detectors start from their priors; let
        // them learn before it observes the next crash.
        c.start(victim);
        started_at[victim] = c.now_us();
        c.run_for(WARM_UP_US);
        c.drain_events();
    }
    let sent: u64 = (0..NODES).map(|n| c.heartbeats_sent(n)).sum::<u64>() - sent_before;
    let seconds = (c.now_us() - t_before) as f64 / 1e6;
    let heartbeats_per_s_per_node = sent as f64 / seconds / NODES as f64;
    samples.sort_by(f64::total_cmp);
    (samples, heartbeats_per_s_per_node)
}

/// A table of standard normal samples, for speed in the soak.
struct Normals(Vec<f64>);

impl Normals {
    fn new(rng: &mut Rng) -> Self {
        let mut v: Vec<f64> = (0..4096).map(|_| rng.normal()).collect();
        v.sort_by(f64::total_cmp);
        Self(v)
    }
    fn sample(&self, rng: &mut Rng) -> f64 {
        self.0[(rng.next_u64() >> 52) as usize]
    }
}

/// One monitoring pair for `hours`: (false convictions, false suspicions).
fn soak_pair(model: &NetworkModel, detector: &DetectorConfig, hours: f64, seed: u64) -> (u64, u64) {
    let mut rng = Rng::new(seed);
    let normals = Normals::new(&mut rng);
    let mut loss = LossState::default();
    let mut monitor = PeerMonitor::new(detector, 1, ETA_US);
    let slots = us_from_f64(hours * 3600.0 * 1e6 / ETA_US as f64);
    let timer = model.timer_jitter_us as f64;
    let jitter = model.jitter_us as f64;
    let delay = model.delay_us as f64;
    let mut next_tick = rng.below(ETA_US);
    let mut last_arrival = 0u64;
    let (mut convictions, mut suspicions) = (0, 0);
    let mut count = |t: PeerTransition| match t {
        PeerTransition::Dead => convictions += 1,
        PeerTransition::Suspected { .. } => suspicions += 1,
        _ => {}
    };
    for seq in 1..=slots {
        let sent = seq * ETA_US + us_from_f64(normals.sample(&mut rng).abs() * timer);
        if loss.lose(&model.loss, &mut rng) {
            continue;
        }
        let arrival =
            (sent + us_from_f64(delay + normals.sample(&mut rng) * jitter)).max(last_arrival);
        while next_tick <= arrival {
            while let Some(t) = monitor.check(next_tick) {
                count(t);
            }
            next_tick += ETA_US + us_from_f64(normals.sample(&mut rng).abs() * timer);
        }
        monitor.arrival(arrival, 0, seq, ETA_US);
        last_arrival = arrival;
    }
    (convictions, suspicions)
}

/// All 240 pairs of a 16-node cluster for `member_hours` in total.
fn soak(model: NetworkModel, detector: DetectorConfig, member_hours: f64, seed: u64) -> (u64, u64) {
    let pairs = NODES * (NODES - 1);
    let hours_per_pair = member_hours / NODES as f64;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..pairs)
                        .step_by(threads)
                        .map(|p| {
                            soak_pair(&model, &detector, hours_per_pair, seed ^ (p as u64 * 7919))
                        })
                        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((u64::MAX, u64::MAX)))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    })
}

fn simulated(opts: &Options, rows: &mut Vec<Row>) {
    let (trials, member_hours, baseline_hours) = if opts.quick {
        (10, 150.0, 30.0)
    } else {
        (200, 3008.0, 300.0)
    };
    let defaults = DetectorConfig::default();
    let mut clean_p99 = None;
    for (i, (name, model)) in scenarios().into_iter().enumerate() {
        let seed = 1_000 + i as u64;
        let started = Instant::now();
        let (samples, hb_rate) = detection(model, trials, seed);
        let (convictions, suspicions) = soak(model, defaults, member_hours, seed);
        let p99 = percentile(&samples, 99.0);
        if i == 0 {
            clean_p99 = p99;
        }
        rows.push(Row {
            kind: "sim",
            scenario: name.into(),
            method: "phi (default)",
            loss: model.loss.average(),
            trials: samples.len(),
            detect_p50_ms: percentile(&samples, 50.0),
            detect_p99_ms: p99,
            detect_max_ms: samples.last().copied(),
            false_convictions: convictions,
            false_suspicions: suspicions,
            member_hours,
            bytes_per_s_per_node: Some(hb_rate * WIRE_BYTES),
            note: format!("{:.0} s", started.elapsed().as_secs_f64()),
        });
        print_row(rows.last().unwrap_or(&Row::default()));
        // The same evidence judged by a fixed deadline at the clean p99.
        if matches!(
            name,
            "loss 5%" | "bursty 5% (GE, mean burst 3)" | "loss 10%"
        ) {
            let deadline_us = us_from_f64(clean_p99.unwrap_or(350.0) * 1_000.0);
            let fixed = DetectorConfig {
                method: Method::Deadline {
                    warn_us: deadline_us / 2,
                    dead_us: deadline_us,
                },
                pause_tolerance_us: 0,
                ..defaults
            };
            let (convictions, suspicions) = soak(model, fixed, baseline_hours, seed);
            rows.push(Row {
                kind: "sim",
                scenario: name.into(),
                method: "fixed deadline (= clean p99)",
                loss: model.loss.average(),
                detect_p50_ms: Some(deadline_us as f64 / 1_000.0),
                false_convictions: convictions,
                false_suspicions: suspicions,
                member_hours: baseline_hours,
                ..Row::default()
            });
            print_row(rows.last().unwrap_or(&Row::default()));
        }
    }
    let mut c = Cluster::uniform(NODES, NetworkModel::default(), 7, |c| {
        c.fencing = Fencing::Disabled
    });
    c.record_events(false);
    c.run_until(60 * SECOND);
    let rate = c.heartbeats_sent(0) as f64 / 60.0;
    for (link, datagrams) in [
        ("multicast/broadcast", 1.0),
        ("unicast", (NODES - 1) as f64),
    ] {
        rows.push(Row {
            kind: "sim",
            scenario: format!("bandwidth, 16 nodes, {link}"),
            method: "phi (default)",
            bytes_per_s_per_node: Some(rate * datagrams * WIRE_BYTES),
            note: format!("{rate:.1} heartbeats/s × {datagrams} datagram(s) × 98 B"),
            ..Row::default()
        });
        print_row(rows.last().unwrap_or(&Row::default()));
    }
}

fn hanode_release() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    let binary = target.join("release/examples/hanode");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "--example", "hanode"])
        .current_dir(root)
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() || !binary.exists() {
        return Err("cannot build the hanode example".into());
    }
    Ok(binary)
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

fn real(opts: &Options, rows: &mut Vec<Row>) -> Result<(), String> {
    if let Some(why) = ppmem_netns::unavailable() {
        println!("real namespaces: SKIPPED ({why})");
        return Ok(());
    }
    let binary = hanode_release()?;
    let (trials, warm_up) = if opts.quick { (10, 30) } else { (40, 90) };
    for (per_mille, name) in [
        (0u32, "real, 3 processes, loss 0%"),
        (50, "real, 3 processes, loss 5%"),
    ] {
        let dir = std::env::temp_dir().join(format!("ppmem-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut lab = ppmem_netns::Lab::new("b", 40, 3, &binary, &dir)?;
        for i in 1..=3 {
            lab.write_config(i, "", "")?;
            lab.start(i)?;
            lab.loss(i, per_mille)?;
        }
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(warm_up));
        let mut samples = Vec::new();
        let wait = Duration::from_secs(15);
        for _ in 0..trials {
            let marks = [lab.lines(1).len(), lab.lines(2).len()];
            let killed_at = now_us();
            lab.kill(3);
            for (k, observer) in [1usize, 2].into_iter().enumerate() {
                if let Some(line) =
                    lab.wait_line(observer, marks[k], &["MEMBER_DEAD", "node=3"], wait)
                {
                    let t = ppmem_netns::time_us(&line).unwrap_or(killed_at);
                    samples.push(t.saturating_sub(killed_at) as f64 / 1_000.0);
                } else {
                    samples.push(wait.as_secs_f64() * 1_000.0);
                }
            }
            lab.start(3)?;
            for (k, observer) in [1usize, 2].into_iter().enumerate() {
                lab.wait_line(observer, marks[k], &["MEMBER_UP", "node=3"], wait);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let elapsed_h = started.elapsed().as_secs_f64() / 3600.0;
        // Convictions of nodes 1 and 2 (never killed) are false.
        let false_convictions = [(1, 2), (2, 1), (3, 1), (3, 2)]
            .iter()
            .map(|(o, t)| {
                let node = format!("node={t}");
                lab.lines(*o)
                    .iter()
                    .filter(|l| {
                        l.contains("MEMBER_DEAD") && l.split_whitespace().any(|w| w == node)
                    })
                    .count() as u64
            })
            .sum();
        let stats = lab
            .lines(1)
            .into_iter()
            .rev()
            .find(|l| l.contains("STATS"))
            .unwrap_or_default();
        let field = |k: &str| {
            ppmem_netns::field(&stats, k)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let bytes_per_s = (field("bytes_sent") + 28.0 * field("packets_sent"))
            / (field("uptime_ms") / 1_000.0).max(1e-9);
        samples.sort_by(f64::total_cmp);
        rows.push(Row {
            kind: "real",
            scenario: name.into(),
            method: "phi (default)",
            loss: f64::from(per_mille) / 1_000.0,
            trials: samples.len(),
            detect_p50_ms: percentile(&samples, 50.0),
            detect_p99_ms: percentile(&samples, 99.0),
            detect_max_ms: samples.last().copied(),
            false_convictions,
            member_hours: 2.0 * elapsed_h,
            bytes_per_s_per_node: Some(bytes_per_s),
            note: format!("{trials} kills, {warm_up} s warm-up, unicast to 2 peers"),
            ..Row::default()
        });
        print_row(rows.last().unwrap_or(&Row::default()));
        for i in 1..=3 {
            lab.stop(i);
        }
        drop(lab);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

fn print_header() {
    println!(
        "{:<5} {:<34} {:<28} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6} {:>8} {:>9} {:>8}  note",
        "kind",
        "scenario",
        "method",
        "loss",
        "trials",
        "p50 ms",
        "p99 ms",
        "max ms",
        "false",
        "susp",
        "member-h",
        "B/s/node"
    );
}

fn print_row(r: &Row) {
    println!(
        "{:<5} {:<34} {:<28} {:>5.1}% {:>7} {:>7} {:>7} {:>7} {:>6} {:>8} {:>9.0} {:>8}  {}",
        r.kind,
        r.scenario,
        r.method,
        r.loss * 100.0,
        r.trials,
        fmt(r.detect_p50_ms),
        fmt(r.detect_p99_ms),
        fmt(r.detect_max_ms),
        r.false_convictions,
        r.false_suspicions,
        r.member_hours,
        fmt(r.bytes_per_s_per_node),
        r.note
    );
}

fn json(rows: &[Row]) -> String {
    let num = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.3}"));
    let mut out = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {{\"kind\": \"{}\", \"scenario\": \"{}\", \"method\": \"{}\", \"loss\": {:.4}, \"trials\": {}, \"detect_p50_ms\": {}, \"detect_p99_ms\": {}, \"detect_max_ms\": {}, \"false_convictions\": {}, \"false_suspicions\": {}, \"member_hours\": {:.2}, \"bytes_per_s_per_node\": {}, \"note\": \"{}\"}}{}",
            r.kind,
            r.scenario,
            r.method,
            r.loss,
            r.trials,
            num(r.detect_p50_ms),
            num(r.detect_p99_ms),
            num(r.detect_max_ms),
            r.false_convictions,
            r.false_suspicions,
            r.member_hours,
            num(r.bytes_per_s_per_node),
            r.note.replace('"', "'"),
            if i + 1 < rows.len() { "," } else { "" }
        );
    }
    out.push_str("]\n");
    out
}

fn main() {
    let opts = options();
    let mut rows = Vec::new();
    println!(
        "failure detection, default settings (50 ms heartbeats, phi accrual, pause tolerance 250 ms){}",
        if opts.quick { ", --quick" } else { "" }
    );
    print_header();
    if opts.sim {
        simulated(&opts, &mut rows);
    }
    if opts.real {
        if let Err(e) = real(&opts, &mut rows) {
            println!("real namespaces: FAILED: {e}");
        }
    }
    if let Some(path) = &opts.json {
        match std::fs::write(path, json(&rows)) {
            Ok(()) => println!("JSON written to {}", path.display()),
            Err(e) => println!("cannot write {}: {e}", path.display()),
        }
    }
}
