//! Deliver each payload once: per sender, the newest incarnation and a
//! window of the last [`WINDOW`] sequence numbers.

use std::collections::BTreeMap;

/// Sequence numbers remembered below the highest one seen.
pub const WINDOW: u64 = 256;
/// Senders tracked at most (a medium serves a small cluster); beyond this
/// the least recently heard one is forgotten.
pub const MAX_SENDERS: usize = 256;

/// The verdict on one authentic frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First copy: deliver it.
    Fresh,
    /// Already delivered (the copy from another link).
    Duplicate,
    /// An older incarnation, or a sequence number below the window: a replay.
    Replay,
}

#[derive(Debug, Clone, Copy)]
struct Sender {
    incarnation: u64,
    max_seq: u64,
    /// Bit i set: `max_seq - i` was seen.
    seen: [u64; 4],
    last_heard: u64,
}

/// Duplicate and replay suppression for all senders.
#[derive(Debug, Default, Clone)]
pub struct Dedup {
    senders: BTreeMap<String, Sender>,
    clock: u64,
}

impl Dedup {
    /// An empty filter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Judge a frame from `sender`; record it unless it is a replay.
    pub fn check(&mut self, sender: &str, incarnation: u64, seq: u64) -> Verdict {
        self.clock += 1;
        let clock = self.clock;
        if !self.senders.contains_key(sender) && self.senders.len() >= MAX_SENDERS {
            if let Some(oldest) = self
                .senders
                .iter()
                .min_by_key(|(_, s)| s.last_heard)
                .map(|(name, _)| name.clone())
            {
                self.senders.remove(&oldest);
            }
        }
        let s = self.senders.entry(sender.to_owned()).or_insert(Sender {
            incarnation,
            max_seq: 0,
            seen: [0; 4],
            last_heard: clock,
        });
        if incarnation < s.incarnation {
            return Verdict::Replay;
        }
        if incarnation > s.incarnation {
            *s = Sender {
                incarnation,
                max_seq: 0,
                seen: [0; 4],
                last_heard: clock,
            };
        }
        s.last_heard = clock;
        if seq > s.max_seq {
            shift(&mut s.seen, seq - s.max_seq);
            s.seen[0] |= 1;
            s.max_seq = seq;
            return Verdict::Fresh;
        }
        let back = s.max_seq - seq;
        if back >= WINDOW {
            return Verdict::Replay;
        }
        let (word, bit) = (usize::try_from(back / 64).unwrap_or(0), back % 64);
        if s.seen[word] & (1 << bit) != 0 {
            Verdict::Duplicate
        } else {
            s.seen[word] |= 1 << bit;
            Verdict::Fresh
        }
    }
}

/// Shift the 256-bit window left by `by` bits (towards older).
fn shift(seen: &mut [u64; 4], by: u64) {
    if by >= WINDOW {
        *seen = [0; 4];
        return;
    }
    let words = usize::try_from(by / 64).unwrap_or(0);
    let bits = by % 64;
    for i in (0..4usize).rev() {
        let lo = i.checked_sub(words).map_or(0, |j| seen[j]);
        let lower = i.checked_sub(words + 1).map_or(0, |j| seen[j]);
        seen[i] = if bits == 0 {
            lo
        } else {
            lo << bits | lower >> (64 - bits)
        };
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn second_copy_is_a_duplicate_and_reordering_is_fine() {
        let mut d = Dedup::new();
        assert_eq!(d.check("a", 1, 1), Verdict::Fresh);
        assert_eq!(d.check("a", 1, 1), Verdict::Duplicate);
        assert_eq!(d.check("a", 1, 3), Verdict::Fresh);
        assert_eq!(d.check("a", 1, 2), Verdict::Fresh, "late, not lost");
        assert_eq!(d.check("a", 1, 2), Verdict::Duplicate);
        assert_eq!(d.check("b", 1, 1), Verdict::Fresh, "senders are separate");
    }

    #[test]
    fn old_incarnation_and_seq_below_the_window_are_replays() {
        let mut d = Dedup::new();
        assert_eq!(d.check("a", 5, 1000), Verdict::Fresh);
        assert_eq!(d.check("a", 5, 1000 - WINDOW), Verdict::Replay);
        assert_eq!(d.check("a", 4, 2000), Verdict::Replay);
        assert_eq!(d.check("a", 6, 1), Verdict::Fresh, "restart starts over");
        assert_eq!(d.check("a", 5, 1001), Verdict::Replay);
    }

    proptest! {
        /// Against a model that remembers everything: within the window the
        /// filter agrees exactly; every seq is delivered at most once.
        #[test]
        fn delivers_each_seq_at_most_once(seqs in proptest::collection::vec(1u64..600, 1..400)) {
            let mut d = Dedup::new();
            let mut delivered = std::collections::HashSet::new();
            let mut max = 0;
            for s in seqs {
                let expect = if s <= max && max - s >= WINDOW {
                    Verdict::Replay
                } else if delivered.contains(&s) {
                    Verdict::Duplicate
                } else {
                    Verdict::Fresh
                };
                prop_assert_eq!(d.check("x", 1, s), expect, "seq {} max {}", s, max);
                if expect == Verdict::Fresh {
                    delivered.insert(s);
                }
                max = max.max(s);
            }
        }
    }
}
