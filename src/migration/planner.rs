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
    pub fn observe(&mut self, dirty: &DirtyBitmap) {
        let words = dirty.words();
        let (mut cold, mut hot) = (0, 0);
        for (w, chunk) in self.state.chunks_mut(64).enumerate() {
            let bits = words.get(w).copied().unwrap_or(0);
            for (b, s) in chunk.iter_mut().enumerate() {
                let d = u8::from(bits >> b & 1 == 1);
                let owed = (*s & OWED) | (d << 7);
                *s = owed | ((*s << 1) & HISTORY) | d;
            }
        }
        for &s in &self.state {
            if s & OWED != 0 {
                if self.is_hot_state(s) {
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

    fn owed_where(&self, keep: impl Fn(u8) -> bool) -> Vec<Pfn> {
        self.state
            .iter()
            .enumerate()
            .filter(|(_, s)| **s & OWED != 0 && keep(**s))
            .map(|(i, _)| i as Pfn)
            .collect()
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

    #[test]
    fn state_is_one_byte_per_page() {
        assert_eq!(
            Planner::new(12345, Some(HotRule::default())).state_bytes(),
            12345
        );
    }
}
