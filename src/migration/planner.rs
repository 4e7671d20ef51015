//! The planner: per-page dirty history and what each round sends.
//!
//! One byte of state per page:
//!
//! ```text
//!  bit 7      bits 6..0
//!  +-------+---------------------------------------------+
//!  | owed  | dirtied in round r-1, r-2, ... r-7 (bit 0 newest)
//!  +-------+---------------------------------------------+
//! ```
//!
//! `owed` means the receiver's copy is stale (never sent, or dirtied since it
//! was sent). A page dirtied in the latest harvest and in at least `h` of the
//! last `w` harvests is **hot**: with deferral on, live rounds skip it and it waits for the final
//! stop-and-copy, instead of being re-sent every round only to be dirtied
//! again. A deferred page that was not dirtied in the latest round is cold
//! again and goes in the next live round: rounds shrink by orders of
//! magnitude (the full pass takes seconds, late rounds milliseconds), so a
//! page that was rewritten during a long round may well survive a short one.

#![forbid(unsafe_code)]

use crate::backend::{DirtyBitmap, Pfn};

const OWED: u8 = 0x80;
const HISTORY: u8 = 0x7f;

/// When a page counts as hot: dirtied in at least `min_dirty_rounds` of the
/// last `window_rounds` harvests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotRule {
    /// `h`.
    pub min_dirty_rounds: u8,
    /// `w` (at most 7).
    pub window_rounds: u8,
}

impl Default for HotRule {
    /// Dirtied in 2 of the last 3 rounds.
    fn default() -> Self {
        Self {
            min_dirty_rounds: 2,
            window_rounds: 3,
        }
    }
}

fn hot_state(hot: Option<(u8, u32)>, s: u8) -> bool {
    hot.is_some_and(|(mask, h)| s & 1 == 1 && (s & mask).count_ones() >= h)
}

/// Bit 7 of each of eight bytes.
const OWED_BYTES: u64 = 0x8080_8080_8080_8080;
/// Bits 1 to 6 of each byte: where a history shifted left by one lands.
const AGED_BYTES: u64 = 0x7e7e_7e7e_7e7e_7e7e;
const ONES: u64 = 0x0101_0101_0101_0101;

/// Byte `i` of `SPREAD[b]` is bit `i` of `b`.
const SPREAD: [u64; 256] = {
    let mut t = [0_u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 8 {
            t[b] |= ((b as u64 >> i) & 1) << (8 * i);
            i += 1;
        }
        b += 1;
    }
    t
};

/// Up to eight states as one word (missing ones zero: owing nothing).
fn word(group: &[u8]) -> u64 {
    let mut w = [0_u8; 8];
    let n = group.len().min(8);
    w[..n].copy_from_slice(&group[..n]);
    u64::from_le_bytes(w)
}

/// Eight states as one word.
fn word8(group: &[u8]) -> u64 {
    group.try_into().map_or(0, u64::from_le_bytes)
}

/// The sum of a word's bytes (at most 255 in all).
fn byte_sum(x: u64) -> u64 {
    x.wrapping_mul(ONES) >> 56
}

/// [`hot_state`] for eight states at once: bit 7 of each byte of the
/// result says whether that byte's page is hot.
fn hot_bytes(hot: Option<(u8, u32)>, s: u64) -> u64 {
    let Some((mask, h)) = hot else {
        return 0;
    };
    // Per-byte population count of the window (each byte ends up 0..=7).
    let mut v = s & (ONES * u64::from(mask));
    v -= (v >> 1) & 0x5555_5555_5555_5555;
    v = (v & 0x3333_3333_3333_3333) + ((v >> 2) & 0x3333_3333_3333_3333);
    v = (v + (v >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // count + (0x80 - h) reaches bit 7 iff count >= h (h in 1..=7: no
    // carry leaves the byte).
    let at_least = (v + ONES * (0x80 - u64::from(h.min(0x80)))) & OWED_BYTES;
    // ...and dirtied in the latest harvest (bit 0, moved to bit 7).
    at_least & (s << 7) & OWED_BYTES
}

/// Per-page state and the round plan. See the module documentation.
#[derive(Debug, Clone)]
pub struct Planner {
    state: Vec<u8>,
    hot: Option<(u8, u32)>,
    owed_cold: u64,
    owed_hot: u64,
}

impl Planner {
    /// A planner for `page_count` pages, deferring hot pages by `hot`
    /// (`None`: never defer, as Xen and QEMU do). Every page starts owed.
    pub fn new(page_count: u64, hot: Option<HotRule>) -> Self {
        let hot = hot.map(|r| {
            let w = r.window_rounds.clamp(1, 7);
            (u8::MAX >> (8 - w), u32::from(r.min_dirty_rounds.max(1)))
        });
        Self {
            state: vec![OWED; usize::try_from(page_count).unwrap_or(0)],
            hot,
            owed_cold: page_count,
            owed_hot: 0,
        }
    }

    /// Bytes of per-page state (one per page).
    pub fn state_bytes(&self) -> usize {
        self.state.len()
    }

    fn is_hot_state(&self, s: u8) -> bool {
        hot_state(self.hot, s)
    }

    /// Whether page `pfn` is hot now.
    pub fn is_hot(&self, pfn: Pfn) -> bool {
        usize::try_from(pfn)
            .ok()
            .and_then(|i| self.state.get(i))
            .is_some_and(|s| self.is_hot_state(*s))
    }

    /// Take in a harvest: age every page's history, mark the dirty pages
    /// dirtied and owed, and recount.
    ///
    /// Eight pages at a time (their states as one word), since this runs
    /// over every page of the guest once per round, the last time with the
    /// guest paused: a page's byte at a time cost ~0.25 ms of downtime per
    /// GiB of guest.
    pub fn observe(&mut self, dirty: &DirtyBitmap) {
        let words = dirty.words();
        let (mut cold, mut hot) = (0_u64, 0_u64);
        let mut chunks = self.state.chunks_exact_mut(64);
        for (chunk, w) in chunks.by_ref().zip(0..) {
            let bits = words.get(w).copied().unwrap_or(0);
            // Per-byte counters (at most 8 each): owed, and owed and hot.
            let (mut owed_n, mut hot_n) = (0_u64, 0_u64);
            for (group, g) in chunk.chunks_exact_mut(8).zip(0..) {
                let d = SPREAD[usize::from((bits >> (8 * g)).to_le_bytes()[0])];
                let s = word(group);
                let s = (s & OWED_BYTES) | (d << 7) | ((s << 1) & AGED_BYTES) | d;
                group.copy_from_slice(&s.to_le_bytes());
                let owed = s & OWED_BYTES;
                owed_n += owed >> 7;
                hot_n += (hot_bytes(self.hot, s) & owed) >> 7;
            }
            let (o, h) = (byte_sum(owed_n), byte_sum(hot_n));
            hot += h;
            cold += o - h;
        }
        let base = self.state.len() / 64 * 64;
        for (i, st) in self.state[base..].iter_mut().enumerate() {
            let pfn = base + i;
            let d = u8::from(
                words
                    .get(pfn / 64)
                    .is_some_and(|w| w >> (pfn % 64) & 1 == 1),
            );
            *st = (*st & OWED) | (d << 7) | ((*st << 1) & HISTORY) | d;
            if *st & OWED != 0 {
                if hot_state(self.hot, *st) {
                    hot += 1;
                } else {
                    cold += 1;
                }
            }
        }
        self.owed_cold = cold;
        self.owed_hot = hot;
    }

    /// Owed pages a live round sends now (owed and not hot), in order.
    pub fn live_round(&self) -> Vec<Pfn> {
        self.owed_where(|s| !self.is_hot_state(s))
    }

    /// Every owed page: the final pass.
    pub fn final_pass(&self) -> Vec<Pfn> {
        self.owed_where(|_| true)
    }

    /// Owed pages whose state passes `keep`, in order; skips 64 pages that
    /// owe nothing at a time.
    fn owed_where(&self, keep: impl Fn(u8) -> bool) -> Vec<Pfn> {
        let mut out =
            Vec::with_capacity(usize::try_from(self.owed_cold + self.owed_hot).unwrap_or(0));
        for (c, chunk) in self.state.chunks(64).enumerate() {
            let any = if chunk.len() == 64 {
                chunk.chunks_exact(8).fold(0, |acc, g| acc | word8(g))
            } else {
                chunk.chunks(8).fold(0, |acc, g| acc | word(g))
            };
            if any & OWED_BYTES == 0 {
                continue;
            }
            for (i, &s) in chunk.iter().enumerate() {
                if s & OWED != 0 && keep(s) {
                    out.push((c * 64 + i) as Pfn);
                }
            }
        }
        out
    }

    /// Record that `pfn` was sent: the receiver's copy is current.
    pub fn sent(&mut self, pfn: Pfn) {
        let hot = self.hot;
        if let Some(s) = usize::try_from(pfn)
            .ok()
            .and_then(|i| self.state.get_mut(i))
        {
            if *s & OWED != 0 {
                if hot_state(hot, *s) {
                    self.owed_hot -= 1;
                } else {
                    self.owed_cold -= 1;
                }
                *s &= !OWED;
            }
        }
    }

    /// Owed pages that are not hot: what the next live round sends.
    pub fn owed_cold(&self) -> u64 {
        self.owed_cold
    }

    /// Owed hot pages: deferred to the final pass.
    pub fn owed_hot(&self) -> u64 {
        self.owed_hot
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test page numbers are small
mod tests {
    use super::*;

    fn harvest(pages: u64, dirty: &[Pfn]) -> DirtyBitmap {
        let mut b = DirtyBitmap::new(pages);
        for &p in dirty {
            b.set(p);
        }
        b
    }

    #[test]
    fn hot_pages_wait_for_the_final_round() {
        let mut p = Planner::new(100, Some(HotRule::default()));
        assert_eq!(p.live_round().len(), 100);
        for pfn in 0..100 {
            p.sent(pfn);
        }
        assert_eq!((p.owed_cold(), p.owed_hot()), (0, 0));
        // Page 7 is dirtied every round, page 50 once.
        p.observe(&harvest(100, &[7, 50]));
        assert_eq!(p.live_round(), vec![7, 50]);
        p.sent(7);
        p.sent(50);
        p.observe(&harvest(100, &[7]));
        assert!(p.is_hot(7));
        assert!(p.live_round().is_empty(), "hot page 7 is deferred");
        assert_eq!((p.owed_cold(), p.owed_hot()), (0, 1));
        assert_eq!(p.final_pass(), vec![7]);
        // Still written: still deferred.
        p.observe(&harvest(100, &[7]));
        assert!(p.is_hot(7));
        // One clean round and it is sent live again.
        p.observe(&harvest(100, &[]));
        assert!(!p.is_hot(7));
        assert_eq!(p.live_round(), vec![7]);
    }

    #[test]
    fn without_deferral_every_owed_page_goes_live() {
        let mut p = Planner::new(10, None);
        for pfn in 0..10 {
            p.sent(pfn);
        }
        for _ in 0..5 {
            p.observe(&harvest(10, &[3]));
        }
        assert_eq!(p.live_round(), vec![3]);
        assert_eq!(p.owed_hot(), 0);
    }

    proptest::proptest! {
        #[test]
        fn eight_pages_at_a_time_is_one_page_at_a_time(
            pages in 1_u64..300,
            rule in proptest::option::of((1_u8..9, 1_u8..8)),
            rounds in proptest::collection::vec(
                (proptest::collection::vec(0_u64..300, 0..120), proptest::collection::vec(0_u64..300, 0..60)),
                1..12,
            ),
        ) {
            let rule = rule.map(|(h, w)| HotRule { min_dirty_rounds: h, window_rounds: w });
            let mut p = Planner::new(pages, rule);
            // The byte-wise model: the rules of the module documentation.
            let mut model = vec![OWED; pages as usize];
            for (dirtied, sent) in rounds {
                for &pfn in sent.iter().filter(|&&x| x < pages) {
                    p.sent(pfn);
                    model[pfn as usize] &= !OWED;
                }
                let dirtied: Vec<Pfn> = dirtied.into_iter().filter(|&x| x < pages).collect();
                p.observe(&harvest(pages, &dirtied));
                for (pfn, st) in model.iter_mut().enumerate() {
                    let d = u8::from(dirtied.contains(&(pfn as Pfn)));
                    *st = (*st & OWED) | (d << 7) | ((*st << 1) & HISTORY) | d;
                }
                proptest::prop_assert_eq!(&p.state, &model);
                let owed = |hot: bool| {
                    model.iter().filter(|&&st| st & OWED != 0 && hot_state(p.hot, st) == hot).count() as u64
                };
                proptest::prop_assert_eq!((p.owed_cold(), p.owed_hot()), (owed(false), owed(true)));
                let live: Vec<Pfn> = (0..pages)
                    .filter(|&x| model[x as usize] & OWED != 0 && !hot_state(p.hot, model[x as usize]))
                    .collect();
                proptest::prop_assert_eq!(p.live_round(), live);
                let all: Vec<Pfn> = (0..pages).filter(|&x| model[x as usize] & OWED != 0).collect();
                proptest::prop_assert_eq!(p.final_pass(), all);
            }
        }
    }

    #[test]
    fn state_is_one_byte_per_page() {
        assert_eq!(
            Planner::new(12345, Some(HotRule::default())).state_bytes(),
            12345
        );
    }
}
