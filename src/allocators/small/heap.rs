//! One thread's heap: the slabs it owns per size class (the one it allocates from, partial, full,
//! empty ones kept back), its quota credit and its counters. Only its thread touches it.

use super::counters::Counters;
use super::last_heap;
use super::medium::{RecentlyFreed, Verdict, RUN_MAX};
use super::size_class::CLASSES;
use super::slab::{Place, Slab};
use super::{Slot, SmallBlocks};
use crate::fallible::{self, Shared};
use crate::quota::{Credit, Quota};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::*};

/// Heap ids, unique across pools; 0 means "no owner".
static NEXT_HEAP: AtomicU64 = AtomicU64::new(1);

/// One thread's part of one pool.
pub(super) struct Heap {
    pub(super) id: u64,
    pub(super) pool: &'static SmallBlocks,
    /// The pool's quota, one load nearer than through `pool` for the fast paths.
    quota: &'static Quota,
    pub(super) credit: Shared<Credit>,
    pub(super) counters: Shared<Counters>,
    /// Per class: the slab allocations come from (what the fast path reads; 64 entries, so that
    /// a class masked to it needs no bounds check there; the last 16 stay empty)...
    pub(super) current: [Option<&'static Slab>; 64],
    /// ...and the rest, made when the class is first used. Most threads use a few classes: the
    /// heap takes ~0.8 KiB instead of the 5.4 KiB it took with every class's lists inline, and a
    /// thread's end walks the lists of the classes it used only.
    pub(super) classes: [Option<Box<ClassSlabs>>; CLASSES],
    /// Bit `c`: class `c` was used (`classes[c]` is made; only then can `current[c]` be set). A
    /// thread's end looks at those classes only: walking all 48 of both arrays cost ~900
    /// instructions, half of what a short thread still spent beyond glibc's.
    used: u64,
    /// Bytes of the empty slabs kept back, all classes together (at most [`SPARE_MAX`]).
    pub(super) spares: usize,
    /// The medium slots this heap took back last: whether a reused one is zeroed in place.
    recently_freed: RecentlyFreed,
}

const _: () = assert!(CLASSES <= 64, "a bit per class in `used`");

/// The slabs of one class that a heap owns besides its current one: with free slots of their own
/// (or none when last looked at), and empty ones kept back.
pub(super) struct ClassSlabs {
    pub(super) partial: SlabList,
    pub(super) full: SlabList,
    pub(super) spare: Vec<&'static Slab>,
    /// The fewest slabs `spare` held since `dm_decay` last aged a busy heap: the bottom ones of
    /// the list (taken from its top) that sat there unused all that time (see [`Heap::age`]).
    spare_low: usize,
    /// For a medium class: does an empty slab keep its pages? (See [`super::medium`].)
    verdict: Verdict,
}

impl ClassSlabs {
    /// Moves every full slab that another thread freed into since it was listed over to the
    /// partial list (its slots collected); one nobody freed into is passed over with one load.
    ///
    /// # Safety
    /// The caller's heap owns the slabs. (Room for every slab it owns is kept on each list.)
    unsafe fn move_freed_into_to_partial(&mut self) {
        let mut i = 0;
        while i < self.full.slabs.len() {
            if self.full.slabs[i].freed_into() {
                let slab = self.full.remove(i);
                self.partial.push(slab);
            } else {
                i += 1;
            }
        }
    }

    /// Room on each list for every slab of the class the heap owns, with one more (`current`:
    /// whether it has a current slab besides the listed ones); false when the system has none.
    fn make_room_for_one_more(&mut self, current: bool) -> bool {
        let owned = self.partial.slabs.len() + self.full.slabs.len() + self.spare.len() + usize::from(current) + 1;
        [&mut self.partial.slabs, &mut self.full.slabs, &mut self.spare]
            .into_iter()
            .all(|list| fallible::reserve(list, owned - list.len()).is_ok())
    }
}

impl Default for ClassSlabs {
    fn default() -> ClassSlabs {
        ClassSlabs {
            partial: SlabList::new(true),
            full: SlabList::new(false),
            spare: Vec::new(),
            spare_low: 0,
            verdict: Verdict::default(),
        }
    }
}

/// Bytes of empty slabs a heap keeps back for itself (16 small slabs, or one medium one), beyond
/// which they go to the pool. Its own slabs are the cheapest to reuse: no lock, and their memory
/// is in this core's caches. (Two threads refilling batches of 4 KiB blocks took ~1.7x mimalloc's
/// time per block while each kept only one per class, through the pool's lock.)
const SPARE_MAX: usize = 1 << 20;

/// Slabs of one class that one heap owns, in one state. Each slab records its position
/// ([`Place`]), so that it leaves the list in O(1): finding room never means walking every slab.
pub(super) struct SlabList {
    pub(super) slabs: Vec<&'static Slab>,
    pub(super) partial: bool,
}

impl SlabList {
    pub(super) fn new(partial: bool) -> SlabList {
        SlabList { slabs: Vec::new(), partial }
    }

    pub(super) fn place(&self, index: usize) -> Place {
        if self.partial {
            Place::Partial(index)
        } else {
            Place::Full(index)
        }
    }

    /// Safety (for all three): the caller's heap owns the slabs.
    pub(super) unsafe fn push(&mut self, slab: &'static Slab) {
        slab.set_place(self.place(self.slabs.len()));
        self.slabs.push(slab);
    }

    pub(super) unsafe fn remove(&mut self, index: usize) -> &'static Slab {
        let slab = self.slabs.swap_remove(index);
        if let Some(moved) = self.slabs.get(index) {
            moved.set_place(self.place(index));
        }
        slab.set_place(Place::Unlisted);
        slab
    }

    pub(super) unsafe fn pop(&mut self) -> Option<&'static Slab> {
        let last = self.slabs.len().checked_sub(1)?;
        Some(self.remove(last))
    }
}

impl Heap {
    /// A heap for a thread's first allocation, boxed; None when there is no memory for it
    /// (nothing is listed then: a heap that was listed and not boxed is dropped, which unlists it).
    pub(super) fn new(pool: &'static SmallBlocks) -> Option<Box<Heap>> {
        let counters = Shared::try_new(Counters::default())?;
        let credit = pool.quota.new_credit()?;
        {
            let mut heaps = pool.heaps.lock();
            if heaps.try_reserve(1).is_err() {
                drop(heaps);
                pool.quota.retire_credit(&credit);
                return None;
            }
            heaps.push(counters.clone());
        }
        fallible::boxed(Heap {
            id: NEXT_HEAP.fetch_add(1, SeqCst),
            credit,
            quota: pool.quota,
            pool,
            counters,
            current: [None; 64],
            classes: [const { None }; CLASSES],
            used: 0,
            spares: 0,
            recently_freed: RecentlyFreed::default(),
        })
        .ok()
    }

    /// The common case of an allocation, with nothing that can block or call out: a slot from
    /// the current slab's own free bits, paid from the credit. None: take the slow path. Inside
    /// the credit's bracket (`asked`: what entering it said).
    #[inline(always)]
    pub(super) fn take_fast(&mut self, size: usize, class: usize, asked: u8) -> Option<NonNull<u8>> {
        // `% 64`: a no-op (class < CLASSES) that spares the bounds check.
        let slab = self.current[class % 64]?;
        // Safety: this heap owns its current slab.
        let index = unsafe { slab.take_local() }?;
        if !self.quota.spend_within(&self.credit, asked, size as u64) {
            // Safety: as above; the slot was taken just now and never handed out.
            unsafe { slab.put_back_local(index) };
            return None;
        }
        Some(self.hand_out(slab, index, size))
    }

    /// A zeroed slot of class `c`, marked live with a block of `size` bytes.
    pub(super) fn take(&mut self, size: usize, c: usize) -> Option<NonNull<u8>> {
        let (slab, index) = loop {
            if let Some(slab) = self.current[c] {
                // Safety: this heap owns its current slab.
                if let Some(index) = unsafe { slab.take_free() } {
                    break (slab, index);
                }
            }
            let next = self.next_slab(c)?;
            if let Some(full) = self.replace_current(c, Some(next)) {
                // Safety: this heap owns the slab.
                unsafe {
                    if full.watch_full() {
                        self.slabs_of(c).full.push(full);
                    } else {
                        self.slabs_of(c).partial.push(full); // freed into meanwhile
                    }
                }
            }
        };
        Some(self.hand_out(slab, index, size))
    }

    /// Zeroes slot `index` of `slab` (this heap's), marks it live with `size` bytes, counts it.
    #[inline(always)]
    pub(super) fn hand_out(&mut self, slab: &'static Slab, index: usize, size: usize) -> NonNull<u8> {
        let address = slab.slot_address(index);
        let block = address as *mut u8;
        // Safety: the slot is this heap's and `size` fits in it; earlier blocks left data there,
        // unless it was never handed out since the slab's pages were fresh.
        if !unsafe { slab.first_use(index) } {
            if slab.slot_size <= 64 {
                unsafe { zero_small(block, slab.slot_size) };
            } else {
                // Safety: as above. Out of line, off the path of the smallest blocks: 113 instead
                // of 119 instructions a 64 B allocation (callgrind).
                unsafe { self.zero_for_reuse(slab, index, size) };
            }
        }
        slab.mark_live(index, size);
        self.counters.allocated(size, slab.slot_size);
        // Safety: slots lie in mapped slabs, never at address 0.
        unsafe { NonNull::new_unchecked(block) }
    }

    /// Zeroes [`Heap::hand_out`]'s reused slot above 64 B: a small one with memset, a medium one
    /// in place or by giving its pages back.
    ///
    /// # Safety
    /// The slot is this heap's and `size` fits in it.
    #[cold]
    #[inline(never)]
    unsafe fn zero_for_reuse(&mut self, slab: &'static Slab, index: usize, size: usize) {
        let address = slab.slot_address(index);
        let block = address as *mut u8;
        if !slab.is_medium() {
            std::ptr::write_bytes(block, 0, size);
            return;
        }
        // Counted whether the slot still needs zeroing or not (its pages went back with an earlier
        // slot's): how soon slots are reused is the program's doing.
        let soon = slab.usage().take_freed_remotely(index) && slab.few_live();
        // Slots other threads freed come back now, not when the slab's own free slots run out:
        // the lowest free slot is taken next, so a pipeline cycles through a few slots whose
        // lines are in the cache, not through the whole slab (64 KiB blocks from a producer to
        // a consumer: 1.49 against 2.11 µs a block).
        slab.collect_now();
        let in_place = self.recently_freed.zero_in_place(address, slab.usage(), index, soon);
        if !slab.usage().take_zeroed(index) {
            let slot_size = slab.slot_size as usize;
            let give_back = !in_place && self.slabs_of(slab.class).verdict.zero_by_giving_back(slab, index);
            let run = if give_back { slab.free_run_after(index, RUN_MAX) } else { 0 };
            // Not as far as a slot freed lately: its pages are likely in the cache, for a block
            // that will take them soon.
            let run = self.recently_freed.run_before(address, slot_size, run);
            slab.usage().zero_for_reuse(index, block, size, slot_size, give_back, run);
        }
    }

    /// Where allocation goes when the current slab is full: an owned slab with room, the slab
    /// kept back, an unowned one, a new one.
    ///
    /// First, at most once per [`super::counters::EMPTIED_LOOK_MS`] (looks by `dm_decay`
    /// included), the heap takes back the slabs of every class that other threads' frees emptied
    /// (see [`Heap::take_back_emptied`]): it sees those frees only when it collects them, which
    /// it does for a class when it needs a slab of it. A thread that allocated a thousand 64 KiB
    /// blocks, which another thread freed, and went on allocating batches of 64 B blocks kept
    /// their 64 MiB in memory until `dm_trim` or `dm_decay` looked; now 3 MB two seconds later.
    /// mimalloc's threads take such pages back at their slow allocations too. (Not with every new
    /// slab: the look walks the heap's lists.)
    pub(super) fn next_slab(&mut self, c: usize) -> Option<&'static Slab> {
        if self.counters.emptied_look_due(crate::os::coarse_millis()) {
            if self.counters.may_hold_emptied() {
                self.take_back_emptied();
            }
            // And what the pool kept past its time goes back: the pool decays as it is used,
            // and a thread that works from its own slabs does not use it.
            self.pool.unowned.decay();
        }
        let has_current = self.current[c].is_some();
        if self.classes[c].is_none() {
            // The class's lists, made on its first use: without memory for them, no slab.
            self.classes[c] = Some(fallible::boxed(ClassSlabs::default()).ok()?);
        }
        let slabs = self.slabs_of(c);
        // Safety (throughout): this heap owns the slabs on its lists.
        if let Some(slab) = unsafe { slabs.partial.pop() } {
            return Some(slab);
        }
        // Slots freed by other threads show only when collected. Looking through the full slabs
        // happens once the partial ones are used up, and moves every slab with such slots over,
        // so its cost is shared by all the slots it finds (or by a whole new slab's).
        unsafe { slabs.move_freed_into_to_partial() };
        if let Some(slab) = unsafe { slabs.partial.pop() } {
            return Some(slab);
        }
        if let Some(slab) = slabs.spare.pop() {
            slabs.spare_low = slabs.spare_low.min(slabs.spare.len());
            self.count_spares(slab.bytes, slab.idle_bytes(), false);
            return Some(slab);
        }
        // One more slab for this heap: room for it on each of the class's lists first, so that
        // moving slabs between them (on free paths) never needs memory.
        if !slabs.make_room_for_one_more(has_current) {
            return None;
        }
        self.pool.slab_for(c, self.id)
    }

    /// A slot whose claim this thread won becomes free again, and its bytes go to the credit.
    /// Inside the credit's bracket (`asked`: what entering it said). True: the credit must go
    /// back to the budget once the bracket is closed (see [`Quota::release_within`]).
    #[inline(always)]
    pub(super) fn put_back(&mut self, slot: Slot, size: usize, asked: u8) -> bool {
        let slab = slot.slab;
        self.counters.released(size, slab.slot_size);
        if slab.owner() != self.id {
            self.pool.put_back_remote(slot);
        } else {
            // Safety: this heap owns the slab.
            let free = unsafe { slab.put_back_local(slot.index) };
            if slab.is_medium() {
                self.recently_freed.push(slab.slot_address(slot.index));
            }
            // The current slab (unlisted) stays put whatever its count: the common case.
            if (free == 1 || free == slab.slots) && unsafe { slab.place() } != Place::Unlisted {
                self.relist(slab, free);
            }
        }
        self.quota.release_within(&self.credit, asked, size as u64)
    }

    /// [`Heap::put_back`] for a slow path, which enters the credit's bracket itself.
    pub(super) fn put_back_bracketed(&mut self, slot: Slot, size: usize) -> bool {
        let credit = self.credit.clone();
        credit.bracket.around(|asked| self.put_back(slot, size, asked))
    }

    /// A slab of this heap got its first free slot back (onto the partial list), or its last
    /// (kept back or given up). The current slab stays where it is.
    #[cold]
    #[inline(never)]
    pub(super) fn relist(&mut self, slab: &'static Slab, free: u32) {
        let slabs = self.slabs_of(slab.class);
        // Safety: this heap owns the slab and its lists.
        unsafe {
            match (slab.place(), free == slab.slots) {
                (Place::Partial(i), true) => {
                    slabs.partial.remove(i);
                }
                (Place::Full(i), true) => {
                    slabs.full.remove(i);
                }
                (Place::Full(i), false) => {
                    slabs.full.remove(i);
                    slabs.partial.push(slab);
                    return;
                }
                (Place::Partial(_), false) | (Place::Unlisted, _) => return,
            }
            self.now_empty(slab);
        }
    }

    /// Gives the pages of the empty slabs kept back to the system now, and the slabs to the pool
    /// (for `dm_trim`, and `dm_decay` once the thread is idle). Returns the bytes `cached` counted
    /// for them.
    pub(super) fn give_back_spares(&mut self) -> u64 {
        let pool = self.pool; // borrowed while the lists change
        let mut given_back = 0;
        self.drain_spares(|slab| given_back += give_back_spare(pool, slab));
        given_back
    }

    /// Gives the empty slabs kept back to the pool, with their pages (when the thread ends).
    pub(super) fn give_up_spares(&mut self) {
        let pool = self.pool;
        self.drain_spares(|slab| pool.unowned.give_up(slab, true));
    }

    /// Takes every empty slab kept back out of the count and off the lists, one by one to `each`
    /// (no list of them is made: that could need memory).
    fn drain_spares(&mut self, mut each: impl FnMut(&'static Slab)) {
        self.pool.spare_bytes.fetch_sub(self.counters.spares(), Relaxed);
        self.spares = 0;
        self.counters.set_spares(0);
        for c in self.used_classes() {
            if let Some(slabs) = &mut self.classes[c] {
                slabs.spare_low = 0;
                while let Some(slab) = slabs.spare.pop() {
                    each(slab);
                }
            }
        }
    }

    /// Counts a slab of `bytes` whose blocks touched `touched` bytes of pages as kept back
    /// (`kept`), or as taken again: against [`SPARE_MAX`], and in `cached`.
    fn count_spares(&mut self, bytes: usize, touched: u64, kept: bool) {
        if kept {
            self.spares += bytes;
            self.counters.set_spares(self.counters.spares() + touched);
            self.pool.spare_bytes.fetch_add(touched, Relaxed);
        } else {
            self.spares -= bytes;
            self.counters.set_spares(self.counters.spares() - touched);
            self.pool.spare_bytes.fetch_sub(touched, Relaxed);
        }
    }

    /// Class `c`'s current slab becomes `slab`; returns the one before. The only place it changes,
    /// so that the copy the stats read ([`Counters::show_current`]) never falls behind.
    fn replace_current(&mut self, c: usize, slab: Option<&'static Slab>) -> Option<&'static Slab> {
        self.counters.show_current(c, slab);
        std::mem::replace(&mut self.current[c], slab)
    }

    /// The lists of class `c` (made on first use, by [`Heap::next_slab`]: a class whose lists are
    /// not made has no slab here, so no other path makes them).
    #[inline]
    fn slabs_of(&mut self, c: usize) -> &mut ClassSlabs {
        self.used |= 1 << c;
        self.classes[c].get_or_insert_with(Box::default)
    }

    /// The classes used, lowest first (see `used`).
    fn used_classes(&self) -> impl Iterator<Item = usize> + use<> {
        let mut bits = self.used;
        std::iter::from_fn(move || {
            let c = (bits != 0).then(|| bits.trailing_zeros() as usize)?;
            bits &= bits - 1;
            Some(c)
        })
    }

    /// Gives back the pages of what the heap keeps for reuse: its empty slabs kept back (those
    /// other threads' frees emptied among them) and its current slabs that are empty. Returns the
    /// bytes `cached` counted for them (and those it did not count yet, of slabs other threads
    /// emptied).
    pub(super) fn give_back_kept(&mut self) -> u64 {
        self.take_back_emptied() + self.give_back_spares() + self.give_back_empty_current()
    }

    /// Gives back the pages of this heap's current slabs that are empty (for `dm_trim`): one per
    /// class it allocated from, which waits for the next block of its class. Returns the bytes
    /// `cached` counted for them ([`Slab::idle_bytes`]). They stay current, every slot fresh.
    pub(super) fn give_back_empty_current(&mut self) -> u64 {
        let mut bytes = 0;
        for slab in self.current.iter().flatten() {
            // Safety: this heap owns its current slabs; an empty one has no live block to keep.
            unsafe {
                let idle = if slab.is_empty() { slab.idle_bytes() } else { 0 };
                if idle > 0 && slab.give_back_pages() {
                    bytes += idle;
                }
            }
        }
        bytes
    }

    /// Keeps up to [`SPARE_MAX`] bytes of empty slabs back (so a loop that fills and empties slabs
    /// does not go to the pool each time); further empty ones are given up. `slab` is on no list.
    /// Returns the bytes of pages given back at once (a medium slab whose blocks were barely
    /// touched), 0 when kept.
    pub(super) fn now_empty(&mut self, slab: &'static Slab) -> u64 {
        let idle = slab.idle_bytes();
        // Safety: this heap owns the slab, which is empty.
        if slab.is_medium()
            && unsafe { self.slabs_of(slab.class).verdict.give_back(slab) && self.pool.unowned.give_back_now(slab) }
        {
            return idle;
        }
        if self.spares + slab.bytes <= SPARE_MAX {
            self.slabs_of(slab.class).spare.push(slab);
            self.count_spares(slab.bytes, idle, true);
        } else {
            self.pool.unowned.keep_resident(slab);
        }
        0
    }

    /// Takes the slabs on its lists that other threads' frees emptied as its own frees would have
    /// (kept back, given up to the pool, or their pages given back: [`Heap::now_empty`]), for
    /// `dm_trim` and `dm_decay` in the owner's place; returns the bytes of pages given back. Only
    /// the owner sees other threads' frees, when it collects them, and one that no longer
    /// allocates in a class never does: a thread that allocated a thousand 64 KiB blocks written
    /// whole, all freed by another thread, kept 64 MiB in memory that `cached` did not show and
    /// `dm_trim` could not give back. A full slab nobody freed into costs one load.
    pub(super) fn take_back_emptied(&mut self) -> u64 {
        let mut given_back = 0;
        for c in self.used_classes() {
            // Safety (throughout): this heap owns the slabs on its lists.
            if let Some(slabs) = self.classes[c].as_mut() {
                unsafe { slabs.move_freed_into_to_partial() };
            }
            // Walked from the end: a removal moves the last slab into the place looked at.
            let partial = self.classes[c].as_ref().map_or(0, |slabs| slabs.partial.slabs.len());
            for i in (0..partial).rev() {
                let Some(slabs) = self.classes[c].as_mut() else { break };
                let slab = slabs.partial.slabs[i];
                if unsafe { slab.is_empty() } {
                    unsafe { slabs.partial.remove(i) };
                    given_back += self.now_empty(slab);
                }
            }
        }
        given_back
    }

    /// `dm_decay`'s visit of a heap whose thread is busy (at most once per
    /// [`super::counters::EMPTIED_LOOK_MS`]): what the heap kept for reuse and did not use since
    /// the last such visit goes back, what it uses stays. A thread that once allocated blocks of
    /// a size and freed them, then stayed busy with other sizes, kept their pages for good: 8 such
    /// threads, each after a round of blocks of 11 sizes from 3 to 128 KiB, held 20 MiB (`cached`)
    /// with background decay every 100 ms. So each visit
    /// - takes back the slabs other threads' frees emptied ([`Heap::take_back_emptied`]);
    /// - gives back the empty slabs kept back since the last visit and not taken since (the
    ///   bottom of each list, below its low-water mark, as jemalloc's thread caches are trimmed);
    /// - sets the empty current slabs that hold pages aside, as empty slabs are
    ///   ([`Heap::now_empty`]): a class still in use takes its slab back at its next block,
    ///   through the slow path (once a visit), and keeps its pages; one that is not gives it back
    ///   at the next visit.
    ///
    /// Returns the bytes of pages given back.
    pub(super) fn age(&mut self) -> u64 {
        let mut given_back = self.take_back_emptied() + self.give_back_unused_spares();
        for c in self.used_classes() {
            if let Some(slab) = self.current[c] {
                // Safety: this heap owns its current slabs.
                if unsafe { slab.is_empty() } && slab.idle_bytes() > 0 {
                    self.replace_current(c, None);
                    given_back += self.now_empty(slab); // onto class `c`'s spares, if kept
                }
            }
            if let Some(slabs) = self.classes[c].as_mut() {
                slabs.spare_low = slabs.spare.len();
            }
        }
        given_back
    }

    /// Gives back the pages of the empty slabs kept back that no allocation took since the last
    /// [`Heap::age`], and the slabs to the pool. Returns the bytes `cached` counted for them.
    fn give_back_unused_spares(&mut self) -> u64 {
        let pool = self.pool; // borrowed while the lists change
        let (mut bytes, mut idle, mut given_back) = (0, 0, 0);
        for c in self.used_classes() {
            let Some(slabs) = self.classes[c].as_mut() else { continue };
            let unused = std::mem::take(&mut slabs.spare_low);
            for slab in slabs.spare.drain(..unused) {
                (bytes, idle) = (bytes + slab.bytes, idle + slab.idle_bytes());
                given_back += give_back_spare(pool, slab);
            }
        }
        self.count_spares(bytes, idle, false);
        given_back
    }
}

/// Gives the pages of `slab`, an empty slab a heap kept back and no longer lists, back to the
/// system and the slab to `pool`; returns the bytes `cached` counted for it (0 when the system
/// refused: the slab is then kept resident).
fn give_back_spare(pool: &SmallBlocks, slab: &'static Slab) -> u64 {
    let idle = slab.idle_bytes();
    // Safety: the caller's heap owned the slab, which is empty.
    if unsafe { pool.unowned.give_back_now(slab) } {
        idle
    } else {
        pool.unowned.give_up(slab, true);
        0
    }
}

/// Zeroes the slot at `block`, of `slot_size` bytes, at most 64 (16, 32, 48 or 64 B), with vector
/// stores: a memset call costs more than the block. Two stores from each end cover any of them,
/// overlapping where the slot is shorter, so that no branch depends on which one it is. (Written
/// plainly, the compiler folds the cases into a jump table or a memset call.)
///
/// # Safety
/// `block` is valid for writes of `slot_size` bytes, at most 64, and aligned to 16.
#[inline(always)]
unsafe fn zero_small(block: *mut u8, slot_size: u32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_setzero_si128, _mm_store_si128};
        let z = _mm_setzero_si128();
        let last = slot_size as usize / 16 - 1;
        let at = |i: usize| block.cast::<__m128i>().add(i);
        // 16 B: [0] [0]; 32 B: [0] [1]; 48 B: [0] [1] [1] [2]; 64 B: [0] [1] [2] [3].
        _mm_store_si128(at(0), z);
        _mm_store_si128(at(last), z);
        if slot_size > 32 {
            _mm_store_si128(at(1), z);
            _mm_store_si128(at(last - 1), z);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::ptr::write_bytes(block, 0, slot_size as usize);
}

impl Heap {
    /// Its thread ends: every slab goes back to the pool, the credit to the quota, the counts to
    /// the pool's `ended`. What stays is the heap's memory, its lists' room, and its credit and
    /// counters (empty, still registered), for [`Heap::reuse`].
    pub(super) fn leave(&mut self) {
        // Closed to visitors first (this waits for one that is in it).
        self.counters.door.lock().close();
        if std::ptr::eq(last_heap::get().1, self) {
            last_heap::set(0, std::ptr::null_mut());
        }
        self.pool.quota.empty_credit(&self.credit);
        {
            // Under the lock the stats are summed under: no sum sees the counts twice or never.
            let _heaps = self.pool.heaps.lock();
            self.pool.ended.add_shared(self.counters.snapshot());
            self.counters.reset();
        }
        self.give_up_spares();
        let pool = self.pool; // the closure below borrows it while the loop changes `self`
        let unowned = &pool.unowned;
        let give_up = |slab: &'static Slab| {
            // Safety: this heap still owns the slab.
            let empty = unsafe {
                slab.set_place(Place::Unlisted);
                slab.is_empty()
            };
            unowned.give_up(slab, empty);
        };
        for c in self.used_classes() {
            self.replace_current(c, None).into_iter().for_each(give_up);
            if let Some(slabs) = &mut self.classes[c] {
                std::mem::take(&mut slabs.partial.slabs).into_iter().for_each(give_up);
                std::mem::take(&mut slabs.full.slabs).into_iter().for_each(give_up);
                slabs.verdict = Verdict::default();
            }
        }
        self.recently_freed = RecentlyFreed::default();
    }

    /// A heap that left, for a new thread: under a new id, so that no slab its last thread owned
    /// could pass for this thread's.
    pub(super) fn reuse(&mut self) {
        self.id = NEXT_HEAP.fetch_add(1, SeqCst);
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        self.leave();
        self.pool.quota.retire_credit(&self.credit);
        self.pool.heaps.lock().retain(|c| !Shared::ptr_eq(c, &self.counters));
    }
}
