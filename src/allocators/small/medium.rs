//! How the pages of medium slots (10-128 KiB: several pages each) are handled when blocks come
//! and go, decided by what the program does with its blocks: whether an empty slab keeps its
//! pages for reuse or gives them back at once, and whether a reused slot is zeroed in place or by
//! giving its pages back.
//!
//! Zeroing a reused slot in place (memset) is cheapest when the program writes its blocks whole:
//! their pages are in memory anyway. When it writes a few bytes of each, that memset is what
//! brings the other pages into memory: a thousand 64 KiB blocks with a byte written in each,
//! allocated and freed in rounds, kept 65 MiB resident (jemalloc, which zeroes such blocks by
//! giving their pages back, 11). Giving the pages back costs the program a page fault for each page
//! it then touches, far more than zeroing a page: the same blocks written whole took 45 µs a block
//! with their pages given back each round, against 6 µs zeroed in place.
//!
//! So when a medium slab of slots of 64 KiB or more (below that, a page fault costs more than
//! zeroing the slot: [`GIVE_BACK_MIN_SLOT`]) empties, it looks (`mincore`, one call, ~1 µs here)
//! at the slots whose pages came to the program untouched: handed out since the slab's pages were
//! fresh, and never zeroed in place (a slot zeroed in place has all its pages in memory, whatever
//! the program did). If fewer than a quarter of their pages are in memory, the program barely
//! touches its blocks of that class: the slab gives all its pages back at once (one system call for
//! sixteen 64 KiB slots, see [`super::slab_pool::SlabPool::give_back_now`]) and its next blocks
//! need no zeroing. Otherwise it is *dense* from then on: it keeps its pages for reuse, as small
//! slabs do, and does not look again until the slab pool's decay gave its pages back after it sat
//! empty. With no slot to judge by (every one was zeroed in place), it keeps its pages too. Only
//! one slab in [`REJUDGE`] of a class looks; the others take the verdict of the last one that did
//! ([`Verdict`], per thread).
//!
//! While a thread's verdict on a class says sparse, a slot of that class reused before its slab
//! empties is zeroed by giving its whole pages back too (clearing the part pages at its ends),
//! unless it is the slot freed last (a program that frees and allocates one block over and over
//! would pay a system call each time for pages still in its cache). In a workload of random sizes
//! with a byte written per block, that took the peak from 25 to 19 MiB (49 to 36 with two
//! threads) at the same speed.

use super::slab::Slab;
use crate::os::{discard, page_size, pages_in_memory};

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

    /// Zeroes the first `size` bytes of slot `index`, at `block`, which held a block before: by
    /// giving its pages back if `give_back` (and the slab is not dense), else in place.
    ///
    /// # Safety
    /// The slot is the caller's (taken, not yet handed out) and spans at least `size` bytes.
    pub(super) unsafe fn zero_for_reuse(&mut self, index: usize, block: *mut u8, size: usize, give_back: bool) {
        if give_back && !self.dense && give_back_pages(block, size) {
            self.in_place &= !(1 << index);
        } else {
            std::ptr::write_bytes(block, 0, size);
            self.in_place |= 1 << index;
        }
    }

    /// For an empty slab at `base` with slots of `slot_size` bytes, of which the first `used` were
    /// handed out since its pages were fresh: whether the program barely touched its blocks (Some
    /// true: give the pages back) or wrote them (Some false: the slab is dense from now on); None
    /// when nothing tells.
    fn judge(&mut self, base: usize, slot_size: usize, used: usize) -> Option<bool> {
        let judged: Vec<usize> = (0..used).filter(|&i| self.in_place & (1 << i) == 0).collect();
        let in_memory = pages_in_memory(base, (judged.last()? + 1) * slot_size)?;
        let page = page_size();
        let (mut pages, mut resident) = (0, 0);
        for i in judged {
            let (first, end) = (i * slot_size / page, ((i + 1) * slot_size).div_ceil(page));
            pages += end - first;
            resident += in_memory[first..end].iter().filter(|&&p| p).count();
        }
        self.dense = resident * DENSE >= pages;
        Some(!self.dense)
    }
}

/// A heap's last verdict on a medium class, taken again for the next [`REJUDGE`] - 1 slabs of that
/// class that empty: a program uses blocks of one size alike, and looking costs a system call
/// (in a workload of random sizes, one every other operation: 13% of its time when every empty
/// slab looked).
#[derive(Clone, Copy, Default)]
pub(super) struct Verdict {
    sparse: bool,
    reuses_left: u8,
}

/// Slabs of smaller slots always keep their pages: refaulting a page the program touches costs
/// about what zeroing 64 KiB does here (1-2 µs), so below that zeroing in place wins. A thousand
/// 32 KiB blocks with a byte written in each: 1.9 µs a block with pages given back, 1.2 zeroed in
/// place (mimalloc 1.4); at 64 KiB 2.1-2.3 against 2.6-3.5 µs.
const GIVE_BACK_MIN_SLOT: usize = 64 << 10;

/// One medium slab in this many looks at its pages when it empties; the others take the verdict.
const REJUDGE: u8 = 8;

impl Verdict {
    /// Whether a reused slot of `slot_size` bytes of this class should be zeroed by giving its
    /// pages back (if its slab is not dense; the caller leaves out the slot freed last).
    pub(super) fn zero_by_giving_back(&self, slot_size: u32) -> bool {
        self.sparse && slot_size as usize >= GIVE_BACK_MIN_SLOT
    }

    /// Whether the empty medium `slab` should give its pages back now (else it keeps them).
    ///
    /// # Safety
    /// The caller owns the slab (or holds it exclusively) and it is empty.
    pub(super) unsafe fn give_back(&mut self, slab: &Slab) -> bool {
        let usage = slab.usage();
        if (slab.slot_size as usize) < GIVE_BACK_MIN_SLOT || usage.dense {
            return false;
        }
        if self.reuses_left > 0 {
            self.reuses_left -= 1;
            usage.dense = !self.sparse;
            return self.sparse;
        }
        let Some(sparse) = usage.judge(slab.base, slab.slot_size as usize, slab.used_slots()) else { return false };
        *self = Verdict { sparse, reuses_left: REJUDGE - 1 };
        sparse
    }
}

/// Zeroes `size` bytes at `block` by giving the whole pages among them back to the system and
/// clearing the rest; false (nothing done) when they span fewer than two whole pages or the system
/// refused.
///
/// # Safety
/// The `size` bytes at `block` are the caller's, in a private anonymous mapping.
unsafe fn give_back_pages(block: *mut u8, size: usize) -> bool {
    let page = page_size();
    let (first, end) = (block as usize, block as usize + size);
    let (start, stop) = (first.next_multiple_of(page), end / page * page);
    if stop < start + 2 * page || !discard(start, stop - start) {
        return false;
    }
    std::ptr::write_bytes(block, 0, start - first);
    std::ptr::write_bytes(stop as *mut u8, 0, end - stop);
    true
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
