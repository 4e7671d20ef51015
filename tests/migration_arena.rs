//! The migration engine on real memory: the `arena` backend (userfaultfd
//! write-protect tracking of memory that real threads write) passes the
//! `Domain` conformance suite, and a live migration of a guest that keeps
//! writing during the rounds, over TCP on loopback, leaves the receiver's
//! memory equal to the source's, page for page.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test helpers

mod support;

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use perfplus::backend::arena::{check_support, ArenaDomain, ArenaError, LocalGuest};
use perfplus::backend::conformance::{check_domain, ConformanceHarness};
use perfplus::backend::{BackendError, DirtyBitmap, Domain, Pfn};
use perfplus::migration::engine::{migrate, EngineConfig, ProgressFlow};
use perfplus::migration::policy::{by_name, POLICY_NAMES};
use perfplus::migration::receiver::receive_tcp;
use perfplus::migration::simulation::first_difference;
use perfplus::migration::sink::PerfplusSink;
use perfplus::migration::transport::{RealClock, TcpTransport};

fn tracking_available(test: &str) -> bool {
    match check_support() {
        Ok(()) => true,
        Err(e @ ArenaError::Unsupported { .. }) => {
            support::skip(test, &e.to_string());
            false
        }
        Err(e) => panic!("{test}: arena probe failed: {e}"),
    }
}

/// An in-process arena domain with its guest, so the harness can make
/// that guest write.
struct Local {
    domain: ArenaDomain,
    guest: Arc<LocalGuest>,
}

impl Domain for Local {
    fn page_size(&self) -> usize {
        self.domain.page_size()
    }
    fn page_count(&self) -> u64 {
        self.domain.page_count()
    }
    fn read_pages(&mut self, pfns: &[Pfn], buf: &mut [u8]) -> Result<(), BackendError> {
        self.domain.read_pages(pfns, buf)
    }
    fn write_pages(&mut self, pfns: &[Pfn], data: &[u8]) -> Result<(), BackendError> {
        self.domain.write_pages(pfns, data)
    }
    fn enable_dirty_log(&mut self) -> Result<(), BackendError> {
        self.domain.enable_dirty_log()
    }
    fn harvest_dirty(&mut self, dirty: &mut DirtyBitmap) -> Result<(), BackendError> {
        self.domain.harvest_dirty(dirty)
    }
    fn disable_dirty_log(&mut self) -> Result<(), BackendError> {
        self.domain.disable_dirty_log()
    }
    fn dirty_log_is_exact(&self) -> bool {
        self.domain.dirty_log_is_exact()
    }
    fn pause(&mut self) -> Result<(), BackendError> {
        self.domain.pause()
    }
    fn resume(&mut self) -> Result<(), BackendError> {
        self.domain.resume()
    }
    fn is_paused(&self) -> bool {
        self.domain.is_paused()
    }
    fn save_state(&mut self) -> Result<Vec<u8>, BackendError> {
        self.domain.save_state()
    }
    fn restore_state(&mut self, state: &[u8]) -> Result<(), BackendError> {
        self.domain.restore_state(state)
    }
    fn backend_name(&self) -> &'static str {
        self.domain.backend_name()
    }
}

fn local(pages: u64) -> Local {
    let guest = LocalGuest::new(pages).unwrap();
    Local {
        domain: ArenaDomain::local(Arc::clone(&guest)).unwrap(),
        guest,
    }
}

/// In-process arena guests; the harness's writes are the guest's only ones.
struct LocalArena;

impl ConformanceHarness for LocalArena {
    type Domain = Local;
    fn new_domain(&mut self) -> Local {
        local(256)
    }
    fn new_receiver(&mut self, like: &Local) -> Local {
        local(like.page_count())
    }
    fn guest_write(&mut self, domain: &mut Local, pfns: &[Pfn]) {
        let _pass = domain.guest.enter();
        let memory = domain.guest.memory();
        let words = memory.words_per_page();
        for &pfn in pfns {
            let at = pfn as usize * words;
            memory.store(at, memory.load(at).wrapping_add(1));
        }
    }
}

#[test]
fn the_arena_backend_passes_the_conformance_suite() {
    if !tracking_available("the_arena_backend_passes_the_conformance_suite") {
        return;
    }
    check_domain(&mut LocalArena);
}

#[test]
fn a_live_migration_of_real_memory_over_tcp_leaves_identical_memory() {
    if !tracking_available("a_live_migration_of_real_memory_over_tcp_leaves_identical_memory") {
        return;
    }
    for name in POLICY_NAMES {
        let pages = 4096; // 16 MiB
        let started = std::time::Instant::now();
        let guest = LocalGuest::new(pages).unwrap();
        // Some content, a third of it zero, before the migration.
        {
            let m = guest.memory();
            for p in 0..pages as usize {
                if p % 3 != 0 {
                    m.fill_page(p, |w| (p as u64) << 20 | w as u64);
                }
            }
        }
        // A writer that keeps storing counters into a hot set and a cold tail
        // while the migration runs; it passes the gate, so pause stops it.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let guest = Arc::clone(&guest);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_u64;
                while !stop.load(Ordering::Relaxed) {
                    let _pass = guest.enter();
                    let m = guest.memory();
                    for _ in 0..64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let page = if x % 4 == 0 { x % pages } else { x % 256 } as usize;
                        let at = page * m.words_per_page() + (x >> 40) as usize % 8;
                        m.store(at, m.load(at).wrapping_add(1));
                    }
                    drop(_pass);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let mut source = ArenaDomain::local(Arc::clone(&guest)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let receiver = std::thread::spawn(move || {
            let destination = ArenaDomain::local(LocalGuest::new(pages).unwrap()).unwrap();
            let (r, result) = receive_tcp(server, destination, Duration::from_secs(30));
            result.unwrap();
            r.into_domain()
        });
        let policy = by_name(name).unwrap();
        let transport = TcpTransport::new(client, Duration::from_secs(30)).unwrap();
        let mut sink = PerfplusSink::new(
            transport,
            policy.encodings(),
            8 << 20,
            Duration::from_secs(30),
        );
        let config = EngineConfig {
            switchover_fixed_ms: 1.0,
            ..EngineConfig::default()
        };
        let report = migrate(
            &mut source,
            policy.as_ref(),
            &mut sink,
            &RealClock::new(),
            &config,
            &mut |_| ProgressFlow::Continue,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.verified, "{name}");
        let mut destination = receiver.join().unwrap();
        // The source stays paused after the hand-over: its memory is final.
        assert!(source.is_paused(), "{name}");
        assert_eq!(
            first_difference(&mut source, &mut destination),
            None,
            "{name}: the receiver's memory differs from the source's"
        );
        stop.store(true, Ordering::Relaxed);
        source.resume().unwrap();
        writer.join().unwrap();
        eprintln!(
            "{name}: {} rounds, downtime {:.1} ms, {} bytes, {:.1} s",
            report.rounds,
            report.downtime_ms,
            report.bytes_on_wire,
            started.elapsed().as_secs_f64()
        );
    }
}
