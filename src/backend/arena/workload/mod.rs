//! Guest workloads whose whole state lives in the arena, so that a process
//! that adopts a received arena resumes them exactly where the source
//! stopped.
//!
//! Page 0 is the header; the workload's own structures follow; the rest is
//! "background" memory (what an OS and its page cache would hold), filled
//! at start with seeded content on `fill_pct` % of its pages:
//!
//! ```text
//!  page 0      header: magic, version, workload, pages, seed, keys, area,
//!              then the workload's registers (cursor, op counts, clock)
//!  area        kv: the hash table; muncher: pages rewritten in order;
//!              sparse: 8-byte words updated at random; idle: none
//!  background  seeded content or zero, never written after start
//! ```
//!
//! Every state change the guest acknowledges or depends on is one aligned
//! 8-byte store (see [`ArenaMemory`]), so the arena is consistent at every
//! instruction a `SIGSTOP` may land on; [`adopt`] repairs the few
//! intermediate states a stop can leave (a half-inserted key).

pub mod kv;
pub mod kv_client;
pub mod kv_protocol;
mod muncher;
mod sparse;
mod spec;
pub mod wal;

pub use spec::{GuestSpec, SpecError, WorkloadKind, BLOB_MAGIC};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::ArenaMemory;

/// `b"PPARENA1"`, little endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PPARENA1");
/// Layout version.
pub const VERSION: u64 = 1;

/// Header word indices.
pub(crate) mod header {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 1;
    pub const KIND: usize = 2;
    pub const PAGES: usize = 3;
    pub const SEED: usize = 4;
    pub const KEYS: usize = 5;
    pub const AREA_FIRST: usize = 6;
    pub const AREA_END: usize = 7;
    /// First of the workload's registers.
    pub const REGISTERS: usize = 16;
}

/// A 64-bit mixer (splitmix64's finaliser): seeded, well spread content.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The workload's area `[first, end)` in pages.
pub fn area(spec: &GuestSpec, words_per_page: usize) -> (u64, u64) {
    match spec.workload {
        WorkloadKind::Kv => (1, 1 + kv::table_pages_for(spec.keys, words_per_page)),
        WorkloadKind::Muncher | WorkloadKind::Sparse => {
            let data = spec.pages - 1;
            let len = (data * u64::from(spec.area_pct) / 100).max(1);
            (1, 1 + len)
        }
        WorkloadKind::Idle => (1, 1),
    }
}

/// Whether background page `page` carries content (else it is zero).
fn background_filled(seed: u64, fill_pct: u8, page: u64) -> bool {
    mix(seed ^ page.wrapping_mul(0x2545_f491_4f6c_dd1d)) % 100 < u64::from(fill_pct)
}

/// Background word `i` of page `page`.
fn background_word(seed: u64, page: u64, i: usize) -> u64 {
    mix(seed.rotate_left(32) ^ (page << 12) ^ i as u64) | 1
}

fn index(page: u64, words_per_page: usize) -> usize {
    usize::try_from(page).unwrap_or(usize::MAX) * words_per_page
}

/// Write a fresh arena for `spec`: background content, the workload's
/// initial structures, then the header (magic last).
pub fn init(mem: ArenaMemory<'_>, spec: &GuestSpec) {
    let wpp = mem.words_per_page();
    let (first, end) = area(spec, wpp);
    for page in end..spec.pages {
        if background_filled(spec.seed, spec.fill_pct, page) {
            mem.fill_page(usize::try_from(page).unwrap_or(usize::MAX), |i| {
                background_word(spec.seed, page, i)
            });
        }
    }
    mem.store(header::VERSION, VERSION);
    mem.store(header::KIND, spec.workload.code());
    mem.store(header::PAGES, spec.pages);
    mem.store(header::SEED, spec.seed);
    mem.store(header::KEYS, spec.keys);
    mem.store(header::AREA_FIRST, first);
    mem.store(header::AREA_END, end);
    match spec.workload {
        WorkloadKind::Kv => kv::init(mem, spec, first, end),
        WorkloadKind::Muncher => muncher::init(mem, first, end),
        WorkloadKind::Sparse | WorkloadKind::Idle => {}
    }
    mem.store(header::MAGIC, MAGIC);
}

/// Check that a received arena holds `spec`'s workload, and repair what a
/// stop mid-operation can leave behind.
pub fn adopt(mem: ArenaMemory<'_>, spec: &GuestSpec) -> Result<(), String> {
    let wpp = mem.words_per_page();
    let (first, end) = area(spec, wpp);
    let expect = [
        (header::MAGIC, MAGIC, "magic"),
        (header::VERSION, VERSION, "layout version"),
        (header::KIND, spec.workload.code(), "workload"),
        (header::PAGES, spec.pages, "pages"),
        (header::SEED, spec.seed, "seed"),
        (header::KEYS, spec.keys, "keys"),
        (header::AREA_FIRST, first, "area start"),
        (header::AREA_END, end, "area end"),
    ];
    for (word, want, what) in expect {
        let got = mem.load(word);
        if got != want {
            return Err(format!(
                "the arena header's {what} is {got:#x}, the spec says {want:#x}: not this guest's memory"
            ));
        }
    }
    if spec.workload == WorkloadKind::Kv {
        kv::recover(mem, first, end);
    }
    Ok(())
}

/// Check the arena's invariants: header, background content, and the
/// workload's own structures. Returns a one-line summary.
pub fn verify(mem: ArenaMemory<'_>, spec: &GuestSpec) -> Result<String, String> {
    adopt_check_only(mem, spec)?;
    let wpp = mem.words_per_page();
    let (first, end) = area(spec, wpp);
    let mut filled = 0_u64;
    for page in end..spec.pages {
        let base = index(page, wpp);
        let want_fill = background_filled(spec.seed, spec.fill_pct, page);
        for i in 0..wpp {
            let want = if want_fill {
                background_word(spec.seed, page, i)
            } else {
                0
            };
            let got = mem.load(base + i);
            if got != want {
                return Err(format!(
                    "background page {page} word {i} is {got:#x}, expected {want:#x}"
                ));
            }
        }
        filled += u64::from(want_fill);
    }
    let detail = match spec.workload {
        WorkloadKind::Kv => kv::verify(mem, first, end)?,
        WorkloadKind::Muncher => muncher::verify(mem, first, end)?,
        WorkloadKind::Sparse => sparse::verify(mem, spec, first, end)?,
        WorkloadKind::Idle => format!("ticks={}", mem.load(header::REGISTERS)),
    };
    Ok(format!(
        "{} background_pages_filled={filled} {detail}",
        spec.workload
    ))
}

fn adopt_check_only(mem: ArenaMemory<'_>, spec: &GuestSpec) -> Result<(), String> {
    if mem.load(header::MAGIC) != MAGIC || mem.load(header::KIND) != spec.workload.code() {
        return Err("the arena header does not match the spec".into());
    }
    Ok(())
}

/// A running workload: its threads and the flag that stops them.
#[derive(Debug)]
pub struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Where the key-value service listens.
    pub listen: Option<std::net::SocketAddr>,
}

impl Running {
    /// Stop the workload's threads and wait for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Make the guest store into the last word of each page of `pages`
/// (adding one), as its own code would: the way tests make a quiet guest
/// write exactly the pages they choose.
pub fn touch(mem: ArenaMemory<'_>, pages: &[u64]) -> Result<(), String> {
    let wpp = mem.words_per_page();
    let count = mem.len_words() / wpp;
    for &page in pages {
        let at = usize::try_from(page)
            .ok()
            .filter(|p| *p < count)
            .ok_or_else(|| format!("page {page} is outside the arena ({count} pages)"))?;
        mem.word(at * wpp + wpp - 1).fetch_add(1, Ordering::AcqRel);
    }
    Ok(())
}

/// Start `spec`'s workload on an initialised or adopted arena.
pub fn run(mem: ArenaMemory<'static>, spec: &GuestSpec) -> std::io::Result<Running> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut listen = None;
    let wpp = mem.words_per_page();
    let (first, end) = area(spec, wpp);
    let threads = match spec.workload {
        WorkloadKind::Kv => {
            let (addr, threads) = kv::serve(mem, spec, first, end, Arc::clone(&stop))?;
            listen = Some(addr);
            threads
        }
        WorkloadKind::Muncher => {
            let flag = Arc::clone(&stop);
            let rate = spec.rate_per_s;
            vec![spawn("muncher", move || {
                muncher::run(mem, first, end, rate, &flag)
            })?]
        }
        WorkloadKind::Sparse => {
            let flag = Arc::clone(&stop);
            let spec = spec.clone();
            vec![spawn("sparse", move || {
                sparse::run(mem, &spec, first, end, &flag)
            })?]
        }
        WorkloadKind::Idle if spec.rate_per_s == 0 => Vec::new(),
        WorkloadKind::Idle => {
            let flag = Arc::clone(&stop);
            let tick = Duration::from_secs(1) / u32::try_from(spec.rate_per_s).unwrap_or(u32::MAX);
            vec![spawn("idle", move || {
                while !flag.load(Ordering::Relaxed) {
                    mem.word(header::REGISTERS).fetch_add(1, Ordering::AcqRel);
                    std::thread::sleep(tick);
                }
            })?]
        }
    };
    Ok(Running {
        stop,
        threads,
        listen,
    })
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

/// Paces a loop to `rate_per_s` iterations per second (0: no pacing).
pub(crate) struct Pacer {
    rate_per_s: u64,
    start: std::time::Instant,
    done: u64,
}

impl Pacer {
    pub(crate) fn new(rate_per_s: u64) -> Self {
        Self {
            rate_per_s,
            start: std::time::Instant::now(),
            done: 0,
        }
    }

    /// Count one iteration; sleeps when ahead of the rate.
    pub(crate) fn tick(&mut self) {
        self.done += 1;
        if self.rate_per_s == 0 || self.done % 64 != 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.done as f64 / self.rate_per_s as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        } else if elapsed - due > Duration::from_millis(100) {
            // Far behind (e.g. the guest was paused): don't burst to catch up.
            self.start = std::time::Instant::now();
            self.done = 0;
        }
    }
}
