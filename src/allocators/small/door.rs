//! A heap's door: how another thread gets into a heap to give back the memory its thread keeps
//! for reuse (the empty slabs it keeps back, the pages of the empty slabs it allocates from), and
//! how the owner keeps it out. Without it only the owner could give those back, and a thread that
//! goes idle after a burst kept them until it ended: 8 idle threads that had allocated and freed
//! mixed blocks up to 100 KiB held 96 MiB that `dm_trim` from another thread could not touch.
//!
//! The owner works in its heap in two ways:
//! - its fast paths (a slot from the current slab, a free into its own slab) take no lock: they
//!   run inside the bracket of the thread's quota credit ([`crate::barrier::Bracket`], which they
//!   enter anyway to spend or refill the credit) and stand aside, into the slow path, when a
//!   visitor asks them to;
//! - everything else (the slow paths, a thread's end) holds the door's lock.
//!
//! A visitor takes the lock with `try_lock` (an owner in its slow path is not idle: its heap is
//! left alone), asks the owner to stand aside, runs the heavy barrier and waits for the bracket
//! to close; from then on the heap is the visitor's alone until it withdraws the request and
//! unlocks. An owner that stands aside meanwhile waits at the lock in its slow path.
//!
//! A bracket may take the slab pool's locks (a slab that fills or empties), never the quota's nor
//! a door's; a visitor waits for brackets holding only the visits lock and doors' locks.

use super::heap::Heap;
use crate::barrier::{self, ask, Bracket};
use crate::sync::{Mutex, MutexGuard};

#[derive(Default)]
pub(super) struct Door {
    /// The heap while a thread owns it (null once it is retired); its lock is the one the owner's
    /// slow paths and visitors hold.
    heap: Mutex<HeapPtr>,
}

pub(super) struct HeapPtr(*mut Heap);

impl Default for HeapPtr {
    fn default() -> HeapPtr {
        HeapPtr(std::ptr::null_mut())
    }
}

// Safety: the pointer is only followed under the door's lock by a visitor that has kept the
// owner out (see the module's doc).
unsafe impl Send for HeapPtr {}

impl HeapPtr {
    /// The heap is open to visitors (a thread owns it now).
    pub(super) fn open(&mut self, heap: *mut Heap) {
        self.0 = heap;
    }

    /// The heap is closed to visitors (its thread ends; it is emptied and retired).
    pub(super) fn close(&mut self) {
        self.0 = std::ptr::null_mut();
    }
}

impl Door {
    /// Owner: the lock its slow paths hold (a visitor in the heap is waited for).
    pub(super) fn lock(&self) -> MutexGuard<'_, HeapPtr> {
        self.heap.lock()
    }
}

/// What a visit does in a heap; returns the bytes of pages it gave back.
pub(super) type Visit = fn(&mut Heap) -> u64;

/// Runs each door's visit in the open heap behind it, unless its owner is in a slow path, with the
/// owner kept out, and returns the sum of what they returned. Visits are serialized by the caller.
pub(super) fn visit_each(doors: &[(&Door, Visit)]) -> u64 {
    let mut open: Vec<(&Bracket, MutexGuard<'_, HeapPtr>, Visit)> = Vec::new();
    if crate::fallible::reserve(&mut open, doors.len()).is_err() {
        return 0; // no memory to visit with: nothing given back from the heaps
    }
    open.extend(doors.iter().filter_map(|&(door, visit)| {
        let heap = door.heap.try_lock()?;
        (!heap.0.is_null()).then(|| {
            // Safety: an open heap is alive while its door is locked (dropping one locks it);
            // its `credit` is set when it is made and never changes.
            let bracket = &unsafe { &(*heap.0).credit }.bracket;
            bracket.ask(ask::STAND_ASIDE);
            (bracket, heap, visit)
        })
    }));
    if open.is_empty() {
        return 0;
    }
    barrier::publish_asks();
    let mut sum = 0;
    // Each heap is let go as soon as it was visited: its owner waits for its own visit only, not
    // for the heaps ahead of it in the list.
    barrier::in_passes(|| {
        open.retain(|&(bracket, ref heap, visit)| {
            if !bracket.owner_complies(ask::STAND_ASIDE) {
                return true;
            }
            // Safety: as above, and the owner is kept out: its slow paths by the lock, its fast
            // paths by the request (they saw it, or their bracket has closed).
            let owned = heap.0;
            sum += visit(unsafe { &mut *owned });
            bracket.withdraw(ask::STAND_ASIDE);
            false // dropped: the heap's lock is let go
        });
        open.is_empty()
    });
    sum
}
