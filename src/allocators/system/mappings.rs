//! Mappings kept for reuse. A freed big block gives its pages back to the system at once
//! (`MADV_DONTNEED`: they read as zero when touched again), but its addresses stay mapped for
//! the next block that fits: of the same length or up to half as long again (best fit), so that
//! programs whose big blocks vary in size reuse them too. The spare tail costs address space
//! only: its pages are never touched. A kept mapping has huge pages or not by how the last block
//! used it ([`discard_for_reuse`]). Measured here for 1 MiB: `mmap` + `munmap` cost 4.2 µs,
//! `MADV_DONTNEED` 0.7 µs; an aligned mapping costs up to two more `munmap` calls for trimming.
//!
//! What is kept costs no memory, only address space, and under strict overcommit
//! (`vm.overcommit_memory=2`) commit charge; hence the bounds: at most [`KEPT_MAX`] mappings and
//! [`KEPT_BYTES_MAX`] bytes, the oldest unmapped first, and all of them unmapped before a new
//! mapping is reported as failed.

use crate::os::{discard_for_reuse, unmap_region};
use parking_lot::Mutex;
use std::collections::BTreeMap;

/// At most this many mappings are kept, and at most [`KEPT_BYTES_MAX`] bytes of addresses: a
/// program that frees a batch of a thousand 1 MiB blocks finds them all again for the next batch
/// (jemalloc retains such addresses too). They cost no memory, only address space.
pub const KEPT_MAX: usize = 1024;
pub const KEPT_BYTES_MAX: usize = 1 << 30;

/// Kept mappings, found by best fit and evicted oldest first.
#[derive(Default)]
struct Index {
    /// (length, start) -> (age, advised huge pages)
    by_fit: BTreeMap<(usize, usize), (u64, bool)>,
    /// age -> (length, start)
    by_age: BTreeMap<u64, (usize, usize)>,
    bytes: usize,
    next_age: u64,
}

pub struct Kept {
    index: Mutex<Option<Index>>,
}

static GLOBAL: Kept = Kept::new();

/// The process's kept mappings (what `sysmem` allocates from and releases to).
pub fn global() -> &'static Kept {
    &GLOBAL
}

impl Kept {
    pub const fn new() -> Kept {
        Kept { index: Mutex::new(None) }
    }

    /// Its lock, for [`crate::fork`].
    pub(crate) fn lock(&self) -> &parking_lot::RawMutex {
        // Safety: the raw lock is only locked and unlocked as a whole by `fork`'s handlers.
        unsafe { self.index.raw() }
    }

    /// The smallest kept mapping of `len` to `len + len / 2` bytes starting at a multiple of
    /// `alignment`, now the caller's (zeroed: its pages were discarded), as (start, length,
    /// advised huge pages); or None.
    pub fn take(&self, len: usize, alignment: usize) -> Option<(usize, usize, bool)> {
        let mut guard = self.index.lock();
        let index = guard.as_mut()?;
        let most = len + len / 2;
        let (&(l, start), &(age, huge)) =
            index.by_fit.range((len, 0)..=(most, usize::MAX)).find(|(&(_, start), _)| start % alignment == 0)?;
        index.by_fit.remove(&(l, start));
        index.by_age.remove(&age);
        index.bytes -= l;
        Some((start, l, huge))
    }

    /// Takes back a mapping the caller is done with (`huge`: its huge-page advice): its pages go
    /// back to the system now, its addresses are kept (or unmapped, when bigger than all that may
    /// be kept).
    pub fn keep(&self, start: usize, len: usize, huge: bool) {
        if len > KEPT_BYTES_MAX {
            unmap_region(start, len);
            return;
        }
        let huge = discard_for_reuse(start, len, huge);
        let mut evicted = Vec::new();
        {
            let mut guard = self.index.lock();
            let index = guard.get_or_insert_with(Index::default);
            let age = index.next_age;
            index.next_age += 1;
            index.by_fit.insert((len, start), (age, huge));
            index.by_age.insert(age, (len, start));
            index.bytes += len;
            while index.by_age.len() > KEPT_MAX || index.bytes > KEPT_BYTES_MAX {
                let (_, oldest) = index.by_age.pop_first().expect("over the bounds: not empty");
                index.by_fit.remove(&oldest);
                index.bytes -= oldest.0;
                evicted.push(oldest);
            }
        }
        // System calls outside the lock.
        for (len, start) in evicted {
            unmap_region(start, len);
        }
    }

    /// Gives every kept mapping back to the system; false if none was kept.
    pub fn unmap_all(&self) -> bool {
        let all = self.index.lock().take().unwrap_or_default();
        for &(len, start) in all.by_age.values() {
            unmap_region(start, len);
        }
        !all.by_age.is_empty()
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.index.lock().as_ref().map_or(0, |i| i.by_age.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::{map_region, page_size};

    #[test]
    fn a_kept_mapping_comes_back_zeroed_for_a_block_that_fits_it() {
        let kept = Kept::new();
        let len = 64 * page_size();
        let start = map_region(len, 1 << 20).unwrap();
        // Safety: the mapping is ours.
        unsafe { std::ptr::write_bytes(start as *mut u8, 0xAB, len) };
        kept.keep(start, len, false);
        assert_eq!(kept.take(len + page_size(), 1), None, "longer than kept");
        assert_eq!(kept.take(len / 2, 1), None, "would waste more than half again");
        assert_eq!(kept.take(len, 1 << 30), None, "not aligned enough");
        assert_eq!(kept.take(len * 3 / 4, 1 << 20), Some((start, len, false)), "a shorter block fits");
        assert_eq!(kept.take(len, 1 << 20), None, "taken once");
        // Safety: as above.
        let bytes = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
        assert!(bytes.iter().all(|&b| b == 0));
        unmap_region(start, len);
    }

    #[test]
    fn the_oldest_are_unmapped_beyond_the_bounds() {
        let kept = Kept::new();
        let len = page_size();
        let starts: Vec<usize> = (0..KEPT_MAX + 3).map(|_| map_region(len, page_size()).unwrap()).collect();
        for &s in &starts {
            kept.keep(s, len, false);
        }
        assert_eq!(kept.count(), KEPT_MAX);
        // The newest are kept; the three oldest went back to the system.
        let mut taken: Vec<usize> = (0..KEPT_MAX).map(|_| kept.take(len, 1).unwrap().0).collect();
        taken.sort();
        let mut newest = starts[3..].to_vec();
        newest.sort();
        assert_eq!(taken, newest);
        let big = map_region(KEPT_BYTES_MAX + page_size(), page_size()).unwrap();
        kept.keep(big, KEPT_BYTES_MAX + page_size(), false);
        assert_eq!(kept.count(), 0, "bigger than all that may be kept: unmapped at once");
        for s in taken {
            unmap_region(s, len);
        }
    }
}
