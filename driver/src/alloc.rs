// SPDX-License-Identifier: Apache-2.0
//! Bitmap allocators for device object indices (QPN, CQN, PDN, MR index) and MTT ranges.
//!
//! The device has no allocator of its own: the driver picks every index and passes it in the
//! command, so these bitmaps are the only record of which indices are in use.

/// Allocator of single indices in `[lo, hi)`; always hands out the lowest free index so runs are
/// reproducible (the lockstep checker and the test logs see the same numbers every time).
#[derive(Debug, Clone)]
pub struct IndexAllocator {
    words: Vec<u64>,
    lo: u32,
    hi: u32,
    used: u32,
}

impl IndexAllocator {
    /// An allocator for the indices `lo..hi` (empty when `hi <= lo`).
    pub fn new(lo: u32, hi: u32) -> Self {
        let n = hi.saturating_sub(lo) as usize;
        IndexAllocator {
            words: vec![0; n.div_ceil(64)],
            lo,
            hi: hi.max(lo),
            used: 0,
        }
    }

    /// Number of indices this allocator manages.
    pub fn capacity(&self) -> u32 {
        self.hi - self.lo
    }

    /// Number of indices currently allocated.
    pub fn in_use(&self) -> u32 {
        self.used
    }

    /// The lowest free index, marked used; `None` when all are taken.
    pub fn alloc(&mut self) -> Option<u32> {
        let n = self.capacity() as usize;
        for (w, word) in self.words.iter_mut().enumerate() {
            if *word == u64::MAX {
                continue;
            }
            let bit = (!*word).trailing_zeros() as usize;
            let i = w * 64 + bit;
            if i >= n {
                return None;
            }
            *word |= 1 << bit;
            self.used += 1;
            return Some(self.lo + i as u32);
        }
        None
    }

    /// Whether `index` is currently allocated.
    pub fn is_allocated(&self, index: u32) -> bool {
        if index < self.lo || index >= self.hi {
            return false;
        }
        let i = (index - self.lo) as usize;
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// Return `index`. Returns `false` (and changes nothing) when it was not allocated, so a
    /// double free is detected by the caller instead of corrupting the bitmap.
    pub fn free(&mut self, index: u32) -> bool {
        if !self.is_allocated(index) {
            return false;
        }
        let i = (index - self.lo) as usize;
        self.words[i / 64] &= !(1 << (i % 64));
        self.used -= 1;
        true
    }
}

/// First-fit allocator of contiguous ranges in `[0, size)` (MTT entries).
#[derive(Debug, Clone)]
pub struct RangeAllocator {
    base: u32,
    used: Vec<bool>,
    in_use: u32,
}

impl RangeAllocator {
    /// An allocator for `size` entries.
    pub fn new(size: u32) -> Self {
        RangeAllocator::with_base(0, size)
    }

    /// An allocator for the entries `[base, base + size)` (a function's MTT range).
    pub fn with_base(base: u32, size: u32) -> Self {
        RangeAllocator {
            base,
            used: vec![false; size as usize],
            in_use: 0,
        }
    }

    /// Number of entries this allocator manages.
    pub fn capacity(&self) -> u32 {
        self.used.len() as u32
    }

    /// Number of entries currently allocated.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Start of the first free run of `count` entries, marked used; `None` if there is none
    /// (including `count == 0`, which would be a meaningless reservation).
    pub fn alloc(&mut self, count: u32) -> Option<u32> {
        let count = count as usize;
        if count == 0 || count > self.used.len() {
            return None;
        }
        let mut run = 0usize;
        for i in 0..self.used.len() {
            if self.used[i] {
                run = 0;
                continue;
            }
            run += 1;
            if run == count {
                let start = i + 1 - count;
                self.used[start..=i].iter_mut().for_each(|u| *u = true);
                self.in_use += count as u32;
                return Some(self.base + start as u32);
            }
        }
        None
    }

    /// Return the range `start..start + count`. Returns `false` (and changes nothing) unless the
    /// whole range was allocated.
    pub fn free(&mut self, start: u32, count: u32) -> bool {
        let Some(start) = start.checked_sub(self.base) else { return false };
        let (s, e) = (start as usize, start as usize + count as usize);
        if count == 0 || e > self.used.len() || !self.used[s..e].iter().all(|u| *u) {
            return false;
        }
        self.used[s..e].iter_mut().for_each(|u| *u = false);
        self.in_use -= count;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_exhaustion_and_reuse() {
        let mut a = IndexAllocator::new(2, 70);
        let got: Vec<u32> = std::iter::from_fn(|| a.alloc()).collect();
        assert_eq!(got, (2..70).collect::<Vec<_>>());
        assert_eq!(a.alloc(), None);
        assert_eq!(a.in_use(), 68);
        assert!(a.free(40));
        assert!(!a.free(40), "double free must be refused");
        assert!(!a.free(1), "below range");
        assert!(!a.free(70), "above range");
        assert_eq!(a.alloc(), Some(40));
        assert_eq!(a.alloc(), None);
        assert!(a.free(2));
        assert!(a.free(69));
        assert_eq!(a.alloc(), Some(2), "lowest free first");
        assert_eq!(a.alloc(), Some(69));
    }

    #[test]
    fn index_empty_range() {
        let mut a = IndexAllocator::new(5, 3);
        assert_eq!(a.capacity(), 0);
        assert_eq!(a.alloc(), None);
    }

    #[test]
    fn range_first_fit_fragmentation_and_reuse() {
        let mut r = RangeAllocator::new(16);
        assert_eq!(r.alloc(0), None);
        assert_eq!(r.alloc(17), None);
        assert_eq!(r.alloc(4), Some(0));
        assert_eq!(r.alloc(4), Some(4));
        assert_eq!(r.alloc(8), Some(8));
        assert_eq!(r.alloc(1), None, "exhausted");
        assert!(r.free(4, 4));
        assert!(!r.free(4, 4), "double free");
        assert!(!r.free(2, 4), "partially free range refused");
        assert_eq!(r.alloc(5), None, "hole of 4 does not fit 5");
        assert_eq!(r.alloc(3), Some(4));
        assert_eq!(r.alloc(1), Some(7));
        assert_eq!(r.in_use(), 16);
        assert!(r.free(0, 16));
        assert_eq!(r.in_use(), 0);
        assert_eq!(r.alloc(16), Some(0));
    }

    proptest::proptest! {
        /// Random alloc/free sequences agree with a set-based reference.
        #[test]
        fn index_allocator_matches_reference(ops in proptest::collection::vec((proptest::bool::ANY, 0u32..40), 1..300)) {
            let mut a = IndexAllocator::new(3, 37);
            let mut used = std::collections::BTreeSet::new();
            for (alloc, i) in ops {
                if alloc {
                    let want = (3..37).find(|x| !used.contains(x));
                    proptest::prop_assert_eq!(a.alloc(), want);
                    if let Some(w) = want { used.insert(w); }
                } else {
                    proptest::prop_assert_eq!(a.free(i), used.remove(&i));
                }
                proptest::prop_assert_eq!(a.in_use() as usize, used.len());
            }
        }

        /// Allocated ranges never overlap and stay inside the allocator.
        #[test]
        fn range_allocator_never_overlaps(ops in proptest::collection::vec((proptest::bool::ANY, 1u32..20, 0usize..8), 1..200)) {
            let mut r = RangeAllocator::new(64);
            let mut live: Vec<(u32, u32)> = Vec::new();
            let mut used = [false; 64];
            for (alloc, n, pick) in ops {
                if alloc {
                    if let Some(s) = r.alloc(n) {
                        for u in &mut used[s as usize..(s + n) as usize] {
                            proptest::prop_assert!(!*u, "overlap");
                            *u = true;
                        }
                        live.push((s, n));
                    } else {
                        // First fit failed: there really is no free run of n.
                        let has_run = used.windows(n as usize).any(|w| w.iter().all(|u| !u));
                        proptest::prop_assert!(!has_run);
                    }
                } else if !live.is_empty() {
                    let (s, n) = live.remove(pick % live.len());
                    proptest::prop_assert!(r.free(s, n));
                    used[s as usize..(s + n) as usize].iter_mut().for_each(|u| *u = false);
                }
                proptest::prop_assert_eq!(r.in_use() as usize, used.iter().filter(|u| **u).count());
            }
        }
    }
}
