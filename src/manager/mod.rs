//! One direct-memory manager: the quota, the system memory, the block registry and the
//! small-block slabs composed. Blocks of up to 128 KiB (`MAX_SMALL`) come from this
//! thread's slabs; bigger ones (or when a slab cannot be had) from the system, recorded in the
//! registry. Releases find which by the address.
//! The process has one ([`global`]), shared by the C ABI and the JVM bindings; tests build their
//! own so that they do not disturb each other.

pub mod background;
pub(crate) mod fork;

use crate::allocators::small::slab::Claim;
use crate::allocators::small::{self, Served, SmallBlocks};
use crate::allocators::system as sysmem;
use crate::allocators::DECAY_MS;
use crate::fallible;
use crate::quota::{Hook, Quota};
use crate::registry::{Action, Claimed, Cleaners, Registry};
use crate::sync::Mutex;
use crate::{limit, Error, Result};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

/// Every counter the library keeps (the fields of `dm_stats` and `dm_memory_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub limit: u64,
    pub reserved: u64,
    pub capacity: u64,
    pub count: u64,
    pub peak_reserved: u64,
    pub total_allocations: u64,
    pub live_cleaners: u64,
    pub cleaners_run: u64,
    pub reclaim_requests: u64,
    pub limit_failures: u64,
    pub occupied: u64,
    pub cached: u64,
}

impl Stats {
    /// Every counter with its name, in one place: the JNI binding fills the Java record's fields by
    /// these names, so a counter added here cannot shift what Java reads.
    pub fn fields(&self) -> [(&'static str, u64); 12] {
        [
            ("limit", self.limit),
            ("reserved", self.reserved),
            ("capacity", self.capacity),
            ("count", self.count),
            ("peakReserved", self.peak_reserved),
            ("totalAllocations", self.total_allocations),
            ("liveCleaners", self.live_cleaners),
            ("cleanersRun", self.cleaners_run),
            ("reclaimRequests", self.reclaim_requests),
            ("limitFailures", self.limit_failures),
            ("occupied", self.occupied),
            ("cached", self.cached),
        ]
    }
}

pub struct Manager {
    quota: &'static Quota,
    small: &'static SmallBlocks,
    blocks: &'static Registry,
    /// When (coarse milliseconds) an allocation off the fast path next gives back what is kept
    /// for reuse past its time ([`Manager::decay_with_traffic`]).
    next_decay: AtomicU64,
}

static GLOBAL: OnceLock<Manager> = OnceLock::new();
/// Held while [`GLOBAL`] is made: the threads that find another making it wait here, on a futex.
/// (`once_cell`'s cell made each waiter take a thread handle from `malloc`, infallibly: threads
/// starting at once in a process whose `malloc` refused aborted.)
static MAKING: Mutex<()> = Mutex::new(());
/// The process-wide manager's table: a static (see [`Registry`]), made at compile time.
static GLOBAL_BLOCKS: Registry = Registry::new();

/// The process-wide manager behind `dm_*` and `dev.directmem.DirectMemory`, made at the first
/// call; `Err(NoMemory)` when the system has no memory for it (nothing is kept, and the next
/// call tries again: a program's first call into the library under memory pressure gets an
/// answer, not the abort that Rust's infallible `Arc::new` made of it).
pub fn global() -> Result<&'static Manager> {
    match GLOBAL.get() {
        Some(manager) => Ok(manager),
        None => make_global(),
    }
}

/// The process-wide manager if it was made: for the fast paths, whose general path makes it.
#[inline(always)]
pub fn made() -> Option<&'static Manager> {
    GLOBAL.get()
}

/// [`MAKING`]'s lock, for [`fork`]: a thread making the manager at a fork would leave it held
/// in the child for good.
pub(crate) fn making_lock() -> &'static crate::sync::RawMutex {
    // Safety: the raw lock is only locked and unlocked as a whole by `fork`'s handlers.
    unsafe { MAKING.raw() }
}

#[cold]
fn make_global() -> Result<&'static Manager> {
    let _one_at_a_time = MAKING.lock();
    if let Some(manager) = GLOBAL.get() {
        return Ok(manager); // made by the thread this one waited for
    }
    crate::manager::fork::install();
    let manager = Manager::try_new(limit::default_limit(), &GLOBAL_BLOCKS).ok_or(Error::NoMemory)?;
    let manager = GLOBAL.get_or_init(|| manager); // set here: nobody else sets it
    background::start_from_env(); // its thread finds the manager made
    Ok(manager)
}

/// A block claimed for release (by a free, or a move away from it): nobody else can release it;
/// this caller finishes its release.
enum Taken {
    /// A slab slot without cleaners, and its size.
    Slot(small::Slot, usize),
    /// A block of the table: a mapping, heap memory, or a slot with cleaners.
    Table(Claimed),
}

/// Claims a slab slot's block, if the block is one (`slot`): `Some` with its size when it has no
/// cleaners (the claim is won here), None when it is not a slot or its cleaners put it in the table.
#[inline]
fn claim_slot(slot: Option<small::Slot>) -> Result<Option<(small::Slot, usize)>> {
    match slot.map(|slot| (slot.claim(), slot)) {
        Some((Claim::Won(size), slot)) => Ok(Some((slot, size))),
        Some((Claim::NotLive, _)) => Err(Error::NotLive),
        Some((Claim::Cleaned, _)) | None => Ok(None), // its cleaners are in the table
    }
}

/// A block a move has claimed ([`Manager::reallocate`]).
enum Moving {
    /// A slab slot without cleaners, and its size.
    Slot(small::Slot, usize),
    /// A block of the table, its entry kept (marked moving): its cleaners, and its size if it
    /// has memory of its own (None: a slot's entry, whose size is in the slot).
    Table(Cleaners, Option<usize>),
}

impl Manager {
    /// A manager with the limit `limit`, keeping its table of blocks in `blocks`; None when the
    /// system has no memory for its quota and
    /// small-block pool (nothing is kept). They live as long as the process: the process-wide
    /// manager is made once, and threads' heaps refer to its pool until they end (a unit test's
    /// manager leaks them).
    pub fn try_new(limit: u64, blocks: &'static Registry) -> Option<Manager> {
        let quota: &'static Quota = Box::leak(fallible::boxed_with(|| Quota::new(limit))?);
        match fallible::boxed_with(|| SmallBlocks::new(quota)) {
            Some(small) => Some(Manager { quota, small: Box::leak(small), blocks, next_decay: AtomicU64::new(0) }),
            None => {
                // Safety: boxed just above, and nothing refers to it any more.
                drop(unsafe { Box::from_raw(quota as *const Quota as *mut Quota) });
                None
            }
        }
    }

    #[cfg(test)]
    pub fn new(limit: u64) -> Manager {
        Manager::try_new(limit, Box::leak(Box::new(Registry::new()))).expect("memory for a manager")
    }

    /// The common case of [`Manager::allocate`], inlined into the C and Java entry points: a small
    /// block this thread's heap has a slot and credit for. None: nothing changed; call `allocate`.
    #[inline(always)]
    pub fn allocate_fast(&self, size: usize, alignment: usize) -> Option<NonNull<u8>> {
        if alignment > 16 || alignment & alignment.wrapping_sub(1) != 0 {
            return None; // bigger or invalid alignments: `allocate` sorts them out
        }
        let class = small::class_of(size, 0)?;
        self.small.allocate_fast(size, class)
    }

    /// The common case of [`Manager::free`]: a small block without cleaners, freed by a thread
    /// that allocates too. False: nothing changed; call `free`.
    #[inline(always)]
    pub fn free_fast(&self, address: usize) -> bool {
        self.small.free_fast(address)
    }

    /// Reserve, allocate zeroed memory, record it. Nothing stays reserved on failure.
    #[inline]
    pub fn allocate(&self, size: usize, alignment: usize) -> Result<NonNull<u8>> {
        self.decay_with_traffic();
        let alignment = sysmem::check_request(size, alignment)?;
        if let Some(class) = small::class_of(size, alignment) {
            match self.small.allocate(size, class) {
                Served::Block(ptr) => return Ok(ptr),
                Served::Failed(e) => return Err(e),
                Served::Elsewhere => {}
            }
        }
        self.quota.reserve(size as u64)?;
        self.allocate_reserved(size, alignment)
    }

    /// Like [`Manager::allocate`], but `Err(Limit)` at once where that would reclaim and wait
    /// (credit that threads took ahead is collected first, as before any refusal). The JVM binding
    /// uses it for virtual threads, which must wait in Java, where they can unmount.
    pub fn try_allocate(&self, size: usize, alignment: usize) -> Result<NonNull<u8>> {
        self.decay_with_traffic();
        let alignment = sysmem::check_request(size, alignment)?;
        self.quota.try_reserve_collecting(size as u64)?;
        self.allocate_reserved(size, alignment)
    }

    /// A new block of `size` bytes (a mapping of its own) for a moved block's first `copied`
    /// bytes ([`sysmem::map_for_move`]), and whether it is a fresh mapping, for its pages.
    fn allocate_for_move(&self, size: usize, copied: usize, prefer_kept: bool) -> Result<(NonNull<u8>, bool)> {
        self.quota.reserve(size as u64)?;
        let mut fresh = false;
        let memory = sysmem::map_for_move(size, copied, prefer_kept).map(|(memory, new)| {
            fresh = new;
            memory
        });
        Ok((self.record(size, memory)?, fresh))
    }

    fn allocate_reserved(&self, size: usize, alignment: usize) -> Result<NonNull<u8>> {
        self.record(size, sysmem::allocate_zeroed(size, alignment))
    }

    /// Records `memory` from the system as a block of `size` bytes, whose reservation is made; on
    /// any failure the memory goes back to the system and the reservation to the quota.
    fn record(&self, size: usize, memory: Result<sysmem::Memory>) -> Result<NonNull<u8>> {
        let recorded = memory.and_then(|memory| {
            let ptr = memory.ptr;
            // No memory for the table's entry: the block's memory goes back, nothing recorded.
            self.blocks.insert(memory, size).map(|()| ptr).map_err(|memory| {
                sysmem::release(memory);
                Error::NoMemory
            })
        });
        if recorded.is_err() {
            self.quota.release(size as u64);
        }
        recorded
    }

    /// Releases the live block starting at `address`: its cleaners run, its memory is freed.
    #[inline]
    pub fn free(&self, address: usize) -> Result<()> {
        let slot = self.small.find(address).transpose()?;
        match self.take(slot, address)? {
            Taken::Slot(slot, size) => self.small.release(slot, size),
            Taken::Table(claimed) => self.finish_release(claimed),
        }
        Ok(())
    }

    /// The size of the live block starting at `address` (what it was allocated or resized with).
    pub fn block_size(&self, address: usize) -> Result<usize> {
        match self.small.find(address) {
            Some(slot) => match slot?.live_size().ok_or(Error::NotLive)? {
                (size, false) => Ok(size),
                // A slot with cleaners is marked so until its release ends, after its actions
                // ran; the block is live only while the table holds its entry (its release takes
                // it out first, as a mapping's). The size is the slot's (the entry has none).
                (size, true) => self.blocks.size_of(address).map(|_| size),
            },
            None => self.blocks.size_of(address).map(|(size, _)| size),
        }
    }

    /// Resizes the live block at `address` to `new_size`: in place when a small block stays in
    /// its size class; otherwise a new zeroed block (default alignment) with the first
    /// min(old, new) bytes copied, then the old one freed. A block with cleaners takes them
    /// along: same handles, run once when the new block is released. On any failure the old
    /// block stays as it was.
    pub fn reallocate(&self, address: usize, new_size: usize) -> Result<NonNull<u8>> {
        // A size no block can have is refused as such before any path asks the quota (a
        // mapping's growth in place would: DM_ERR_LIMIT, counted as a limit failure).
        sysmem::check_request(new_size, 0)?;
        let (slot, size) = match self.small.find(address) {
            Some(slot) => {
                let slot = slot?;
                let (size, has_cleaners) = slot.live_size().ok_or(Error::NotLive)?;
                if !has_cleaners && self.small.resize_in_place(&slot, size, new_size)? {
                    return NonNull::new(address as *mut u8).ok_or(Error::Internal);
                }
                (Some(slot), size)
            }
            None => {
                let (size, _) = self.blocks.size_of(address)?;
                if self.resize_in_place(address, size, new_size)? {
                    return NonNull::new(address as *mut u8).ok_or(Error::Internal);
                }
                (None, size)
            }
        };
        // A mapped block that stays one moves by its pages (see `sysmem::move_pages`) into a
        // fresh mapping: a copy would cost the whole block, for a little growth (a block grown to
        // 64 MiB in 64 KiB steps took 0.88 s, glibc 0.009) or a big one (doubled from 1 MiB to
        // 512 MiB: 0.46 s in the resizes, glibc 0.002). But one that doubles or more is copied
        // into a kept mapping if one fits: its pages kept in memory or advised huge, the copy
        // costs about what the growth would in page faults on fresh ones (Lua's tables, doubled
        // up to 16 MiB in rounds: 1.19x glibc's time by pages, 0.93x so).
        let (new, by_pages) = if slot.is_none() && new_size >= sysmem::MAP_THRESHOLD {
            let doubles = new_size - size.min(new_size) >= size;
            self.allocate_for_move(new_size, size, doubles)?
        } else {
            (self.allocate(new_size, 0)?, false)
        };
        // The old block is claimed before a byte of it is read. A free racing with the move (a race
        // the caller made) either comes first, and the move fails, or finds the block gone; until
        // this call releases it, its memory stays (a freed mapping may be unmapped at once).
        // Released before, its address may even be the new block's: that is no claim to make.
        let claimed =
            if new.as_ptr() as usize == address { Err(Error::NotLive) } else { self.take_for_move(slot, address) };
        let old = match claimed {
            Ok(old) => old,
            Err(e) => {
                let _ = self.free(new.as_ptr() as usize);
                return Err(e);
            }
        };
        let old_size = match &old {
            Moving::Slot(_, size) | Moving::Table(_, Some(size)) => *size,
            // A slot's entry in the table: the size is in the slot's state, CLEANED until released.
            Moving::Table(_, None) => slot.and_then(|slot| slot.live_size()).map_or(0, |(size, _)| size),
        };
        let moved = match old {
            Moving::Table(_, Some(_)) if by_pages => {
                self.blocks.move_pages(address, new.as_ptr() as usize, old_size, new_size)
            }
            _ => None,
        };
        if moved.is_none() {
            // Safety: the old block is this call's (claimed), the new one too; both hold at least
            // min(old, new) bytes, and they are distinct blocks.
            unsafe { std::ptr::copy_nonoverlapping(address as *const u8, new.as_ptr(), old_size.min(new_size)) };
        }
        match old {
            Moving::Slot(slot, size) => self.small.release(slot, size),
            // Its cleaners go to the new block with their handles, then the old one goes.
            Moving::Table(cleaners, _) => {
                // A block of the table takes them without memory: only a slab slot's entry can
                // refuse them, and pages move only between blocks of the table, so a move by
                // pages, which cannot be undone, is never refused here.
                if let Err((e, cleaners)) = self.attach_moved(new.as_ptr() as usize, cleaners) {
                    debug_assert!(moved.is_none(), "a block of the table refused a moved block's cleaners");
                    self.blocks.undo_move(address, cleaners);
                    let _ = self.free(new.as_ptr() as usize);
                    return Err(e);
                }
                match moved {
                    // Its pages are the new block's: only its bytes go back to the quota.
                    Some(Claimed { memory: Some(memory), size, .. }) => {
                        sysmem::forget_moved(memory);
                        self.quota.release(size as u64);
                    }
                    _ => self.release_memory(self.blocks.finish_move(address)),
                }
            }
        }
        Ok(new)
    }

    /// Claims the live block at `address` for a move: a slot without cleaners through the slab,
    /// any other block through the table (its entry kept until the move is done or undone).
    fn take_for_move(&self, slot: Option<small::Slot>, address: usize) -> Result<Moving> {
        if let Some((slot, size)) = claim_slot(slot)? {
            return Ok(Moving::Slot(slot, size));
        }
        let (cleaners, size) = self.blocks.claim_for_move(address)?;
        Ok(Moving::Table(cleaners, size))
    }

    /// Gives a moved block's cleaners to the new block at `to` (see [`Registry::attach_moved`]).
    fn attach_moved(&self, to: usize, cleaners: Cleaners) -> std::result::Result<(), (Error, Cleaners)> {
        match self.small.find(to) {
            None => self.blocks.attach_moved(to, cleaners, || false),
            Some(Ok(slot)) => self.blocks.attach_moved(to, cleaners, || slot.mark_cleaned()),
            Some(Err(e)) => Err((e, cleaners)),
        }
    }

    /// Claims the live block at `address` (`slot`: its slot, if it is in a slab) for release: a
    /// slot without cleaners through the slab, any other block through the table.
    #[inline]
    fn take(&self, slot: Option<small::Slot>, address: usize) -> Result<Taken> {
        if let Some((slot, size)) = claim_slot(slot)? {
            return Ok(Taken::Slot(slot, size));
        }
        self.blocks.claim_by_address(address).map(Taken::Table)
    }

    /// A block of the table resized in place (see [`Registry::resize_in_place`]), the quota charged
    /// the difference first (it may reclaim and wait, so no lock is held) and given back if not.
    fn resize_in_place(&self, address: usize, old_size: usize, new_size: usize) -> Result<bool> {
        let growth = new_size.saturating_sub(old_size) as u64;
        self.quota.reserve(growth)?;
        match self.blocks.resize_in_place(address, old_size, new_size) {
            Ok(true) => {
                self.quota.release(old_size.saturating_sub(new_size) as u64);
                Ok(true)
            }
            other => {
                self.quota.release(growth);
                other
            }
        }
    }

    /// Releases the block a live cleaner is attached to, exactly as [`Manager::free`] does.
    pub fn clean(&self, cleaner: u64) -> Result<()> {
        let claimed = self.blocks.claim_by_cleaner(cleaner)?;
        self.finish_release(claimed);
        Ok(())
    }

    fn finish_release(&self, mut claimed: Claimed) {
        self.blocks.run_actions(std::mem::take(&mut claimed.cleaners));
        self.release_memory(claimed);
    }

    /// Gives a claimed block's memory back (its cleaners ran, or moved to another block).
    fn release_memory(&self, claimed: Claimed) {
        match claimed.memory {
            Some(memory) => {
                sysmem::release(memory);
                // Last: a waiter woken by this finds the memory truly gone from the process.
                self.quota.release(claimed.size as u64);
            }
            None => match self.small.find(claimed.address) {
                Some(Ok(slot)) => self.small.release_cleaned(slot),
                _ => unreachable!("a slot entry in the registry is at a slot's start"),
            },
        }
    }

    pub fn register_cleaner(&self, address: usize, action: Action) -> Result<u64> {
        match self.small.find(address) {
            None => self.blocks.register_cleaner(address, action),
            Some(slot) => {
                let slot = slot?;
                self.blocks.register_slot_cleaner(address, action, || slot.mark_cleaned())
            }
        }
    }

    pub fn reserve(&self, bytes: u64) -> Result<()> {
        self.quota.reserve_raw(bytes)
    }

    pub fn unreserve(&self, bytes: u64) -> Result<()> {
        self.quota.unreserve_raw(bytes)
    }

    pub fn limit(&self) -> u64 {
        self.quota.limit()
    }

    pub fn set_limit(&self, bytes: u64) {
        self.quota.set_limit(bytes)
    }

    pub fn set_reclaim_hook(&self, hook: Option<Hook>) {
        self.quota.set_hook(hook)
    }

    pub fn set_reclaim_timeout_ms(&self, millis: u32) {
        self.quota.set_reclaim_timeout(millis)
    }

    /// Every lock of this manager, in the one order [`crate::manager::fork`] takes them.
    /// An iterator, not a list: `fork` must not need memory.
    pub(crate) fn locks(&self) -> impl Iterator<Item = &crate::sync::RawMutex> + '_ {
        self.quota.locks().into_iter().chain(self.small.locks()).chain(self.blocks.locks())
    }

    /// In a child of fork(), on its only thread: what the parent's other threads were doing at the
    /// fork must not be waited for (their quota credit's bracket, which their heaps' fast paths
    /// share, and their places in the quota's queue).
    pub(crate) fn forget_other_threads_in_child(&self) {
        self.quota.forget_other_threads_in_child();
    }

    /// Bytes that fit under the limit now (0 when reserved is above it); cheaper than [`Manager::stats`].
    pub fn available(&self) -> u64 {
        let q = self.quota.stats();
        q.limit.saturating_sub(q.reserved)
    }

    /// Gives memory kept for reuse back to the system (see `dm_trim`); returns the cached bytes given back.
    pub fn trim(&self) -> u64 {
        sysmem::mappings::global().unmap_all().map_or(0, |given| given.bytes) + self.small.trim()
    }

    /// Gives back the memory kept for reuse whose time is up (empty slabs and written big blocks'
    /// mappings kept over 100 ms), which otherwise waits for the library's next traffic; the JVM
    /// binding calls it about once a second. Returns the bytes given back.
    pub fn decay(&self) -> u64 {
        sysmem::mappings::global().decay() + self.small.decay()
    }

    /// At most once per [`DECAY_MS`], from an allocation off the fast path (a big block; a small
    /// one whose thread needs a new slab or more quota, at least once per 64 KiB allocated in a
    /// row): the freed big blocks' mappings and the pool's empty slabs whose time is up give
    /// their pages back. Their own traffic does that too (a big allocation or free, a thread
    /// taking an empty slab), but a program that went on with small blocks only kept them for
    /// good: 16 freed 1.9 MiB blocks, written whole, stayed 30 MiB of RSS through 12 s of
    /// batches of small blocks (jemalloc's decay gave them back within 12 s; glibc at once).
    /// What threads keep for themselves is not looked at here: that takes visiting the heaps
    /// ([`Manager::decay`]). Costs a read of the coarse clock (~10 ns in this VM) on the path
    /// that takes a new slab or a mapping.
    #[inline]
    fn decay_with_traffic(&self) {
        let now = crate::os::coarse_millis();
        let due = self.next_decay.load(Relaxed);
        if now >= due && self.next_decay.compare_exchange(due, now + DECAY_MS, Relaxed, Relaxed).is_ok() {
            self.decay_kept_past_time();
        }
    }

    #[cold]
    #[inline(never)]
    fn decay_kept_past_time(&self) {
        sysmem::mappings::global().decay();
        self.small.decay_pool();
    }

    pub fn stats(&self) -> Stats {
        let q = self.quota.stats();
        let b = self.blocks.stats();
        let s = self.small.stats();
        Stats {
            limit: q.limit,
            reserved: q.reserved,
            capacity: b.capacity + s.capacity,
            count: b.count + s.count,
            peak_reserved: q.peak_reserved,
            total_allocations: b.total_allocations + s.total_allocations,
            live_cleaners: b.live_cleaners,
            cleaners_run: b.cleaners_run,
            reclaim_requests: q.reclaim_requests,
            limit_failures: q.limit_failures,
            occupied: b.occupied + s.occupied,
            cached: self.small.cached_bytes() + sysmem::mappings::global().dirty_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn allocate_then_free_leaves_exact_zero_stats() {
        let m = Manager::new(1 << 30);
        let a = m.allocate(1000, 0).unwrap();
        let b = m.allocate(1 << 20, 4096).unwrap();
        let s = m.stats();
        assert_eq!((s.reserved, s.capacity, s.count), (1000 + (1 << 20), 1000 + (1 << 20), 2));
        m.free(a.as_ptr() as usize).unwrap();
        m.free(b.as_ptr() as usize).unwrap();
        let s = m.stats();
        assert_eq!((s.reserved, s.capacity, s.count, s.total_allocations), (0, 0, 0, 2));
        assert_eq!(s.peak_reserved, 1000 + (1 << 20));
    }

    #[test]
    fn overflow_is_refused_before_the_limit_is_consulted() {
        let m = Manager::new(0);
        assert_eq!(m.allocate(usize::MAX, 0), Err(Error::InvalidArgument));
        assert_eq!(m.stats().limit_failures, 0);
        assert_eq!(m.allocate(1, 0), Err(Error::Limit));
        assert_eq!(m.stats().limit_failures, 1);
    }

    #[test]
    fn a_resize_to_a_size_that_overflows_is_refused_as_such_whatever_the_block() {
        // Small, medium, a mapping: each under a limit it fits, each resized to sizes no block
        // can have. (A mapping's in-place growth asked the quota first: DM_ERR_LIMIT, counted.)
        let m = Manager::new(64 << 20);
        for size in [64, 5000, 100_000, 200_000, 4 << 20] {
            let p = m.allocate(size, 0).unwrap().as_ptr() as usize;
            for new_size in [usize::MAX, usize::MAX - 4096, isize::MAX as usize] {
                assert_eq!(m.reallocate(p, new_size), Err(Error::InvalidArgument), "{size} -> {new_size}");
            }
            let s = m.stats();
            assert_eq!((s.reserved, s.count, s.limit_failures), (size as u64, 1, 0), "{size}: nothing changed");
            assert_eq!(m.block_size(p), Ok(size));
            m.free(p).unwrap();
        }
    }

    #[test]
    fn a_failed_system_allocation_rolls_the_reservation_back() {
        let m = Manager::new(u64::MAX);
        // Far more than any machine can map: the reservation passes, mmap refuses.
        assert_eq!(m.allocate(isize::MAX as usize - (1 << 31), 0), Err(Error::NoMemory));
        assert_eq!(m.stats().reserved, 0);
        m.allocate(10, 0).map(|p| m.free(p.as_ptr() as usize)).unwrap().unwrap();
    }

    #[test]
    fn zero_size_blocks_are_distinct_live_and_free() {
        let m = Manager::new(0);
        let a = m.allocate(0, 0).unwrap();
        let b = m.allocate(0, 0).unwrap();
        assert_ne!(a, b);
        assert_eq!(m.stats().count, 2);
        assert_eq!(m.stats().reserved, 0);
        m.free(a.as_ptr() as usize).unwrap();
        m.free(b.as_ptr() as usize).unwrap();
        assert_eq!(m.free(b.as_ptr() as usize), Err(Error::NotLive));
    }

    #[test]
    fn reallocate_keeps_the_bytes_zeroes_the_rest_and_charges_the_new_size() {
        let m = Manager::new(1 << 30);
        for (from, to) in [(10, 5000), (5000, 10), (100, 300_000), (300_000, 64), (0, 16), (64, 64)] {
            let p = m.allocate(from, 0).unwrap().as_ptr();
            // Safety: `p` is a live block of `from` bytes.
            unsafe { std::ptr::write_bytes(p, 0x5a, from) };
            let q = m.reallocate(p as usize, to).unwrap().as_ptr();
            // Safety: `q` is a live block of `to` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(q, to) };
            assert!(bytes[..from.min(to)].iter().all(|&b| b == 0x5a), "{from} -> {to}: copied");
            assert!(bytes[from.min(to)..].iter().all(|&b| b == 0), "{from} -> {to}: zeroed");
            assert_eq!(m.block_size(q as usize), Ok(to));
            assert_eq!((m.stats().count, m.stats().reserved), (1, to as u64));
            assert!(m.block_size(p as usize).is_err() || p == q, "the old block is gone");
            m.free(q as usize).unwrap();
        }
    }

    /// Page faults this thread took so far (minor: pages mapped in without reading a disk).
    fn minor_faults() -> i64 {
        // Safety: getrusage writes the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) }, 0);
        usage.ru_minflt
    }

    #[test]
    fn a_mapped_block_moves_by_its_pages_not_by_copying_them() {
        let m = Manager::new(1 << 30);
        let pattern = |i: usize| (i * 7 + 3) as u8;
        let size = 1 << 20;
        let p = m.allocate(size, 0).unwrap().as_ptr();
        // Safety (throughout): live blocks of the sizes given.
        unsafe { std::slice::from_raw_parts_mut(p, size) }.iter_mut().enumerate().for_each(|(i, b)| *b = pattern(i));
        // A page of our own right after its mapping (unless something is there already), so that
        // it cannot grow where it lies: it moves.
        let after = p as usize + size;
        let page = crate::os::page_size();
        // Safety: MAP_FIXED_NOREPLACE maps only where nothing is mapped.
        let guard = unsafe {
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
            libc::mmap(after as *mut libc::c_void, page, libc::PROT_NONE, flags, -1, 0)
        };
        // 1.9 MiB: no huge page can back the new mapping and hide a copy's faults.
        let grown = 1900 << 10;
        let faults = minor_faults();
        let q = m.reallocate(p as usize, grown).unwrap().as_ptr();
        let faulted = minor_faults() - faults;
        if guard != libc::MAP_FAILED {
            // Safety: the page mapped above, ours (elsewhere on kernels before 4.17, which take
            // MAP_FIXED_NOREPLACE for a hint).
            unsafe { libc::munmap(guard, page) };
        }
        assert!(q != p || guard as usize != after, "grew where its addresses were taken");
        assert!(faulted < 64, "{faulted} pages faulted in: the {size} bytes were copied");
        let bytes = unsafe { std::slice::from_raw_parts(q, grown) };
        assert!(bytes[..size].iter().enumerate().all(|(i, &b)| b == pattern(i)));
        assert!(bytes[size..].iter().all(|&b| b == 0));
        assert_eq!((m.stats().count, m.stats().reserved), (1, grown as u64));
        // And up to 48 MiB (in place where the addresses after it are free, else moved).
        let bigger = 48 << 20;
        let r = m.reallocate(q as usize, bigger).unwrap().as_ptr();
        let bytes = unsafe { std::slice::from_raw_parts(r, bigger) };
        assert!(bytes[..size].iter().enumerate().all(|(i, &b)| b == pattern(i)));
        assert!(bytes[size..].iter().all(|&b| b == 0));
        assert_eq!((m.stats().count, m.stats().reserved), (1, bigger as u64));
        m.free(r as usize).unwrap();
        assert_eq!((m.stats().count, m.stats().reserved), (0, 0));
    }

    #[test]
    fn a_mapped_block_that_doubles_moves_by_its_pages_when_no_kept_mapping_fits() {
        let m = Manager::new(1 << 30);
        // 30 MiB: no other test here leaves a kept mapping of 60-90 MiB (one would take the copy,
        // its pages maybe in memory).
        let size = 30 << 20;
        let p = m.allocate(size, 0).unwrap().as_ptr();
        // Safety (throughout): live blocks of the sizes given.
        unsafe { std::ptr::write_bytes(p, 0x3c, size) };
        // Doubled where it cannot grow in place (the addresses after a mapping are usually an
        // older one's): copied into a new mapping, its 7,680 pages would all be faulted in.
        let faults = minor_faults();
        let q = m.reallocate(p as usize, 2 * size).unwrap().as_ptr();
        let faulted = minor_faults() - faults;
        assert!(faulted < 64, "{faulted} pages faulted in: the {size} bytes were copied into fresh pages");
        let bytes = unsafe { std::slice::from_raw_parts(q, 2 * size) };
        assert!(bytes[..size].iter().all(|&b| b == 0x3c) && bytes[size..].iter().all(|&b| b == 0));
        m.free(q as usize).unwrap();
    }

    #[test]
    fn a_small_block_resized_within_its_class_stays_in_place_and_comes_back_zeroed() {
        let m = Manager::new(1 << 30);
        let p = m.allocate(100, 0).unwrap().as_ptr();
        // Safety: `p` is a live block of 100 bytes.
        unsafe { std::ptr::write_bytes(p, 0x77, 100) };
        let q = m.reallocate(p as usize, 97).unwrap().as_ptr(); // same 112-byte class: shrinks in place
        assert_eq!(q, p);
        assert_eq!((m.block_size(p as usize), m.stats().reserved, m.stats().capacity), (Ok(97), 97, 97));
        let r = m.reallocate(p as usize, 112).unwrap().as_ptr(); // grows in place
        assert_eq!(r, p);
        // Safety: `r` is a live block of 112 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(r, 112) };
        assert!(
            bytes[..97].iter().all(|&b| b == 0x77) && bytes[97..].iter().all(|&b| b == 0),
            "the bytes cut off came back zeroed"
        );
        assert_eq!((m.stats().reserved, m.stats().capacity), (112, 112));
        let s = m.reallocate(p as usize, 113).unwrap().as_ptr(); // the next class: moves
        assert_ne!(s, p);
        m.free(s as usize).unwrap();
        assert_eq!((m.stats().count, m.stats().reserved, m.stats().capacity), (0, 0, 0));
    }

    #[test]
    fn a_refused_reallocate_leaves_the_block_as_it_was() {
        let m = Manager::new(10_000);
        let p = m.allocate(6000, 0).unwrap().as_ptr() as usize;
        assert_eq!(m.reallocate(p, 9000), Err(Error::Limit)); // moves (another class): 6000 + 9000 do not fit
        assert_eq!(m.block_size(p), Ok(6000));
        assert_eq!(m.reallocate(p + 16, 10), Err(Error::NotLive));
        m.free(p).unwrap();
        assert_eq!(m.block_size(p), Err(Error::NotLive));
        assert_eq!((m.stats().count, m.stats().reserved), (0, 0));
    }

    #[test]
    fn a_mapped_block_resizes_in_place_within_its_mapping_or_by_growing_it() {
        let m = Manager::new(1 << 30);
        let fill = |p: usize, n: usize| unsafe { std::ptr::write_bytes(p as *mut u8, 0x6b, n) };
        // Safety (both closures): called on live blocks of at least `n` bytes.
        let check = |p: usize, kept: usize, n: usize| {
            let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, n) };
            assert!(bytes[..kept].iter().all(|&b| b == 0x6b), "kept");
            assert!(bytes[kept..].iter().all(|&b| b == 0), "zeroed");
        };
        let p = m.allocate(200_000, 0).unwrap().as_ptr() as usize; // a mapping of 49 pages
        fill(p, 200_000);
        assert_eq!(m.reallocate(p, 200_500).unwrap().as_ptr() as usize, p, "grows within its mapping");
        check(p, 200_000, 200_500);
        assert_eq!(m.reallocate(p, 140_000).unwrap().as_ptr() as usize, p, "shrinks in place");
        // Its mapping cut to its 35 pages: the 14 after them went back.
        assert_eq!((m.stats().reserved, m.stats().capacity, m.stats().occupied), (140_000, 140_000, 143_360));
        let q = m.reallocate(p, 180_000).unwrap().as_ptr() as usize;
        check(q, 140_000, 180_000); // grows back where it lies, or moves: the bytes cut off read zero
        let r = m.reallocate(q, 135_000).unwrap().as_ptr() as usize;
        assert_eq!((r, m.stats().occupied), (q, 135_168), "shrinks in place, its mapping cut to 33 pages");
        check(r, 135_000, 135_000);
        let t = m.reallocate(r, 40_000).unwrap().as_ptr() as usize;
        assert_ne!(t, r, "under the mapping threshold: moved to the heap");
        check(t, 40_000, 40_000);
        m.free(t).unwrap();
        // Growing past the mapping: in place when the addresses after it are free, else moved.
        let big = m.allocate(1 << 20, 0).unwrap().as_ptr() as usize;
        fill(big, 1 << 20);
        let grown = m.reallocate(big, 3 << 20).unwrap().as_ptr() as usize;
        check(grown, 1 << 20, 3 << 20);
        assert_eq!((m.stats().count, m.stats().reserved), (1, 3 << 20));
        m.free(grown).unwrap();
        assert_eq!((m.stats().count, m.stats().reserved, m.stats().occupied), (0, 0, 0));
    }

    #[test]
    fn cleaners_follow_a_moved_block_with_their_handles() {
        use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
        use std::sync::Arc;
        let m = Manager::new(1 << 30);
        // Small -> small (another class), small -> big, big -> big, big -> small.
        for sizes in [[64, 1000], [100, 50_000], [20_000, 300_000], [200_000, 10]] {
            let ran = Arc::new(AtomicU32::new(0));
            let counter = |ran: &Arc<AtomicU32>| -> Action {
                let ran = ran.clone();
                Box::new(move || {
                    ran.fetch_add(1, SeqCst);
                })
            };
            let p = m.allocate(sizes[0], 0).unwrap().as_ptr() as usize;
            // Safety: a live block of sizes[0] bytes.
            unsafe { std::ptr::write_bytes(p as *mut u8, 0x3c, sizes[0]) };
            let h1 = m.register_cleaner(p, counter(&ran)).unwrap();
            let h2 = m.register_cleaner(p, counter(&ran)).unwrap();
            let q = m.reallocate(p, sizes[1]).unwrap().as_ptr() as usize;
            assert_ne!(q, p, "{sizes:?}: moved");
            assert_eq!(ran.load(SeqCst), 0, "{sizes:?}: the cleaners did not run on the move");
            assert_eq!(m.block_size(p), Err(Error::NotLive));
            // Safety: a live block of sizes[1] bytes.
            let bytes = unsafe { std::slice::from_raw_parts(q as *const u8, sizes[1]) };
            let kept = sizes[0].min(sizes[1]);
            assert!(bytes[..kept].iter().all(|&b| b == 0x3c) && bytes[kept..].iter().all(|&b| b == 0));
            let s = m.stats();
            assert_eq!((s.count, s.capacity, s.live_cleaners), (1, sizes[1] as u64, 2), "{sizes:?}");
            // The old address handed out again does not catch the handles.
            let reused = m.allocate(sizes[0], 0).unwrap().as_ptr() as usize;
            m.clean(h2).unwrap();
            assert_eq!(ran.load(SeqCst), 2, "{sizes:?}: both cleaners ran once, with the moved block");
            assert_eq!(m.clean(h1), Err(Error::NotLive));
            assert_eq!(m.block_size(q), Err(Error::NotLive));
            assert_eq!(m.block_size(reused), Ok(sizes[0]), "{sizes:?}: the block at the old address lives on");
            m.free(reused).unwrap();
            let s = m.stats();
            assert_eq!((s.count, s.reserved, s.live_cleaners), (0, 0, 0), "{sizes:?}");
        }
    }

    static RAN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    fn count() -> Action {
        Box::new(|| {
            RAN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
    }

    #[test]
    fn small_blocks_with_cleaners_are_released_once_by_free_or_clean() {
        let m = Manager::new(1 << 30);
        let a = m.allocate(64, 0).unwrap().as_ptr() as usize;
        let b = m.allocate(64, 0).unwrap().as_ptr() as usize;
        let ha = m.register_cleaner(a, count()).unwrap();
        m.register_cleaner(a, count()).unwrap();
        let hb = m.register_cleaner(b, count()).unwrap();
        assert_eq!(m.register_cleaner(a + 16, count()), Err(Error::NotLive));
        m.free(a).unwrap();
        assert_eq!(RAN.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(m.clean(ha), Err(Error::NotLive));
        assert_eq!(m.free(a), Err(Error::NotLive));
        m.clean(hb).unwrap();
        assert_eq!(m.free(b), Err(Error::NotLive));
        assert_eq!(RAN.load(std::sync::atomic::Ordering::SeqCst), 3);
        let s = m.stats();
        assert_eq!((s.reserved, s.capacity, s.count, s.live_cleaners, s.cleaners_run), (0, 0, 0, 0, 3));
        // The slot is reusable, with no cleaner attached.
        let c = m.allocate(64, 0).unwrap().as_ptr() as usize;
        m.free(c).unwrap();
        assert_eq!(RAN.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
