//! Sparse updates: operation `n` (1, 2, ...) stores the value `n` into the
//! 8-byte word `target(n)` of its area, a seeded pseudo-random place; the
//! count of completed operations is a header word, stored after each.
//! So the whole area is determined by that count: each word holds the
//! last operation that targeted it (or 0), plus at most the one operation
//! in flight when the guest stopped, which the adopter simply redoes.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{header, mix, ArenaMemory, GuestSpec, Pacer};

const OPS: usize = header::REGISTERS;

fn area_words(mem: &ArenaMemory<'_>, first: u64, end: u64) -> (usize, usize) {
    let wpp = mem.words_per_page();
    let start = usize::try_from(first).unwrap_or(usize::MAX) * wpp;
    let len = usize::try_from(end - first).unwrap_or(usize::MAX) * wpp;
    (start, len)
}

fn target(seed: u64, op: u64, area_len: usize) -> usize {
    usize::try_from(mix(seed ^ op.wrapping_mul(0xd6e8_feb8_6659_fd93)) % area_len as u64)
        .unwrap_or(0)
}

pub(super) fn run(mem: ArenaMemory<'_>, spec: &GuestSpec, first: u64, end: u64, stop: &AtomicBool) {
    let (start, len) = area_words(&mem, first, end);
    let mut pacer = Pacer::new(spec.rate_per_s);
    while !stop.load(Ordering::Relaxed) {
        let op = mem.load(OPS) + 1;
        mem.store(start + target(spec.seed, op, len), op);
        mem.store(OPS, op);
        pacer.tick();
    }
}

pub(super) fn verify(
    mem: ArenaMemory<'_>,
    spec: &GuestSpec,
    first: u64,
    end: u64,
) -> Result<String, String> {
    let (start, len) = area_words(&mem, first, end);
    let ops = mem.load(OPS);
    // Every completed operation is visible (or overwritten by a later one).
    for op in 1..=ops {
        let at = target(spec.seed, op, len);
        let got = mem.load(start + at);
        if got < op {
            return Err(format!("sparse op {op} lost: its word {at} holds {got}"));
        }
    }
    // No word holds an operation that never ran or targets another word.
    for at in 0..len {
        let got = mem.load(start + at);
        if got != 0 && (got > ops + 1 || target(spec.seed, got, len) != at) {
            return Err(format!(
                "sparse word {at} holds {got}, which op {ops} cannot explain"
            ));
        }
    }
    Ok(format!("ops={ops}"))
}
