//! The conformance suite every [`Domain`](crate::backend::conformance::Domain) must pass.
//!
//! It is an ordinary public module (not `cfg(test)`), so a backend's tests —
//! in this crate or in another — run it against a real instance:
//!
//! ```
//! use perfplus::backend::conformance::{check_domain, ConformanceHarness};
//! use perfplus::backend::sim::{SimDomain, VirtualClock, Workload};
//! use perfplus::backend::{Domain, Pfn};
//!
//! /// Quiet sim guests (no writers), written to on request.
//! struct Sim(Workload);
//!
//! impl ConformanceHarness for Sim {
//!     type Domain = SimDomain;
//!     fn new_domain(&mut self) -> SimDomain {
//!         SimDomain::new(&self.0, 1, VirtualClock::new())
//!     }
//!     fn new_receiver(&mut self, like: &SimDomain) -> SimDomain {
//!         SimDomain::blank(like.page_count(), VirtualClock::new())
//!     }
//!     fn guest_write(&mut self, domain: &mut SimDomain, pfns: &[Pfn]) {
//!         for &pfn in pfns {
//!             domain.guest_write(pfn).unwrap();
//!         }
//!     }
//! }
//!
//! let quiet = Workload::from_toml(r#"
//!     name = "quiet"
//!     memory_mib = 1
//!     zero_fraction = 0.5
//!     switchover_fixed_ms = 1
//!     [[writer]]
//!     region = [0.0, 1.0]
//!     rate_pages_per_s = 0
//!     distribution = "uniform"
//!     bytes_per_write = 8
//!     [link]
//!     bandwidth_mbit = 1000
//!     latency_ms = 0.1
//! "#, "quiet").unwrap();
//! check_domain(&mut Sim(quiet));
//! ```
//!
//! How to use it for a new backend (`arena`, `xen`):
//!
//! 1. Implement [`ConformanceHarness`](crate::backend::conformance::ConformanceHarness) in the backend's test: `new_domain`
//!    gives a running guest whose memory changes **only** when
//!    [`ConformanceHarness::guest_write`](crate::backend::conformance::ConformanceHarness::guest_write) says so (a quiet workload: the
//!    exactness and reset checks count every write), with at least 64
//!    pages; `guest_write` makes the *guest* write each page (a store from
//!    the workload process for `arena`, a store by the guest kernel or a
//!    foreign write that log-dirty sees for `xen`), changing at least one
//!    byte; `new_receiver` gives an empty domain of the same geometry that
//!    can take a state blob.
//! 2. Call [`check_domain`](crate::backend::conformance::check_domain) from a `#[test]`. It panics with the name of
//!    the failed check and the values involved; each check is also public
//!    to run on its own.

use super::{BackendError, DirtyBitmap, Domain, Pfn};

/// What the suite needs from a backend's test: domains, and a way to make
/// the guest write.
pub trait ConformanceHarness {
    /// The backend under test.
    type Domain: Domain;

    /// A fresh, running guest with at least 64 pages, whose memory changes
    /// only through [`guest_write`](Self::guest_write).
    fn new_domain(&mut self) -> Self::Domain;

    /// An empty receiving domain with the geometry of `like`.
    fn new_receiver(&mut self, like: &Self::Domain) -> Self::Domain;

    /// Make the guest itself write each page of `pfns` (changing at least
    /// one byte of each).
    fn guest_write(&mut self, domain: &mut Self::Domain, pfns: &[Pfn]);
}

/// Run every check on fresh domains from `harness`.
pub fn check_domain<H: ConformanceHarness>(harness: &mut H) {
    check_geometry(harness);
    check_read_write_round_trip(harness);
    check_bad_arguments_are_errors(harness);
    check_dirty_log_requires_enable(harness);
    check_harvest_never_misses_a_write(harness);
    check_pause_resume_idempotent(harness);
    check_state_restores_into_a_receiver(harness);
}

/// Scattered pages: first, last, middle, and a spread.
fn scattered(page_count: u64) -> Vec<Pfn> {
    let mut pfns = vec![0, page_count - 1, page_count / 2];
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..29 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = x % page_count;
        if !pfns.contains(&p) {
            pfns.push(p);
        }
    }
    pfns
}

fn pattern(pfn: Pfn, page_size: usize, salt: u8) -> Vec<u8> {
    (0..page_size as u64)
        .map(|i| pfn.wrapping_mul(31).wrapping_add(i * 7).to_le_bytes()[0] ^ salt)
        .collect()
}

/// Page size and count are sane and fixed.
pub fn check_geometry<H: ConformanceHarness>(harness: &mut H) {
    let d = harness.new_domain();
    let (size, count) = (d.page_size(), d.page_count());
    assert!(
        size.is_power_of_two() && size >= 512,
        "geometry: page size {size} is not a power of two >= 512"
    );
    assert!(count >= 64, "geometry: {count} pages, the suite needs 64");
    assert_eq!(
        (d.page_size(), d.page_count()),
        (size, count),
        "geometry changed"
    );
    assert!(!d.backend_name().is_empty(), "geometry: empty backend name");
}

/// Pages written in scattered batches read back the same, in any batching.
pub fn check_read_write_round_trip<H: ConformanceHarness>(harness: &mut H) {
    let mut d = harness.new_domain();
    let size = d.page_size();
    let pfns = scattered(d.page_count());
    for (i, batch) in pfns.chunks(7).enumerate() {
        let data: Vec<u8> = batch
            .iter()
            .flat_map(|&p| pattern(p, size, u8::try_from(i).unwrap_or(u8::MAX)))
            .collect();
        d.write_pages(batch, &data)
            .unwrap_or_else(|e| panic!("read/write: write_pages({batch:?}) failed: {e}"));
    }
    // Read back in reverse order and in other batch sizes.
    let mut reversed = pfns.clone();
    reversed.reverse();
    for batch in reversed.chunks(5) {
        let mut buf = vec![0; batch.len() * size];
        d.read_pages(batch, &mut buf)
            .unwrap_or_else(|e| panic!("read/write: read_pages({batch:?}) failed: {e}"));
        for (&pfn, page) in batch.iter().zip(buf.chunks_exact(size)) {
            let written_in = pfns.iter().position(|p| *p == pfn).unwrap_or(0) / 7;
            assert!(
                page == pattern(pfn, size, u8::try_from(written_in).unwrap_or(u8::MAX)).as_slice(),
                "read/write: page {pfn} does not read back what was written"
            );
        }
    }
    // An all-zero page round-trips too.
    let zero = vec![0; size];
    d.write_pages(&[pfns[3]], &zero).expect("write a zero page");
    let mut buf = vec![1; size];
    d.read_pages(&[pfns[3]], &mut buf)
        .expect("read a zero page");
    assert!(buf == zero, "read/write: a zero page does not read back");
    // Empty batches are fine.
    d.read_pages(&[], &mut []).expect("read/write: empty read");
    d.write_pages(&[], &[]).expect("read/write: empty write");
}

/// Out-of-range pages and wrong buffer sizes are errors, not panics, and
/// change nothing.
pub fn check_bad_arguments_are_errors<H: ConformanceHarness>(harness: &mut H) {
    let mut d = harness.new_domain();
    let (size, count) = (d.page_size(), d.page_count());
    let mut before = vec![0; size];
    d.read_pages(&[0], &mut before).expect("read page 0");
    let mut buf = vec![0; 2 * size];
    for bad in [count, count + 1, u64::MAX] {
        assert!(
            matches!(
                d.read_pages(&[0, bad], &mut buf),
                Err(BackendError::PfnOutOfRange { .. })
            ),
            "bad arguments: reading page {bad} of {count} is not PfnOutOfRange"
        );
        assert!(
            matches!(
                d.write_pages(&[0, bad], &buf),
                Err(BackendError::PfnOutOfRange { .. })
            ),
            "bad arguments: writing page {bad} of {count} is not PfnOutOfRange"
        );
    }
    for len in [0, size - 1, size + 1, 3 * size] {
        let mut b = vec![0xee; len];
        assert!(
            matches!(
                d.read_pages(&[0, 1], &mut b),
                Err(BackendError::BufferSize { .. })
            ),
            "bad arguments: a {len}-byte buffer for 2 pages is not BufferSize"
        );
        assert!(
            matches!(
                d.write_pages(&[0, 1], &b),
                Err(BackendError::BufferSize { .. })
            ),
            "bad arguments: a {len}-byte buffer for 2 pages is not BufferSize"
        );
    }
    let mut after = vec![0; size];
    d.read_pages(&[0], &mut after).expect("read page 0");
    assert!(
        before == after,
        "bad arguments: a refused write changed page 0"
    );
}

/// Harvesting or disabling without enabling is an error.
pub fn check_dirty_log_requires_enable<H: ConformanceHarness>(harness: &mut H) {
    let mut d = harness.new_domain();
    let mut bitmap = DirtyBitmap::new(d.page_count());
    assert!(
        matches!(
            d.harvest_dirty(&mut bitmap),
            Err(BackendError::DirtyLogDisabled)
        ),
        "dirty log: harvest without enable is not DirtyLogDisabled"
    );
    assert!(
        matches!(d.disable_dirty_log(), Err(BackendError::DirtyLogDisabled)),
        "dirty log: disable without enable is not DirtyLogDisabled"
    );
    d.enable_dirty_log().expect("enable");
    d.disable_dirty_log().expect("disable");
    assert!(
        matches!(
            d.harvest_dirty(&mut bitmap),
            Err(BackendError::DirtyLogDisabled)
        ),
        "dirty log: harvest after disable is not DirtyLogDisabled"
    );
}

/// Every guest write shows up in the next harvest; harvesting resets the
/// log; an exact backend reports exactly the written pages; bits already
/// set in the caller's bitmap stay set.
pub fn check_harvest_never_misses_a_write<H: ConformanceHarness>(harness: &mut H) {
    let mut d = harness.new_domain();
    let count = d.page_count();
    let exact = d.dirty_log_is_exact();
    d.enable_dirty_log().expect("enable");
    let mut bitmap = DirtyBitmap::new(count);
    d.harvest_dirty(&mut bitmap).expect("first harvest");
    if exact {
        assert!(
            bitmap.is_empty(),
            "harvest: exact log reports {} pages before any write",
            bitmap.count()
        );
    }
    let all = scattered(count);
    for (round, written) in [&all[..10], &all[5..20], &all[..1], &all[20..]]
        .into_iter()
        .enumerate()
    {
        harness.guest_write(&mut d, written);
        bitmap.clear();
        d.harvest_dirty(&mut bitmap).expect("harvest");
        for &pfn in written {
            assert!(
                bitmap.get(pfn),
                "harvest: round {round}: the write to page {pfn} was missed"
            );
        }
        if exact {
            let mut expected: Vec<Pfn> = written.to_vec();
            expected.sort_unstable();
            expected.dedup();
            assert_eq!(
                bitmap.iter().collect::<Vec<_>>(),
                expected,
                "harvest: round {round}: an exact log reported other pages"
            );
            bitmap.clear();
            d.harvest_dirty(&mut bitmap).expect("harvest again");
            assert!(
                bitmap.is_empty(),
                "harvest: round {round}: harvesting did not reset the log ({} pages again)",
                bitmap.count()
            );
        }
    }
    // Bits the caller already set stay set.
    let mut bitmap = DirtyBitmap::new(count);
    bitmap.set(count - 1);
    harness.guest_write(&mut d, &[0]);
    d.harvest_dirty(&mut bitmap).expect("harvest");
    assert!(
        bitmap.get(0) && bitmap.get(count - 1),
        "harvest: cleared a bit the caller had set, or missed page 0"
    );
    d.disable_dirty_log().expect("disable");
}

/// Pause and resume are idempotent and reported by `is_paused`.
pub fn check_pause_resume_idempotent<H: ConformanceHarness>(harness: &mut H) {
    let mut d = harness.new_domain();
    assert!(!d.is_paused(), "pause: a new domain is paused");
    d.pause().expect("pause");
    d.pause().expect("pause twice");
    assert!(d.is_paused(), "pause: not paused after pause");
    d.resume().expect("resume");
    d.resume().expect("resume twice");
    assert!(!d.is_paused(), "pause: still paused after resume");
}

/// A state blob taken while paused restores into a receiver; a garbage
/// blob is refused.
pub fn check_state_restores_into_a_receiver<H: ConformanceHarness>(harness: &mut H) {
    let mut d = harness.new_domain();
    d.pause().expect("pause");
    let blob = d.save_state().expect("save_state while paused");
    d.resume().expect("resume");
    let mut r = harness.new_receiver(&d);
    assert_eq!(
        (r.page_size(), r.page_count()),
        (d.page_size(), d.page_count()),
        "state: receiver geometry differs"
    );
    r.restore_state(&blob)
        .unwrap_or_else(|e| panic!("state: restoring a {}-byte blob failed: {e}", blob.len()));
    let mut r2 = harness.new_receiver(&d);
    assert!(
        r2.restore_state(b"this is not a state blob").is_err(),
        "state: a garbage blob was accepted"
    );
}
