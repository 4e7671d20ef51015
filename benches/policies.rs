//! The policy benchmark: every workload × link × policy, side by side, on
//! the simulated guest and link (virtual time, so the numbers do not depend
//! on this machine's load; only the wall time of the run does).
//!
//! ```text
//! cargo bench --bench policies -- [--quick] [--json FILE] [--workload-file FILE]... [--link-mbit N]...
//! ```
//!
//! - built-in suite: `benches/workloads/*.toml` (4 GiB guests), links of 1
//!   and 10 Gbit/s, unless `--workload-file` / `--link-mbit` are given;
//! - `--quick`: every workload at 1/16 scale (memory, write rates and link
//!   bandwidth divided by 16: the same durations, 16× fewer pages), two
//!   runs at a time (`--jobs N` to change; full scale runs one at a time);
//! - prints a table, the ratios of perfplus to each baseline per workload
//!   and link with their geometric means, and the targets; `--json` writes
//!   one object per run plus the ratios.

use std::fmt::Write as _;
use std::path::PathBuf;

use perfplus::backend::sim::{LinkSpec, Workload};
use perfplus::migration::engine::{Progress, ProgressFlow};
use perfplus::migration::policy::{by_name, POLICY_NAMES};
use perfplus::migration::simulation::{downtime_lower_bound_ms, first_difference, SimRun};
use perfplus::migration::MigrationError;
use serde_json::{json, Value};

struct Args {
    quick: bool,
    json: Option<PathBuf>,
    workloads: Vec<PathBuf>,
    links: Vec<f64>,
    policies: Vec<String>,
    verify_memory: bool,
    jobs: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        json: None,
        workloads: Vec::new(),
        links: Vec::new(),
        policies: Vec::new(),
        verify_memory: false,
        jobs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => args.quick = true,
            "--json" => args.json = Some(value("--json")?.into()),
            "--workload-file" => args.workloads.push(value("--workload-file")?.into()),
            "--link-mbit" => {
                let v = value("--link-mbit")?;
                let mbit: f64 = v
                    .parse()
                    .map_err(|_| format!("--link-mbit {v}: not a number"))?;
                if !(mbit.is_finite() && mbit > 0.0) {
                    return Err(format!("--link-mbit {v}: must be > 0"));
                }
                args.links.push(mbit);
            }
            "--policy" => {
                let v = value("--policy")?;
                if !POLICY_NAMES.contains(&v.as_str()) {
                    return Err(format!("--policy {v}: one of {POLICY_NAMES:?}"));
                }
                args.policies.push(v);
            }
            "--verify-memory" => args.verify_memory = true,
            "--jobs" => {
                let v = value("--jobs")?;
                let n: usize = v.parse().map_err(|_| format!("--jobs {v}: not a number"))?;
                args.jobs = Some(n.max(1));
            }
            "--bench" => {}
            "--help" | "-h" => {
                println!(
                    "cargo bench --bench policies -- [--quick] [--json FILE] [--workload-file FILE]... [--link-mbit N]... [--policy NAME]... [--verify-memory] [--jobs N]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    if args.workloads.is_empty() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/workloads");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        args.workloads = files;
    }
    if args.links.is_empty() {
        args.links = vec![1000.0, 10000.0];
    }
    if args.policies.is_empty() {
        args.policies = POLICY_NAMES.iter().map(|s| s.to_string()).collect();
    }
    Ok(args)
}

#[derive(Clone)]
struct Row {
    workload: String,
    link_mbit: f64,
    policy: String,
    converged: bool,
    downtime_ms: Option<f64>,
    total_ms: f64,
    bytes_on_wire: u64,
    pages_sent: u64,
    rounds: u32,
    verified: bool,
    bound_ms: f64,
    zero_pages: u64,
    delta_pages: u64,
    note: String,
}

fn run_one(workload: &Workload, link_mbit: f64, policy_name: &str, verify_memory: bool) -> Row {
    let policy = by_name(policy_name).expect("known policy");
    let mut run = SimRun::new(workload);
    run.link = LinkSpec {
        bandwidth_mbit: link_mbit,
        latency_ms: workload.link.latency_ms,
    };
    let mut rounds_seen = 0;
    let mut pages_before_abort = 0;
    let mut observer = |p: &Progress| {
        if let Progress::Decided { stats, .. } = p {
            rounds_seen = stats.iteration;
            pages_before_abort = stats.pages_sent_total;
        }
        ProgressFlow::Continue
    };
    let mut outcome = run.run(policy.as_ref(), &mut observer);
    let scale_link = LinkSpec {
        bandwidth_mbit: link_mbit,
        latency_ms: workload.link.latency_ms,
    };
    match &outcome.result {
        Ok(report) => {
            let mut note = report.stop_reason.to_string();
            if verify_memory {
                let mut receiver = std::mem::replace(
                    outcome.receiver.domain_mut(),
                    perfplus::backend::sim::SimDomain::blank(1, Default::default()),
                );
                if let Some(pfn) = first_difference(&mut outcome.source, &mut receiver) {
                    note = format!("MEMORY DIFFERS at page {pfn}");
                }
            }
            Row {
                workload: workload.name.clone(),
                link_mbit,
                policy: policy_name.into(),
                converged: true,
                downtime_ms: Some(report.downtime_ms),
                total_ms: report.total_ms,
                bytes_on_wire: report.bytes_on_wire,
                pages_sent: report.sent.pages(),
                rounds: report.rounds,
                verified: report.verified,
                bound_ms: downtime_lower_bound_ms(
                    workload,
                    scale_link,
                    report.paused_at_ms / 1000.0,
                ),
                zero_pages: report.sent.zero_pages,
                delta_pages: report.sent.delta_pages,
                note,
            }
        }
        Err(e) => Row {
            workload: workload.name.clone(),
            link_mbit,
            policy: policy_name.into(),
            converged: false,
            downtime_ms: None,
            total_ms: outcome.elapsed_ms,
            bytes_on_wire: outcome.bytes_on_wire,
            pages_sent: pages_before_abort,
            rounds: rounds_seen,
            verified: false,
            bound_ms: downtime_lower_bound_ms(workload, scale_link, outcome.elapsed_ms / 1000.0),
            zero_pages: 0,
            delta_pages: 0,
            note: match e.root() {
                MigrationError::NotConverged { reason } => (*reason).to_string(),
                other => format!("FAILED: {other}"),
            },
        },
    }
}

fn geomean(values: &[f64]) -> Option<f64> {
    let v: Vec<f64> = values
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    (!v.is_empty()).then(|| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("policies: {e}");
            std::process::exit(2);
        }
    };
    let scale: u64 = if args.quick { 16 } else { 1 };
    let mut workloads = Vec::new();
    for path in &args.workloads {
        match Workload::load(path) {
            Ok(w) => workloads.push(w.scaled_down(scale)),
            Err(e) => {
                eprintln!("policies: {e}");
                std::process::exit(2);
            }
        }
    }
    let wall = std::time::Instant::now();
    // Runs are independent and on virtual time, so they can run side by side
    // without changing a number. Full-scale runs hold a 4 GiB receiver each:
    // one at a time unless asked.
    let jobs = args
        .jobs
        .unwrap_or(if args.quick { 2 } else { 1 })
        .min(std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut work = Vec::new();
    for wi in 0..workloads.len() {
        for &link in &args.links {
            for p in &args.policies {
                work.push((wi, link, p.clone()));
            }
        }
    }
    // The longest runs first (QEMU's rule on the slow link may iterate for
    // 30 simulated minutes), so they do not end up alone at the end.
    let mut order: Vec<usize> = (0..work.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| (work[i].2 != "qemu-default", work[i].1);
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    });
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(vec![None; work.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&i) = order.get(n) else {
                    break;
                };
                let (wi, link, p) = &work[i];
                let w = &workloads[*wi];
                let t = std::time::Instant::now();
                let row = run_one(w, link / scale as f64, p, args.verify_memory);
                eprintln!(
                    "  {:<14} {:>6} Mbit/s {:<14} {:>7.1} s wall",
                    w.name,
                    link,
                    p,
                    t.elapsed().as_secs_f64()
                );
                if let Ok(mut d) = done.lock() {
                    d[i] = Some(row);
                }
            });
        }
    });
    let rows: Vec<Row> = done
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();

    // The table.
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nPerf+ policy benchmark{} — simulated guests, virtual time\n",
        if args.quick {
            " (--quick: guests, rates and links at 1/16 scale: same durations, bytes and pages of the scaled guests)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "{:<14} {:>6} {:<13} {:>4} {:>10} {:>10} {:>10} {:>9} {:>4} {:>4} {:>9} {:>6}  stop",
        "workload",
        "Mbit/s",
        "policy",
        "conv",
        "downtime",
        "total",
        "MiB wire",
        "pages",
        "rnds",
        "ver",
        "bound",
        "dt/lb"
    );
    for r in &rows {
        let dt = r.downtime_ms.map_or("-".to_string(), |d| format!("{d:.1}"));
        let ratio = r
            .downtime_ms
            .map_or("-".to_string(), |d| format!("{:.2}", d / r.bound_ms));
        let _ = writeln!(
            out,
            "{:<14} {:>6} {:<13} {:>4} {:>10} {:>10.0} {:>10.1} {:>9} {:>4} {:>4} {:>9.1} {:>6}  {}",
            r.workload,
            r.link_mbit * scale as f64,
            r.policy,
            if r.converged { "yes" } else { "NO" },
            dt,
            r.total_ms,
            r.bytes_on_wire as f64 / 1048576.0,
            r.pages_sent,
            r.rounds,
            if r.verified { "yes" } else { "no" },
            r.bound_ms,
            ratio,
            r.note
        );
    }

    // Ratios of perfplus to each baseline.
    let find = |w: &str, l: f64, p: &str| {
        rows.iter()
            .find(|r| r.workload == w && r.link_mbit == l && r.policy == p)
    };
    let mut ratio_json = Vec::new();
    let mut geo: Vec<(String, &str, Vec<f64>)> = Vec::new();
    let _ = writeln!(
        out,
        "\nperfplus / baseline (downtime, bytes, total time; '-' where either did not converge)"
    );
    for base in args.policies.iter().filter(|p| *p != "perfplus") {
        let (mut dts, mut bys, mut tts) = (Vec::new(), Vec::new(), Vec::new());
        for w in &workloads {
            for &link in &args.links {
                let l = link / scale as f64;
                let (Some(pp), Some(b)) = (find(&w.name, l, "perfplus"), find(&w.name, l, base))
                else {
                    continue;
                };
                let both = pp.converged && b.converged;
                let dt = both.then(|| pp.downtime_ms.unwrap_or(0.0) / b.downtime_ms.unwrap_or(1.0));
                let by = both.then(|| pp.bytes_on_wire as f64 / b.bytes_on_wire.max(1) as f64);
                let tt = both.then(|| pp.total_ms / b.total_ms.max(1e-9));
                if let Some(v) = dt {
                    dts.push(v);
                }
                if let Some(v) = by {
                    bys.push(v);
                }
                if let Some(v) = tt {
                    tts.push(v);
                }
                let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
                let _ = writeln!(
                    out,
                    "  vs {:<13} {:<14} {:>6} Mbit/s  downtime {:>7}  bytes {:>7}  total {:>7}",
                    base,
                    w.name,
                    link,
                    f(dt),
                    f(by),
                    f(tt)
                );
                ratio_json.push(json!({
                    "workload": w.name, "link_mbit": link, "baseline": base,
                    "downtime_ratio": dt, "bytes_ratio": by, "total_ratio": tt,
                }));
            }
        }
        geo.push((base.clone(), "downtime", dts));
        geo.push((base.clone(), "bytes", bys));
        geo.push((base.clone(), "total", tts));
    }
    let _ = writeln!(out, "\ngeometric means of perfplus / baseline:");
    let mut geo_json = serde_json::Map::new();
    for (base, what, v) in &geo {
        let g = geomean(v);
        let _ = writeln!(
            out,
            "  vs {:<13} {:<9} {}",
            base,
            what,
            g.map_or("-".into(), |g| format!("{g:.3}"))
        );
        geo_json.insert(format!("{base}.{what}"), json!(g));
    }

    // Targets.
    let _ = writeln!(out, "\ntargets:");
    let pp: Vec<&Row> = rows.iter().filter(|r| r.policy == "perfplus").collect();
    let mut check = |name: &str, ok: bool, detail: String| {
        let _ = writeln!(
            out,
            "  [{}] {name}: {detail}",
            if ok { "PASS" } else { "FAIL" }
        );
        (name.to_string(), ok)
    };
    let mut targets = Vec::new();
    if args.policies.iter().any(|p| p == "xen-default") {
        let pairs: Vec<(&Row, &Row)> = pp
            .iter()
            .filter_map(|p| find(&p.workload, p.link_mbit, "xen-default").map(|x| (*p, x)))
            .collect();
        let worst_dt = pairs
            .iter()
            .filter(|(p, x)| p.converged && x.converged)
            .map(|(p, x)| p.downtime_ms.unwrap_or(0.0) / x.downtime_ms.unwrap_or(1.0))
            .fold(0.0_f64, f64::max);
        targets.push(check(
            "downtime <= 1.05 x xen-default on every run",
            worst_dt <= 1.05,
            format!("worst {worst_dt:.3}"),
        ));
        let g = geo
            .iter()
            .find(|(b, w, _)| b == "xen-default" && *w == "downtime")
            .and_then(|(_, _, v)| geomean(v));
        targets.push(check(
            "downtime geomean <= 0.5 x xen-default",
            g.is_some_and(|g| g <= 0.5),
            format!("{g:.3?}"),
        ));
        let worst_by = pairs
            .iter()
            .map(|(p, x)| p.bytes_on_wire as f64 / x.bytes_on_wire.max(1) as f64)
            .fold(0.0_f64, f64::max);
        targets.push(check(
            "bytes never more than xen-default",
            worst_by <= 1.0,
            format!("worst {worst_by:.3}"),
        ));
        let g = geo
            .iter()
            .find(|(b, w, _)| b == "xen-default" && *w == "bytes")
            .and_then(|(_, _, v)| geomean(v));
        targets.push(check(
            "bytes geomean <= 0.7 x xen-default",
            g.is_some_and(|g| g <= 0.7),
            format!("{g:.3?}"),
        ));
    }
    let all_conv = pp.iter().all(|r| r.converged && r.verified);
    targets.push(check(
        "perfplus converges (and verifies) on every run",
        all_conv,
        format!("{}/{}", pp.iter().filter(|r| r.converged).count(), pp.len()),
    ));
    if args.policies.iter().any(|p| p == "qemu-default") {
        let worse: Vec<String> = pp
            .iter()
            .filter_map(|p| {
                let q = find(&p.workload, p.link_mbit, "qemu-default")?;
                (p.converged && q.converged && p.bytes_on_wire >= q.bytes_on_wire)
                    .then(|| format!("{}@{}", p.workload, p.link_mbit * scale as f64))
            })
            .collect();
        targets.push(check(
            "fewer bytes than qemu-default where both converge",
            worse.is_empty(),
            if worse.is_empty() {
                "all".into()
            } else {
                worse.join(", ")
            },
        ));
    }
    let worst_lb = pp
        .iter()
        .filter_map(|r| r.downtime_ms.map(|d| (d / r.bound_ms, r)))
        .fold((0.0_f64, String::new()), |acc, (v, r)| {
            if v > acc.0 {
                (v, format!("{}@{}", r.workload, r.link_mbit * scale as f64))
            } else {
                acc
            }
        });
    targets.push(check(
        "downtime <= 1.2 x downtime_lower_bound_ms on every run",
        worst_lb.0 <= 1.2,
        format!("worst {:.3} ({})", worst_lb.0, worst_lb.1),
    ));
    let _ = writeln!(out, "\nwall time {:.1} s", wall.elapsed().as_secs_f64());
    print!("{out}");

    if let Some(path) = &args.json {
        let runs: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "workload": r.workload,
                    "link_mbit": r.link_mbit * scale as f64,
                    "policy": r.policy,
                    "converged": r.converged,
                    "downtime_ms": r.downtime_ms,
                    "total_ms": r.total_ms,
                    "bytes_on_wire": r.bytes_on_wire,
                    "pages_sent": r.pages_sent,
                    "rounds": r.rounds,
                    "verified": r.verified,
                    "downtime_lower_bound_ms": r.bound_ms,
                    "zero_pages": r.zero_pages,
                    "delta_pages": r.delta_pages,
                    "scale": scale,
                    "stop_reason": r.note,
                })
            })
            .collect();
        let doc = json!({
            "scale": scale,
            "runs": runs,
            "ratios": ratio_json,
            "geomean": geo_json,
            "targets": targets.iter().map(|(n, ok)| json!({"target": n, "met": ok})).collect::<Vec<_>>(),
        });
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap_or_default())
        {
            eprintln!("policies: writing {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
