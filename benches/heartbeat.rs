//! Side by side: how fast a crashed node is declared dead, and how often a
//! live one is, by a Heartbeat 3.0.6 pair and by a perfplus pair, on the
//! same network under the same conditions at the same time.
//!
//! ```sh
//! cargo bench --bench heartbeat -- [--quick] [--json FILE]
//! ```
//!
//! - **Heartbeat 3.0.6** (the Debian package), configured as the MySQL
//!   Reference Manual's Heartbeat chapter recommends for failover
//!   (MySQL 5.5 manual §14.2.1 "Heartbeat Configuration":
//!   `keepalive 500ms`, `deadtime 10`, `warntime 5`, `initdead 30`), over
//!   `ucast`. Other documented practice is slower still (the Linux-HA FAQ
//!   starts at `deadtime 60`, Open-E uses 60 s; shared/notes/heartbeat-ocf.md
//!   §11). Dead = its log line `node nodeb: is dead`, timed when the line
//!   appears (the log itself has 1 s resolution).
//! - **perfplus** on its defaults (`hanode`, a TOML file naming only the
//!   nodes, key and link: 50 ms heartbeats, phi accrual, pause tolerance
//!   250 ms). Dead = its `MEMBER_DEAD` line (µs timestamps). It runs under
//!   `chrt --rr 1`, the real-time priority Heartbeat gives itself by default
//!   (`realtime on`): without it, a host busy compiling delays perfplus's
//!   threads and its observer-pause rule (a late observer accuses nobody)
//!   postpones convictions by seconds, while Heartbeat is unaffected.
//!
//! Each pair lives in its own network namespaces. Conditions, on every UDP
//! packet each node sends (`tests/support/netem.rs`; this kernel has no
//! `sch_netem`): `0%` (none), `5%` random loss (nftables), `jitter`: a
//! delay of 25 ms ± 15 ms (normal, truncated at 0; an NFQUEUE delayer).
//! All six pairs run at once, so both systems see the same machine load.
//! The bench itself runs at SCHED_RR 1 too (it timestamps kills, tails
//! Heartbeat's log every 5 ms, and its delayer threads hold packets), and
//! kills with kill(2) directly, timing right after the signal is sent.
//!
//! Per pair, after a warm-up: SIGKILL node B, time until A declares it dead,
//! restart B, wait until A sees it again, let it settle, repeat. Heartbeat
//! kills set the pace (about 19 s each: a starting Heartbeat advertises its
//! deadtime + 2 s for 5 s, so B runs 7 s before the next kill); perfplus
//! pairs kill as often as they can in the same wall time (B runs 1 s). False deaths: A declaring B dead while B
//! runs, or B declaring A dead, ever, over the whole observation time.
//!
//! Output: a table, the ratios (perfplus / Heartbeat p50 and p99 per
//! condition; target: p99 ratio ≤ 0.2 with zero false deaths), and with
//! `--json FILE` an object `{"results": [...], "ratios": [...]}`: one result
//! per system and condition with `system`, `condition`, `loss`, `delay_ms`,
//! `jitter_ms`, `kills`, `detect_p50_ms`, `detect_p99_ms`, `detect_max_ms`,
//! `false_dead`, `observed_s`, and every sample in `detect_ms`.
//!
//! Needs root, Heartbeat 3, iproute2, nftables, iptables; says so and does
//! nothing otherwise. Full run ≈ 13 min (40 Heartbeat kills per condition),
//! `--quick` ≈ 3 min (8).

#[path = "../tests/support/mod.rs"]
#[allow(missing_docs)]
mod support;

use std::fmt::Write as _;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::heartbeat::{Node, NodeConfig};
use support::netem::{self, Delay, Delayer};
use support::netns::{veth, Netns};
use support::ppmem_netns::{self, Lab};

/// One network condition.
#[derive(Debug, Clone, Copy)]
struct Condition {
    name: &'static str,
    loss_per_mille: u32,
    delay: Option<Delay>,
}

const CONDITIONS: [Condition; 3] = [
    Condition {
        name: "0%",
        loss_per_mille: 0,
        delay: None,
    },
    Condition {
        name: "5%",
        loss_per_mille: 50,
        delay: None,
    },
    Condition {
        name: "jitter",
        loss_per_mille: 0,
        delay: Some(Delay {
            mean_ms: 25.0,
            jitter_ms: 15.0,
        }),
    },
];

/// Heartbeat's timing, MySQL 5.5 manual §14.2.1.
const HB_KEEPALIVE_MS: u64 = 500;
const HB_WARNTIME_MS: u64 = 5_000;
const HB_DEADTIME_MS: u64 = 10_000;
const HB_INITDEAD_MS: u64 = 30_000;

struct Options {
    quick: bool,
    json: Option<PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        quick: false,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--json" => o.json = args.next().map(PathBuf::from),
            _ => {} // cargo bench passes --bench
        }
    }
    o
}

/// What one pair measured.
#[derive(Debug, Default, Clone)]
struct Outcome {
    system: &'static str,
    condition: Option<Condition>,
    detect_ms: Vec<f64>,
    false_dead: u64,
    observed_s: f64,
    note: String,
}

/// SIGKILL every process in `pids` at once; the time right after (spawning
/// `kill` processes or reaping first would add their delay to the
/// detection time).
fn sigkill(pids: &[u32]) -> u128 {
    for pid in pids {
        if let Ok(pid) = libc::pid_t::try_from(*pid) {
            // SAFETY: kill(2) with a plain pid and signal touches no memory;
            // the pids are this bench's own children (or theirs), alive
            // until reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    now_us()
}

/// Run this process (and the threads it starts) at SCHED_RR priority 1,
/// as Heartbeat runs itself and as the perfplus nodes run here: the bench
/// timestamps kills and Heartbeat's log lines, and the delayers hold
/// packets, so a busy host must not delay it. Whether it worked.
fn realtime() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler(2) on this process with a valid, live
    // sched_param; it changes only scheduling.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) == 0 }
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// Nearest-rank percentile (`percent` of 100) of sorted samples.
fn percentile(sorted: &[f64], percent: usize) -> Option<f64> {
    let rank = (percent * sorted.len())
        .div_ceil(100)
        .clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// New lines of a growing log file, each with the time it was first seen.
struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
        }
    }

    fn poll(&mut self) -> Vec<(u128, String)> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        self.offset += bytes.len() as u64;
        let seen = now_us();
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let mut lines = Vec::new();
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            lines.push((seen, line.trim_end().to_string()));
        }
        lines
    }

    /// Poll every 5 ms until a line contains `needle`; its time.
    fn wait_for(
        &mut self,
        needle: &str,
        timeout: Duration,
        others: &mut Vec<String>,
    ) -> Option<u128> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for (at, line) in self.poll() {
                if line.contains(needle) {
                    return Some(at);
                }
                others.push(line);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

fn hb_config(name: &str, interface: &str, peer: &str) -> NodeConfig {
    let mut c = NodeConfig::test_node(
        name,
        &["nodeA", "nodeB"],
        &[format!("ucast {interface} {peer}")],
    );
    c.keepalive_ms = HB_KEEPALIVE_MS;
    c.warntime_ms = HB_WARNTIME_MS;
    c.deadtime_ms = HB_DEADTIME_MS;
    c.initdead_ms = HB_INITDEAD_MS;
    c
}

/// Apply a condition to the egress of namespace `ns`; the delayer, if any.
fn apply(ns: &str, condition: Condition, seed: u64) -> Result<Option<Delayer>, String> {
    netem::set_loss(ns, condition.loss_per_mille)?;
    condition
        .delay
        .map(|d| Delayer::start(ns, 1, d, seed))
        .transpose()
}

/// The Heartbeat pair of one condition: kill B `kills` times.
fn heartbeat_pair(
    index: usize,
    condition: Condition,
    kills: usize,
    warm_up: Duration,
    dir: &Path,
    done: &AtomicBool,
) -> Result<Outcome, String> {
    let ns_a = Netns::new(&format!("pphb-bench{index}a"));
    let ns_b = Netns::new(&format!("pphb-bench{index}b"));
    let (ia, ib) = (format!("pphbb{index}a"), format!("pphbb{index}b"));
    let subnet = 10 + index;
    veth(
        &ns_a,
        &ia,
        &format!("10.205.{subnet}.1/24"),
        &ns_b,
        &ib,
        &format!("10.205.{subnet}.2/24"),
    );
    let _delay_a = apply(&ns_a.name, condition, 11 + index as u64)?;
    let _delay_b = apply(&ns_b.name, condition, 21 + index as u64)?;
    let config_a = hb_config("nodeA", &ia, &format!("10.205.{subnet}.2"));
    let config_b = hb_config("nodeB", &ib, &format!("10.205.{subnet}.1"));
    let node_a = Node::start(&ns_a, &dir.join("a"), &config_a);
    let mut tail_a = LogTail::new(&node_a.dir.join("log/ha-log"));
    let mut node_b = Some(Node::start(&ns_b, &dir.join("b0"), &config_b));
    let mut b_dirs = vec![dir.join("b0")];
    let mut others = Vec::new();
    if tail_a
        .wait_for(
            "Status update for node nodeb: status active",
            Duration::from_secs(60),
            &mut others,
        )
        .is_none()
    {
        return Err(format!(
            "Heartbeat {}: nodeb never became active",
            condition.name
        ));
    }
    std::thread::sleep(warm_up);
    let started = Instant::now();
    let mut outcome = Outcome {
        system: "heartbeat",
        condition: Some(condition),
        ..Outcome::default()
    };
    let count_false = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("node nodeb: is dead"))
            .count() as u64
    };
    for k in 1..=kills {
        // Deaths of B while it ran are false.
        others.clear();
        for (_, line) in tail_a.poll() {
            others.push(line);
        }
        outcome.false_dead += count_false(&others);
        others.clear();
        let killed_at = sigkill(&support::netns::pids_in(&ns_b.name));
        // Dropped (reaped) before its successor starts: a Node's drop kills
        // every process in its namespace.
        drop(node_b.take());
        let wait = Duration::from_millis(HB_DEADTIME_MS * 3);
        match tail_a.wait_for("node nodeb: is dead", wait, &mut others) {
            Some(at) => outcome
                .detect_ms
                .push(at.saturating_sub(killed_at) as f64 / 1_000.0),
            None => outcome.detect_ms.push(wait.as_secs_f64() * 1_000.0),
        }
        let b_dir = dir.join(format!("b{k}"));
        node_b = Some(Node::start(&ns_b, &b_dir, &config_b));
        b_dirs.push(b_dir);
        others.clear();
        if tail_a
            .wait_for(
                "Status update for node nodeb: status active",
                Duration::from_secs(60),
                &mut others,
            )
            .is_none()
        {
            return Err(format!(
                "Heartbeat {}: nodeb did not come back after kill {k}\n--- nodea ---\n{}\n--- nodeb ---\n{}",
                condition.name,
                node_a.log_tail(25),
                node_b.as_ref().map(|b| b.log_tail(25)).unwrap_or_default()
            ));
        }
        outcome.false_dead += count_false(&others);
        // A starting Heartbeat advertises deadtime + 2 s for its first 5 s
        // (hb_add_deadtime in heartbeat.c): kill it only once it is steady.
        std::thread::sleep(Duration::from_secs(7));
    }
    others.clear();
    for (_, line) in tail_a.poll() {
        others.push(line);
    }
    outcome.false_dead += count_false(&others);
    outcome.observed_s = started.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    // B declaring A dead is always false.
    for b_dir in &b_dirs {
        let log = std::fs::read_to_string(b_dir.join("log/ha-log")).unwrap_or_default();
        outcome.false_dead += log.matches("node nodea: is dead").count() as u64;
    }
    outcome.note = format!(
        "keepalive {HB_KEEPALIVE_MS} ms, deadtime {} s (MySQL 5.5 manual)",
        HB_DEADTIME_MS / 1000
    );
    drop(node_b);
    drop(node_a);
    Ok(outcome)
}

/// The perfplus pair of one condition: kill B until the Heartbeat pair of
/// the same condition is done.
fn perfplus_pair(
    index: usize,
    condition: Condition,
    hanode: &Path,
    warm_up: Duration,
    dir: &Path,
    done: &AtomicBool,
) -> Result<Outcome, String> {
    let mut lab = Lab::new(
        &format!("h{index}"),
        50 + u8::try_from(index).unwrap_or(0),
        2,
        hanode,
        dir,
    )?;
    for i in 1..=2 {
        lab.write_config(i, "", "")?;
        lab.loss(i, condition.loss_per_mille)?;
        lab.delay(i, condition.delay)?;
        lab.start(i)?;
    }
    let wait = Duration::from_secs(15);
    for (i, j) in [(1, 2), (2, 1)] {
        if lab
            .wait_line(i, 0, &["MEMBER_UP", &format!("node={j}")], wait)
            .is_none()
        {
            return Err(format!(
                "perfplus {}: node {i} never saw node {j}",
                condition.name
            ));
        }
    }
    std::thread::sleep(warm_up);
    let started = Instant::now();
    let mut outcome = Outcome {
        system: "perfplus",
        condition: Some(condition),
        ..Outcome::default()
    };
    // B's lines of earlier lives, for its false accusations of A.
    let mut b_lives: Vec<Vec<String>> = Vec::new();
    let mut mark = 0;
    while !done.load(Ordering::SeqCst) {
        let before = lab.lines(1).len();
        // Deaths of B while it ran are false.
        outcome.false_dead += lab.lines(1)[mark..before]
            .iter()
            .filter(|l| l.contains("MEMBER_DEAD") && l.split_whitespace().any(|w| w == "node=2"))
            .count() as u64;
        let killed_at = sigkill(&lab.pid(2).into_iter().collect::<Vec<_>>());
        lab.kill(2);
        match lab.wait_line(1, before, &["MEMBER_DEAD", "node=2"], wait) {
            Some(line) => {
                let at = ppmem_netns::time_us(&line).unwrap_or(killed_at);
                outcome
                    .detect_ms
                    .push(at.saturating_sub(killed_at) as f64 / 1_000.0);
            }
            None => outcome.detect_ms.push(wait.as_secs_f64() * 1_000.0),
        }
        b_lives.push(lab.lines(2));
        lab.start(2)?;
        let up = lab.wait_line(1, before, &["MEMBER_UP", "node=2"], wait);
        mark = up
            .and_then(|l| lab.lines(1).iter().position(|x| *x == l))
            .map_or(lab.lines(1).len(), |p| p + 1);
        std::thread::sleep(Duration::from_secs(1));
    }
    let end = lab.lines(1).len();
    outcome.false_dead += lab.lines(1)[mark.min(end)..end]
        .iter()
        .filter(|l| l.contains("MEMBER_DEAD") && l.split_whitespace().any(|w| w == "node=2"))
        .count() as u64;
    outcome.observed_s = started.elapsed().as_secs_f64();
    b_lives.push(lab.lines(2));
    outcome.false_dead += b_lives
        .iter()
        .flatten()
        .filter(|l| l.contains("MEMBER_DEAD") && l.split_whitespace().any(|w| w == "node=1"))
        .count() as u64;
    outcome.note = "defaults: 50 ms heartbeats, phi accrual".into();
    for i in 1..=2 {
        lab.stop(i);
    }
    Ok(outcome)
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

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

fn summary(o: &Outcome) -> (Option<f64>, Option<f64>, Option<f64>) {
    let mut s = o.detect_ms.clone();
    s.sort_by(f64::total_cmp);
    (percentile(&s, 50), percentile(&s, 99), s.last().copied())
}

fn json(outcomes: &[Outcome], ratios: &[(String, Option<f64>, Option<f64>, bool)]) -> String {
    let num = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.1}"));
    let mut out = String::from("{\n  \"results\": [\n");
    for (i, o) in outcomes.iter().enumerate() {
        let c = o.condition.unwrap_or(CONDITIONS[0]);
        let (p50, p99, max) = summary(o);
        let _ = writeln!(
            out,
            "    {{\"system\": \"{}\", \"condition\": \"{}\", \"loss\": {:.3}, \"delay_ms\": {}, \"jitter_ms\": {}, \"kills\": {}, \"detect_p50_ms\": {}, \"detect_p99_ms\": {}, \"detect_max_ms\": {}, \"false_dead\": {}, \"observed_s\": {:.0}, \"note\": \"{}\", \"detect_ms\": [{}]}}{}",
            o.system,
            c.name,
            f64::from(c.loss_per_mille) / 1000.0,
            c.delay.map_or(0.0, |d| d.mean_ms),
            c.delay.map_or(0.0, |d| d.jitter_ms),
            o.detect_ms.len(),
            num(p50),
            num(p99),
            num(max),
            o.false_dead,
            o.observed_s,
            o.note,
            o.detect_ms
                .iter()
                .map(|v| format!("{v:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            if i + 1 < outcomes.len() { "," } else { "" }
        );
    }
    out.push_str("  ],\n  \"ratios\": [\n");
    for (i, (name, r50, r99, met)) in ratios.iter().enumerate() {
        let _ = writeln!(
            out,
            "    {{\"condition\": \"{name}\", \"p50_ratio\": {}, \"p99_ratio\": {}, \"target_met\": {met}}}{}",
            r50.map_or("null".into(), |v| format!("{v:.4}")),
            r99.map_or("null".into(), |v| format!("{v:.4}")),
            if i + 1 < ratios.len() { "," } else { "" }
        );
    }
    out.push_str("  ]\n}\n");
    out
}

fn main() {
    let opts = options();
    let missing = support::heartbeat::unavailable()
        .or_else(netem::unavailable)
        .or_else(ppmem_netns::unavailable);
    if let Some(why) = missing {
        println!("heartbeat bench: SKIPPED ({why})");
        return;
    }
    let hanode = match hanode_release() {
        Ok(b) => b,
        Err(e) => {
            println!("heartbeat bench: FAILED: {e}");
            return;
        }
    };
    let rt = realtime();
    let (kills, warm_up) = if opts.quick {
        (8, Duration::from_secs(20))
    } else {
        (40, Duration::from_secs(30))
    };
    println!(
        "crash detection, Heartbeat 3.0.6 (keepalive 500 ms, deadtime 10 s) vs perfplus defaults, {kills} Heartbeat kills per condition{}{}",
        if opts.quick { ", --quick" } else { "" },
        if rt { "" } else { " (the bench could not get SCHED_RR: timings on a busy host are less exact)" }
    );
    let root = std::env::temp_dir().join(format!("pphb-bench-{}", std::process::id()));
    let results: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::new()));
    let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (index, condition) in CONDITIONS.into_iter().enumerate() {
            let done = Arc::new(AtomicBool::new(false));
            let (results_hb, errors_hb, done_hb) = (results.clone(), errors.clone(), done.clone());
            let dir = root.join(format!("hb{index}"));
            scope.spawn(move || {
                let r = heartbeat_pair(index, condition, kills, warm_up, &dir, &done_hb);
                done_hb.store(true, Ordering::SeqCst);
                match r {
                    Ok(o) => results_hb.lock().map(|mut v| v.push(o)).unwrap_or(()),
                    Err(e) => errors_hb.lock().map(|mut v| v.push(e)).unwrap_or(()),
                }
            });
            let (results_pp, errors_pp) = (results.clone(), errors.clone());
            let dir = root.join(format!("pp{index}"));
            let hanode = hanode.clone();
            scope.spawn(move || {
                let _ = std::fs::create_dir_all(&dir);
                match perfplus_pair(index, condition, &hanode, warm_up, &dir, &done) {
                    Ok(o) => results_pp.lock().map(|mut v| v.push(o)).unwrap_or(()),
                    Err(e) => errors_pp.lock().map(|mut v| v.push(e)).unwrap_or(()),
                }
            });
        }
    });
    let _ = std::fs::remove_dir_all(&root);
    let mut outcomes = results.lock().map(|v| v.clone()).unwrap_or_default();
    outcomes.sort_by_key(|o| {
        (
            CONDITIONS
                .iter()
                .position(|c| Some(c.name) == o.condition.map(|c| c.name)),
            o.system,
        )
    });
    println!(
        "{:<10} {:<8} {:>6} {:>9} {:>9} {:>9} {:>6} {:>10}  note",
        "system", "condition", "kills", "p50 ms", "p99 ms", "max ms", "false", "observed s"
    );
    for o in &outcomes {
        let (p50, p99, max) = summary(o);
        println!(
            "{:<10} {:<8} {:>6} {:>9} {:>9} {:>9} {:>6} {:>10.0}  {}",
            o.system,
            o.condition.map_or("?", |c| c.name),
            o.detect_ms.len(),
            fmt(p50),
            fmt(p99),
            fmt(max),
            o.false_dead,
            o.observed_s,
            o.note
        );
    }
    let mut ratios = Vec::new();
    println!("\nperfplus / Heartbeat (target: p99 ratio <= 0.20, no false deaths)");
    for c in CONDITIONS {
        let find = |system| {
            outcomes
                .iter()
                .find(|o| o.system == system && o.condition.map(|x| x.name) == Some(c.name))
        };
        let (Some(hb), Some(pp)) = (find("heartbeat"), find("perfplus")) else {
            println!("{:<8} (missing results)", c.name);
            continue;
        };
        let ((hb50, hb99, _), (pp50, pp99, _)) = (summary(hb), summary(pp));
        let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?.max(1e-9));
        let (r50, r99) = (ratio(pp50, hb50), ratio(pp99, hb99));
        let met = r99.is_some_and(|r| r <= 0.2) && hb.false_dead == 0 && pp.false_dead == 0;
        println!(
            "{:<8} p50 {:>7} p99 {:>7}  false deaths heartbeat {} perfplus {}  {}",
            c.name,
            r50.map_or("-".into(), |r| format!("{r:.3}")),
            r99.map_or("-".into(), |r| format!("{r:.3}")),
            hb.false_dead,
            pp.false_dead,
            if met { "target met" } else { "TARGET MISSED" }
        );
        ratios.push((c.name.to_string(), r50, r99, met));
    }
    for e in errors.lock().map(|v| v.clone()).unwrap_or_default() {
        println!("FAILED: {e}");
    }
    println!("wall time {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = &opts.json {
        match std::fs::write(path, json(&outcomes, &ratios)) {
            Ok(()) => println!("JSON written to {}", path.display()),
            Err(e) => println!("cannot write {}: {e}", path.display()),
        }
    }
}
