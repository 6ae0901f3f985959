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
//! [`KEPT_BYTES_MAX`] bytes, the oldest unmapped first.

use crate::os::{discard_for_reuse, unmap_region};
use parking_lot::Mutex;

pub const KEPT_MAX: usize = 64;
pub const KEPT_BYTES_MAX: usize = 256 << 20;

/// Kept mappings, oldest first: (start, length, advised huge pages).
pub struct Kept {
    mappings: Mutex<Vec<(usize, usize, bool)>>,
}

static GLOBAL: Kept = Kept::new();

/// The process's kept mappings (what `sysmem` allocates from and releases to).
pub fn global() -> &'static Kept {
    &GLOBAL
}

impl Kept {
    pub const fn new() -> Kept {
        Kept { mappings: Mutex::new(Vec::new()) }
    }

    /// Its lock, for [`crate::fork`].
    pub(crate) fn lock(&self) -> &parking_lot::RawMutex {
        // Safety: the raw lock is only locked and unlocked as a whole by `fork`'s handlers.
        unsafe { self.mappings.raw() }
    }

    /// The smallest kept mapping of `len` to `len + len / 2` bytes starting at a multiple of
    /// `alignment`, now the caller's (zeroed: its pages were discarded), as (start, length,
    /// advised huge pages); or None.
    pub fn take(&self, len: usize, alignment: usize) -> Option<(usize, usize, bool)> {
        let mut kept = self.mappings.lock();
        let most = len + len / 2;
        let fits = |&(start, l, _): &(usize, usize, bool)| l >= len && l <= most && start % alignment == 0;
        // Among equal lengths the newest: its addresses are the likeliest still in the TLB.
        let (i, _) = kept.iter().enumerate().rev().filter(|(_, m)| fits(m)).min_by_key(|(_, m)| m.1)?;
        Some(kept.remove(i))
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
        let evicted = {
            let mut kept = self.mappings.lock();
            kept.push((start, len, huge));
            let mut bytes: usize = kept.iter().map(|m| m.1).sum();
            let mut evicted = Vec::new();
            while kept.len() > KEPT_MAX || bytes > KEPT_BYTES_MAX {
                let oldest = kept.remove(0);
                bytes -= oldest.1;
                evicted.push(oldest);
            }
            evicted
        };
        // System calls outside the lock.
        for (start, len, _) in evicted {
            unmap_region(start, len);
        }
    }

    /// Gives every kept mapping back to the system; false if none was kept.
    pub fn unmap_all(&self) -> bool {
        let all = std::mem::take(&mut *self.mappings.lock());
        for &(start, len, _) in &all {
            unmap_region(start, len);
        }
        !all.is_empty()
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.mappings.lock().len()
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
