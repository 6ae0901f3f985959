//! Small blocks (up to [`MAX_SMALL`] bytes): slots of slabs owned by per-thread heaps.
//!
//! The general path costs a shared quota counter, a table lock and a hash insert per block:
//! ~60 ns on top of `calloc`, and far more when threads meet on the counter's cache line. Here a
//! thread allocates from its own slabs and its own quota [`Credit`], and frees with one
//! compare-and-swap on the slot's state word (see [`crate::allocators::small::slab`]). Nothing is shared between
//! threads unless one frees another's block.
//!
//! Accounting stays exact: the quota is charged the block's size (not the slot's), and the
//! counters (count, capacity, allocations) are kept per heap, written only by their thread, and
//! summed for the stats. Slab memory itself is not charged, as `malloc`'s overhead is not.
//!
//! A heap is made at its thread's first allocation ([`thread_heaps`]) and leaves when the thread
//! ends: its credit goes back to the budget, its counters are folded into the pool's, and its
//! slabs become unowned, to be adopted by the next heap that needs a slab of that size. The empty
//! heap is kept for the next new thread. A thread that has no heap (it is ending) still frees
//! through the remote path and allocates through the general path.
//!
//! Only its thread works in a heap, with one exception: `dm_trim` (and `dm_decay`, for heaps
//! idle since its last call) visits other threads' heaps through their doors ([`door`]) to give
//! back the empty slabs they keep.

mod counters;
mod door;
mod heap;
mod last_heap;
mod medium;
pub(crate) mod size_class;
pub(crate) mod slab;
mod slab_pool;
mod slab_table;
pub(crate) mod thread_heaps;

use crate::allocators::system as sysmem;
use crate::barrier::ask;
use crate::fallible::{self, Shared};
use crate::padded::Padded;
use crate::quota::{Credit, Quota};
use crate::sync::Mutex;
use crate::{Error, Result};
use counters::Counters;
pub use counters::SmallStats;
use door::Visit;
use heap::Heap;
pub use size_class::class_of;
use slab::{Claim, Slab, SLAB_SIZE};
use slab_pool::SlabPool;
use slab_table as table;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::*};

/// Slabs are carved from mappings this big: fewer system calls, and too small for a transparent
/// huge page to cover one, so a few small blocks never pin 2 MiB.
const ARENA_SIZE: usize = 1 << 20;

static NEXT_POOL: AtomicU64 = AtomicU64::new(1);

/// A live block in a slab, found by its address.
#[derive(Clone, Copy)]
pub struct Slot {
    slab: &'static Slab,
    index: usize,
}

impl Slot {
    pub fn claim(&self) -> Claim {
        self.slab.claim(self.index)
    }

    /// See [`Slab::live_size`].
    pub fn live_size(&self) -> Option<(usize, bool)> {
        self.slab.live_size(self.index)
    }

    /// See [`Slab::mark_cleaned`].
    pub fn mark_cleaned(&self) -> bool {
        self.slab.mark_cleaned(self.index)
    }
}

pub struct SmallBlocks {
    id: u64,
    quota: &'static Quota,
    // `id` and `quota` are read at every allocation and free; what changes as slabs come and go
    // is kept off their cache line. (perf, two threads in batches of 4 KiB blocks: the load of
    // `id` took 47% of dm_allocate's samples while `spare_bytes` changed beside it at every slab
    // turnover.)
    /// Slabs no heap owns (their thread ended, or given up empty).
    unowned: Padded<SlabPool>,
    /// The rest of the current arena, not yet cut into slabs: [next, end).
    arena: Padded<Mutex<(usize, usize)>>,
    /// Live heaps' counters, and the sum of ended heaps' plus heap-less frees.
    heaps: Mutex<Vec<Shared<Counters>>>,
    ended: Counters,
    /// Heaps whose threads ended, emptied, for the next new threads (at most [`RETIRED_MAX`]).
    /// Boxed: a heap changes hands without being copied or allocated.
    #[allow(clippy::vec_box)]
    retired: Mutex<Vec<Box<Heap>>>,
    /// Bytes of the pages of the empty slabs the heaps keep back for themselves (for the stats).
    spare_bytes: Padded<AtomicU64>,
    /// Held through a visit of the heaps ([`door::visit_each`]): one visitor at a time, and none
    /// in the middle of one at a fork (the child would find the heaps' doors locked for good).
    visits: Mutex<()>,
}

/// Heaps kept for new threads. Making and dropping a heap cost a thread that allocates one block
/// ~4,400 instructions (callgrind): the heap, its credit and counters (aligned: posix_memalign),
/// their registration under two locks and their removal. A heap that its thread left is empty,
/// owns nothing, and is reused whole. Beyond this many, more than most programs end threads at
/// once, they go.
const RETIRED_MAX: usize = 64;

/// What [`SmallBlocks::allocate`] did.
pub enum Served {
    Block(NonNull<u8>),
    /// Nothing reserved, nothing allocated.
    Failed(Error),
    /// Not served here: the caller takes the general path (nothing is left reserved).
    Elsewhere,
}

impl SmallBlocks {
    /// A pool charging `quota`. It lives as long as the process (the manager's, made once; a
    /// unit test's, leaked): its threads' heaps refer to it until those threads end.
    pub fn new(quota: &'static Quota) -> SmallBlocks {
        SmallBlocks {
            id: NEXT_POOL.fetch_add(1, SeqCst),
            quota,
            unowned: Padded(SlabPool::new()),
            arena: Padded(Mutex::new((0, 0))),
            heaps: Mutex::new(Vec::new()),
            ended: Counters::default(),
            retired: Mutex::new(Vec::new()),
            spare_bytes: Padded(AtomicU64::new(0)),
            visits: Mutex::new(()),
        }
    }

    /// This thread's heap for this pool, made on first use; None when the thread is ending.
    ///
    /// A raw pointer, not a borrow: the caller dereferences it only for stretches that do not
    /// call out of the library (a cleaner, a reclaim hook), so no two references to one heap
    /// ever live at once. The heap is boxed and stays this thread's until the thread ends.
    #[inline]
    fn heap(&'static self) -> Option<*mut Heap> {
        self.last_heap().or_else(|| self.find_heap())
    }

    /// This thread's heap for this pool if it is the one used last: most threads use one pool, so
    /// it is one thread-local read away. None: look it up ([`SmallBlocks::heap`]).
    #[inline(always)]
    fn last_heap(&self) -> Option<*mut Heap> {
        let (pool, heap) = last_heap::get();
        (pool == self.id).then_some(heap)
    }

    #[cold]
    #[inline(never)]
    fn find_heap(&'static self) -> Option<*mut Heap> {
        let heap = thread_heaps::find(self.id).or_else(|| {
            thread_heaps::add(self.id, || {
                // A statement of its own: the lock must not be held while a new heap registers
                // under other locks (fork's handlers take each alone).
                let retired = self.retired.lock().pop();
                match retired {
                    Some(mut heap) => {
                        heap.reuse();
                        Some(heap)
                    }
                    // Without memory for a heap the thread takes the general path.
                    None => Heap::new(self),
                }
            })
        })?;
        // Safety: see `heap`; a new or retired heap is closed, so no visitor is in it.
        unsafe { &(*heap).counters }.door.lock().open(heap);
        last_heap::set(self.id, heap);
        Some(heap)
    }

    /// Reserves `size` bytes and hands out a zeroed slot of `class`. [`Served::Elsewhere`]
    /// when this path cannot serve (the thread is ending, or no slab could be mapped): nothing
    /// is left reserved and the caller takes the general path.
    #[inline]
    pub fn allocate(&'static self, size: usize, class: usize) -> Served {
        let Some(heap) = self.heap() else { return Served::Elsewhere };
        if let Err(e) = sysmem::fault::before_allocation() {
            return Served::Failed(e);
        }
        match in_heap(
            heap,
            #[inline(always)]
            |heap, asked| heap.take_fast(size, class, asked),
        ) {
            Some(block) => Served::Block(block),
            None => self.allocate_slow(heap, size, class),
        }
    }

    /// Only the common case of [`SmallBlocks::allocate`], small enough to inline into the C entry
    /// point: a slot of `class` from this thread's current slab, paid from its credit, by the heap
    /// used last. None: nothing changed; take [`SmallBlocks::allocate`].
    #[inline(always)]
    pub fn allocate_fast(&self, size: usize, class: usize) -> Option<NonNull<u8>> {
        // Injected failures count every allocation: those go through the general path.
        if cfg!(feature = "fault-injection") {
            return None;
        }
        in_heap(
            self.last_heap()?,
            #[inline(always)]
            |heap, asked| heap.take_fast(size, class, asked),
        )
    }

    /// [`SmallBlocks::allocate`] when the credit or the current slab ran out.
    #[cold]
    #[inline(never)]
    fn allocate_slow(&'static self, heap: *mut Heap, size: usize, class: usize) -> Served {
        // Safety: see `heap`. `credit` lives as long as the heap.
        let credit: &Credit = unsafe { &*Shared::as_ptr(&(*heap).credit) };
        // The reclaim hook may run and come back into this pool: no heap reference is held across it.
        if let Err(e) = self.quota.reserve_with(credit, size as u64) {
            return Served::Failed(e);
        }
        match with_heap_locked(heap, |heap| heap.take(size, class)) {
            Some(block) => Served::Block(block),
            None => {
                self.quota.release_with(credit, size as u64);
                Served::Elsewhere
            }
        }
    }

    /// The slot starting at `address`: None if the address is not in this pool's slabs,
    /// `Err(NotLive)` if it is inside a slot rather than at its start.
    #[inline]
    pub fn find(&self, address: usize) -> Option<Result<Slot>> {
        let slab = table::find(address).filter(|s| s.pool == self.id)?;
        Some(slab.slot_of(address).map(|index| Slot { slab, index }).ok_or(Error::NotLive))
    }

    /// Only the common case of a release, small enough to inline into the C entry point: a live
    /// block without cleaners in this pool's slabs, released by a thread whose heap was used last.
    /// True: released. False: nothing changed (not such a block, or not that thread); take the
    /// general path, which finds out what it is.
    #[inline(always)]
    pub fn free_fast(&self, address: usize) -> bool {
        let Some(slab) = table::find(address).filter(|s| s.pool == self.id) else { return false };
        let Some(index) = slab.slot_of(address) else { return false };
        let Some(heap) = self.last_heap() else { return false };
        match slab.claim(index) {
            Claim::Won(size) => {
                self.put_back(heap, Slot { slab, index }, size);
                true
            }
            Claim::Cleaned | Claim::NotLive => false,
        }
    }

    /// Finishes releasing a block whose claim this caller won (`size` from the claim): the
    /// slot becomes reusable, the bytes go back to the quota.
    #[inline]
    pub fn release(&'static self, slot: Slot, size: usize) {
        match self.heap() {
            Some(heap) => self.put_back(heap, slot, size),
            None => self.release_heapless(slot, size),
        }
    }

    /// A slot whose claim this thread won goes back through its `heap`: in its bracket, or the
    /// slow way when a visitor is in.
    #[inline(always)]
    fn put_back(&self, heap: *mut Heap, slot: Slot, size: usize) {
        match in_heap(
            heap,
            #[inline(always)]
            |heap, asked| Some(heap.put_back(slot, size, asked)),
        ) {
            Some(false) => {}
            Some(true) => self.return_credit(heap),
            None => self.put_back_locked(heap, slot, size),
        }
    }

    /// [`SmallBlocks::put_back`] while a visitor is in `heap`: waits for it at the heap's lock.
    #[cold]
    #[inline(never)]
    fn put_back_locked(&self, heap: *mut Heap, slot: Slot, size: usize) {
        if with_heap_locked(heap, |heap| heap.put_back_bracketed(slot, size)) {
            self.return_credit(heap);
        }
    }

    /// All of `heap`'s credit goes back to the budget (outside its bracket).
    #[cold]
    #[inline(never)]
    fn return_credit(&self, heap: *mut Heap) {
        // Safety: see `heap`; the credit lives as long as the heap.
        self.quota.return_credit(unsafe { &(*heap).credit });
    }

    /// A release by a thread that is ending and has no heap any more.
    #[cold]
    #[inline(never)]
    fn release_heapless(&self, slot: Slot, size: usize) {
        self.put_back_remote(slot);
        let gone = SmallStats {
            count: 1u64.wrapping_neg(),
            capacity: (size as u64).wrapping_neg(),
            occupied: (slot.slab.slot_size as u64).wrapping_neg(),
            total_allocations: 0,
        };
        self.ended.add_shared(gone);
        self.quota.release(size as u64);
    }

    /// Resizes the live block of `old` bytes in `slot` to `new` bytes in place, when `new` needs the
    /// same class (no room wasted, none missing). `Ok(false)`: not in place (another class, or it
    /// has cleaners); the caller moves it. The quota is charged or given the difference; bytes
    /// that come into the block are zeroed (earlier contents from before a shrink must not show).
    pub fn resize_in_place(&'static self, slot: &Slot, old: usize, new: usize) -> Result<bool> {
        if class_of(new, 0) != Some(slot.slab.class) || slot.live_size() != Some((old, false)) {
            return Ok(false);
        }
        if new > old {
            self.quota.reserve((new - old) as u64)?;
        }
        if !slot.slab.resize(slot.index, old, new) {
            if new > old {
                self.quota.release((new - old) as u64);
            }
            return Err(Error::NotLive); // freed (or given cleaners) by another thread meanwhile
        }
        if new < old {
            self.quota.release((old - new) as u64);
        }
        let change = (new as u64).wrapping_sub(old as u64);
        match self.heap() {
            // Safety: see `heap`; the counters are this thread's.
            Some(heap) => Counters::bump(&unsafe { &(*heap).counters }.capacity, change),
            None => self.ended.add_shared(SmallStats { capacity: change, ..SmallStats::default() }),
        }
        Ok(true)
    }

    /// Finishes releasing a block with cleaners, after they ran (it was claimed in the table).
    pub fn release_cleaned(&'static self, slot: Slot) {
        let size = slot.slab.finish_cleaned(slot.index);
        self.release(slot, size);
    }

    /// A heap whose thread ends: emptied, and kept for a new thread if there is room.
    fn retire(&self, mut heap: Box<Heap>) {
        heap.leave();
        let mut retired = self.retired.lock();
        let kept = if retired.len() < RETIRED_MAX { fallible::push(&mut retired, heap) } else { Err(heap) };
        drop(retired);
        drop(kept); // not kept (no room, or no memory for it): dropped outside the lock
    }

    /// Its locks, for [`crate::manager::fork`]: none is taken while another is held.
    pub(crate) fn locks(&self) -> impl Iterator<Item = &crate::sync::RawMutex> + '_ {
        // Safety: the raw locks are only locked and unlocked as a whole by `fork`'s handlers.
        // `visits` first: a visitor holds it while it takes the others.
        let own = unsafe { [self.visits.raw(), self.heaps.raw(), self.arena.raw(), self.retired.raw()] };
        own.into_iter().chain(self.unowned.locks())
    }

    pub fn stats(&self) -> SmallStats {
        let heaps = self.heaps.lock();
        heaps.iter().fold(self.ended.snapshot(), |sum, counters| sum.wrapping_add(counters.snapshot()))
    }

    /// A slot goes back to a slab this thread's heap does not own.
    #[inline]
    fn put_back_remote(&self, slot: Slot) {
        let may_be_empty = slot.slab.put_back_remote(slot.index);
        if slot.slab.is_parked() {
            self.unowned.unpark(slot.slab);
        }
        if may_be_empty {
            self.unowned.notice_empty(slot.slab);
        }
    }

    /// Gives the pages of the empty slabs kept for reuse back to the system: the pool's, and those
    /// every thread's heap keeps back, allocates from, or holds emptied by other threads' frees (a
    /// heap whose thread is in a slow path right now is left alone: it is not idle; one that keeps
    /// nothing is not visited); returns the bytes.
    pub fn trim(&'static self) -> u64 {
        let whole: Visit = Heap::give_back_kept;
        self.visit_heaps(|heap| heap.worth_a_visit().then_some(whole)) + self.unowned.trim()
    }

    /// Runs in every heap that a thread owns and that is not in a slow path the visit `pick` picks
    /// for it, if any; the sum of what they returned.
    /// Without memory for the list of heaps to visit, none is (the caller gives back the rest).
    fn visit_heaps(&self, mut pick: impl FnMut(&Shared<Counters>) -> Option<Visit>) -> u64 {
        let _one_at_a_time = self.visits.lock();
        let mut heaps: Vec<(Shared<Counters>, Visit)> = Vec::new();
        {
            // The list's lock is let go before the visits, which wait for owners.
            let all = self.heaps.lock();
            if fallible::reserve(&mut heaps, all.len()).is_err() {
                return 0;
            }
            heaps.extend(all.iter().filter_map(|c| Some((c.clone(), pick(c)?))));
        }
        let mut doors: Vec<(&door::Door, Visit)> = Vec::new();
        if fallible::reserve(&mut doors, heaps.len()).is_err() {
            return 0;
        }
        doors.extend(heaps.iter().map(|(heap, visit)| (&heap.door, *visit)));
        door::visit_each(&doors)
    }

    /// See [`SlabPool::decay`]; and what the heaps of threads idle for [`crate::allocators::DECAY_MS`]
    /// (no allocation, no free) keep, given back once per idle stretch; and, in the heaps of busy
    /// threads (at most once per [`counters::EMPTIED_LOOK_MS`] per heap), the slabs other threads'
    /// frees emptied, taken back as the owner's own last frees would have, and what the heap kept
    /// unused since the last such visit ([`Heap::age`]). A busy thread looks for the first itself
    /// only when it needs a new slab (see [`Heap::next_slab`]): a thread that had allocated a
    /// thousand 64 KiB blocks, which another thread freed, kept 64 MiB while it went on allocating
    /// and freeing 64 B blocks, with decay running every 100 ms.
    pub fn decay(&self) -> u64 {
        let now = crate::os::coarse_millis();
        let (whole, age): (Visit, Visit) = (Heap::give_back_kept, Heap::age);
        let pick = |heap: &Shared<Counters>| {
            if !heap.worth_a_visit() {
                None
            } else if heap.idle_since_last_look(now) {
                Some(whole)
            } else {
                heap.age_due(now).then_some(age)
            }
        };
        self.visit_heaps(pick) + self.unowned.decay()
    }

    /// Gives back the pages of the pool's empty slabs whose time is up (only those: the heaps
    /// are not visited). Returns the bytes.
    pub fn decay_pool(&self) -> u64 {
        self.unowned.decay()
    }

    /// Bytes of empty slabs kept with their pages for reuse: the pool's, those the heaps keep
    /// back for themselves, and the heaps' current slabs that are empty (only their threads give
    /// those up).
    pub fn cached_bytes(&self) -> u64 {
        let current: u64 = self.heaps.lock().iter().map(|counters| counters.idle_current_bytes()).sum();
        self.unowned.cached_bytes() + self.spare_bytes.load(Relaxed) + current
    }

    /// A slab of `class` for heap `owner`: an unowned one, or a new one.
    fn slab_for(&self, class: usize, owner: u64) -> Option<&'static Slab> {
        if let Some(slab) = self.unowned.adopt(class, owner) {
            return Some(slab);
        }
        // What a new slab needs from the C heap comes before its region, and may be refused
        // (then nothing is kept): its header and words, room on the pool's lists (so that giving
        // it up later, on a free path, takes none), its entries in the slab table.
        let mut header = match Slab::try_new(0, self.id, class, owner).map(fallible::boxed) {
            Some(Ok(header)) => header,
            Some(Err(header)) => return header.discard_none(),
            None => return None,
        };
        if !self.unowned.make_room_for(class) {
            return (*header).discard_none();
        }
        let bytes = size_class::slab_size(class);
        let Some(base) = (if bytes == SLAB_SIZE { self.cut_slab() } else { Self::map_medium_slab() }) else {
            return (*header).discard_none();
        };
        if !table::prepare(base, bytes) {
            crate::os::unmap_untouched(base, bytes);
            return (*header).discard_none();
        }
        header.base = base;
        let slab: &'static Slab = Box::leak(header);
        table::insert(slab);
        Some(slab)
    }

    /// A medium slab's region: a mapping of its own (as big as an arena), on a slab boundary.
    fn map_medium_slab() -> Option<usize> {
        map_for_slabs(size_class::MEDIUM_SLAB_SIZE)
    }

    fn cut_slab(&self) -> Option<usize> {
        let mut arena = self.arena.lock();
        if arena.0 == arena.1 {
            let start = map_for_slabs(ARENA_SIZE)?;
            *arena = (start, start + ARENA_SIZE);
        }
        let base = arena.0;
        arena.0 += SLAB_SIZE;
        Some(base)
    }
}

/// Runs `work` in this thread's `heap` as its owner, without a lock, inside the bracket of its
/// credit (`work` gets what [`crate::barrier::Bracket::enter`] said), unless a visitor asked it to
/// stand aside: None then (take the slow path, which waits for the visitor at the heap's lock).
#[inline(always)]
fn in_heap<R>(heap: *mut Heap, work: impl FnOnce(&mut Heap, u8) -> Option<R>) -> Option<R> {
    // Safety: see `SmallBlocks::heap`. The bracket is reached without a reference to the heap,
    // which a visitor may be working in until `enter` says otherwise; `credit` never changes.
    let bracket = &unsafe { &(*heap).credit }.bracket;
    bracket.around(
        #[inline(always)]
        |asked| {
            if asked & ask::STAND_ASIDE != 0 {
                return None;
            }
            // Safety: see `SmallBlocks::heap`; visitors are out, and `work` does not call out.
            work(unsafe { &mut *heap }, asked)
        },
    )
}

/// Runs `work` in this thread's `heap` as its owner, holding its lock (a visit in progress is
/// waited for). For the slow paths.
fn with_heap_locked<R>(heap: *mut Heap, work: impl FnOnce(&mut Heap) -> R) -> R {
    // Safety: as in `in_heap`.
    let _locked = unsafe { &(*heap).counters }.door.lock();
    // Safety: see `SmallBlocks::heap`; the lock keeps visitors out, and `work` does not call out.
    work(unsafe { &mut *heap })
}

/// A mapping of `len` bytes on a slab boundary, for slabs; None if the system has none, or it lies
/// beyond the 48-bit addresses the slab table covers (5-level paging: not ours to use).
fn map_for_slabs(len: usize) -> Option<usize> {
    let start = crate::os::map_region(len, SLAB_SIZE).ok()?;
    if !table::covers(start + len - 1) {
        crate::os::unmap_untouched(start, len);
        return None;
    }
    Some(start)
}

#[cfg(test)]
mod tests;
