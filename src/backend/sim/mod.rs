//! `sim`: a deterministic simulated guest on virtual time.
//!
//! The guest's memory is generated on demand, so a 64 GiB guest costs
//! 4 bytes of state per page (a write counter), not 64 GiB:
//!
//! - **Initial content** of page `p`: all zero with probability
//!   `zero_fraction`, otherwise pseudo-random bytes from `(seed, p)`.
//! - **Writes** follow the workload's writers ([`workload`](crate::backend::sim::workload)). Each page has
//!   up to 8 *fields* (`page_size / bytes_per_write`, at most 8) at fixed
//!   offsets, like the hot members of a data structure; write `k` to a page
//!   rewrites one field, `bytes_per_write` bytes, with fresh pseudo-random
//!   bytes. The fields are hit in rotating order, so repeated writes to a page
//!   keep hitting the same few places: an 8-byte counter page differs from its
//!   old copy in at most 64 bytes, a 4096-byte writer rewrites the whole page.
//!   The content after `n` writes is a pure function of `(seed, p, n)`, so
//!   a read regenerates it in O(page size).
//!   A page's field layout comes from the largest `bytes_per_write` of any
//!   writer (in any phase) whose region covers it, so a layout never makes
//!   deltas look better than the file says.
//! - Pages written through [`Domain::write_pages`](crate::backend::sim::Domain::write_pages) (a receiving guest, or a
//!   test) are stored as bytes; workload writes then change those bytes in
//!   place the same way.
//!
//! Time is virtual ([`VirtualClock`](crate::backend::sim::VirtualClock)): the guest runs lazily, catching up to
//! the clock's `now` whenever it is observed (read, harvest, pause), applying
//! `rate × elapsed` writes per writer (times the CPU cap). A link model
//! ([`crate::migration::transport::SimLink`]) moves the clock as bytes go
//! over the wire, so the guest dirties pages *during* each round exactly as
//! fast as the workload says.
//!
//! The CPU/device state blob is 16 KiB (about a small HVM guest's context)
//! and carries the switchover cost: restoring it into a receiving `sim`
//! domain makes its [`Domain::resume`](crate::backend::sim::Domain::resume) take `switchover_fixed_ms` of virtual
//! time.
//!
//! [`RealTimeSim`] runs the same guest with its virtual clock following real
//! time, for migrations over a real link (TCP) instead of the simulated one.

#![forbid(unsafe_code)]

pub mod realtime;
pub mod workload;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use realtime::RealTimeSim;
pub use workload::{Distribution, LinkSpec, Phase, Workload, WorkloadError, WriterSpec};

use super::{BackendError, CpuShare, DirtyBitmap, Domain, Pfn};

/// Page size of simulated guests.
pub const PAGE_SIZE: usize = 4096;
/// Size of the simulated CPU/device state blob.
pub const STATE_BLOB_BYTES: usize = 16 * 1024;
const STATE_MAGIC: &[u8; 8] = b"PPSIMCPU";
const MAX_FIELDS: usize = 8;

/// A virtual clock in nanoseconds, shared by the guest and the link model
/// (cloning shares it). It only moves forward.
#[derive(Debug, Clone, Default)]
pub struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    /// A clock at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Now, in nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Move to `t_ns` if that is later than now.
    pub fn advance_to(&self, t_ns: u64) {
        self.0.fetch_max(t_ns, Ordering::SeqCst);
    }

    /// Move forward by `dt_ns`.
    pub fn advance_by(&self, dt_ns: u64) {
        self.0.fetch_add(dt_ns, Ordering::SeqCst);
    }
}

/// SplitMix64 finaliser: a fast, well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hash3(seed: u64, a: u64, b: u64) -> u64 {
    mix(seed ^ mix(a ^ mix(b)))
}

/// Fill `out` with pseudo-random bytes from `key`.
fn fill_random(out: &mut [u8], key: u64) {
    let mut chunks = out.chunks_exact_mut(8);
    let mut i = 0_u64;
    for chunk in chunks.by_ref() {
        chunk.copy_from_slice(&mix(key ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03)).to_le_bytes());
        i += 1;
    }
    let rest = chunks.into_remainder();
    let tail = mix(key ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03)).to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&tail[..n]);
}

/// Unit-interval float from 64 random bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1_u64 << 53) as f64
}

/// Rejection-inversion Zipf sampler over ranks 1..=n (Hörmann and
/// Derflinger 1996): O(1) per sample, no tables.
#[derive(Debug, Clone)]
struct Zipf {
    n: f64,
    s: f64,
    h_x1: f64,
    h_n: f64,
    cut: f64,
}

impl Zipf {
    fn new(n: u64, s: f64) -> Self {
        let mut z = Self {
            n: n as f64,
            s,
            h_x1: 0.0,
            h_n: 0.0,
            cut: 0.0,
        };
        z.h_x1 = z.h_integral(1.5) - 1.0;
        z.h_n = z.h_integral(z.n + 0.5);
        z.cut = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.s) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }

    /// A rank in 1..=n.
    fn sample(&self, mut next: impl FnMut() -> u64) -> u64 {
        loop {
            let u = self.h_n + unit(next()) * (self.h_x1 - self.h_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.cut || u >= self.h_integral(k + 0.5) - self.h(k) {
                // k is in 1..=n by the clamp.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                return k as u64;
            }
        }
    }
}

/// ln(1+x)/x, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// (e^x - 1)/x, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The pages `[start, end)` of a region given as fractions.
fn region_pages(region: [f64; 2], page_count: u64) -> (u64, u64) {
    let at = |f: f64| -> u64 {
        // f is in [0, 1] (checked when parsing), so this is in 0..=page_count.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let p = (f * page_count as f64).round() as u64;
        p.min(page_count)
    };
    let start = at(region[0]).min(page_count.saturating_sub(1));
    let end = at(region[1]).max(start + 1).min(page_count);
    (start, end)
}

/// A writer at run time.
#[derive(Debug, Clone)]
struct Writer {
    start: Pfn,
    len: u64,
    rate_pages_per_s: f64,
    kind: WriterKind,
    rng: u64,
    /// Fractional writes carried to the next step.
    carry: f64,
    /// Next page of a sequential writer (offset in the region).
    cursor: u64,
    /// Multiplier coprime with `len` scattering Zipf ranks over the region.
    scatter: u64,
}

#[derive(Debug, Clone)]
enum WriterKind {
    Uniform,
    Zipf(Zipf),
    Sequential,
}

impl Writer {
    fn new(spec: &WriterSpec, page_count: u64, seed: u64) -> Self {
        let (start, end) = region_pages(spec.region, page_count);
        let len = end - start;
        let mut scatter = (mix(seed ^ 0x5ca7) % len.max(1)) | 1;
        while len > 1 && gcd(scatter, len) != 1 {
            scatter += 2;
        }
        Self {
            start,
            len,
            rate_pages_per_s: spec.rate_pages_per_s,
            kind: match spec.distribution {
                Distribution::Uniform => WriterKind::Uniform,
                Distribution::Zipf { s } => WriterKind::Zipf(Zipf::new(len, s)),
                Distribution::Sequential => WriterKind::Sequential,
            },
            rng: mix(seed),
            carry: 0.0,
            cursor: mix(seed ^ 0xc0) % len.max(1),
            scatter,
        }
    }

    fn next_random(rng: &mut u64) -> u64 {
        *rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(*rng)
    }

    fn next_page(&mut self) -> Pfn {
        let offset = match &self.kind {
            WriterKind::Uniform => Self::next_random(&mut self.rng) % self.len,
            WriterKind::Sequential => {
                let at = self.cursor;
                self.cursor = (self.cursor + 1) % self.len;
                at
            }
            WriterKind::Zipf(z) => {
                let rng = &mut self.rng;
                let rank = z.sample(|| Self::next_random(rng));
                ((rank - 1) % self.len).wrapping_mul(self.scatter) % self.len
            }
        };
        self.start + offset
    }
}

/// Field layout of a page: `count` fields of `width` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    count: usize,
    width: usize,
}

impl Layout {
    fn for_bytes_per_write(bytes: usize) -> Self {
        let count = (PAGE_SIZE / bytes.max(1)).clamp(1, MAX_FIELDS);
        Self {
            count,
            width: bytes.min(PAGE_SIZE / count),
        }
    }
}

/// A simulated guest. See the module documentation.
#[derive(Debug)]
pub struct SimDomain {
    seed: u64,
    page_count: u64,
    zero_threshold: u64,
    /// (first page, end page, layout) from the workload's writers, any phase.
    layouts: Vec<(Pfn, Pfn, Layout)>,
    writes: Vec<u32>,
    /// Pages stored as bytes (an empty box: all zero).
    stored: Option<Vec<Option<Box<[u8]>>>>,
    workload: Option<Workload>,
    writers: Vec<Writer>,
    next_phase: usize,
    clock: VirtualClock,
    /// Virtual time up to which the guest has run.
    ran_until_ns: u64,
    paused: bool,
    cap: Option<CpuShare>,
    dirty_log: Option<DirtyBitmap>,
    state: Vec<u8>,
    resume_cost_ns: u64,
    writes_applied: u64,
}

impl SimDomain {
    /// A guest running `workload` from the clock's current time, with
    /// deterministic content and writes from `seed`.
    pub fn new(workload: &Workload, seed: u64, clock: VirtualClock) -> Self {
        let page_count = workload.memory_mib * (1 << 20) / PAGE_SIZE as u64;
        let mut layouts = Vec::new();
        let all = workload
            .writers
            .iter()
            .chain(workload.phases.iter().flat_map(|p| p.writers.iter()));
        for w in all {
            let (start, end) = region_pages(w.region, page_count);
            layouts.push((start, end, Layout::for_bytes_per_write(w.bytes_per_write)));
        }
        // Largest width wins (see the module doc): sort widest first.
        layouts.sort_by_key(|l| std::cmp::Reverse(l.2.width));
        // zero_fraction is in [0, 1]; scale to a u64 threshold on a hash.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let zero_threshold = if workload.zero_fraction >= 1.0 {
            u64::MAX
        } else {
            (workload.zero_fraction * u64::MAX as f64) as u64
        };
        let now = clock.now_ns();
        let mut state = Vec::with_capacity(STATE_BLOB_BYTES);
        state.extend_from_slice(STATE_MAGIC);
        // Switchover cost in microseconds, then pseudo-random "registers".
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let cost_us = (workload.switchover_fixed_ms * 1000.0).round() as u64;
        state.extend_from_slice(&cost_us.to_le_bytes());
        state.resize(STATE_BLOB_BYTES, 0);
        fill_random(&mut state[16..], mix(seed ^ 0x57a7e));
        let mut sim = Self {
            seed,
            page_count,
            zero_threshold,
            layouts,
            writes: vec![0; usize::try_from(page_count).unwrap_or(0)],
            stored: None,
            workload: Some(workload.clone()),
            writers: Vec::new(),
            next_phase: 0,
            clock,
            ran_until_ns: now,
            paused: false,
            cap: None,
            dirty_log: None,
            state,
            resume_cost_ns: 0,
            writes_applied: 0,
        };
        sim.writers = sim.make_writers(&workload.writers, 0);
        sim
    }

    /// An all-zero, idle guest of `page_count` pages: a receiving domain.
    /// It starts paused (a receiver resumes it after the hand-over).
    pub fn blank(page_count: u64, clock: VirtualClock) -> Self {
        let now = clock.now_ns();
        Self {
            seed: 0,
            page_count,
            zero_threshold: u64::MAX,
            layouts: Vec::new(),
            writes: vec![0; usize::try_from(page_count).unwrap_or(0)],
            stored: None,
            workload: None,
            writers: Vec::new(),
            next_phase: 0,
            clock,
            ran_until_ns: now,
            paused: true,
            cap: None,
            dirty_log: None,
            state: Vec::new(),
            resume_cost_ns: 0,
            writes_applied: 0,
        }
    }

    /// The clock this guest runs on.
    pub fn clock(&self) -> &VirtualClock {
        &self.clock
    }

    /// Page writes the workload has made so far.
    pub fn writes_applied(&self) -> u64 {
        self.writes_applied
    }

    /// Make the guest write page `pfn` once now, as its workload would
    /// (used by the conformance suite to cause guest writes).
    pub fn guest_write(&mut self, pfn: Pfn) -> Result<(), BackendError> {
        self.check_pfn(pfn)?;
        self.catch_up();
        self.apply_write(pfn);
        Ok(())
    }

    fn make_writers(&self, specs: &[WriterSpec], phase: u64) -> Vec<Writer> {
        specs
            .iter()
            .enumerate()
            .map(|(i, w)| Writer::new(w, self.page_count, hash3(self.seed, phase, i as u64)))
            .collect()
    }

    fn check_pfn(&self, pfn: Pfn) -> Result<(), BackendError> {
        if pfn < self.page_count {
            Ok(())
        } else {
            Err(BackendError::PfnOutOfRange {
                pfn,
                page_count: self.page_count,
            })
        }
    }

    fn index(pfn: Pfn) -> usize {
        // pfn < page_count, whose count of u32s is allocated: fits usize.
        usize::try_from(pfn).unwrap_or(usize::MAX)
    }

    fn layout(&self, pfn: Pfn) -> Layout {
        self.layouts
            .iter()
            .find(|(s, e, _)| (*s..*e).contains(&pfn))
            .map_or(Layout::for_bytes_per_write(PAGE_SIZE), |l| l.2)
    }

    fn field_offset(&self, pfn: Pfn, layout: Layout, field: usize) -> usize {
        let region = PAGE_SIZE / layout.count;
        let slack = region - layout.width;
        let mut off =
            usize::try_from(hash3(self.seed, pfn, 0xf1e1d ^ field as u64) % (slack as u64 + 1))
                .unwrap_or(0);
        if layout.width % 8 == 0 {
            off &= !7;
        }
        field * region + off
    }

    /// The field rewritten by write number `k` (1-based) to `pfn`.
    fn field_of_write(&self, pfn: Pfn, layout: Layout, k: u64) -> usize {
        let n = layout.count as u64;
        let block = (k - 1) / n;
        let rotation = hash3(self.seed, pfn, block) % n;
        usize::try_from(((k - 1) % n + rotation) % n).unwrap_or(0)
    }

    /// The last write (1-based) at or before `n` that hit `field`, if any.
    fn last_write_to_field(&self, pfn: Pfn, layout: Layout, n: u64, field: usize) -> Option<u64> {
        if n == 0 {
            return None;
        }
        let count = layout.count as u64;
        let block = (n - 1) / count;
        let within = (n - 1) % count;
        let position = |b: u64| (field as u64 + count - hash3(self.seed, pfn, b) % count) % count;
        let i = position(block);
        if i <= within {
            return Some(block * count + i + 1);
        }
        (block > 0).then(|| (block - 1) * count + position(block - 1) + 1)
    }

    fn write_field(&self, pfn: Pfn, layout: Layout, field: usize, k: u64, page: &mut [u8]) {
        let at = self.field_offset(pfn, layout, field);
        fill_random(
            &mut page[at..at + layout.width],
            hash3(self.seed ^ 0xda7a, pfn, k),
        );
    }

    /// Generate the content of an unstored page into `out`.
    fn generate(&self, pfn: Pfn, out: &mut [u8]) {
        let n = u64::from(self.writes[Self::index(pfn)]);
        let layout = self.layout(pfn);
        if n > 0 && layout.count == 1 && layout.width == PAGE_SIZE {
            // A whole-page writer: the last write is all there is.
            self.write_field(pfn, layout, 0, n, out);
            return;
        }
        if mix(self.seed ^ pfn.wrapping_mul(0x2545_f491_4f6c_dd1d)) < self.zero_threshold {
            out.fill(0);
        } else {
            fill_random(out, hash3(self.seed, pfn, 0xba5e));
        }
        if n == 0 {
            return;
        }
        for field in 0..layout.count {
            if let Some(k) = self.last_write_to_field(pfn, layout, n, field) {
                self.write_field(pfn, layout, field, k, out);
            }
        }
    }

    fn apply_write(&mut self, pfn: Pfn) {
        let i = Self::index(pfn);
        let k = u64::from(self.writes[i]) + 1;
        self.writes[i] = self.writes[i].wrapping_add(1);
        self.writes_applied += 1;
        if let Some(log) = &mut self.dirty_log {
            log.set(pfn);
        }
        let stored = self.stored.as_mut().and_then(|s| s[i].take());
        if let Some(mut page) = stored {
            if page.is_empty() {
                page = vec![0; PAGE_SIZE].into_boxed_slice();
            }
            let layout = self.layout(pfn);
            let field = self.field_of_write(pfn, layout, k);
            self.write_field(pfn, layout, field, k, &mut page);
            if let Some(s) = self.stored.as_mut() {
                s[i] = Some(page);
            }
        }
    }

    /// Run the guest up to the clock's now.
    fn catch_up(&mut self) {
        let now = self.clock.now_ns();
        while self.ran_until_ns < now {
            let phase_at = self
                .workload
                .as_ref()
                .and_then(|w| w.phases.get(self.next_phase))
                .map(|p| {
                    // at_s is finite and positive (checked when parsing).
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let ns = (p.at_s * 1e9) as u64;
                    ns
                });
            let until = phase_at.map_or(now, |t| t.min(now).max(self.ran_until_ns));
            if !self.paused {
                self.run_writers(until - self.ran_until_ns);
            }
            self.ran_until_ns = until;
            if phase_at.is_some_and(|t| t <= until) {
                let specs = self
                    .workload
                    .as_ref()
                    .map(|w| w.phases[self.next_phase].writers.clone())
                    .unwrap_or_default();
                self.next_phase += 1;
                self.writers = self.make_writers(&specs, self.next_phase as u64);
            }
            if phase_at.is_none() {
                break;
            }
        }
        self.ran_until_ns = self.ran_until_ns.max(now);
    }

    fn run_writers(&mut self, dt_ns: u64) {
        let share = self.cap.map_or(1.0, |c| f64::from(c.get()) / 100.0);
        let mut writers = std::mem::take(&mut self.writers);
        for w in &mut writers {
            w.carry += w.rate_pages_per_s * share * dt_ns as f64 / 1e9;
            let whole = w.carry.floor();
            w.carry -= whole;
            // whole is a finite non-negative count.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let count = whole as u64;
            for _ in 0..count {
                let pfn = w.next_page();
                self.apply_write(pfn);
            }
        }
        self.writers = writers;
    }

    fn check_batch(&self, pfns: &[Pfn], len: usize) -> Result<(), BackendError> {
        let expected = pfns.len() * PAGE_SIZE;
        if len != expected {
            return Err(BackendError::BufferSize { expected, got: len });
        }
        pfns.iter().try_for_each(|&p| self.check_pfn(p))
    }
}

impl Domain for SimDomain {
    fn page_size(&self) -> usize {
        PAGE_SIZE
    }

    fn page_count(&self) -> u64 {
        self.page_count
    }

    fn read_pages(&mut self, pfns: &[Pfn], buf: &mut [u8]) -> Result<(), BackendError> {
        self.check_batch(pfns, buf.len())?;
        self.catch_up();
        for (&pfn, out) in pfns.iter().zip(buf.chunks_exact_mut(PAGE_SIZE)) {
            match self
                .stored
                .as_ref()
                .and_then(|s| s[Self::index(pfn)].as_ref())
            {
                Some(page) if page.is_empty() => out.fill(0),
                Some(page) => out.copy_from_slice(page),
                None => self.generate(pfn, out),
            }
        }
        Ok(())
    }

    fn write_pages(&mut self, pfns: &[Pfn], data: &[u8]) -> Result<(), BackendError> {
        self.check_batch(pfns, data.len())?;
        self.catch_up();
        let page_count = usize::try_from(self.page_count).unwrap_or(0);
        let stored = self.stored.get_or_insert_with(|| vec![None; page_count]);
        for (&pfn, page) in pfns.iter().zip(data.chunks_exact(PAGE_SIZE)) {
            let i = Self::index(pfn);
            stored[i] = Some(if crate::migration::encode::is_zero(page) {
                Box::default()
            } else {
                match stored[i].take() {
                    Some(mut b) if !b.is_empty() => {
                        b.copy_from_slice(page);
                        b
                    }
                    _ => page.into(),
                }
            });
            if let Some(log) = &mut self.dirty_log {
                log.set(pfn);
            }
        }
        Ok(())
    }

    fn enable_dirty_log(&mut self) -> Result<(), BackendError> {
        self.catch_up();
        self.dirty_log = Some(DirtyBitmap::new(self.page_count));
        Ok(())
    }

    fn harvest_dirty(&mut self, dirty: &mut DirtyBitmap) -> Result<(), BackendError> {
        self.catch_up();
        let log = self
            .dirty_log
            .as_mut()
            .ok_or(BackendError::DirtyLogDisabled)?;
        dirty.union_with(log);
        log.clear();
        Ok(())
    }

    fn disable_dirty_log(&mut self) -> Result<(), BackendError> {
        self.catch_up();
        self.dirty_log
            .take()
            .map(|_| ())
            .ok_or(BackendError::DirtyLogDisabled)
    }

    fn dirty_log_is_exact(&self) -> bool {
        true
    }

    fn pause(&mut self) -> Result<(), BackendError> {
        self.catch_up();
        self.paused = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), BackendError> {
        self.catch_up();
        if self.paused && self.resume_cost_ns > 0 {
            // Loading the state and starting the vCPUs takes the switchover cost.
            self.clock.advance_by(self.resume_cost_ns);
            self.resume_cost_ns = 0;
            self.ran_until_ns = self.clock.now_ns();
        }
        self.paused = false;
        self.cap = None;
        Ok(())
    }

    fn is_paused(&self) -> bool {
        self.paused
    }

    fn set_cpu_cap(&mut self, cap: Option<CpuShare>) -> Result<(), BackendError> {
        self.catch_up();
        self.cap = cap;
        Ok(())
    }

    fn save_state(&mut self) -> Result<Vec<u8>, BackendError> {
        self.catch_up();
        Ok(self.state.clone())
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), BackendError> {
        if state.len() != STATE_BLOB_BYTES || &state[..8] != STATE_MAGIC {
            return Err(BackendError::InvalidState {
                reason: format!(
                    "a sim state blob is {STATE_BLOB_BYTES} bytes starting with {:?}; got {} bytes",
                    String::from_utf8_lossy(STATE_MAGIC),
                    state.len()
                ),
            });
        }
        let mut cost = [0; 8];
        cost.copy_from_slice(&state[8..16]);
        self.resume_cost_ns = u64::from_le_bytes(cost).saturating_mul(1000);
        self.state = state.to_vec();
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "sim"
    }
}

/// Expected writes per second to each page under `writers` (summed over
/// overlapping writers), for a guest of `page_count` pages.
pub fn page_write_rates(writers: &[WriterSpec], page_count: u64) -> Vec<f64> {
    let mut rates = vec![0.0; usize::try_from(page_count).unwrap_or(0)];
    for (i, spec) in writers.iter().enumerate() {
        let w = Writer::new(spec, page_count, i as u64);
        let len = usize::try_from(w.len).unwrap_or(0);
        let start = usize::try_from(w.start).unwrap_or(0);
        match spec.distribution {
            Distribution::Uniform | Distribution::Sequential => {
                for r in &mut rates[start..start + len] {
                    *r += spec.rate_pages_per_s / len as f64;
                }
            }
            Distribution::Zipf { s } => {
                let weights: Vec<f64> = (1..=len).map(|k| (k as f64).powf(-s)).collect();
                let total: f64 = weights.iter().sum();
                for (rank, weight) in weights.iter().enumerate() {
                    let offset = (rank as u64).wrapping_mul(w.scatter) % w.len;
                    let at = start + usize::try_from(offset).unwrap_or(0);
                    rates[at] += spec.rate_pages_per_s * weight / total;
                }
            }
        }
    }
    rates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(text_writers: &str) -> Workload {
        Workload::from_toml(
            &format!(
                "name = \"t\"\nmemory_mib = 4\nzero_fraction = 0.25\nswitchover_fixed_ms = 5\n{text_writers}\n[link]\nbandwidth_mbit = 100\nlatency_ms = 0.1\n"
            ),
            "t",
        )
        .unwrap()
    }

    fn read(sim: &mut SimDomain, pfn: Pfn) -> Vec<u8> {
        let mut page = vec![0; PAGE_SIZE];
        sim.read_pages(&[pfn], &mut page).unwrap();
        page
    }

    #[test]
    fn counter_writes_change_only_a_few_bytes() {
        let w = workload("[[writer]]\nregion = [0.0, 1.0]\nrate_pages_per_s = 0\ndistribution = \"uniform\"\nbytes_per_write = 8\n");
        let mut sim = SimDomain::new(&w, 7, VirtualClock::new());
        let before = read(&mut sim, 3);
        for _ in 0..100 {
            sim.guest_write(3).unwrap();
        }
        let after = read(&mut sim, 3);
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!((1..=64).contains(&changed), "{changed} bytes changed");
        sim.guest_write(3).unwrap();
        let once_more = read(&mut sim, 3);
        let changed = after.iter().zip(&once_more).filter(|(a, b)| a != b).count();
        assert!((1..=8).contains(&changed), "{changed} bytes changed");
    }

    #[test]
    fn generated_and_stored_pages_evolve_identically() {
        let w = workload("[[writer]]\nregion = [0.0, 1.0]\nrate_pages_per_s = 0\ndistribution = \"uniform\"\nbytes_per_write = 100\n");
        let mut a = SimDomain::new(&w, 9, VirtualClock::new());
        let mut b = SimDomain::new(&w, 9, VirtualClock::new());
        // b stores page 5 as bytes (same content), then both get writes.
        let page = read(&mut b, 5);
        b.write_pages(&[5], &page).unwrap();
        for _ in 0..37 {
            a.guest_write(5).unwrap();
            b.guest_write(5).unwrap();
        }
        assert_eq!(read(&mut a, 5), read(&mut b, 5));
    }

    #[test]
    fn the_workload_runs_on_virtual_time_only() {
        let w = workload("[[writer]]\nregion = [0.0, 0.5]\nrate_pages_per_s = 1000\ndistribution = \"zipf\"\nzipf_s = 1.1\nbytes_per_write = 4096\n");
        let clock = VirtualClock::new();
        let mut sim = SimDomain::new(&w, 1, clock.clone());
        sim.enable_dirty_log().unwrap();
        let mut dirty = DirtyBitmap::new(sim.page_count());
        sim.harvest_dirty(&mut dirty).unwrap();
        assert!(dirty.is_empty());
        clock.advance_by(2_000_000_000);
        sim.harvest_dirty(&mut dirty).unwrap();
        assert_eq!(sim.writes_applied(), 2000);
        assert!(
            dirty.count() > 10 && dirty.count() < 2000,
            "{}",
            dirty.count()
        );
        assert!(dirty.iter().all(|p| p < sim.page_count() / 2));
        sim.pause().unwrap();
        clock.advance_by(1_000_000_000);
        dirty.clear();
        sim.harvest_dirty(&mut dirty).unwrap();
        assert!(dirty.is_empty(), "a paused guest writes nothing");
    }

    #[test]
    fn zipf_samples_favour_low_ranks() {
        let z = Zipf::new(1000, 0.99);
        let mut rng = 5_u64;
        let mut counts = [0_u32; 1001];
        for _ in 0..100_000 {
            let k = z.sample(|| Writer::next_random(&mut rng));
            counts[usize::try_from(k).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        // P(1)/P(2) = 2^0.99 ~ 1.99
        let ratio = f64::from(counts[1]) / f64::from(counts[2]);
        assert!((1.7..2.3).contains(&ratio), "{ratio}");
        assert!(counts[1] > counts[100] * 50);
    }

    #[test]
    fn write_rates_add_up_to_the_writer_rates() {
        let w = workload("[[writer]]\nregion = [0.0, 0.5]\nrate_pages_per_s = 1000\ndistribution = \"zipf\"\nzipf_s = 0.9\nbytes_per_write = 64\n[[writer]]\nregion = [0.25, 1.0]\nrate_pages_per_s = 500\ndistribution = \"sequential\"\nbytes_per_write = 4096\n");
        let rates = page_write_rates(&w.writers, 1024);
        let total: f64 = rates.iter().sum();
        assert!((total - 1500.0).abs() < 1e-6, "{total}");
    }
}
