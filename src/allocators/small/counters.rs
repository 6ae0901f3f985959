//! What a heap shares with other threads: its block counters, summed over the heaps, and the
//! slabs it allocates from, which hold memory even when empty, for the stats; its door, for
//! visitors (see [`super::door`]).

use super::door::Door;
use super::size_class::CLASSES;
use super::slab::Slab;
use crate::allocators::DECAY_MS;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};

/// How often a heap is looked through for slabs other threads' frees emptied (milliseconds), by
/// its owner or by `dm_decay`, and how often `dm_decay` ages a busy thread's heap (what it kept
/// unused since goes back): the look walks its lists, and a visit makes the owner's fast paths
/// wait for it, so not at every call (the JVM binding calls `dm_decay` once a second, a background
/// thread may every few milliseconds).
pub(super) const EMPTIED_LOOK_MS: u64 = 10 * DECAY_MS;

/// Block counters of one heap. Only its thread writes them (load + store, no read-modify-write:
/// nothing to contend); they wrap, and a heap that frees other threads' blocks goes "negative",
/// which the sum over all heaps puts right. Aligned so that two heaps never share a cache line.
#[derive(Default)]
#[repr(align(128))]
pub(super) struct Counters {
    pub(super) count: AtomicU64,
    pub(super) capacity: AtomicU64,
    /// Bytes of the live blocks' slots.
    pub(super) occupied: AtomicU64,
    pub(super) allocations: AtomicU64,
    /// The heap's door, for visitors.
    pub(super) door: Door,
    /// Whether its thread is idle, as `dm_decay` sees it.
    pub(super) idle: IdleWatch,
    /// When the heap was last looked through for slabs other threads emptied, by its owner or by
    /// `dm_decay` (coarse milliseconds): see [`Counters::emptied_look_due`].
    emptied_looked: AtomicU64,
    /// When `dm_decay` last aged the heap while its thread was busy (coarse milliseconds; see
    /// [`Counters::age_due`]).
    aged: AtomicU64,
    /// The pages of the empty slabs the heap keeps back ([`Slab::idle_bytes`], which does not
    /// change while a slab is kept back): what the pool's `spare_bytes` counts for this heap.
    /// Written by the owner (or a visitor in its place).
    spares: AtomicU64,
    /// The heap's current slab per class (null: none). Written when the heap changes slabs, not
    /// per block; read for `cached`, where an empty one counts (see [`Slab::idle_bytes`]).
    current: CurrentSlabs,
}

struct CurrentSlabs {
    slabs: [AtomicPtr<Slab>; CLASSES],
    /// Bit `c`: `slabs[c]` was ever set. The stats look at those only: walking all 48 of every
    /// heap took a `dm_get_stats` from 0.8 to 3.4 µs with 150 threads.
    classes: AtomicU64,
}

impl Default for CurrentSlabs {
    fn default() -> CurrentSlabs {
        CurrentSlabs { slabs: [const { AtomicPtr::new(std::ptr::null_mut()) }; CLASSES], classes: AtomicU64::new(0) }
    }
}

/// What `dm_decay` (one at a time, under the visits lock) last saw of a heap: its thread is idle
/// when its counters have not moved for [`DECAY_MS`], and what it keeps then goes back once.
pub(super) struct IdleWatch {
    /// The counters' signature when last looked at...
    seen: AtomicU64,
    /// ...since when (coarse milliseconds)...
    since: AtomicU64,
    /// ...and the signature at which the heap was last visited for it.
    visited: AtomicU64,
}

impl Default for IdleWatch {
    fn default() -> IdleWatch {
        // `seen` matches no signature: a heap is first seen, then found idle.
        IdleWatch { seen: AtomicU64::new(u64::MAX), since: AtomicU64::new(0), visited: AtomicU64::new(u64::MAX) }
    }
}

impl Counters {
    /// Whether the heap's thread has neither allocated nor freed for [`DECAY_MS`] up to `now`, as
    /// seen by successive calls, and was not visited for it since. Only `dm_decay` calls it.
    pub(super) fn idle_since_last_look(&self, now: u64) -> bool {
        let signature = self.allocations.load(Relaxed) ^ self.count.load(Relaxed).rotate_left(32);
        let idle = &self.idle;
        if idle.seen.swap(signature, Relaxed) != signature {
            idle.since.store(now, Relaxed);
            return false;
        }
        now.saturating_sub(idle.since.load(Relaxed)) >= DECAY_MS && idle.visited.swap(signature, Relaxed) != signature
    }

    /// Owner: whether it is time to look through the heap for slabs other threads' frees emptied:
    /// the last look, by its owner or by `dm_decay` (see [`Counters::age_due`]), was
    /// [`EMPTIED_LOOK_MS`] ago or more. Notes this one. (The two may both find it due at once: the
    /// heap is looked through twice, no harm.)
    pub(super) fn emptied_look_due(&self, now: u64) -> bool {
        Self::take_turn(&self.emptied_looked, now)
    }

    /// Whether it is time for `dm_decay` to age the heap of a busy thread (see
    /// [`super::heap::Heap::age`], which looks for slabs other threads emptied too: noted as such
    /// a look): the last time was [`EMPTIED_LOOK_MS`] ago or more. Notes this one. A clock of its
    /// own: the owner's looks in its slow path (which may come often) must not keep the ageing
    /// from its turn.
    pub(super) fn age_due(&self, now: u64) -> bool {
        let due = Self::take_turn(&self.aged, now);
        if due {
            self.emptied_looked.store(now, Relaxed);
        }
        due
    }

    /// Whether the turn that `last` (coarse milliseconds) timed is due at `now`, once per
    /// [`EMPTIED_LOOK_MS`]; taking it moves `last` to `now`.
    fn take_turn(last: &AtomicU64, now: u64) -> bool {
        let due = now.saturating_sub(last.load(Relaxed)) >= EMPTIED_LOOK_MS;
        if due {
            last.store(now, Relaxed);
        }
        due
    }

    #[inline(always)]
    pub(super) fn bump(counter: &AtomicU64, by: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(by), Relaxed);
    }

    #[inline(always)]
    pub(super) fn allocated(&self, size: usize, slot_size: u32) {
        Self::bump(&self.count, 1);
        Self::bump(&self.capacity, size as u64);
        Self::bump(&self.occupied, slot_size as u64);
        Self::bump(&self.allocations, 1);
    }

    #[inline(always)]
    pub(super) fn released(&self, size: usize, slot_size: u32) {
        Self::bump(&self.count, 1u64.wrapping_neg());
        Self::bump(&self.capacity, (size as u64).wrapping_neg());
        Self::bump(&self.occupied, (slot_size as u64).wrapping_neg());
    }

    pub(super) fn snapshot(&self) -> SmallStats {
        SmallStats {
            count: self.count.load(SeqCst),
            capacity: self.capacity.load(SeqCst),
            occupied: self.occupied.load(SeqCst),
            total_allocations: self.allocations.load(SeqCst),
        }
    }

    /// Owner only: back to zero (what they held was added elsewhere).
    pub(super) fn reset(&self) {
        for counter in [&self.count, &self.capacity, &self.occupied, &self.allocations] {
            counter.store(0, SeqCst);
        }
    }

    /// Owner only: the heap allocates from `slab` in class `class` now (None: from no slab).
    pub(super) fn show_current(&self, class: usize, slab: Option<&'static Slab>) {
        let current = &self.current;
        current.slabs[class].store(slab.map_or(std::ptr::null_mut(), |s| s as *const Slab as *mut Slab), Release);
        if slab.is_some() {
            current.classes.store(current.classes.load(Relaxed) | 1 << class, Release);
        }
    }

    /// See `spares`.
    pub(super) fn spares(&self) -> u64 {
        self.spares.load(Relaxed)
    }

    /// Owner (or a visitor in its place): see `spares`.
    pub(super) fn set_spares(&self, bytes: u64) {
        self.spares.store(bytes, Relaxed)
    }

    /// Whether a visit of the heap may find pages to give back: what it keeps, or slabs on its
    /// lists that other threads' frees emptied (see [`super::heap::Heap::take_back_emptied`]).
    pub(super) fn worth_a_visit(&self) -> bool {
        self.keeps_some() || self.may_hold_emptied()
    }

    /// A hint that slabs on the heap's lists may have been emptied by other threads' frees: more
    /// of its blocks were allocated than it freed itself.
    pub(super) fn may_hold_emptied(&self) -> bool {
        (self.count.load(Relaxed) as i64) > 0
    }

    /// Whether the heap keeps pages a visit could give back (a hint: its owner may be changing it;
    /// a heap passed over now is looked at again by the next trim or decay).
    fn keeps_some(&self) -> bool {
        self.spares() > 0 || self.idle_current_bytes() > 0
    }

    /// Bytes of the heap's current slabs that hold no block but keep pages blocks touched.
    pub(super) fn idle_current_bytes(&self) -> u64 {
        let mut classes = self.current.classes.load(Acquire);
        let mut bytes = 0;
        while classes != 0 {
            let slab = self.current.slabs[classes.trailing_zeros() as usize].load(Acquire);
            classes &= classes - 1;
            // Safety: slab headers are never freed.
            bytes += unsafe { slab.as_ref() }.map_or(0, Slab::idle_bytes);
        }
        bytes
    }

    /// For counters several threads write (the pool's).
    pub(super) fn add_shared(&self, s: SmallStats) {
        self.count.fetch_add(s.count, SeqCst);
        self.capacity.fetch_add(s.capacity, SeqCst);
        self.occupied.fetch_add(s.occupied, SeqCst);
        self.allocations.fetch_add(s.total_allocations, SeqCst);
    }
}

impl SmallStats {
    pub(super) fn wrapping_add(self, o: SmallStats) -> SmallStats {
        SmallStats {
            count: self.count.wrapping_add(o.count),
            capacity: self.capacity.wrapping_add(o.capacity),
            occupied: self.occupied.wrapping_add(o.occupied),
            total_allocations: self.total_allocations.wrapping_add(o.total_allocations),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmallStats {
    pub count: u64,
    pub capacity: u64,
    /// Bytes of the live blocks' slots.
    pub occupied: u64,
    pub total_allocations: u64,
}
