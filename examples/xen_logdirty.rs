//! Measures how fast a running Xen guest dirties its memory, through
//! perfplus's Xen backend: log-dirty on, one harvest per interval, off.
//!
//! ```text
//! xen_logdirty --domain NAME|ID [--rounds N] [--interval-ms MS] [--read-all] [--check-control]
//! ```
//!
//! Prints one `PPXEN-LOGDIRTY round=...` line per harvest and a JSON
//! summary line (`PPXEN-LOGDIRTY-JSON {...}`). The Xen test bed compares
//! the rate with the one the guest's own workload reports.
//!
//! `--read-all` (HVM/PVH guests) reads every populated page through
//! foreign mappings, skipping the holes of the sparse gfn space by type.
//!
//! `--check-control` also exercises the rest of the backend on the live
//! guest and prints `PPXEN-CONTROL key=value ...`: pages dirtied while
//! perfplus holds the guest paused and after it resumes it, the scheduler
//! cap set at 50 % and restored, and (HVM/PVH) the state records. Run as
//! root in dom0.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use perfplus::backend::xen::{XenDomain, XenHost};
use perfplus::backend::{CpuShare, DirtyBitmap, Domain};

struct Args {
    domain: String,
    rounds: u32,
    interval_ms: u64,
    check_control: bool,
    read_all: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut domain = None;
    let mut rounds = 5;
    let mut interval_ms = 1000;
    let mut check_control = false;
    let mut read_all = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--domain" => domain = Some(value("--domain")?),
            "--rounds" => {
                rounds = value("--rounds")?
                    .parse()
                    .map_err(|e| format!("--rounds: {e}"))?
            }
            "--interval-ms" => {
                interval_ms = value("--interval-ms")?
                    .parse()
                    .map_err(|e| format!("--interval-ms: {e}"))?
            }
            "--check-control" => check_control = true,
            "--read-all" => read_all = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        domain: domain.ok_or("--domain NAME|ID is required")?,
        rounds,
        interval_ms,
        check_control,
        read_all,
    })
}

fn run(args: &Args) -> Result<(), perfplus::Error> {
    let host = XenHost::open()?;
    let info = host.find_domain(&args.domain)?;
    let mut domain = XenDomain::attach(&host, info.domid)?;
    println!(
        "PPXEN-LOGDIRTY domain={} domid={} hvm={} gfns={} tot_pages={}",
        args.domain,
        info.domid,
        domain.is_hvm(),
        domain.page_count(),
        info.tot_pages
    );
    let mut dirty = DirtyBitmap::new(domain.page_count());
    domain.enable_dirty_log()?;
    let started = Instant::now();
    let mut last = started;
    let mut total_pages = 0_u64;
    let mut per_round = Vec::new();
    // The first harvest closes the window opened by enabling.
    for round in 0..args.rounds {
        std::thread::sleep(Duration::from_millis(args.interval_ms));
        dirty.clear();
        domain.harvest_dirty(&mut dirty)?;
        let now = Instant::now();
        let elapsed_ms = now.duration_since(last).as_millis();
        last = now;
        let pages = dirty.count();
        let stats = domain.last_harvest_stats();
        total_pages += pages;
        per_round.push(pages);
        println!(
            "PPXEN-LOGDIRTY round={round} dirty_pages={pages} xen_dirty_count={} \
             fault_count={} window_ms={elapsed_ms}",
            stats.dirty_count, stats.fault_count
        );
    }
    let window_ms = last.duration_since(started).as_millis();
    domain.disable_dirty_log()?;
    if args.read_all {
        read_all_pages(&mut domain)?;
    }
    if args.check_control {
        check_control(&mut domain, args.interval_ms)?;
    }
    let rate = (u128::from(total_pages) * 1000)
        .checked_div(window_ms)
        .unwrap_or(0);
    let rounds: Vec<String> = per_round.iter().map(u64::to_string).collect();
    println!(
        "PPXEN-LOGDIRTY-JSON {{\"domid\":{},\"rounds\":[{}],\"dirty_pages\":{},\"window_ms\":{},\"pages_per_s\":{}}}",
        info.domid,
        rounds.join(","),
        total_pages,
        window_ms,
        rate
    );
    Ok(())
}

/// HVM/PVH: read every populated page through foreign mappings (the
/// holes of the sparse gfn space skipped by type), as a migration's first
/// round does.
fn read_all_pages(domain: &mut XenDomain) -> Result<(), perfplus::Error> {
    const XTAB: u32 = 0xf000_0000;
    const BROKEN: u32 = 0xd000_0000;
    let started = Instant::now();
    let all: Vec<u64> = (0..domain.page_count()).collect();
    let types = domain.page_types(&all)?;
    let populated: Vec<u64> = all
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t != XTAB && t != BROKEN)
        .map(|(&p, _)| p)
        .collect();
    let mut buf = vec![0_u8; 1024 * domain.page_size()];
    let mut nonzero = 0_u64;
    for batch in populated.chunks(1024) {
        let bytes = batch.len() * domain.page_size();
        domain.read_pages(batch, &mut buf[..bytes])?;
        nonzero += buf[..bytes]
            .chunks(domain.page_size())
            .filter(|page| page.iter().any(|&b| b != 0))
            .count() as u64;
    }
    println!(
        "PPXEN-LOGDIRTY read populated_pages={} nonzero_pages={nonzero} read_ms={}",
        populated.len(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// Pause, cap and state on the live guest, each undone afterwards.
fn check_control(domain: &mut XenDomain, interval_ms: u64) -> Result<(), perfplus::Error> {
    let window = Duration::from_millis(interval_ms);
    let mut dirty = DirtyBitmap::new(domain.page_count());
    domain.enable_dirty_log()?;
    // Paused: the first harvest (FINAL) empties the log, the second shows
    // what was written while perfplus held the guest.
    domain.pause()?;
    domain.harvest_dirty(&mut dirty)?;
    dirty.clear();
    std::thread::sleep(window);
    domain.harvest_dirty(&mut dirty)?;
    let paused_pages = dirty.count();
    let paused_flag = domain.info()?.paused;
    let state = if domain.is_hvm() {
        describe_records(&domain.save_state()?)
    } else {
        "pv".to_string()
    };
    domain.resume()?;
    let resumed_flag = domain.info()?.paused;
    dirty.clear();
    domain.harvest_dirty(&mut dirty)?;
    dirty.clear();
    std::thread::sleep(window);
    domain.harvest_dirty(&mut dirty)?;
    let resumed_pages = dirty.count();
    domain.disable_dirty_log()?;

    let cap_before = domain.cpu_cap()?.unwrap_or(0);
    domain.set_cpu_cap(CpuShare::percent(50))?;
    let cap_set = domain.cpu_cap()?.unwrap_or(0);
    domain.set_cpu_cap(None)?;
    let cap_after = domain.cpu_cap()?.unwrap_or(0);
    println!(
        "PPXEN-CONTROL paused_dirty_pages={paused_pages} paused_flag={} \
         resumed_dirty_pages={resumed_pages} resumed_paused_flag={} \
         cap_before={cap_before} cap_set={cap_set} cap_after={cap_after} state={state}",
        u8::from(paused_flag),
        u8::from(resumed_flag),
    );
    Ok(())
}

/// `TYPE:LENGTH,...` for a run of libxc records.
fn describe_records(mut blob: &[u8]) -> String {
    let mut parts = Vec::new();
    while blob.len() >= 8 {
        let rtype = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]);
        let length = u32::from_le_bytes([blob[4], blob[5], blob[6], blob[7]]) as usize;
        parts.push(format!("{rtype}:{length}"));
        let padded = 8 + length.div_ceil(8) * 8;
        blob = blob.get(padded..).unwrap_or(&[]);
    }
    if !blob.is_empty() {
        parts.push(format!("trailing:{}", blob.len()));
    }
    parts.join(",")
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xen_logdirty: {e}");
            eprintln!(
                "usage: xen_logdirty --domain NAME|ID [--rounds N] [--interval-ms MS] \
                 [--read-all] [--check-control]"
            );
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xen_logdirty: {e}");
            ExitCode::FAILURE
        }
    }
}
