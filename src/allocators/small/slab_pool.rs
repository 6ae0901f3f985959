//! Slabs no heap owns: given up by a heap (its thread ended, or it had more empty ones than it
//! keeps), waiting to be adopted by the next heap that needs a slab of their class.
//!
//! Three kinds, so that adopting one never means walking the others:
//! - **with room** (per class): some slots free. Adopted first: their memory is in use already.
//! - **parked**: full when given up. On no list at all (a thread that leaves a million live blocks
//!   behind leaves ~1,000 full slabs, which a list would make every new thread walk). The first
//!   slot another thread frees in one puts it back on its class's list ([`SlabPool::unpark`]).
//! - **empty, still resident**: kept with their pages for [`DECAY_MS`] (newest reused first), so a
//!   program that frees a batch and allocates the next one, or ends a thread and starts another,
//!   reuses pages instead of faulting fresh zeroed ones in. Afterwards, or beyond
//!   [`RESIDENT_MAX`] bytes, their pages go back to the system and they join the list with room.
//!   Decay is driven by the pool's own traffic (each time a slab is given up or adopted), as in
//!   jemalloc and mimalloc without a background thread; [`SlabPool::trim`] gives everything back now.
//!
//! Slab memory is not charged to the quota (only blocks are), so what is kept here can never make a
//! reservation fail; it shows in the stats as `cached`.

use crate::allocators::small::size_class::CLASSES;
use crate::allocators::small::slab::Slab;
use crate::os::coarse_millis;
use crate::sync::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

use crate::allocators::DECAY_MS;

/// The most bytes of empty slabs kept with their pages. Two threads that each allocate and free
/// batches of a thousand 64 KiB blocks empty 128 MiB of slabs per round, which their next round
/// takes again: with 64 MiB kept, each round faulted half its pages in afresh, and every discard
/// interrupted the other core to flush its TLB (13-15 µs per block against 4.0-4.8 µs).
pub const RESIDENT_MAX: u64 = 256 << 20;

/// An empty slab kept with its pages, with what adopting looks for copied beside it: a search
/// then reads one array instead of a slab header per entry (two threads trading 64 slabs per
/// round searched a hundred headers under the lock at each adoption).
#[derive(Clone, Copy)]
struct Resident {
    slab: &'static Slab,
    class: usize,
    last_owner: u64,
    /// When it was given up (coarse milliseconds).
    since: u64,
    /// Its pages that blocks touched ([`Slab::idle_bytes`]): what it keeps, as counted in `cached`.
    bytes: u64,
}

/// One class's unowned slabs with free slots. Each slab knows its place in the list
/// ([`Slab::room_at`]), so that one found empty leaves it at once: a thread that ended with a
/// hundred thousand slabs whose blocks others free in random order would otherwise have each
/// slab's last free search the list.
#[derive(Default)]
struct RoomList(Vec<&'static Slab>);

impl RoomList {
    fn push(&mut self, slab: &'static Slab) {
        slab.set_room_at(Some(self.0.len()));
        self.0.push(slab);
    }

    fn pop(&mut self) -> Option<&'static Slab> {
        let slab = self.0.pop()?;
        slab.set_room_at(None);
        Some(slab)
    }

    /// Where `slab` is on the list, if it is.
    fn find(&self, slab: &'static Slab) -> Option<usize> {
        slab.room_at().filter(|&at| self.0.get(at).is_some_and(|listed| std::ptr::eq(*listed, slab)))
    }

    /// Takes the slab at `at` (from [`RoomList::find`]) off the list.
    fn remove_at(&mut self, at: usize) {
        let slab = self.0.swap_remove(at);
        if let Some(moved) = self.0.get(at) {
            moved.set_room_at(Some(at));
        }
        slab.set_room_at(None);
    }
}

pub struct SlabPool {
    /// Per class (index): unowned slabs with free slots.
    room: [Mutex<RoomList>; CLASSES],
    /// Empty slabs with their pages, oldest first.
    resident: Mutex<VecDeque<Resident>>,
    /// Bytes of pages in `resident`, for the stats without the lock.
    resident_bytes: AtomicU64,
    /// Slabs made, per class (changed under that class's `room` lock) and in all (under the
    /// `resident` lock): each list has room for all of them, taken when a slab is made, so that
    /// giving a slab to the pool (a free path) never needs memory.
    made: [AtomicUsize; CLASSES],
    made_in_all: AtomicUsize,
}

impl SlabPool {
    pub fn new() -> SlabPool {
        SlabPool {
            room: std::array::from_fn(|_| Mutex::new(RoomList::default())),
            resident: Mutex::new(VecDeque::new()),
            resident_bytes: AtomicU64::new(0),
            made: std::array::from_fn(|_| AtomicUsize::new(0)),
            made_in_all: AtomicUsize::new(0),
        }
    }

    /// Room on the pool's lists for one more slab of `class`, for a slab about to be made; false
    /// when the system has no memory for it (nothing changed that matters: room taken stays).
    pub fn make_room_for(&self, class: usize) -> bool {
        // One lock at a time (`fork` takes them all, the resident list's first).
        {
            let mut room = self.room[class].lock();
            let made = self.made[class].load(Relaxed) + 1;
            let more = made.saturating_sub(room.0.len());
            if room.0.try_reserve(more).is_err() {
                return false;
            }
            self.made[class].store(made, Relaxed);
        }
        let mut resident = self.resident.lock();
        let made_in_all = self.made_in_all.load(Relaxed) + 1;
        let more = made_in_all.saturating_sub(resident.len());
        if resident.try_reserve(more).is_err() {
            return false; // the class's count stays one up: its list a little roomier than needed
        }
        self.made_in_all.store(made_in_all, Relaxed);
        true
    }

    /// An unowned slab of `class`, now owned by `owner`: one with room, else an empty resident
    /// one; None if there is neither.
    pub fn adopt(&self, class: usize, owner: u64) -> Option<&'static Slab> {
        // The class's lock is let go before the resident list's is taken: `fork` takes them all,
        // in the other order.
        let with_room = self.room[class].lock().pop();
        let slab = with_room.or_else(|| self.take_resident(class, owner));
        if let Some(slab) = slab {
            slab.set_owner(owner);
        }
        slab
    }

    /// The newest empty resident slab of `class` that `owner` gave up (its memory is likely in
    /// this thread's core's caches: two threads that free and refill batches each get their own
    /// slabs back), else the newest of that class.
    fn take_resident(&self, class: usize, owner: u64) -> Option<&'static Slab> {
        let now = coarse_millis();
        let (slab, expired) = {
            let mut resident = self.resident.lock();
            let own = resident.iter().rposition(|r| r.class == class && r.last_owner == owner);
            let found = own.or_else(|| resident.iter().rposition(|r| r.class == class));
            let taken = found.and_then(|i| resident.remove(i));
            if let Some(r) = taken {
                self.resident_bytes.fetch_sub(r.bytes, Relaxed);
            }
            (taken.map(|r| r.slab), self.pop_expired(&mut resident, now))
        };
        self.give_back_expired_after(expired, now);
        slab
    }

    /// Takes back a slab its heap gives up; `empty`: every slot is free. The caller owned it and
    /// lets go of it here.
    pub fn give_up(&self, slab: &'static Slab, empty: bool) {
        if empty {
            self.keep_resident(slab);
            return;
        }
        slab.set_owner(0);
        let mut room = self.room[slab.class].lock();
        // Parked first, then looked at: a slot freed meanwhile is either seen here or its freer
        // sees the slab parked (both sides SeqCst), so a parked slab never has unnoticed room.
        slab.set_parked(true);
        // Safety: the slab is unowned and this caller still holds it exclusively (no heap can
        // adopt it: it is on no list).
        if unsafe { slab.has_free() } {
            slab.set_parked(false);
            // Emptied by other threads since its heap looked (a free that comes after this look
            // finds it unowned and listed: `notice_empty`).
            if unsafe { empty_with_touched_pages(slab) } {
                drop(room);
                self.keep_resident(slab);
                return;
            }
            room.push(slab);
        }
    }

    /// Another thread's free may have emptied `slab`, which no heap owns: if it is on its class's
    /// list with room and empty, it joins the empty slabs kept with their pages (`cached`, given
    /// back after [`DECAY_MS`] or by a trim) instead of holding its touched pages unseen until a
    /// heap adopts it. A thread that ended with a few blocks in each of its slabs, freed later by
    /// others, left them so: after 2,000 such threads, ~40 MiB of slab pages that neither `cached`
    /// nor a trim reached.
    #[cold]
    pub fn notice_empty(&self, slab: &'static Slab) {
        let mut room = self.room[slab.class].lock();
        // Adopting takes a slab off this list under this lock: listed, it is unowned and held here.
        let Some(at) = room.find(slab) else { return };
        // Safety: as just said, this caller holds it exclusively.
        if !unsafe { empty_with_touched_pages(slab) } {
            return;
        }
        room.remove_at(at);
        drop(room);
        self.keep_resident(slab);
    }

    /// Takes back an empty slab, which its heap lets go of here, and gives its pages back now (one
    /// system call for all its slots, see [`crate::allocators::small::medium`]); false (nothing
    /// done, the heap still owns it) if the system refused. A thousand 64 KiB blocks with a byte
    /// written in each, allocated and freed in rounds: 2.6 against 3.5 µs a block and 6 against
    /// 65 MiB alone; with two threads 4.0 against 5.5 µs and 11 against 128 MiB, as one system call
    /// per 1 MiB slab interrupts the other core to flush its TLB sixteen times less often than one
    /// per block would.
    ///
    /// # Safety
    /// The caller owns the slab and it is empty.
    pub unsafe fn give_back_now(&self, slab: &'static Slab) -> bool {
        if !slab.give_back_pages() {
            return false;
        }
        slab.set_owner(0);
        self.room[slab.class].lock().push(slab);
        true
    }

    /// Keeps an empty slab (which its heap lets go of here) with its pages for reuse; one whose
    /// pages blocks never touched since they were fresh (or given back: a trim, a slab its thread
    /// ended with) keeps none, and goes straight to the list with room.
    pub fn keep_resident(&self, slab: &'static Slab) {
        slab.set_owner(0);
        let bytes = slab.idle_bytes();
        if bytes == 0 {
            self.room[slab.class].lock().push(slab);
        }
        let now = coarse_millis();
        let expired = {
            let mut resident = self.resident.lock();
            if bytes > 0 {
                // Room for it was taken when it was made (`make_room_for`): no memory needed.
                resident.push_back(Resident {
                    slab,
                    class: slab.class,
                    last_owner: slab.last_owner(),
                    since: now,
                    bytes,
                });
                self.resident_bytes.fetch_add(bytes, Relaxed);
            }
            self.pop_expired(&mut resident, now)
        };
        self.give_back_expired_after(expired, now);
    }

    /// Another thread freed a slot of `slab`, which is parked: it goes back on its class's list.
    /// Called after the slot's bit is set.
    #[cold]
    pub fn unpark(&self, slab: &'static Slab) {
        let mut room = self.room[slab.class].lock();
        if slab.set_parked(false) {
            room.push(slab);
        }
    }

    /// The oldest empty slab, taken out of `resident` if it is past its time or the list is
    /// beyond its bound.
    fn pop_expired(&self, resident: &mut VecDeque<Resident>, now: u64) -> Option<Resident> {
        let r = *resident.front()?;
        if self.resident_bytes.load(Relaxed) <= RESIDENT_MAX && now.saturating_sub(r.since) < DECAY_MS {
            return None;
        }
        resident.pop_front();
        self.resident_bytes.fetch_sub(r.bytes, Relaxed);
        Some(r)
    }

    /// Gives back the empty slabs whose time is up: each taken out under the lock, its pages
    /// given back outside it (one system call each; no list of them is made, which could need
    /// memory on a free path). Returns the bytes `cached` counted for them.
    fn give_back_expired(&self) -> u64 {
        let now = coarse_millis();
        let first = self.pop_expired(&mut self.resident.lock(), now);
        self.give_back_expired_after(first, now)
    }

    /// [`SlabPool::give_back_expired`] for a caller that took the `first` out already (under a
    /// lock it held anyway: most of the time there is none, and no second lock is taken).
    fn give_back_expired_after(&self, first: Option<Resident>, now: u64) -> u64 {
        let mut bytes = 0;
        let mut next = first;
        while let Some(r) = next {
            bytes += self.give_back(r);
            next = self.pop_expired(&mut self.resident.lock(), now);
        }
        bytes
    }

    /// Gives an empty slab's pages back to the system (outside any lock) and lists it with room.
    /// Returns the bytes `cached` counted for it.
    fn give_back(&self, Resident { slab, bytes, .. }: Resident) -> u64 {
        // Safety: taken off the resident list, on no other: this caller holds it; empty.
        unsafe { slab.give_back_pages() };
        self.room[slab.class].lock().push(slab);
        bytes
    }

    /// Gives back the pages of the empty slabs whose time is up, as the pool's own traffic would:
    /// for a caller that ticks while the program is quiet. Returns the bytes.
    pub fn decay(&self) -> u64 {
        self.give_back_expired()
    }

    /// Gives the pages of every empty slab kept back to the system now. Returns the bytes.
    pub fn trim(&self) -> u64 {
        let mut bytes = 0;
        loop {
            let taken = self.resident.lock().pop_front();
            let Some(r) = taken else { return bytes };
            self.resident_bytes.fetch_sub(r.bytes, Relaxed);
            bytes += self.give_back(r);
        }
    }

    /// Bytes of empty slabs kept with their pages.
    pub fn cached_bytes(&self) -> u64 {
        self.resident_bytes.load(Relaxed)
    }

    /// Its locks, for [`crate::manager::fork`]: none is taken while another is held.
    pub(crate) fn locks(&self) -> impl Iterator<Item = &crate::sync::RawMutex> + '_ {
        // Safety: the raw locks are only locked and unlocked as a whole by `fork`'s handlers.
        let resident = unsafe { self.resident.raw() };
        std::iter::once(resident).chain(self.room.iter().map(|m| unsafe { m.raw() }))
    }
}

/// Whether the unowned `slab` is empty with pages its blocks touched: it belongs with the empty
/// slabs kept with their pages (one with none goes back to the list with room).
///
/// # Safety
/// The caller holds the slab exclusively (unowned, and on no list or under its list's lock).
unsafe fn empty_with_touched_pages(slab: &Slab) -> bool {
    slab.is_empty() && slab.idle_bytes() > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocators::small::size_class::class_of;
    use crate::allocators::small::slab::SLAB_SIZE;
    use crate::os::{map_region, unmap_region};

    const FOUR_KIB: usize = 27;

    /// A slab of 4 KiB slots (16 of them) over fresh pages, owned by heap 1, with `live` slots taken.
    fn slab(live: usize) -> &'static Slab {
        let base = map_region(SLAB_SIZE, SLAB_SIZE).unwrap();
        let slab: &'static Slab = Box::leak(Box::new(Slab::new(base, 0, class_of(4096, 0).unwrap(), 1)));
        for _ in 0..live {
            // Safety: heap 1 (this test) owns it.
            let index = unsafe { slab.take_free() }.unwrap();
            slab.mark_live(index, 4096);
        }
        slab
    }

    #[test]
    fn a_full_slab_is_parked_until_another_thread_frees_a_slot_in_it() {
        assert_eq!(class_of(4096, 0), Some(FOUR_KIB));
        let pool = SlabPool::new();
        let full = slab(16);
        pool.give_up(full, false);
        assert!(full.is_parked());
        assert!(pool.adopt(FOUR_KIB, 2).is_none(), "a full slab is never adopted");
        // Another thread frees slot 3: the freer finds it parked and lists it.
        assert_eq!(full.claim(3), crate::allocators::small::slab::Claim::Won(4096));
        full.put_back_remote(3);
        pool.unpark(full);
        assert!(!full.is_parked());
        let adopted = pool.adopt(FOUR_KIB, 2).expect("listed with room");
        assert!(std::ptr::eq(adopted, full));
        assert_eq!(adopted.owner(), 2);
        // Safety: heap 2 (this test) owns it now.
        assert_eq!(unsafe { adopted.take_free() }, Some(3));
        assert!(unmap_region(full.base, SLAB_SIZE));
    }

    #[test]
    fn a_slab_with_room_is_listed_at_once_and_a_second_unpark_does_nothing() {
        let pool = SlabPool::new();
        let some = slab(5);
        pool.give_up(some, false);
        assert!(!some.is_parked());
        pool.unpark(some); // a freer that saw it parked a moment ago: must not list it twice
        assert!(std::ptr::eq(pool.adopt(FOUR_KIB, 2).unwrap(), some));
        assert!(pool.adopt(FOUR_KIB, 2).is_none());
        assert!(unmap_region(some.base, SLAB_SIZE));
    }

    /// An empty slab whose first `slots` slots were handed out (and freed) since its pages were fresh.
    fn touched(slots: u32) -> &'static Slab {
        let slab = slab(0);
        // Safety: heap 1 (this test) owns it.
        (0..slots).for_each(|i| assert!(unsafe { slab.first_use(i as usize) }));
        slab
    }

    #[test]
    fn an_empty_slab_keeps_its_pages_for_the_decay_time_then_gives_them_back() {
        let pool = SlabPool::new();
        let (a, b) = (touched(1), touched(16));
        // Safety: the slab's memory is ours, and heap 1 (this test) owns it.
        unsafe { (a.base as *mut u8).write(0xAB) };
        assert!(!unsafe { a.first_use(0) }, "slot 0 was handed out");
        pool.give_up(a, true);
        assert_eq!(pool.cached_bytes(), 4096, "the page of the one slot handed out");
        assert!(pool.adopt(FOUR_KIB + 1, 2).is_none(), "another class");
        let again = pool.adopt(FOUR_KIB, 2).expect("kept");
        assert!(std::ptr::eq(again, a));
        // Safety: as above.
        assert_eq!(unsafe { (a.base as *const u8).read() }, 0xAB, "its pages were kept");
        assert_eq!(pool.cached_bytes(), 0);
        pool.give_up(a, true);
        std::thread::sleep(std::time::Duration::from_millis(DECAY_MS + 20));
        pool.give_up(b, true); // the pool's traffic expires the older one
        assert_eq!(pool.cached_bytes(), SLAB_SIZE as u64, "all of b's slots were handed out");
        // Safety: as above.
        assert_eq!(unsafe { (a.base as *const u8).read() }, 0, "its pages went back");
        // Safety: in the pool, held by nobody else.
        assert!(unsafe { a.first_use(0) }, "so every slot is fresh again");
        assert_eq!(pool.trim(), SLAB_SIZE as u64);
        assert_eq!(pool.cached_bytes(), 0);
        let mut adopted: Vec<_> = (0..2).map(|_| pool.adopt(FOUR_KIB, 2).unwrap().base).collect();
        adopted.sort();
        let mut want = vec![a.base, b.base];
        want.sort();
        assert_eq!(adopted, want, "both listed with room after giving their pages back");
        // Given up again with no slot handed out since its pages were given back: nothing to
        // keep, nothing shown, and adopted at once all the same.
        pool.give_up(b, true);
        assert_eq!(pool.cached_bytes(), 0);
        assert!(std::ptr::eq(pool.adopt(FOUR_KIB, 2).unwrap(), b));
        assert!(unmap_region(a.base, SLAB_SIZE));
        assert!(unmap_region(b.base, SLAB_SIZE));
    }

    /// Another thread frees slot `index` of `slab`; whether it saw the slab may be empty now.
    fn free_remotely(slab: &Slab, index: usize) -> bool {
        assert_eq!(slab.claim(index), crate::allocators::small::slab::Claim::Won(4096));
        slab.put_back_remote(index)
    }

    #[test]
    fn a_slab_that_other_threads_empty_once_given_up_is_kept_as_an_empty_one() {
        let pool = SlabPool::new();
        // Two live blocks, written (their pages touched) when its thread ended.
        let (a, b) = (slab(2), slab(2));
        // Safety: heap 1 (this test) owns them.
        (0..2).for_each(|i| unsafe { assert!(a.first_use(i) && b.first_use(i)) });
        pool.give_up(a, false);
        assert!(!free_remotely(a, 0), "one block still live");
        assert!(free_remotely(a, 1), "the last one: it may be empty");
        pool.notice_empty(a);
        assert_eq!(pool.cached_bytes(), 2 * 4096, "off the list with room, kept with its two pages");
        // Emptied between its heap's look and its giving up: seen when given up.
        assert!(!free_remotely(b, 0) && !free_remotely(b, 1), "still owned");
        pool.give_up(b, false);
        assert_eq!(pool.cached_bytes(), 4 * 4096);
        let adopted = [pool.adopt(FOUR_KIB, 2).unwrap(), pool.adopt(FOUR_KIB, 2).unwrap()];
        assert!(pool.adopt(FOUR_KIB, 2).is_none(), "each listed once");
        assert_eq!(pool.cached_bytes(), 0);
        pool.notice_empty(a); // a late notice of an adopted slab: nothing
        assert_eq!(pool.cached_bytes(), 0);
        assert!(adopted.iter().any(|s| std::ptr::eq(*s, a)) && adopted.iter().any(|s| std::ptr::eq(*s, b)));
        assert!(unmap_region(a.base, SLAB_SIZE));
        assert!(unmap_region(b.base, SLAB_SIZE));
    }

    #[test]
    fn no_more_than_the_bound_keeps_its_pages() {
        let pool = SlabPool::new();
        let slabs: Vec<_> = (0..RESIDENT_MAX as usize / SLAB_SIZE + 3).map(|_| touched(16)).collect();
        slabs.iter().for_each(|s| pool.give_up(s, true));
        assert_eq!(pool.cached_bytes(), RESIDENT_MAX);
        pool.trim();
        slabs.iter().for_each(|s| assert!(unmap_region(s.base, SLAB_SIZE)));
    }
}
