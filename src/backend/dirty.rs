//! [`DirtyBitmap`]: one bit per guest page, the form in which every backend
//! hands over its dirty set.
//!
//! The layout is Xen's log-dirty bitmap (`xc_bitops.h`): page `p` is bit
//! `p % 64` of word `p / 64`, least significant bit first, so a Xen backend
//! copies its hypercall buffer word for word. Range-based trackers
//! (`PAGEMAP_SCAN`) fill it with [`DirtyBitmap::set_range`]; consumers walk
//! it as coalesced [`PageRange`]s, which become batches.

use super::Pfn;

/// A half-open range of guest pages `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageRange {
    /// First page in the range.
    pub start: Pfn,
    /// One past the last page.
    pub end: Pfn,
}

impl PageRange {
    /// Number of pages in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no page.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// One bit per guest page; a set bit means "written since the last harvest".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyBitmap {
    words: Vec<u64>,
    pages: u64,
}

const WORD_BITS: u64 = 64;

/// Word index and bit mask of page `pfn`.
fn locate(pfn: Pfn) -> (usize, u64) {
    let word = usize::try_from(pfn / WORD_BITS).expect("page index fits in usize");
    (word, 1 << (pfn % WORD_BITS))
}

impl DirtyBitmap {
    /// An all-clear bitmap for a guest of `pages` pages.
    pub fn new(pages: u64) -> Self {
        let words = usize::try_from(pages.div_ceil(WORD_BITS)).expect("bitmap fits in memory");
        Self {
            words: vec![0; words],
            pages,
        }
    }

    /// Number of pages the bitmap covers.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Clear every bit.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Set every bit (every page dirty: the first pre-copy round).
    pub fn set_all(&mut self) {
        self.set_range(PageRange {
            start: 0,
            end: self.pages,
        });
    }

    /// Mark page `pfn`. Panics if `pfn` is out of range (a backend bug).
    pub fn set(&mut self, pfn: Pfn) {
        assert!(
            pfn < self.pages,
            "page {pfn} beyond bitmap of {} pages",
            self.pages
        );
        let (word, mask) = locate(pfn);
        self.words[word] |= mask;
    }

    /// Clear page `pfn`.
    pub fn unset(&mut self, pfn: Pfn) {
        assert!(
            pfn < self.pages,
            "page {pfn} beyond bitmap of {} pages",
            self.pages
        );
        let (word, mask) = locate(pfn);
        self.words[word] &= !mask;
    }

    /// Whether page `pfn` is marked (false beyond the end).
    pub fn get(&self, pfn: Pfn) -> bool {
        pfn < self.pages && {
            let (word, mask) = locate(pfn);
            self.words[word] & mask != 0
        }
    }

    /// Mark every page in `range`. Panics if the range ends beyond the bitmap.
    pub fn set_range(&mut self, range: PageRange) {
        assert!(
            range.end <= self.pages,
            "range {}..{} beyond bitmap of {} pages",
            range.start,
            range.end,
            self.pages
        );
        let mut pfn = range.start;
        while pfn < range.end {
            let (word, _) = locate(pfn);
            let first_bit = pfn % WORD_BITS;
            let bits = (range.end - pfn).min(WORD_BITS - first_bit);
            let mask = if bits == WORD_BITS {
                u64::MAX
            } else {
                ((1_u64 << bits) - 1) << first_bit
            };
            self.words[word] |= mask;
            pfn += bits;
        }
    }

    /// Number of marked pages.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether no page is marked.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// Mark every page marked in `other` (same size).
    pub fn union_with(&mut self, other: &DirtyBitmap) {
        assert_eq!(self.pages, other.pages, "bitmaps of different guests");
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
        }
    }

    /// The raw words, in Xen's layout (bit `p % 64` of word `p / 64`).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The raw words, for a backend that fills them in bulk. Bits beyond
    /// [`pages`](Self::pages) must stay clear.
    pub fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }

    /// The marked pages, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = Pfn> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let base = i as u64 * WORD_BITS;
            BitIter(word).map(move |bit| base + bit)
        })
    }

    /// The marked pages as maximal runs, in increasing order.
    pub fn ranges(&self) -> Ranges<'_> {
        Ranges {
            bitmap: self,
            next: 0,
        }
    }
}

/// Set bits of one word, lowest first.
struct BitIter(u64);

impl Iterator for BitIter {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if self.0 == 0 {
            return None;
        }
        let bit = u64::from(self.0.trailing_zeros());
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

/// Iterator over the runs of marked pages; see [`DirtyBitmap::ranges`].
#[derive(Debug)]
pub struct Ranges<'a> {
    bitmap: &'a DirtyBitmap,
    next: Pfn,
}

impl Ranges<'_> {
    /// The first page at or after `from` whose bit equals `set`, or the end.
    fn next_with(&self, from: Pfn, set: bool) -> Pfn {
        let words = &self.bitmap.words;
        let mut pfn = from;
        while pfn < self.bitmap.pages {
            let (index, _) = locate(pfn);
            let word = if set { words[index] } else { !words[index] };
            let masked = word & (u64::MAX << (pfn % WORD_BITS));
            if masked != 0 {
                let found = index as u64 * WORD_BITS + u64::from(masked.trailing_zeros());
                return found.min(self.bitmap.pages);
            }
            pfn = (index as u64 + 1) * WORD_BITS;
        }
        self.bitmap.pages
    }
}

impl Iterator for Ranges<'_> {
    type Item = PageRange;
    fn next(&mut self) -> Option<PageRange> {
        let start = self.next_with(self.next, true);
        if start >= self.bitmap.pages {
            self.next = start;
            return None;
        }
        let end = self.next_with(start, false);
        self.next = end;
        Some(PageRange { start, end })
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // 64-bit page indices into a small test model
mod tests {
    use super::*;

    #[test]
    fn ranges_coalesce_runs_across_word_boundaries() {
        let mut b = DirtyBitmap::new(200);
        b.set_range(PageRange {
            start: 60,
            end: 130,
        });
        b.set(3);
        b.set(199);
        let ranges: Vec<_> = b.ranges().collect();
        assert_eq!(
            ranges,
            vec![
                PageRange { start: 3, end: 4 },
                PageRange {
                    start: 60,
                    end: 130
                },
                PageRange {
                    start: 199,
                    end: 200
                },
            ]
        );
        assert_eq!(b.count(), 72);
    }

    #[test]
    fn set_all_stays_within_the_guest() {
        let mut b = DirtyBitmap::new(70);
        b.set_all();
        assert_eq!(b.count(), 70);
        assert_eq!(
            b.ranges().collect::<Vec<_>>(),
            vec![PageRange { start: 0, end: 70 }]
        );
        assert!(!b.get(70));
    }

    #[test]
    fn iter_and_ranges_agree_with_a_set_model() {
        // A deterministic pseudo-random pattern, checked against a Vec<bool>.
        let pages = 1000;
        let mut model = vec![false; pages];
        let mut b = DirtyBitmap::new(pages as u64);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..300 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let start = x % pages as u64;
            let len = (x >> 32) % 9;
            let end = (start + len).min(pages as u64);
            b.set_range(PageRange { start, end });
            for p in start..end {
                model[p as usize] = true;
            }
        }
        let expected: Vec<u64> = (0..pages as u64).filter(|p| model[*p as usize]).collect();
        assert_eq!(b.iter().collect::<Vec<_>>(), expected);
        let from_ranges: Vec<u64> = b.ranges().flat_map(|r| r.start..r.end).collect();
        assert_eq!(from_ranges, expected);
        for r in b.ranges() {
            assert!(
                r.start == 0 || !model[r.start as usize - 1],
                "run {r:?} is maximal"
            );
            assert!(
                r.end == pages as u64 || !model[r.end as usize],
                "run {r:?} is maximal"
            );
        }
    }

    #[test]
    fn union_and_clear() {
        let mut a = DirtyBitmap::new(10);
        let mut b = DirtyBitmap::new(10);
        a.set(1);
        b.set(8);
        a.union_with(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![1, 8]);
        a.unset(1);
        assert_eq!(a.count(), 1);
        a.clear();
        assert!(a.is_empty());
    }
}
