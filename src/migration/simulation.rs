//! One migration of a simulated guest over a simulated link, end to end:
//! what the tests and the policy benchmark run.

use std::time::Duration;

use super::engine::{migrate, EngineConfig, MigrationReport, Progress, ProgressFlow};
use super::policy::PrecopyPolicy;
use super::receiver::Receiver;
use super::sink::{PerfplusSink, StreamSink};
use super::transport::{SimFaults, SimLink};
use super::MigrationError;
use crate::backend::sim::{LinkSpec, SimDomain, VirtualClock, Workload, STATE_BLOB_BYTES};
use crate::backend::{BackendError, Domain};

/// The default delta cache: a quarter of guest memory, at most 1 GiB.
pub fn default_delta_cache_bytes(memory_bytes: u64) -> usize {
    usize::try_from((memory_bytes / 4).min(1 << 30)).unwrap_or(1 << 30)
}

/// How to run one simulated migration.
#[derive(Debug, Clone)]
pub struct SimRun {
    /// The guest's workload.
    pub workload: Workload,
    /// The link (usually `workload.link`).
    pub link: LinkSpec,
    /// Seed of the guest's content and writes.
    pub seed: u64,
    /// Faults to inject.
    pub faults: SimFaults,
    /// Seconds the guest runs before the migration starts.
    pub warmup_s: f64,
}

impl SimRun {
    /// Run `workload` over its own link, seed 1, no faults, no warm-up.
    pub fn new(workload: &Workload) -> Self {
        Self {
            workload: workload.clone(),
            link: workload.link,
            seed: 1,
            faults: SimFaults::default(),
            warmup_s: 0.0,
        }
    }
}

/// What came out of a simulated migration.
#[derive(Debug)]
pub struct SimOutcome {
    /// The engine's result.
    pub result: Result<MigrationReport, MigrationError>,
    /// The source guest after the migration.
    pub source: SimDomain,
    /// The receiver, with its domain.
    pub receiver: Receiver<SimDomain>,
    /// Bytes that went on the wire.
    pub bytes_on_wire: u64,
    /// Virtual time from the start of the migration to its end, ms.
    pub elapsed_ms: f64,
}

impl SimRun {
    /// Migrate with `policy`, telling `observer` about progress.
    pub fn run(
        &self,
        policy: &dyn PrecopyPolicy,
        observer: &mut dyn FnMut(&Progress) -> ProgressFlow,
    ) -> SimOutcome {
        let clock = VirtualClock::new();
        let mut source = SimDomain::new(&self.workload, self.seed, clock.clone());
        if self.warmup_s > 0.0 {
            // warmup_s is finite and small.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            clock.advance_by((self.warmup_s * 1e9) as u64);
        }
        let start_ns = clock.now_ns();
        let receiver_clock = VirtualClock::new();
        receiver_clock.advance_to(start_ns);
        let receiver = Receiver::new(SimDomain::blank(
            source.page_count(),
            receiver_clock.clone(),
        ));
        let link = SimLink::new(
            clock.clone(),
            receiver_clock,
            self.link.bandwidth_mbit,
            self.link.latency_ms,
            receiver,
        )
        .with_faults(self.faults);
        let memory = source.page_count() * source.page_size() as u64;
        let mut sink = PerfplusSink::new(
            link,
            policy.encodings(),
            default_delta_cache_bytes(memory),
            Duration::from_secs(10),
        );
        let config = EngineConfig {
            switchover_fixed_ms: self.workload.switchover_fixed_ms,
            link_latency_ms: self.link.latency_ms,
            state_bytes: STATE_BLOB_BYTES as u64,
            ..EngineConfig::default()
        };
        let result = migrate(&mut source, policy, &mut sink, &clock, &config, observer);
        let bytes_on_wire = sink.bytes_on_wire();
        let elapsed_ms = clock.now_ns().saturating_sub(start_ns) as f64 / 1e6;
        SimOutcome {
            result,
            source,
            receiver: sink.into_transport().into_peer(),
            bytes_on_wire,
            elapsed_ms,
        }
    }
}

/// The first page where two domains of the same geometry differ, if any
/// (a page that cannot be read counts as different).
pub fn first_difference(a: &mut impl Domain, b: &mut impl Domain) -> Option<u64> {
    let size = a.page_size();
    let batch = 256_u64;
    let mut x = vec![0; size * 256];
    let mut y = vec![0; size * 256];
    let mut start = 0;
    while start < a.page_count() {
        let end = (start + batch).min(a.page_count());
        let pfns: Vec<u64> = (start..end).collect();
        let n = pfns.len() * size;
        if a.read_pages(&pfns, &mut x[..n]).is_err() || b.read_pages(&pfns, &mut y[..n]).is_err() {
            return Some(start);
        }
        if x[..n] != y[..n] {
            let i = x[..n]
                .chunks_exact(size)
                .zip(y[..n].chunks_exact(size))
                .position(|(p, q)| p != q)
                .unwrap_or(0);
            return Some(start + i as u64);
        }
        start = end;
    }
    None
}

/// A digest of a domain's whole memory: the wrapping sum over its pages of
/// [`page_digest`](super::stream::page_digest)`(pfn, page)`. Two domains of
/// the same geometry with the same digest hold the same memory (up to a
/// 64-bit hash collision), so two processes can compare guests without
/// shipping them: a source paused after the hand-over against its receiver.
pub fn memory_digest(domain: &mut impl Domain) -> Result<u64, BackendError> {
    let size = domain.page_size();
    let batch = 256_u64;
    let mut buf = vec![0; size * 256];
    let mut digest = 0_u64;
    let mut start = 0;
    while start < domain.page_count() {
        let end = (start + batch).min(domain.page_count());
        let pfns: Vec<u64> = (start..end).collect();
        let n = pfns.len() * size;
        domain.read_pages(&pfns, &mut buf[..n])?;
        for (&pfn, page) in pfns.iter().zip(buf[..n].chunks_exact(size)) {
            digest = digest.wrapping_add(super::stream::page_digest(pfn, page));
        }
        start = end;
    }
    Ok(digest)
}

/// The downtime no pre-copy policy can beat on this workload and link
/// without shrinking the pages themselves: the fixed switchover cost plus
/// the wire time of the pages rewritten faster than one round, with the
/// writers in force at `at_s`.
///
/// "Faster than one round" is a fixed point: a round of length `T` must
/// resend every page written at least once per `T` (expected writes
/// `rate × T >= 1`), which takes `T' = count × raw page bytes / bandwidth`.
/// Starting from the full pass over the non-zero pages, `T` shrinks to the
/// largest fixed point; its pages form the bound. Raw page bytes (with the
/// per-page framing), so an encoder that shrinks hot pages can beat it.
pub fn downtime_lower_bound_ms(workload: &Workload, link: LinkSpec, at_s: f64) -> f64 {
    let page_count = workload.memory_mib * (1 << 20) / crate::backend::sim::PAGE_SIZE as u64;
    let mut rates = crate::backend::sim::page_write_rates(workload.writers_at(at_s), page_count);
    rates.sort_by(|a, b| b.total_cmp(a));
    let page_bytes = super::policy::raw_wire_bytes_per_page(crate::backend::sim::PAGE_SIZE);
    let bytes_per_s = link.bandwidth_mbit * 1e6 / 8.0;
    let round_s = |pages: f64| pages * page_bytes / bytes_per_s;
    let mut t = round_s(page_count as f64 * (1.0 - workload.zero_fraction));
    let mut count = 0.0;
    while t > 0.0 {
        let hot = rates.partition_point(|r| r * t >= 1.0) as f64;
        let next = round_s(hot);
        count = hot;
        if next >= t {
            break;
        }
        t = next;
    }
    workload.switchover_fixed_ms + round_s(count) * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(writer: &str, link_mbit: f64) -> Workload {
        Workload::from_toml(
            &format!(
                "name = \"t\"\nmemory_mib = 1024\nzero_fraction = 0.0\nswitchover_fixed_ms = 20\n[[writer]]\n{writer}\n[link]\nbandwidth_mbit = {link_mbit}\nlatency_ms = 0.1\n"
            ),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn a_set_rewritten_faster_than_the_link_is_in_the_bound() {
        // 256 MiB rewritten sequentially at 256 MiB/s over 1 Gbit/s: every
        // round must resend it all, so the bound is its wire time.
        let w = workload(
            "region = [0.0, 0.25]\nrate_pages_per_s = 65536\ndistribution = \"sequential\"\nbytes_per_write = 4096",
            1000.0,
        );
        let bound = downtime_lower_bound_ms(&w, w.link, 0.0);
        let wire_ms =
            65536.0 * super::super::policy::raw_wire_bytes_per_page(4096) / 125e6 * 1000.0;
        assert!((bound - 20.0 - wire_ms).abs() < 1e-6, "{bound}");
    }

    #[test]
    fn equal_memories_have_equal_digests_and_one_changed_page_changes_it() {
        let w = workload(
            "region = [0.0, 1.0]\nrate_pages_per_s = 0\ndistribution = \"uniform\"\nbytes_per_write = 8",
            1000.0,
        )
        .scaled_down(64);
        let mut a = SimDomain::new(&w, 9, VirtualClock::new());
        let mut b = SimDomain::new(&w, 9, VirtualClock::new());
        let digest = memory_digest(&mut a).unwrap();
        assert_eq!(digest, memory_digest(&mut b).unwrap());
        b.guest_write(17).unwrap();
        assert_ne!(digest, memory_digest(&mut b).unwrap());
    }

    #[test]
    fn slow_uniform_writes_leave_only_the_fixed_cost() {
        // rho = 0.5: rounds shrink to nothing.
        let w = workload(
            "region = [0.0, 1.0]\nrate_pages_per_s = 15000\ndistribution = \"uniform\"\nbytes_per_write = 4096",
            1000.0,
        );
        assert_eq!(downtime_lower_bound_ms(&w, w.link, 0.0), 20.0);
    }
}
