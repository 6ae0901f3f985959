//! Whether an empty medium slab (slots of 10-128 KiB: several pages each) keeps its pages for
//! reuse or gives them back at once, decided by what the program does with its blocks.
//!
//! A reused slot is zeroed in place (memset). That is cheapest when the program writes its blocks
//! whole: their pages are in memory anyway. When it writes a few bytes of each, that memset is what
//! brings the other pages into memory: a thousand 64 KiB blocks with a byte written in each,
//! allocated and freed in rounds, kept 65 MiB resident (jemalloc, which zeroes such blocks by
//! giving their pages back, 11). Giving the pages back costs the program a page fault for each page
//! it then touches, far more than zeroing a page: the same blocks written whole took 45 µs a block
//! with their pages given back each round, against 6 µs zeroed in place.
//!
//! So when a medium slab empties, it looks (`mincore`, one call, ~1 µs here) at the slots whose
//! pages came to the program untouched: handed out since the slab's pages were fresh, and never
//! zeroed in place (a slot zeroed in place has all its pages in memory, whatever the program did).
//! If fewer than a quarter of their pages are in memory, the program barely touches its blocks:
//! the slab gives all its pages back at once (one system call for sixteen 64 KiB slots, see
//! [`super::slab_pool::SlabPool::give_back_if_sparse`]) and its next blocks need no zeroing.
//! Otherwise it is *dense* from then on: it keeps its pages for reuse, as small slabs do, and does
//! not look again until the slab pool's decay gave its pages back after it sat empty. With no slot
//! to judge by (every one was zeroed in place), it keeps its pages too.
//!
//! Zeroing reused slots by giving their pages back too (as jemalloc does) would also lower the
//! peak of programs that keep some blocks live while freeing others, at a cost in time; measured
//! and not done (`docs/benchmarks.md`).

use crate::os::{page_size, pages_in_memory};

/// A slab with at least one in this many of the judged slots' pages in memory is dense.
const DENSE: usize = 4;

/// What a medium slab's owner knows of how the program uses its blocks. Only the owning heap
/// touches it (it lives with the slab's other owner-only fields).
pub(super) struct Usage {
    dense: bool,
    /// A set bit: the slot was zeroed in place since the pages were fresh, so its pages in memory
    /// tell nothing of what the program touched. (A medium slab has at most 102 slots.)
    in_place: u128,
}

impl Usage {
    /// A slab whose pages are fresh from the system.
    pub(super) fn fresh() -> Usage {
        Usage { dense: false, in_place: 0 }
    }

    /// Zeroes the first `size` bytes of slot `index`, at `block`, which held a block before.
    ///
    /// # Safety
    /// The slot is the caller's (taken, not yet handed out) and spans at least `size` bytes.
    pub(super) unsafe fn zero_for_reuse(&mut self, index: usize, block: *mut u8, size: usize) {
        std::ptr::write_bytes(block, 0, size);
        self.in_place |= 1 << index;
    }

    /// For an empty slab at `base` with slots of `slot_size` bytes, of which the first `used` were
    /// handed out since its pages were fresh: true when the program barely touched them (give the
    /// pages back); false when it wrote them (the slab is dense from now on) or nothing tells.
    pub(super) fn sparse(&mut self, base: usize, slot_size: usize, used: usize) -> bool {
        if self.dense {
            return false;
        }
        let judged: Vec<usize> = (0..used).filter(|&i| self.in_place & (1 << i) == 0).collect();
        let page = page_size();
        let Some(in_memory) = judged.last().and_then(|&last| pages_in_memory(base, (last + 1) * slot_size)) else {
            return false;
        };
        let (mut pages, mut resident) = (0, 0);
        for i in judged {
            let (first, end) = (i * slot_size / page, ((i + 1) * slot_size).div_ceil(page));
            pages += end - first;
            resident += in_memory[first..end].iter().filter(|&&p| p).count();
        }
        self.dense = resident * DENSE >= pages;
        !self.dense
    }
}

#[cfg(test)]
mod tests {
    use crate::allocators::small::size_class::{self, MEDIUM_SLAB_SIZE, SIZES};

    #[test]
    fn every_medium_slab_has_a_bit_per_slot() {
        let first_medium = (0..size_class::CLASSES).find(|&c| SIZES[c] as usize > size_class::MAX_SMALL_SLOT).unwrap();
        assert!(MEDIUM_SLAB_SIZE / SIZES[first_medium] as usize <= u128::BITS as usize);
    }
}
