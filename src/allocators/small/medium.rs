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
//! So when a medium slab of slots of 32 KiB or more (below that, a page fault costs more than
//! zeroing the slot: [`GIVE_BACK_MIN_SLOT`]) empties, it looks (`mincore`, one call, ~1 µs here)
//! at the slots whose pages came to the program untouched: handed out since the slab's pages were
//! fresh, and never zeroed in place (a slot zeroed in place has all its pages in memory, whatever
//! the program did). If fewer than a quarter of their pages are in memory, the program barely
//! touches its blocks of that class: the slab gives all its pages back at once (one system call for
//! sixteen 64 KiB slots, see [`super::slab_pool::SlabPool::give_back_now`]) and its next blocks
//! need no zeroing. Otherwise it is *dense* from then on: it keeps its pages for reuse, as small
//! slabs do, and does not look again until the slab pool's decay gave its pages back after it sat
//! empty. With no slot to judge by (every one was zeroed in place), it does as reused slots of its
//! class were last found to need (keeps its pages when nothing was found). Only one slab in
//! [`REJUDGE`] of a class looks; the others take the verdict of the last one that did ([`Verdict`],
//! per thread).
//!
//! While a thread's verdict on a class says sparse, a slot of that class reused before its slab
//! empties is zeroed by giving its whole pages back too (clearing the part pages at its ends),
//! unless it is the slot freed last (a program that frees and allocates one block over and over
//! would pay a system call each time for pages still in its cache) or one of a few blocks freed
//! and allocated over and over ([`RecentlyFreed`]; a block another thread freed counts so while its
//! slab holds few live blocks: a pipeline's, see [`Usage::take_freed_remotely`]), or its slab was
//! found dense.
//! Where slabs seldom empty (blocks that live long and die in random order), the verdict would
//! come late, so a reused slot that tells (not zeroed in place) is looked at too, one in
//! [`REJUDGE`]. In a workload of random sizes with a byte written per block, this took the peak
//! from 25 to 19 MiB (49 to 36 with two threads), and looking at reused slots, from 32 KiB on, and
//! giving back the slot's whole pages (not only the block's) to 9 MiB (16 with two threads;
//! jemalloc 10 and 16-17), at the same speed within noise.

use super::size_class::MEDIUM_SLAB_SIZE;
use super::slab::Slab;
use crate::os::{discard, each_page_in_memory, page_size};

/// A slab with at least one in this many of the judged slots' pages in memory is dense.
const DENSE: usize = 4;

/// How many of the medium slots a heap took back last it remembers: see [`RecentlyFreed`].
const RECENT: usize = 8;

/// The last [`RECENT`] medium slots a heap took back (of any class; 0: none), so that a small set
/// of blocks allocated and freed over and over is zeroed in place, as a dense slab's are, whatever
/// the class's verdict. Giving such a slot's pages back costs a system call and then a page fault
/// for every page the next block touches, pages that were in memory a moment before. zlib's
/// streams do so: four 64 KiB blocks each (the hash heads written whole, the window and the rest
/// a page or two for a short message), and a deflate of 1 KiB took 52 µs a stream, 19 page faults
/// and one `madvise`, against mimalloc's 14 µs (it zeroes in place); with eight threads doing it,
/// every `madvise` also interrupted the other core (see [`Usage::zero_for_reuse`]): three times
/// glibc's time.
///
/// A reused slot is zeroed in place when it is the one taken back last, or when it is among them and
/// its last two reuses came as soon after its free (it was among them then too). One or two such
/// reuses are not enough: in a workload of random sizes, where blocks live long, that put whole
/// slots into memory for blocks that then barely touched them (peak RSS +6-8%, 4-9% slower); with
/// three in a row, within noise. A run of slots given back with a reused one stops short of a
/// slot taken back lately, which may be one of that set. What this keeps in memory is bounded: a
/// slot comes into memory whole only while it is among the last eight taken back (or, freed by
/// another thread, while at most a quarter of its slab's slots hold a block).
#[derive(Default)]
pub(super) struct RecentlyFreed {
    slots: [usize; RECENT],
    next: usize,
}

impl RecentlyFreed {
    /// The slot at `address` was taken back.
    pub(super) fn push(&mut self, address: usize) {
        self.slots[self.next % RECENT] = address;
        self.next = self.next.wrapping_add(1);
    }

    /// Whether the slot at `address`, slot `index` of the slab whose `usage` this is, about to be
    /// reused, is zeroed in place (see [`RecentlyFreed`]); counts this reuse. `soon_anyway`: the
    /// reuse counts as soon after the free whether the slot is among the last taken back or not
    /// (see [`Usage::take_freed_remotely`]).
    pub(super) fn zero_in_place(&self, address: usize, usage: &mut Usage, index: usize, soon_anyway: bool) -> bool {
        let soon = soon_anyway || self.slots.contains(&address);
        let soon_before = usage.count_reuse(index, soon);
        (soon && soon_before == 2) || address == self.slots[self.next.wrapping_sub(1) % RECENT]
    }

    /// Of the `run` free slots of `slot_size` bytes right after the one at `address`, how many
    /// come before the first slot taken back lately. (A slot of another slab lies beyond the run.)
    pub(super) fn run_before(&self, address: usize, slot_size: usize, run: usize) -> usize {
        self.slots.iter().filter(|&&a| a > address).map(|&a| (a - address) / slot_size - 1).fold(run, usize::min)
    }
}

/// What a medium slab's owner knows of how the program uses its blocks. Only the owning heap
/// touches it (it lives with the slab's other owner-only fields).
pub(super) struct Usage {
    dense: bool,
    /// A set bit: the slot was zeroed in place since the pages were fresh, so its pages in memory
    /// tell nothing of what the program touched. (A medium slab has at most 102 slots.)
    in_place: u128,
    /// A set bit: a free slot whose pages went back with an earlier slot's (see
    /// [`Usage::zero_for_reuse`]), so it reads as zero until it is handed out.
    zeroed: u128,
    /// Per slot, how many of its last reuses in a row came soon after its free, up to two: a bit
    /// in `soon_once` for one, in both for two (see [`RecentlyFreed`]).
    soon_once: u128,
    soon_twice: u128,
    /// A set bit: a free slot another thread freed (collected since, not handed out since).
    remote: u128,
}

/// The most free slots after a reused one whose pages go back with its own, in one system call.
pub(super) const RUN_MAX: usize = 15;

impl Usage {
    /// A slab whose pages are fresh from the system.
    pub(super) fn fresh() -> Usage {
        Usage { dense: false, in_place: 0, zeroed: 0, soon_once: 0, soon_twice: 0, remote: 0 }
    }

    /// Counts a reuse of slot `index`, `soon` after its free or not (which starts the count
    /// again); returns how many reuses in a row before this one came soon (0-2).
    fn count_reuse(&mut self, index: usize, soon: bool) -> u8 {
        let bit = 1 << index;
        let before = u8::from(self.soon_once & bit != 0) + u8::from(self.soon_twice & bit != 0);
        if !soon {
            (self.soon_once, self.soon_twice) = (self.soon_once & !bit, self.soon_twice & !bit);
        } else if self.soon_once & bit == 0 {
            self.soon_once |= bit;
        } else {
            self.soon_twice |= bit;
        }
        before
    }

    /// The owner collected the slots whose bits are set in `bits`, word `word` of the slab's
    /// remote frees. (Small slabs have more words; their slots are never judged.)
    #[inline(always)]
    pub(super) fn freed_remotely(&mut self, word: usize, bits: u64) {
        if word < 2 {
            self.remote |= u128::from(bits) << (64 * word);
        }
    }

    /// Whether slot `index`, about to be handed out, was freed by another thread; it is then no
    /// longer counted so. The owner never sees when another thread frees a block, only when it
    /// collects the slot, and it collects when it needs slots: so a pipeline's blocks (one
    /// thread allocating, another freeing) never look freed lately to [`RecentlyFreed`]. Such a
    /// reuse counts as soon when the slab holds few live blocks (see [`Slab::few_live`]): the
    /// blocks in flight are few, and zeroing their slots in place keeps few pages in memory.
    /// A producer of 64 KiB blocks with a byte written in each and a consumer freeing them took
    /// 4.4-4.7 µs a block (medians of rotating runs) with the reused slots' pages given back (a
    /// `madvise` every ten blocks or so, which interrupts the consumer's core, and a page fault),
    /// against 1.3-1.7 with this (mimalloc, which zeroes in place, 1.0-1.3 in the same runs); peak
    /// RSS 4-7 MiB for all three.
    pub(super) fn take_freed_remotely(&mut self, index: usize) -> bool {
        let was = self.remote & (1 << index) != 0;
        self.remote &= !(1 << index);
        was
    }

    /// Whether slot `index`, about to be handed out, reads as zero already (its pages went back
    /// with an earlier slot's); it is then no longer counted so.
    pub(super) fn take_zeroed(&mut self, index: usize) -> bool {
        let was = self.zeroed & (1 << index) != 0;
        self.zeroed &= !(1 << index);
        was
    }

    /// Zeroes the first `size` bytes of slot `index` (`slot_size` bytes at `block`), which held a
    /// block before: by giving its pages back if `give_back` (and the slab is not dense), else in
    /// place. Giving back, it takes the `run` free slots right after it along where slots are
    /// whole pages: one system call instead of one per slot. Each such call in a process with
    /// another thread running makes the kernel interrupt that thread's core to flush its TLB
    /// (~10 µs in this VM): a producer of 100 KB blocks with a byte written in each, freed by a
    /// consumer thread, took 12 µs a block (glibc's `calloc`, which zeroes in place, 1 µs).
    ///
    /// # Safety
    /// The slot is the caller's (taken, not yet handed out); `size` <= `slot_size`; the `run`
    /// slots after it are free and the caller's too.
    pub(super) unsafe fn zero_for_reuse(
        &mut self,
        index: usize,
        block: *mut u8,
        size: usize,
        slot_size: usize,
        give_back: bool,
        run: usize,
    ) {
        if give_back && !self.dense {
            if run > 0 && slot_size % page_size() == 0 && discard(block as usize, slot_size * (1 + run)) {
                let slots = ((1u128 << run) - 1) << (index + 1);
                self.zeroed |= slots;
                self.in_place &= !(slots | 1 << index);
                return;
            }
            if give_back_pages(block, size, slot_size) {
                self.in_place &= !(1 << index);
                return;
            }
        }
        std::ptr::write_bytes(block, 0, size);
        self.in_place |= 1 << index;
    }

    /// For an empty slab at `base` with slots of `slot_size` bytes, of which the first `used` were
    /// handed out since its pages were fresh: whether the program barely touched its blocks (Some
    /// true: give the pages back) or wrote them (Some false: the slab is dense from now on); None
    /// when nothing tells.
    fn judge_empty(&mut self, base: usize, slot_size: usize, used: usize) -> Option<bool> {
        // On the stack (a medium slab has at most 64 slots): a free path must not need memory.
        let mut judged = [0; 64];
        let mut n = 0;
        for i in (0..used).filter(|&i| self.in_place & (1 << i) == 0) {
            judged[n] = i;
            n += 1;
        }
        let sparse = sparse(base, slot_size, &judged[..n])?;
        self.dense = !sparse;
        Some(sparse)
    }

    /// The same for slot `index` alone, about to be reused (the slab stays as it is): None when
    /// it was zeroed in place.
    fn judge_slot(&self, base: usize, slot_size: usize, index: usize) -> Option<bool> {
        if self.in_place & (1 << index) != 0 {
            return None;
        }
        sparse(base, slot_size, &[index])
    }
}

/// Whether fewer than one in [`DENSE`] of the pages of slots `judged` (ascending indexes) of the
/// slab at `base` are in memory; None if the system will not say.
fn sparse(base: usize, slot_size: usize, judged: &[usize]) -> Option<bool> {
    let page = page_size();
    let from = judged.first()? * slot_size / page;
    let to = ((judged.last()? + 1) * slot_size).div_ceil(page);
    // On the stack (see `each_page_in_memory`): a slab has at most this many pages.
    let mut in_memory = [false; MEDIUM_SLAB_SIZE / 4096];
    if to - from > in_memory.len() {
        return None;
    }
    each_page_in_memory(base + from * page, (to - from) * page, |p, resident| in_memory[p] = resident)?;
    let (mut pages, mut resident) = (0, 0);
    for &i in judged {
        let (first, end) = (i * slot_size / page - from, ((i + 1) * slot_size).div_ceil(page) - from);
        pages += end - first;
        resident += in_memory[first..end].iter().filter(|&&p| p).count();
    }
    Some(resident * DENSE < pages)
}

/// A heap's verdicts on a medium class: whether the program barely touches its blocks. Looking
/// costs a system call (in a workload of random sizes, one every other operation: 13% of its time
/// when every empty slab looked), so a verdict is taken again for the next [`REJUDGE`] - 1 times
/// before anything looks again: a program uses blocks of one size alike.
///
/// Two things look. A slab that empties looks at all its slots that tell (see
/// [`Usage::judge_empty`]): its verdict decides what the next empty slabs do with their pages, and
/// how reused slots are zeroed. A reused slot looks at itself (if it tells): slabs may take long
/// to empty where blocks live long and are freed in random order (the workload of random sizes:
/// thousands of operations), and zeroing in place meanwhile put every page of every reused slot
/// into memory (peak 18 MiB, 14 with reused 64-128 KiB slots looking). One slot is weak evidence
/// (a block allocated and never written), so its verdict only decides how reused slots are zeroed
/// (and what an empty slab with no slot that tells does).
#[derive(Clone, Copy, Default)]
pub(super) struct Verdict {
    /// By the last empty slab that looked: do empty slabs give their pages back?
    sparse_slabs: bool,
    empties_left: u8,
    /// By the last slab or reused slot that looked: are reused slots zeroed by giving back?
    sparse_slots: bool,
    reuses_left: u8,
}

/// Slabs of smaller slots always keep their pages: refaulting a page the program touches costs
/// more than zeroing a few pages in place. From 32 KiB on, memory wins: 32 KiB blocks, a byte
/// written in each, in batches of a thousand took 2.0-2.4 µs a block with pages given back against
/// 1.5-1.8 zeroed in place, with 5-6 MiB resident against 33 (in the same runs mimalloc, which
/// zeroes in place, 1.6-1.9 µs and 33 MiB; jemalloc 3.4-3.6 µs and 19 MiB), and in the workload of
/// random sizes the peak went from 14 to 10 MiB (28 to 18 with two threads) at the same speed
/// within noise. Blocks written whole are not affected (they are found dense). 16 KiB took that
/// workload to 9 and 16 MiB (before slots were given back whole, which now does as much), with two
/// threads 8% slower; and a byte in a 16 KiB block is a quarter of its pages, which counts as dense.
const GIVE_BACK_MIN_SLOT: usize = 32 << 10;

/// One judgement in this many looks; the others take the last verdict.
const REJUDGE: u8 = 8;

impl Verdict {
    /// Whether slot `index` of `slab`, about to be reused, should be zeroed by giving its pages
    /// back (if its slab is not dense; the caller leaves out the slot freed last).
    ///
    /// # Safety
    /// The caller owns the slab and has taken the slot.
    pub(super) unsafe fn zero_by_giving_back(&mut self, slab: &Slab, index: usize) -> bool {
        let slot_size = slab.slot_size as usize;
        if slot_size < GIVE_BACK_MIN_SLOT {
            return false;
        }
        if self.reuses_left > 0 {
            self.reuses_left -= 1;
        } else if let Some(sparse) = slab.usage().judge_slot(slab.base, slot_size, index) {
            (self.sparse_slots, self.reuses_left) = (sparse, REJUDGE - 1);
        }
        self.sparse_slots
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
        if self.empties_left > 0 {
            self.empties_left -= 1;
            usage.dense = !self.sparse_slabs;
            return self.sparse_slabs;
        }
        match usage.judge_empty(slab.base, slab.slot_size as usize, slab.used_slots()) {
            Some(sparse) => {
                *self = Verdict {
                    sparse_slabs: sparse,
                    empties_left: REJUDGE - 1,
                    sparse_slots: sparse,
                    reuses_left: REJUDGE - 1,
                };
                sparse
            }
            // Nothing tells (every slot was zeroed in place): as reused slots were last found.
            None => self.sparse_slots,
        }
    }
}

/// Zeroes `size` bytes at `block`, a slot of `slot_size` bytes, by giving the whole pages of the
/// slot back to the system and clearing what is left of the block at its ends; false (nothing
/// done) when the slot spans fewer than two whole pages or the system refused. The whole slot, not
/// only the block: a page the block ends in would otherwise be cleared by hand, and so put in
/// memory for a block that may never touch it (with a byte written per block, 2-3 pages of a
/// reused slot stayed in memory instead of 1, and looked written).
///
/// # Safety
/// The slot's bytes are the caller's, in a private anonymous mapping; `size` <= `slot_size`.
unsafe fn give_back_pages(block: *mut u8, size: usize, slot_size: usize) -> bool {
    let page = page_size();
    let (first, end) = (block as usize, block as usize + size);
    let (start, stop) = (first.next_multiple_of(page), (first + slot_size) / page * page);
    if stop < start + 2 * page || !discard(start, stop - start) {
        return false;
    }
    std::ptr::write_bytes(block, 0, start - first);
    if end > stop {
        std::ptr::write_bytes(stop as *mut u8, 0, end - stop);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocators::small::size_class::{self, SIZES};
    use crate::os::{map_region, pages_in_memory, unmap_region};

    #[test]
    fn a_reused_slot_takes_the_free_slots_after_it_along_and_they_read_zero() {
        let slot = 64 << 10;
        let base = map_region(6 * slot, page_size()).unwrap();
        // Safety (throughout): the region is this test's; six slots that held data.
        unsafe { std::ptr::write_bytes(base as *mut u8, 0x77, 6 * slot) };
        let mut usage = Usage::fresh();
        usage.in_place = 0b111111;
        // Slot 1 reused, given back with the three free slots after it; slot 5 stays as it was.
        unsafe { usage.zero_for_reuse(1, (base + slot) as *mut u8, 100, slot, true, 3) };
        let pages = pages_in_memory(base, 6 * slot).unwrap();
        let per_slot = slot / page_size();
        assert!(pages[per_slot..5 * per_slot].iter().all(|&p| !p), "slots 1-4 went back");
        assert!(pages[..per_slot].iter().chain(&pages[5 * per_slot..]).all(|&p| p), "0 and 5 did not");
        assert_eq!(usage.in_place, 0b100001, "1-4 tell again what the program touches");
        assert_eq!(usage.zeroed, 0b11100);
        for i in 2..5 {
            assert!(usage.take_zeroed(i), "slot {i} reads zero when handed out");
            assert!(!usage.take_zeroed(i), "once");
            let bytes = unsafe { std::slice::from_raw_parts((base + i * slot) as *const u8, slot) };
            assert!(bytes.iter().all(|&b| b == 0));
        }
        assert!(!usage.take_zeroed(5));
        // A slab found dense zeroes in place, the run notwithstanding.
        usage.dense = true;
        unsafe { usage.zero_for_reuse(0, base as *mut u8, 100, slot, true, 3) };
        assert_eq!((usage.zeroed, usage.in_place & 1), (0, 1));
        assert_eq!(unsafe { *((base + 100) as *const u8) }, 0x77, "only the block's bytes");
        assert!(unmap_region(base, 6 * slot));
    }

    #[test]
    fn every_medium_slab_has_a_bit_per_slot() {
        let first_medium = (0..size_class::CLASSES).find(|&c| SIZES[c] as usize > size_class::MAX_SMALL_SLOT).unwrap();
        assert!(MEDIUM_SLAB_SIZE / SIZES[first_medium] as usize <= u128::BITS as usize);
    }
}
