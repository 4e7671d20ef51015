//! The arena benchmark: what real dirty tracking costs on this machine and
//! the same-run limits of the data path.
//!
//! ```text
//! cargo bench --bench arena -- [--quick] [--json FILE]
//! ```
//!
//! Sections, each printed as a table and written to the JSON file:
//! - `limits`: single-core page copy (memcpy, and `process_vm_readv` as the
//!   arena reads pages) and loopback TCP throughput, measured in this run;
//! - `tracking`: write-fault cost paid by the guest, `PAGEMAP_SCAN` cost
//!   for clean, fully dirty and randomly dirty memory, and the tracking
//!   state kept per guest page.
//!
//! Numbers are this run's; compare ratios, not absolute times (the machine
//! is shared).

#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)] // page arithmetic and rates
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use perfplus::backend::arena::{check_support, ArenaDomain, LocalGuest};
use perfplus::backend::{DirtyBitmap, Domain, Pfn};
use serde_json::{json, Value};

struct Options {
    quick: bool,
    json: Option<String>,
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
            "--json" => o.json = Some(args.next().expect("--json needs a file")),
            "--bench" => {}
            other if other.starts_with("--") => eprintln!("arena bench: ignoring {other}"),
            _ => {}
        }
    }
    o
}

const PAGE: usize = 4096;

/// Single-core memcpy of pages, sequential order, into a 256 KiB ring (as
/// a sender fills its socket buffer).
fn memcpy_bytes_per_s(pages: usize) -> f64 {
    let src = vec![0x5a_u8; pages * PAGE];
    let mut ring = vec![0_u8; 64 * PAGE];
    let start = Instant::now();
    for p in 0..pages {
        let slot = p % 64;
        ring[slot * PAGE..(slot + 1) * PAGE].copy_from_slice(&src[p * PAGE..(p + 1) * PAGE]);
    }
    std::hint::black_box(&ring);
    (pages * PAGE) as f64 / start.elapsed().as_secs_f64()
}

/// `ArenaDomain::read_pages` (process_vm_readv) in 256-page batches.
fn read_pages_bytes_per_s(domain: &mut ArenaDomain) -> f64 {
    let pages = domain.page_count();
    let mut buf = vec![0_u8; 256 * PAGE];
    let all: Vec<Pfn> = (0..pages).collect();
    let start = Instant::now();
    for chunk in all.chunks(256) {
        domain
            .read_pages(chunk, &mut buf[..chunk.len() * PAGE])
            .unwrap();
    }
    (pages as usize * PAGE) as f64 / start.elapsed().as_secs_f64()
}

/// One loopback TCP stream, 128 KiB writes, for `duration`.
fn tcp_bytes_per_s(duration: Duration) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0_u8; 256 * 1024];
        let mut total = 0_u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let chunk = vec![0x33_u8; 128 * 1024];
    let start = Instant::now();
    let mut sent = 0_u64;
    while start.elapsed() < duration {
        s.write_all(&chunk).unwrap();
        sent += chunk.len() as u64;
    }
    drop(s);
    let received = receiver.join().unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(received, sent);
    sent as f64 / elapsed
}

/// Tracking costs on a local arena of `pages` pages.
fn tracking(pages: u64) -> Value {
    let guest = LocalGuest::new(pages).unwrap();
    let mut domain = ArenaDomain::local(Arc::clone(&guest)).unwrap();
    let mem = guest.memory();
    let wpp = mem.words_per_page();
    let touch_all = |value: u64| {
        let start = Instant::now();
        for p in 0..pages as usize {
            mem.store(p * wpp, value);
        }
        start.elapsed().as_secs_f64()
    };
    touch_all(1); // populate
    let unprotected_s = touch_all(2);
    domain.enable_dirty_log().unwrap();
    let protected_s = touch_all(3);
    let fault_ns = (protected_s - unprotected_s).max(0.0) * 1e9 / pages as f64;

    let mut dirty = DirtyBitmap::new(pages);
    let start = Instant::now();
    domain.harvest_dirty(&mut dirty).unwrap();
    let full_scan_s = start.elapsed().as_secs_f64();
    assert_eq!(dirty.count(), pages);

    dirty.clear();
    let start = Instant::now();
    domain.harvest_dirty(&mut dirty).unwrap();
    let clean_scan_s = start.elapsed().as_secs_f64();
    assert!(dirty.is_empty());

    // 10 % random pages.
    let mut x = 0x1234_5678_u64;
    let mut written = 0;
    for _ in 0..pages / 10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        mem.store((x % pages) as usize * wpp, x);
        written += 1;
    }
    dirty.clear();
    let start = Instant::now();
    domain.harvest_dirty(&mut dirty).unwrap();
    let random_scan_s = start.elapsed().as_secs_f64();
    let random_pages = dirty.count();
    let regions = domain.last_harvest().regions;
    assert!(random_pages <= written);

    let gib = (pages as f64 * PAGE as f64) / f64::from(1 << 30);
    let bitmap_bytes = pages.div_ceil(64) * 8;
    let state_bytes = bitmap_bytes as f64 + domain.tracker_state_bytes() as f64;
    json!({
        "arena_pages": pages,
        "write_fault_ns": fault_ns,
        "scan_clean_ms_per_gib": clean_scan_s * 1e3 / gib,
        "scan_all_dirty_ns_per_page": full_scan_s * 1e9 / pages as f64,
        "scan_random_10pct_ns_per_dirty_page": random_scan_s * 1e9 / random_pages.max(1) as f64,
        "scan_random_10pct_regions": regions,
        "tracking_bytes_per_page": state_bytes / pages as f64,
    })
}

/// A guest rewriting whole pages (as the muncher does) for `duration`,
/// untracked and then tracked with a harvest every 50 ms: pages per second
/// each way. The difference is what tracking costs the guest.
fn guest_slowdown(pages: u64, duration: Duration) -> Value {
    let guest = LocalGuest::new(pages).unwrap();
    let mut domain = ArenaDomain::local(Arc::clone(&guest)).unwrap();
    let rewrite = |guest: &LocalGuest, stop: &std::sync::atomic::AtomicBool| {
        let mem = guest.memory();
        let mut n = 0_u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _pass = guest.enter();
            for _ in 0..64 {
                let page = (n % pages) as usize;
                mem.fill_page(page, |i| n ^ i as u64);
                n += 1;
            }
        }
        n
    };
    let measure = |domain: &mut ArenaDomain, harvest: bool| {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let start = Instant::now();
        let mut harvested = 0;
        let written = std::thread::scope(|s| {
            let writer = s.spawn(|| rewrite(&guest, &stop));
            let mut dirty = DirtyBitmap::new(pages);
            while start.elapsed() < duration {
                std::thread::sleep(Duration::from_millis(50));
                if harvest {
                    dirty.clear();
                    domain.harvest_dirty(&mut dirty).unwrap();
                    harvested += dirty.count();
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            writer.join().unwrap()
        });
        (written as f64 / start.elapsed().as_secs_f64(), harvested)
    };
    let (untracked, _) = measure(&mut domain, false);
    domain.enable_dirty_log().unwrap();
    let (tracked, harvested) = measure(&mut domain, true);
    json!({
        "untracked_pages_per_s": untracked,
        "tracked_pages_per_s": tracked,
        "tracked_over_untracked": tracked / untracked,
        "pages_harvested": harvested,
    })
}

fn main() {
    let o = options();
    if let Err(e) = check_support() {
        eprintln!("arena bench: {e}");
        std::process::exit(1);
    }
    let pages: u64 = if o.quick { 1 << 16 } else { 1 << 18 }; // 256 MiB / 1 GiB
    let tcp_for = Duration::from_millis(if o.quick { 500 } else { 2000 });

    // Limits.
    let memcpy = memcpy_bytes_per_s(pages as usize);
    let guest = LocalGuest::new(pages).unwrap();
    {
        let mem = guest.memory();
        for p in 0..pages as usize {
            mem.store(p * mem.words_per_page(), p as u64 | 1);
        }
    }
    let mut domain = ArenaDomain::local(Arc::clone(&guest)).unwrap();
    let read_pages = read_pages_bytes_per_s(&mut domain);
    drop(domain);
    drop(guest);
    let tcp = tcp_bytes_per_s(tcp_for);
    let limits = json!({
        "copy_limit_bytes_per_s": memcpy,
        "read_pages_bytes_per_s": read_pages,
        "tcp_limit_bytes_per_s": tcp,
    });
    println!("\nlimits (one core, {} MiB)", (pages * PAGE as u64) >> 20);
    println!("  {:<34} {:>10.2} GB/s", "page copy (memcpy)", memcpy / 1e9);
    println!(
        "  {:<34} {:>10.2} GB/s",
        "read_pages (process_vm_readv)",
        read_pages / 1e9
    );
    println!(
        "  {:<34} {:>10.2} GB/s",
        "loopback TCP, 1 stream, 128 KiB",
        tcp / 1e9
    );

    let t = tracking(pages);
    println!("\ntracking ({} MiB arena)", (pages * PAGE as u64) >> 20);
    for (key, unit) in [
        ("write_fault_ns", "ns per first write to a protected page"),
        ("scan_clean_ms_per_gib", "ms per GiB, nothing dirty"),
        ("scan_all_dirty_ns_per_page", "ns per page, all dirty"),
        (
            "scan_random_10pct_ns_per_dirty_page",
            "ns per dirty page, 10 % random",
        ),
        (
            "tracking_bytes_per_page",
            "bytes of tracking state per page",
        ),
    ] {
        println!(
            "  {:<40} {:>10.3}  {unit}",
            key,
            t[key].as_f64().unwrap_or(f64::NAN)
        );
    }

    let slow = guest_slowdown(
        pages,
        Duration::from_millis(if o.quick { 500 } else { 2000 }),
    );
    println!("\nguest rewriting whole pages (one thread)");
    println!(
        "  {:<40} {:>10.0}  pages/s\n  {:<40} {:>10.0}  pages/s ({:.2}x), harvest every 50 ms",
        "untracked",
        slow["untracked_pages_per_s"].as_f64().unwrap_or(f64::NAN),
        "tracked",
        slow["tracked_pages_per_s"].as_f64().unwrap_or(f64::NAN),
        slow["tracked_over_untracked"].as_f64().unwrap_or(f64::NAN),
    );

    let report = json!({
        "bench": "arena",
        "quick": o.quick,
        "limits": limits,
        "tracking": t,
        "guest_slowdown": slow,
        "runs": [],
    });
    if let Some(path) = o.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("\nJSON written to {path}");
    }
}
