//! Exactness of the arena's dirty tracking (userfaultfd write-protect in
//! async mode + PAGEMAP_SCAN), in this process with known writers: every
//! written page is reported, no unwritten page is, over many rounds, with
//! writers that stop at each harvest and with writers that never stop.

#![allow(clippy::cast_possible_truncation)] // page indices of small test arenas
#![allow(clippy::unwrap_used)] // test helpers panic on failure, like the tests

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use perfplus::backend::arena::{check_support, ArenaDomain, ArenaError, LocalGuest};
use perfplus::backend::{DirtyBitmap, Domain, Pfn};

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

/// xorshift64*, seeded per writer.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Pages writer `w` of `writers` writes in round `round` of a pattern.
fn pattern_pages(
    pattern: usize,
    round: u64,
    w: u64,
    writers: u64,
    pages: u64,
    rng: &mut Rng,
) -> Vec<Pfn> {
    let mine = |p: &Pfn| p % writers == w;
    match pattern {
        // uniform random, ~5 % of memory
        0 => (0..pages / 20)
            .map(|_| rng.next() % pages)
            .filter(mine)
            .collect(),
        // a hot set: 90 % of writes in the first 10 % of memory
        1 => (0..pages / 20)
            .map(|_| {
                if rng.next() % 10 < 9 {
                    rng.next() % (pages / 10)
                } else {
                    rng.next() % pages
                }
            })
            .filter(mine)
            .collect(),
        // every other page (one region per page: the scan's worst case)
        2 => (0..pages)
            .filter(|p| p % 2 == round % 2)
            .filter(mine)
            .collect(),
        // a sequential sweep of a window that moves each round
        _ => {
            let start = (round * 997) % pages;
            (start..(start + pages / 8).min(pages))
                .filter(mine)
                .collect()
        }
    }
}

#[test]
fn every_written_page_is_reported_and_no_other_over_many_rounds() {
    if !tracking_available("every_written_page_is_reported_and_no_other_over_many_rounds") {
        return;
    }
    const PAGES: u64 = 16_384; // 64 MiB
    const WRITERS: u64 = 3;
    const ROUNDS: u64 = 120;
    let guest = LocalGuest::new(PAGES).unwrap();
    let mut domain = ArenaDomain::local(Arc::clone(&guest)).unwrap();
    // Half the memory populated before tracking starts; the rest stays
    // unpopulated until a write, which must be reported all the same.
    let mem = guest.memory();
    let wpp = mem.words_per_page();
    for p in 0..PAGES as usize / 2 {
        mem.store(p * wpp, 1);
    }
    domain.enable_dirty_log().unwrap();

    let start = Arc::new(Barrier::new(WRITERS as usize + 1));
    let done = Arc::new(Barrier::new(WRITERS as usize + 1));
    let written: Arc<Vec<std::sync::Mutex<Vec<Pfn>>>> = Arc::new(
        (0..WRITERS)
            .map(|_| std::sync::Mutex::new(Vec::new()))
            .collect(),
    );
    let reads = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (guest, start, done, written, reads) = (
                Arc::clone(&guest),
                Arc::clone(&start),
                Arc::clone(&done),
                Arc::clone(&written),
                Arc::clone(&reads),
            );
            std::thread::spawn(move || {
                let mut rng = Rng(0x1234_5678 + w);
                for round in 0..ROUNDS {
                    start.wait();
                    let pattern = (round % 4) as usize;
                    let pages = pattern_pages(pattern, round, w, WRITERS, PAGES, &mut rng);
                    let mem = guest.memory();
                    let wpp = mem.words_per_page();
                    let _pass = guest.enter();
                    for &p in &pages {
                        let word = p as usize * wpp + (rng.next() % wpp as u64) as usize;
                        mem.store(word, round + 1);
                    }
                    // Reads of other pages must not count as writes.
                    let mut sum = 0;
                    for _ in 0..200 {
                        sum += mem.load((rng.next() % (PAGES * wpp as u64)) as usize);
                    }
                    reads.fetch_add(sum, Ordering::Relaxed);
                    *written[w as usize].lock().unwrap() = pages;
                    drop(_pass);
                    done.wait();
                }
            })
        })
        .collect();

    let mut total_reported = 0;
    for round in 0..ROUNDS {
        start.wait();
        done.wait();
        let mut dirty = DirtyBitmap::new(PAGES);
        domain.harvest_dirty(&mut dirty).unwrap();
        let expected: BTreeSet<Pfn> = written
            .iter()
            .flat_map(|w| w.lock().unwrap().clone())
            .collect();
        let reported: BTreeSet<Pfn> = dirty.iter().collect();
        let missed: Vec<_> = expected.difference(&reported).take(5).collect();
        let extra: Vec<_> = reported.difference(&expected).take(5).collect();
        assert!(
            missed.is_empty() && extra.is_empty(),
            "round {round} pattern {}: {} written, {} reported; missed {missed:?}, extra {extra:?}",
            round % 4,
            expected.len(),
            reported.len()
        );
        total_reported += reported.len();
    }
    for w in writers {
        w.join().unwrap();
    }
    // A harvest with no writes since reports nothing.
    let mut dirty = DirtyBitmap::new(PAGES);
    domain.harvest_dirty(&mut dirty).unwrap();
    assert!(dirty.is_empty());
    assert!(
        total_reported > 100_000,
        "the test wrote too little: {total_reported}"
    );
}

#[test]
fn a_shadow_copy_kept_by_harvesting_matches_memory_with_writers_that_never_stop() {
    if !tracking_available(
        "a_shadow_copy_kept_by_harvesting_matches_memory_with_writers_that_never_stop",
    ) {
        return;
    }
    const PAGES: u64 = 32_768; // 128 MiB
    const WRITERS: u64 = 2;
    let guest = LocalGuest::new(PAGES).unwrap();
    let mut domain = ArenaDomain::local(Arc::clone(&guest)).unwrap();
    let page = domain.page_size();
    domain.enable_dirty_log().unwrap();
    // Round 0: copy everything while the writers already run.
    let stop = Arc::new(AtomicBool::new(false));
    let stores = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (guest, stop, stores) =
                (Arc::clone(&guest), Arc::clone(&stop), Arc::clone(&stores));
            std::thread::spawn(move || {
                let mut rng = Rng(0x9999 + w);
                let mem = guest.memory();
                let wpp = mem.words_per_page() as u64;
                let mut n = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let _pass = guest.enter();
                    for _ in 0..256 {
                        // 90 % of stores into a 10 % hot set.
                        let p = if rng.next() % 10 < 9 {
                            rng.next() % (PAGES / 10)
                        } else {
                            rng.next() % PAGES
                        };
                        n += 1;
                        mem.store((p * wpp + rng.next() % wpp) as usize, n << 8 | w);
                    }
                    stores.fetch_add(256, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let all: Vec<Pfn> = (0..PAGES).collect();
    let mut shadow = vec![0_u8; PAGES as usize * page];
    for chunk in all.chunks(1024) {
        let at = chunk[0] as usize * page;
        domain
            .read_pages(chunk, &mut shadow[at..at + chunk.len() * page])
            .unwrap();
    }
    let copy_dirty = |domain: &mut ArenaDomain, dirty: &DirtyBitmap, shadow: &mut [u8]| {
        let pfns: Vec<Pfn> = dirty.iter().collect();
        let mut buf = vec![0_u8; 512 * page];
        for chunk in pfns.chunks(512) {
            let buf = &mut buf[..chunk.len() * page];
            domain.read_pages(chunk, buf).unwrap();
            for (i, &p) in chunk.iter().enumerate() {
                shadow[p as usize * page..(p as usize + 1) * page]
                    .copy_from_slice(&buf[i * page..(i + 1) * page]);
            }
        }
        pfns.len()
    };
    let mut dirty = DirtyBitmap::new(PAGES);
    let mut copied = 0;
    // At least 40 rounds, and as many more as it takes the writers (who may
    // get little CPU on a busy machine) to make 100,000 stores and 1,000
    // dirty pages: what the test needs to mean something, not a rate.
    let mut rounds = 0;
    let patience = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while rounds < 40 || stores.load(Ordering::Relaxed) < 100_000 || copied < 1000 {
        assert!(
            std::time::Instant::now() < patience,
            "the writers made {} stores and {copied} dirty pages in {rounds} rounds and two minutes",
            stores.load(Ordering::Relaxed)
        );
        dirty.clear();
        domain.harvest_dirty(&mut dirty).unwrap();
        copied += copy_dirty(&mut domain, &dirty, &mut shadow);
        rounds += 1;
    }
    // Stop-and-copy: pause, final harvest, copy.
    domain.pause().unwrap();
    dirty.clear();
    domain.harvest_dirty(&mut dirty).unwrap();
    copy_dirty(&mut domain, &dirty, &mut shadow);
    // Nothing can be written while paused.
    dirty.clear();
    domain.harvest_dirty(&mut dirty).unwrap();
    assert!(
        dirty.is_empty(),
        "{} pages written while paused",
        dirty.count()
    );

    let mut now = vec![0_u8; PAGES as usize * page];
    for chunk in all.chunks(1024) {
        let at = chunk[0] as usize * page;
        domain
            .read_pages(chunk, &mut now[at..at + chunk.len() * page])
            .unwrap();
    }
    let differing = (0..PAGES as usize)
        .filter(|&p| shadow[p * page..(p + 1) * page] != now[p * page..(p + 1) * page])
        .count();
    stop.store(true, Ordering::Relaxed);
    domain.resume().unwrap();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(differing, 0, "pages differ between the shadow and memory");
}

#[test]
fn harvest_without_enable_and_bad_batches_are_refused() {
    if !tracking_available("harvest_without_enable_and_bad_batches_are_refused") {
        return;
    }
    let guest = LocalGuest::new(8).unwrap();
    let mut domain = ArenaDomain::local(guest).unwrap();
    let mut dirty = DirtyBitmap::new(8);
    assert!(matches!(
        domain.harvest_dirty(&mut dirty),
        Err(perfplus::backend::BackendError::DirtyLogDisabled)
    ));
    let mut buf = vec![0; 4096];
    assert!(matches!(
        domain.read_pages(&[8], &mut buf),
        Err(perfplus::backend::BackendError::PfnOutOfRange {
            pfn: 8,
            page_count: 8
        })
    ));
    assert!(matches!(
        domain.read_pages(&[0, 1], &mut buf),
        Err(perfplus::backend::BackendError::BufferSize { .. })
    ));
    // Writes through the domain land, and are tracked like guest writes.
    domain.enable_dirty_log().unwrap();
    let data = vec![0xab; 4096 * 2];
    domain.write_pages(&[5, 2], &data).unwrap();
    domain.harvest_dirty(&mut dirty).unwrap();
    assert_eq!(dirty.iter().collect::<Vec<_>>(), vec![2, 5]);
    let mut back = vec![0; 4096];
    domain.read_pages(&[5], &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0xab));
}
