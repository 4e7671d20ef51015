//! The sequential rewriter: rewrites every page of its area in order, then
//! starts over with the next generation. Its position is one header word,
//! `generation << 32 | page offset`, stored after each page: pages before
//! the cursor hold the current generation's pattern, pages after it the
//! previous one's, and the cursor page is being written.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{header, mix, ArenaMemory, Pacer};

const STATE: usize = header::REGISTERS;

fn pattern(generation: u64, page: u64, i: usize) -> u64 {
    mix(generation << 40 ^ page << 12 ^ i as u64) | 1
}

fn page_index(page: u64) -> usize {
    usize::try_from(page).unwrap_or(usize::MAX)
}

pub(super) fn init(mem: ArenaMemory<'_>, first: u64, end: u64) {
    for page in first..end {
        mem.fill_page(page_index(page), |i| pattern(0, page, i));
    }
    mem.store(STATE, 1 << 32);
}

pub(super) fn run(mem: ArenaMemory<'_>, first: u64, end: u64, rate_per_s: u64, stop: &AtomicBool) {
    let len = end - first;
    let mut pacer = Pacer::new(rate_per_s);
    while !stop.load(Ordering::Relaxed) {
        let state = mem.load(STATE);
        let (generation, offset) = (state >> 32, state & 0xffff_ffff);
        let page = first + offset.min(len - 1);
        mem.fill_page(page_index(page), |i| pattern(generation, page, i));
        let next = if offset + 1 >= len {
            (generation + 1) << 32
        } else {
            generation << 32 | (offset + 1)
        };
        mem.store(STATE, next);
        pacer.tick();
    }
}

pub(super) fn verify(mem: ArenaMemory<'_>, first: u64, end: u64) -> Result<String, String> {
    let state = mem.load(STATE);
    let (generation, offset) = (state >> 32, state & 0xffff_ffff);
    let wpp = mem.words_per_page();
    for page in first..end {
        let at = page - first;
        let want_generation = match at.cmp(&offset) {
            std::cmp::Ordering::Less => Some(generation),
            std::cmp::Ordering::Equal => None, // being written
            std::cmp::Ordering::Greater => Some(generation - 1),
        };
        let base = page_index(page) * wpp;
        for i in 0..wpp {
            let got = mem.load(base + i);
            let ok = match want_generation {
                Some(g) => got == pattern(g, page, i),
                None => {
                    got == pattern(generation, page, i) || got == pattern(generation - 1, page, i)
                }
            };
            if !ok {
                return Err(format!(
                    "muncher page {page} word {i} is {got:#x}, not generation {want_generation:?} (cursor at generation {generation} page {offset})"
                ));
            }
        }
    }
    Ok(format!("generation={generation} cursor={offset}"))
}
