//! A slab: one region ([`SLAB_SIZE`], or 1 MiB for the medium classes) cut into equal slots, the
//! unit of the small-block path.
//!
//! Each slot has a state word, the truth about whether its block is live:
//! - FREE -> LIVE: the owning heap hands the slot out. A plain store: nobody else may touch a
//!   FREE slot, since every other transition starts from LIVE or CLEANED;
//! - LIVE -> FREE: a release claims the block with one compare-and-swap, so of two racing
//!   releases exactly one wins and the other finds the block not live;
//! - LIVE -> CLEANED: a cleaner was registered. From then on the block table owns the release
//!   (it claims the block under its lock) and the slot goes FREE only after the cleaners ran;
//! - LIVE -> GROWING -> LIVE: a resize in place to a bigger size zeroes the bytes it adds in
//!   between, when nothing can claim the block: a free racing with it can neither take the slot
//!   from under the zeroing nor let another block land there first.
//!
//! The state word also holds the block's size, so a release knows what to give back.
//!
//! Free slots are kept in two bitmaps: `local`, touched only by the owning thread's heap (no
//! atomics, no contention), and `remote`, where other threads put the slots they release. The
//! owner moves remote bits into `local` when it runs out. A slab whose owner thread ended is
//! unowned (owner 0) until another heap adopts it.
//!
//! Slabs are never unmapped and their headers never freed, so a racing or stale pointer
//! looked up in the [`slab_table`](super::slab_table) always reaches a valid header: that is what makes a free of a
//! foreign or stale pointer safe without a lock.

use crate::allocators::small::medium::Usage;
use crate::allocators::small::size_class;
use crate::padded::{Padded, LINES};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};

pub const SLAB_SHIFT: u32 = 16;
pub const SLAB_SIZE: usize = 1 << SLAB_SHIFT;

/// Words of a slab's free bitmap: enough for its most slots (16 B slots of a 64 KiB slab).
const MAX_WORDS: usize = 64;

/// [`Slab::watch`]: never put on an owner's list of full slabs; put there (last) and not freed
/// into by another thread since it was put there or looked at; freed into since. (A slab that left
/// the list keeps its state until it is put there again: only the list's slabs are read.)
const WATCH_OFF: u32 = 0;
const WATCH_QUIET: u32 = 1;
const WATCH_FREED: u32 = 2;
const _: () = assert!(
    SLAB_SIZE / 16 <= MAX_WORDS * 64 && size_class::MEDIUM_SLAB_SIZE / size_class::MAX_SMALL_SLOT <= MAX_WORDS * 64
);

const FREE: u32 = 0;
const LIVE: u32 = 1;
const CLEANED: u32 = 2;
const GROWING: u32 = 3;
const STATE_BITS: u32 = 2;
const STATE_MASK: u32 = (1 << STATE_BITS) - 1;

/// What a release attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The block was live and is now this caller's to finish releasing; its size.
    Won(usize),
    /// The block has cleaners: release it through the block table.
    Cleaned,
    /// Not a live block (free, or being released by someone else).
    NotLive,
}

/// Which of its owner's lists a slab is on, and where (so that it leaves the list in O(1)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Unlisted,
    /// Has free slots of its own.
    Partial(usize),
    /// Had none when last looked at (other threads may have freed some since).
    Full(usize),
}

/// The fields only the owning heap touches.
struct Local {
    /// A set bit is a free slot this heap may hand out. Always [`MAX_WORDS`] words (those beyond the
    /// slab's slots stay 0), so that an index masked to it needs no bounds check on the fast path.
    free: &'static mut [u64; MAX_WORDS],
    /// The first word that may have a set bit.
    cursor: usize,
    place: Place,
    /// How the program uses the blocks of a medium slab (see [`crate::allocators::small::medium`]).
    usage: Usage,
}

impl Local {
    /// Takes the lowest free slot of word `w`, if it has one (the caller counts it).
    #[inline(always)]
    fn take_from(&mut self, w: usize) -> Option<usize> {
        let w = w % MAX_WORDS; // a no-op (w < MAX_WORDS): it spares the check
        let bits = self.free[w];
        if bits == 0 {
            return None;
        }
        self.free[w] = bits & (bits - 1);
        Some(w * 64 + bits.trailing_zeros() as usize)
    }
}

/// A count only the owning heap changes, which other threads may read for the stats: a plain
/// load and store for the owner (no locked instruction), a snapshot for the others.
#[derive(Default)]
struct OwnerCount(AtomicU32);

impl OwnerCount {
    #[inline(always)]
    fn get(&self) -> u32 {
        self.0.load(Relaxed)
    }

    #[inline(always)]
    fn set(&self, value: u32) {
        self.0.store(value, Relaxed)
    }
}

/// Aligned so that two slabs' headers never share a cache line (see [`own_lines`]).
#[repr(align(128))]
pub struct Slab {
    pub base: usize,
    /// Its length: [`size_class::slab_size`] of its class.
    pub bytes: usize,
    /// The small-block pool this slab belongs to; a pointer into another pool's slab is foreign.
    pub pool: u64,
    /// Its size class (see [`crate::allocators::small::size_class`]) and that class's slot size.
    pub class: usize,
    pub slot_size: u32,
    /// For the division of an offset by the slot size ([`size_class::divide`]).
    magic: u64,
    pub slots: u32,
    /// The owning heap's id, 0 when unowned.
    owner: AtomicU64,
    /// The heap that owned it last (set when it is given up): its memory is likely in that
    /// thread's core's caches.
    last_owner: AtomicU64,
    state: &'static [AtomicU32],
    remote: &'static [AtomicU64],
    /// Whether other threads freed slots here since the owner put the slab on its list of full
    /// slabs: [`WATCH_OFF`], [`WATCH_QUIET`] or [`WATCH_FREED`] (see [`Slab::watch_full`]).
    watch: Padded<AtomicU32>,
    /// Unowned and full when given up, on no list (see [`crate::allocators::small::slab_pool`]).
    parked: AtomicBool,
    /// Its place in the pool's list of its class's unowned slabs with room, plus one; 0 when on
    /// none. Changed under that list's lock.
    room_at: AtomicU32,
    /// What the owner writes as it hands slots out and takes them back, on lines of its own: a
    /// thread freeing a block of this slab reads the fields above, and shared lines made each of
    /// the two threads of a pipeline miss on every block.
    own: Padded<OwnerSide>,
}

struct OwnerSide {
    /// Slots the owner may hand out (its bits in `local.free`).
    free_count: OwnerCount,
    /// Slots from this one on were never handed out since the slab's pages were fresh from the
    /// system (a new mapping, or discarded): they read as zero and need no zeroing. Like `calloc`
    /// on fresh heap memory, this leaves the pages a block never touches out of memory (a batch
    /// of 64 KiB blocks with a byte written in each: 4 KiB resident per block, not 64).
    fresh: OwnerCount,
    local: UnsafeCell<Local>,
}

/// `n` zeroed values of `T`, alone in their cache lines, for as long as the process lives (like
/// the slab headers, which are never freed). Two heaps' slabs are often made one right after the
/// other; their per-slot words, each heap writing its own at every allocation and free, shared
/// lines when they came from `malloc`, and two threads paid for it (64 B pairs on two threads: a
/// median 44.5 ns a pair before, 33.4 after, in alternating runs).
///
/// A page or more (the slot states of the classes up to 64 B: 4 KiB for 64 B slots, 16 KiB for
/// 16 B ones) is a mapping of its own, whose pages go back to the system with the slab's when the
/// slab is empty ([`Slab::give_back_pages`]: all zero then, which reads back the same): from the
/// C heap they stayed resident for good, ~20 KiB for each thread that had used two such classes
/// at once (40 MiB after 2,000 threads).
/// None when the system has no memory for them.
///
/// # Safety
/// All-zero bytes must be a valid `T`.
unsafe fn own_lines<T>(n: usize) -> Option<&'static mut [T]> {
    let layout = lines_layout::<T>(n);
    let memory = if is_mapped(layout) {
        crate::os::map_region(layout.size(), crate::os::page_size()).ok()? as *mut u8
    } else {
        std::alloc::alloc_zeroed(layout)
    };
    (!memory.is_null()).then(|| std::slice::from_raw_parts_mut(memory.cast::<T>(), n))
}

/// Gives back what [`own_lines`] gave, when the slab it was for is not made after all.
///
/// # Safety
/// `lines` came from `own_lines` and is used no more.
unsafe fn free_lines<T>(lines: &'static [T]) {
    let layout = lines_layout::<T>(lines.len());
    if is_mapped(layout) {
        crate::os::unmap_untouched(lines.as_ptr() as usize, layout.size());
    } else {
        std::alloc::dealloc(lines.as_ptr().cast_mut().cast(), layout);
    }
}

/// Whether [`own_lines`] maps words of this layout (a whole number of pages) instead of taking
/// them from the C heap.
fn is_mapped(layout: std::alloc::Layout) -> bool {
    layout.size() >= crate::os::page_size()
}

fn lines_layout<T>(n: usize) -> std::alloc::Layout {
    let size = (n * size_of::<T>()).next_multiple_of(LINES);
    let size = if size >= crate::os::page_size() { size.next_multiple_of(crate::os::page_size()) } else { size };
    std::alloc::Layout::from_size_align(size, LINES).expect("a slab's words fit in memory")
}

// Safety: `local` is only touched through the `unsafe` owner methods, whose callers guarantee
// that they are the owning heap (one thread) or hold the slab while it is unowned.
unsafe impl Sync for Slab {}

impl Slab {
    /// A header for the region at `base`, every slot free, owned by `owner`.
    #[cfg(test)]
    pub fn new(base: usize, pool: u64, class: usize, owner: u64) -> Slab {
        Slab::try_new(base, pool, class, owner).expect("memory for a slab header")
    }

    /// A header for the region at `base`, every slot free, owned by `owner`; None when the
    /// system has no memory for its per-slot words (nothing is kept then).
    pub fn try_new(base: usize, pool: u64, class: usize, owner: u64) -> Option<Slab> {
        let slot_size = size_class::SIZES[class];
        let bytes = size_class::slab_size(class);
        let slots = (bytes / slot_size as usize) as u32;
        let words = (slots as usize).div_ceil(64);
        // Safety: all three are arrays of integers or atomics, for which zero is a valid value;
        // those made are given back if a later one cannot be.
        let (state, remote, free) = unsafe {
            let state = own_lines::<AtomicU32>(slots as usize)?;
            let Some(remote) = own_lines::<AtomicU64>(words) else {
                free_lines(state);
                return None;
            };
            let Some(free) = own_lines::<u64>(MAX_WORDS) else {
                free_lines(state);
                free_lines(remote);
                return None;
            };
            (state, remote, free)
        };
        let free: &'static mut [u64; MAX_WORDS] = free.try_into().expect("MAX_WORDS words");
        free[..words].fill(u64::MAX);
        if slots % 64 != 0 {
            free[words - 1] = (1 << (slots % 64)) - 1;
        }
        Some(Slab {
            base,
            bytes,
            pool,
            class,
            slot_size,
            magic: size_class::magic(slot_size),
            slots,
            owner: AtomicU64::new(owner),
            last_owner: AtomicU64::new(owner),
            state,
            remote,
            watch: Padded(AtomicU32::new(WATCH_OFF)),
            parked: AtomicBool::new(false),
            room_at: AtomicU32::new(0),
            own: Padded(OwnerSide {
                free_count: OwnerCount(AtomicU32::new(slots)),
                fresh: OwnerCount::default(),
                local: UnsafeCell::new(Local { free, cursor: 0, place: Place::Unlisted, usage: Usage::fresh() }),
            }),
        })
    }

    /// [`Slab::discard`], for a caller that then has no slab to return.
    pub fn discard_none<T>(self) -> Option<T> {
        self.discard();
        None
    }

    /// Gives back a header that was never published (its region could not be had).
    pub fn discard(self) {
        // Safety: the header was never shared, so its words are used no more.
        unsafe {
            free_lines(self.state);
            free_lines(self.remote);
            free_lines(&*(*self.own.local.get()).free);
        }
    }

    #[inline(always)]
    pub fn slot_address(&self, index: usize) -> usize {
        self.base + index * self.slot_size as usize
    }

    /// The slot starting at `address` (which lies in this slab's region), or None for an address
    /// inside a slot or in the slab's tail that no slot covers.
    #[inline(always)]
    pub fn slot_of(&self, address: usize) -> Option<usize> {
        let offset = (address - self.base) as u32;
        let index = size_class::divide(offset, self.magic) as usize;
        // `state.len()` is `slots`: bounded by it, the claim's `state[index]` needs no check.
        (index as u32 * self.slot_size == offset && index < self.state.len()).then_some(index)
    }

    #[inline(always)]
    pub fn owner(&self) -> u64 {
        self.owner.load(Relaxed)
    }

    pub fn set_owner(&self, owner: u64) {
        if owner == 0 && self.owner() != 0 {
            self.last_owner.store(self.owner.load(Relaxed), Relaxed);
        }
        self.owner.store(owner, SeqCst)
    }

    /// The heap that owned it last, once given up.
    pub fn last_owner(&self) -> u64 {
        self.last_owner.load(Relaxed)
    }

    /// Whether the slab is parked (see [`crate::allocators::small::slab_pool`]).
    pub fn is_parked(&self) -> bool {
        self.parked.load(SeqCst)
    }

    /// Its place in the pool's list with room, if it is on it (read under that list's lock).
    pub fn room_at(&self) -> Option<usize> {
        (self.room_at.load(Relaxed) as usize).checked_sub(1)
    }

    /// Records its place in the pool's list with room (under that list's lock).
    pub fn set_room_at(&self, at: Option<usize>) {
        self.room_at.store(at.map_or(0, |at| at as u32 + 1), Relaxed);
    }

    /// Parks or unparks the slab; returns whether it was parked.
    pub fn set_parked(&self, parked: bool) -> bool {
        self.parked.swap(parked, SeqCst)
    }

    /// Safety: the caller is the owner (or holds the unowned slab exclusively).
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    unsafe fn local(&self) -> &mut Local {
        &mut *self.own.local.get()
    }

    /// Owner: takes a free slot from its own bits only (no remote collection): the fast path.
    ///
    /// # Safety
    /// The caller is the owner.
    #[inline(always)]
    pub unsafe fn take_local(&self) -> Option<usize> {
        let local = self.local();
        let index = local.take_from(local.cursor)?;
        self.own.free_count.set(self.own.free_count.get() - 1);
        Some(index)
    }

    /// Owner: takes a free slot, collecting slots freed by other threads if need be.
    ///
    /// # Safety
    /// The caller is the owner.
    pub unsafe fn take_free(&self) -> Option<usize> {
        let local = self.local();
        if self.own.free_count.get() == 0 && self.collect_remote(local) == 0 {
            return None;
        }
        // The search starts at the word of the last slot taken: usually it has more.
        let words = (self.slots as usize).div_ceil(64);
        for w in (local.cursor..words).chain(0..local.cursor) {
            if let Some(index) = local.take_from(w) {
                local.cursor = w;
                self.own.free_count.set(self.own.free_count.get() - 1);
                return Some(index);
            }
        }
        unreachable!("free_count said a slot was free");
    }

    /// Moves the slots other threads freed into the owner's bits; returns how many. It reads the
    /// whole remote bitmap (1-64 words): a count of the bits beside it, which each remote free
    /// added to and this read, put a locked instruction on a line both threads of a pipeline
    /// wrote into every free (64 B blocks from a producer to a consumer: 75-88 ns a block with it,
    /// 44-52 without; mimalloc 50-54).
    fn collect_remote(&self, local: &mut Local) -> u32 {
        let mut collected = 0;
        for (w, word) in self.remote.iter().enumerate() {
            if word.load(SeqCst) == 0 {
                continue;
            }
            let bits = word.swap(0, SeqCst);
            local.free[w] |= bits;
            local.usage.freed_remotely(w, bits);
            collected += bits.count_ones();
        }
        self.own.free_count.set(self.own.free_count.get() + collected);
        collected
    }

    /// Any thread: slots freed by other threads, not yet collected (a snapshot).
    fn remote_bits(&self, order: std::sync::atomic::Ordering) -> u32 {
        self.remote.iter().map(|word| word.load(order).count_ones()).sum()
    }

    /// Owner: the slab goes on its list of full slabs (no free slot when it last looked). From now
    /// on the first free by another thread marks it, so that the owner's look through its full
    /// slabs for such frees ([`Slab::freed_into`]) passes over the others with one load, not a
    /// read of their whole remote bitmap: a thread allocating two million 64 B blocks looks
    /// through all of them each time it needs a new slab, 18 against 28 ns a block. False: a free
    /// came in before the mark could catch it, and is collected now (the slab is not full).
    ///
    /// # Safety
    /// The caller is the owner.
    pub unsafe fn watch_full(&self) -> bool {
        self.watch.store(WATCH_QUIET, SeqCst);
        // After the mark (both sides SeqCst): a free whose bit this look misses sees the mark.
        !self.has_free()
    }

    /// Owner, for a slab on its list of full slabs ([`Slab::watch_full`]): whether another thread
    /// freed a slot since, and the slab has a free slot now (collected).
    ///
    /// # Safety
    /// The caller is the owner.
    pub unsafe fn freed_into(&self) -> bool {
        if self.watch.load(Relaxed) != WATCH_FREED {
            return false;
        }
        // Marked again before the look: a bit that is already collected leaves it quiet.
        !self.watch_full()
    }

    /// Owner: whether slot `index`, just taken, is handed out for the first time since the slab's
    /// pages were fresh (so it reads as zero).
    ///
    /// # Safety
    /// The caller is the owner.
    #[inline(always)]
    pub unsafe fn first_use(&self, index: usize) -> bool {
        let fresh = index as u32 >= self.own.fresh.get();
        if fresh {
            self.own.fresh.set(index as u32 + 1);
        }
        fresh
    }

    /// Owner: how many slots right after `index`, up to `limit`, are free for the owner to hand
    /// out and were handed out before since the pages were fresh (they may hold data).
    ///
    /// # Safety
    /// The caller is the owner.
    pub unsafe fn free_run_after(&self, index: usize, limit: usize) -> usize {
        let (local, fresh) = (self.local(), self.own.fresh.get() as usize);
        let free = |j: usize| local.free[j / 64 % MAX_WORDS] & (1 << (j % 64)) != 0;
        (index + 1..fresh.min(index + 1 + limit)).take_while(|&j| free(j)).count()
    }

    /// Owner: how many slots (the first ones) were handed out since its pages were fresh.
    ///
    /// # Safety
    /// The caller is the owner (or holds the unowned slab exclusively).
    pub unsafe fn used_slots(&self) -> usize {
        self.own.fresh.get() as usize
    }

    /// Gives all its pages back to the system (they read as zero again), so every slot is fresh;
    /// false (nothing changed) if the system refused.
    ///
    /// # Safety
    /// The caller owns the slab or holds it exclusively, and it has no live block.
    pub unsafe fn give_back_pages(&self) -> bool {
        if !crate::os::discard(self.base, self.bytes) {
            return false;
        }
        // Every slot's state is FREE (0) in an empty slab, which is what discarded pages read as;
        // a stale pointer's claim only reads them. Refused, they keep their zeros: no matter.
        let states = lines_layout::<AtomicU32>(self.state.len());
        if is_mapped(states) {
            crate::os::discard(self.state.as_ptr() as usize, states.size());
        }
        self.own.fresh.set(0);
        self.local().usage = Usage::fresh();
        true
    }

    /// Whether its slots span several pages (8 KiB and more: the medium classes), so that how they
    /// are zeroed decides what stays in memory (see [`crate::allocators::small::medium`]).
    #[inline(always)]
    pub fn is_medium(&self) -> bool {
        self.slot_size as usize > size_class::MAX_SMALL_SLOT
    }

    /// Owner: how the program uses its blocks (medium slabs).
    ///
    /// # Safety
    /// The caller is the owner (or holds the unowned slab exclusively).
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn usage(&self) -> &mut Usage {
        &mut self.local().usage
    }

    /// Owner: marks a taken slot live with a block of `size` bytes (already zeroed).
    #[inline(always)]
    pub fn mark_live(&self, index: usize, size: usize) {
        // A slot taken from the bitmap is below `slots` (= `state.len()`). Not indexed: that
        // check cannot fail, and its panic path sat on the fast path. Were the slot ever out of
        // range, the block would stay not live (its free refused, the slot never handed out
        // again): nothing handed out twice.
        if let Some(word) = self.state.get(index) {
            word.store(LIVE | ((size as u32) << STATE_BITS), Release);
        }
    }

    /// Any thread: tries to claim the live block in slot `index` for release.
    #[inline(always)]
    pub fn claim(&self, index: usize) -> Claim {
        let word = &self.state[index];
        let mut now = word.load(Acquire);
        loop {
            match now & STATE_MASK {
                LIVE => match word.compare_exchange_weak(now, FREE, AcqRel, Acquire) {
                    Ok(_) => return Claim::Won((now >> STATE_BITS) as usize),
                    Err(seen) => now = seen,
                },
                CLEANED => return Claim::Cleaned,
                _ => return Claim::NotLive,
            }
        }
    }

    /// Any thread: the size of the block in slot `index`, and whether it has cleaners; None if the
    /// slot holds no block.
    pub fn live_size(&self, index: usize) -> Option<(usize, bool)> {
        let now = self.state[index].load(Acquire);
        match now & STATE_MASK {
            LIVE => Some(((now >> STATE_BITS) as usize, false)),
            CLEANED => Some(((now >> STATE_BITS) as usize, true)),
            _ => None,
        }
    }

    /// Any thread: a live block of `old` bytes in slot `index` becomes one of `new` bytes (both
    /// within the slot); bytes it gains read zero. False if the slot no longer holds that block
    /// (freed meanwhile, or it got cleaners): nothing changed.
    pub fn resize(&self, index: usize, old: usize, new: usize) -> bool {
        let from = LIVE | ((old as u32) << STATE_BITS);
        let to = LIVE | ((new as u32) << STATE_BITS);
        if new <= old {
            return self.state[index].compare_exchange(from, to, AcqRel, Acquire).is_ok();
        }
        // Zeroed while GROWING, which no release claims: with the block LIVE at its new size
        // first, a racing free could release it and a new block take the slot before the zeroing.
        if self.state[index].compare_exchange(from, GROWING | ((old as u32) << STATE_BITS), AcqRel, Acquire).is_err() {
            return false;
        }
        #[cfg(test)]
        tests::WHILE_GROWING.with(|hook| hook.get().map(|hook| hook(self, index)));
        // Safety: the slot holds `new` bytes from its start, and while GROWING they are this
        // caller's alone.
        unsafe { std::ptr::write_bytes((self.slot_address(index) + old) as *mut u8, 0, new - old) };
        self.state[index].store(to, Release);
        true
    }

    /// Any thread, under the block table's lock: LIVE -> CLEANED. False if the block is not live.
    pub fn mark_cleaned(&self, index: usize) -> bool {
        let word = &self.state[index];
        let now = word.load(Acquire);
        now & STATE_MASK == LIVE && word.compare_exchange(now, (now & !STATE_MASK) | CLEANED, AcqRel, Acquire).is_ok()
    }

    /// The thread that took a CLEANED block out of the block table, after its cleaners ran:
    /// the slot becomes FREE (not yet reusable: see [`Slab::put_back_local`]). Returns the size.
    pub fn finish_cleaned(&self, index: usize) -> usize {
        let now = self.state[index].swap(FREE, AcqRel);
        debug_assert_eq!(now & STATE_MASK, CLEANED);
        (now >> STATE_BITS) as usize
    }

    /// Owner: a claimed slot becomes free for this heap to hand out again. Returns how many
    /// slots the owner now has free (`slots`: the whole slab; 1: it had none).
    ///
    /// # Safety
    /// The caller is the owner.
    #[inline(always)]
    pub unsafe fn put_back_local(&self, index: usize) -> u32 {
        self.local().free[index / 64 % MAX_WORDS] |= 1 << (index % 64); // `% MAX_WORDS`: as in take_from
        let free = self.own.free_count.get() + 1;
        self.own.free_count.set(free);
        free
    }

    /// Owner: which list the slab is on.
    ///
    /// # Safety
    /// The caller is the owner.
    pub unsafe fn place(&self) -> Place {
        self.local().place
    }

    /// Owner: records which list the slab is on.
    ///
    /// # Safety
    /// The caller is the owner.
    pub unsafe fn set_place(&self, place: Place) {
        self.local().place = place;
    }

    /// Any other thread: a claimed slot goes back through the remote bitmap. True when the slab
    /// is unowned and may be empty now (its free slots and the remote frees not yet collected
    /// cover it): see [`crate::allocators::small::slab_pool::SlabPool::notice_empty`].
    pub fn put_back_remote(&self, index: usize) -> bool {
        self.remote[index / 64].fetch_or(1 << (index % 64), SeqCst);
        // After the bit (all SeqCst): an owner marking the slab full either collects this free
        // or is seen marking here; one giving the slab up either collects it or is seen gone.
        if self.watch.load(SeqCst) == WATCH_QUIET {
            self.watch.store(WATCH_FREED, Relaxed);
        }
        if self.owner.load(SeqCst) != 0 {
            return false;
        }
        // Of two last frees racing, at least one sees both bits. `free_count` does not change
        // while the slab is unowned (but for the owner's last look as it gives the slab up, which
        // then looks whether it is empty itself).
        self.own.free_count.get().wrapping_add(self.remote_bits(SeqCst)) >= self.slots
    }

    /// Owner: true when every slot is free (after collecting remote frees).
    ///
    /// # Safety
    /// The caller is the owner.
    pub unsafe fn is_empty(&self) -> bool {
        self.collect_remote(self.local());
        self.own.free_count.get() == self.slots
    }

    /// Owner: true when a slot can be taken without a new slab (after collecting remote frees).
    ///
    /// # Safety
    /// The caller is the owner.
    pub unsafe fn has_free(&self) -> bool {
        self.own.free_count.get() > 0 || self.collect_remote(self.local()) > 0
    }

    /// Owner: collects the slots other threads freed now, so that the next take may reuse them.
    ///
    /// # Safety
    /// The caller is the owner.
    pub unsafe fn collect_now(&self) {
        self.collect_remote(self.local());
    }

    /// Owner: whether at most a quarter of its slots hold a live block now (counting those other
    /// threads freed and the owner has not collected yet as free).
    ///
    /// # Safety
    /// The caller is the owner.
    pub unsafe fn few_live(&self) -> bool {
        let free = self.own.free_count.get() + self.remote_bits(Relaxed);
        (self.slots - free.min(self.slots)) * 4 <= self.slots
    }

    /// Any thread, for the stats: when it holds no block, the bytes of its pages that blocks may
    /// have touched since they were fresh (the slots handed out, to whole pages), else 0. A
    /// snapshot: the owner may be collecting remote frees meanwhile.
    pub fn idle_bytes(&self) -> u64 {
        if self.own.free_count.get().wrapping_add(self.remote_bits(Relaxed)) < self.slots {
            return 0;
        }
        let touched = self.own.fresh.get() as usize * self.slot_size as usize;
        touched.next_multiple_of(crate::os::page_size()).min(self.bytes) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocators::small::slab_table as table;

    fn class(size: usize) -> usize {
        size_class::class_of(size, 0).unwrap()
    }

    #[test]
    fn a_slab_of_a_class_between_powers_of_two_hands_out_each_whole_slot_once() {
        for (size, slots) in [(80, 819), (5120, 12), (7168, 9), (48, 1365)] {
            let base = 5 << SLAB_SHIFT;
            let slab = Slab::new(base, 7, class(size), 1);
            assert_eq!(slab.slots, slots);
            let mut taken: Vec<_> = std::iter::from_fn(|| unsafe { slab.take_free() }).collect();
            taken.sort();
            assert_eq!(taken, (0..slots as usize).collect::<Vec<_>>(), "{size} B slots");
            for i in 0..slots as usize {
                assert_eq!(slab.slot_address(i), base + i * size);
                assert_eq!(slab.slot_of(base + i * size), Some(i));
                assert_eq!(slab.slot_of(base + i * size + 16), None, "inside slot {i}");
            }
            // The tail no whole slot covers holds no block.
            assert_eq!(slab.slot_of(base + slots as usize * size), None);
        }
    }

    #[test]
    fn slots_are_taken_once_and_claimed_once() {
        let slab = Slab::new(1 << SLAB_SHIFT, 7, class(4096), 1);
        assert_eq!(slab.slots, 16);
        let taken: Vec<_> = (0..16).map(|_| unsafe { slab.take_free() }.unwrap()).collect();
        assert_eq!(unsafe { slab.take_free() }, None);
        let mut sorted = taken.clone();
        sorted.sort();
        assert_eq!(sorted, (0..16).collect::<Vec<_>>());
        slab.mark_live(3, 4000);
        assert_eq!(slab.claim(4), Claim::NotLive, "taken but not yet live");
        assert_eq!(slab.claim(3), Claim::Won(4000));
        assert_eq!(slab.claim(3), Claim::NotLive);
        assert_eq!(unsafe { slab.put_back_local(3) }, 1);
        assert_eq!(unsafe { slab.take_free() }, Some(3));
    }

    #[test]
    fn a_cleaned_block_is_released_only_through_the_table() {
        let slab = Slab::new(2 << SLAB_SHIFT, 7, class(16), 1);
        let i = unsafe { slab.take_free() }.unwrap();
        assert!(!slab.mark_cleaned(i), "free slots cannot get cleaners");
        slab.mark_live(i, 10);
        assert!(slab.mark_cleaned(i));
        assert_eq!(slab.claim(i), Claim::Cleaned);
        assert_eq!(slab.finish_cleaned(i), 10);
        assert_eq!(slab.claim(i), Claim::NotLive);
    }

    #[test]
    fn remote_frees_come_back_to_the_owner_and_empty_is_seen() {
        let slab = Slab::new(3 << SLAB_SHIFT, 7, class(8192), 1);
        let all: Vec<_> = (0..8).map(|_| unsafe { slab.take_free() }.unwrap()).collect();
        for &i in &all {
            slab.mark_live(i, 1);
        }
        std::thread::scope(|s| {
            for &i in &all {
                let slab = &slab;
                s.spawn(move || {
                    assert_eq!(slab.claim(i), Claim::Won(1));
                    slab.put_back_remote(i);
                });
            }
        });
        assert!(unsafe { slab.is_empty() });
        assert_eq!(unsafe { slab.take_free() }.map(|i| i < 8), Some(true));
    }

    #[test]
    fn the_slot_states_of_an_empty_slab_go_back_with_its_pages() {
        use crate::os::{map_region, page_size, pages_in_memory, unmap_region};
        let base = map_region(SLAB_SIZE, SLAB_SIZE).unwrap();
        let slab = Slab::new(base, 7, class(16), 1);
        let states = (slab.state.as_ptr() as usize, slab.state.len() * 4);
        assert_eq!(states.0 % page_size(), 0, "16 KiB of states: a mapping of their own");
        let resident = || pages_in_memory(states.0, states.1).unwrap().into_iter().filter(|&p| p).count();
        assert_eq!(resident(), 0, "fresh");
        let all: Vec<usize> = (0..slab.slots).map(|_| unsafe { slab.take_free() }.unwrap()).collect();
        for &i in &all {
            slab.mark_live(i, 16);
        }
        assert_eq!(resident(), states.1 / page_size(), "every state written");
        for &i in &all {
            assert_eq!(slab.claim(i), Claim::Won(16));
            // Safety: heap 1 (this test) owns the slab.
            unsafe { slab.put_back_local(i) };
        }
        // Safety: as above; it is empty.
        assert!(unsafe { slab.is_empty() && slab.give_back_pages() });
        assert_eq!(resident(), 0, "given back with the slab's pages");
        assert_eq!(slab.claim(5), Claim::NotLive, "and read as free");
        assert_eq!(slab.live_size(all[all.len() - 1]), None);
        assert!(unmap_region(base, SLAB_SIZE));
    }

    /// What another thread does to slot `index` of a slab at some moment.
    type Meddle = fn(&Slab, usize);

    thread_local! {
        /// Called by `resize` while a growth zeroes the bytes it adds.
        pub(super) static WHILE_GROWING: std::cell::Cell<Option<Meddle>> = const { std::cell::Cell::new(None) };
        static SEEN_GROWING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    #[test]
    fn a_block_growing_in_place_cannot_be_claimed_until_its_new_bytes_are_zero() {
        let mut memory = vec![0x5au8; 2 * SLAB_SIZE];
        let base = (memory.as_mut_ptr() as usize).next_multiple_of(SLAB_SIZE);
        let slab = Slab::new(base, 7, class(112), 1);
        let i = unsafe { slab.take_free() }.unwrap();
        slab.mark_live(i, 100);
        WHILE_GROWING.with(|hook| {
            hook.set(Some(|slab, i| {
                // A racing free would release the block (and a new one could take the slot
                // before the zeroing), a cleaner would attach to it: neither may.
                assert_eq!(slab.claim(i), Claim::NotLive, "a block still being zeroed was claimed");
                assert!(!slab.mark_cleaned(i) && slab.live_size(i).is_none());
                SEEN_GROWING.with(|seen| seen.set(true));
            }))
        });
        assert!(slab.resize(i, 100, 112));
        WHILE_GROWING.with(|hook| hook.set(None));
        assert!(SEEN_GROWING.with(|seen| seen.get()), "the growth was looked at halfway");
        let slot = unsafe { std::slice::from_raw_parts(slab.slot_address(i) as *const u8, 112) };
        assert!(slot[..100].iter().all(|&b| b == 0x5a) && slot[100..].iter().all(|&b| b == 0), "growth zeroed");
        assert_eq!(slab.claim(i), Claim::Won(112));
        drop(memory);
    }

    #[test]
    fn a_full_slab_is_looked_at_again_only_once_another_thread_freed_into_it() {
        let slab = Slab::new(4 << SLAB_SHIFT, 7, class(8192), 1);
        let all: Vec<_> = (0..8).map(|_| unsafe { slab.take_free() }.unwrap()).collect();
        // Safety (throughout): this test is the owner.
        assert!(unsafe { slab.watch_full() }, "full: no free slot");
        assert!(!unsafe { slab.freed_into() }, "passed over: nobody freed into it");
        slab.put_back_remote(all[3]);
        assert!(unsafe { slab.freed_into() }, "freed into, and the slot collected");
        assert_eq!(unsafe { slab.take_free() }, Some(all[3]));
        // A free caught between its bit and its look at the mark, as the owner marks the slab
        // full: the owner's own look after the mark finds it (the slab is not full).
        slab.remote[all[5] / 64].fetch_or(1 << (all[5] % 64), SeqCst);
        assert!(!unsafe { slab.watch_full() });
        assert_eq!(unsafe { slab.take_free() }, Some(all[5]));
        // Marked full; a free that the owner collected by its look after the mark, whose thread
        // then marked the slab freed into: the next look finds nothing and marks it quiet again.
        assert!(unsafe { slab.watch_full() });
        slab.watch.store(WATCH_FREED, SeqCst);
        assert!(!unsafe { slab.freed_into() });
        assert_eq!(slab.watch.load(SeqCst), WATCH_QUIET);
        // Remote frees of every slot of an unowned slab: the last one says it may be empty.
        slab.set_owner(0);
        let last = all.iter().map(|&i| slab.put_back_remote(i)).collect::<Vec<_>>();
        assert_eq!(last, [false, false, false, false, false, false, false, true]);
        assert!(unsafe { slab.is_empty() });
    }

    #[test]
    fn interior_addresses_are_no_slot_and_the_table_finds_slabs() {
        let base = 0x7f00_1234_0000;
        let slab: &'static Slab = Box::leak(Box::new(Slab::new(base, 7, class(64), 1)));
        assert!(table::prepare(slab.base, slab.bytes));
        table::insert(slab);
        assert!(std::ptr::eq(table::find(base + 100).unwrap(), slab));
        assert!(table::find(base + SLAB_SIZE).is_none());
        assert!(table::find(usize::MAX).is_none());
        assert_eq!(slab.slot_of(base + 128), Some(2));
        assert_eq!(slab.slot_of(base + 129), None);
    }
}
