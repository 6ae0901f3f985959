//! The table of live blocks and their cleaners (`jdk.internal.ref.Cleaner` + `Deallocator`).
//!
//! Every block the library hands out is recorded here under its start address, so a pointer
//! that is not the start of a live block is recognised and refused instead of crashing.
//! Releasing a block — through its address or through any of its cleaners — first *claims* it:
//! the record is removed from the table under the shard lock, so exactly one caller wins and
//! every later or concurrent attempt finds nothing (`NotLive`). The winner runs the cleaner
//! actions and frees the memory with no lock held, so actions may call back into the library.
//!
//! Small blocks live in slabs (`allocators::small`) and are not recorded here, until a cleaner is
//! registered on one: then it gets an entry without memory (the slab keeps the memory and the
//! counts), so that its cleaners are found and claimed exactly like any block's.
//!
//! The table is split into shards by address so that threads rarely meet on a lock. Cleaner
//! handles come from a process-wide counter, so they are never 0 and never reused; a second
//! table, sharded by handle, says where each live cleaner's block is now. A block that moves
//! (`dm_reallocate`) takes its cleaners along: same handles, new address. A stale handle (its
//! block released, the address handed out again) finds nothing rather than the new block, since
//! the block found must also list the handle. Lock order: a block shard, then a handle shard.
//!
//! Memory for the table itself is taken fallibly, before anything changes: an insert or a
//! registration the system has no memory for is refused (`NoMemory`) with nothing changed, and a
//! move keeps the old block's entry, marked moving (not live to anyone else), until the new one
//! holds the cleaners, so that a refusal there can put everything back as it was.

use crate::allocators::system::{self as sysmem, Memory};
use crate::fallible;
use crate::sync::Mutex;
use crate::{Error, Result};
use rustc_hash::{FxBuildHasher, FxHashMap};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// What a cleaner does when its block is released, run once on the releasing thread with no lock
/// held. The doors make it: `ffi` from a C function pointer and its context.
pub type Action = Box<dyn FnOnce() + Send>;

/// A block's cleaners: (handle, action) in registration order.
pub type Cleaners = Vec<(u64, Action)>;

struct Block {
    /// None: a slab slot with cleaners (counted by its slab, not here).
    memory: Option<Memory>,
    size: usize,
    /// (handle, action) in registration order.
    cleaners: Cleaners,
    /// What `memory` takes from the system, computed once (for the heap it is a libc call).
    footprint: usize,
    /// Claimed by a move that has not finished: not live to anyone else (see [`Registry::claim_for_move`]).
    moving: bool,
}

impl Block {
    fn slot_entry(cleaners: Cleaners) -> Block {
        Block { memory: None, size: 0, cleaners, footprint: 0, moving: false }
    }
}

struct Shard {
    blocks: FxHashMap<usize, Block>,
    count: u64,
    capacity: u64,
    occupied: u64,
    total_allocations: u64,
}

impl Shard {
    const EMPTY: Shard = Shard {
        blocks: FxHashMap::with_hasher(FxBuildHasher),
        count: 0,
        capacity: 0,
        occupied: 0,
        total_allocations: 0,
    };
}

impl Shard {
    /// The live block at `address` (a block being moved away is not).
    fn live(&mut self, address: usize) -> Option<&mut Block> {
        self.blocks.get_mut(&address).filter(|block| !block.moving)
    }

    /// Room for one more entry, or `NoMemory`.
    fn reserve_entry(&mut self) -> Result<()> {
        self.blocks.try_reserve(1).map_err(|_| Error::NoMemory)
    }

    /// Takes the entry at `address` out, and its block out of the counts.
    fn remove(&mut self, address: usize) -> Option<Block> {
        let block = self.blocks.remove(&address)?;
        if block.memory.is_some() {
            self.count -= 1;
            self.capacity -= block.size as u64;
            self.occupied -= block.footprint as u64;
        }
        Some(block)
    }
}

/// A block taken out of the table by the one caller allowed to release it.
pub struct Claimed {
    pub address: usize,
    /// None: a slab slot; the caller finishes its release through the slab.
    pub memory: Option<Memory>,
    pub size: usize,
    /// Its cleaners, (handle, action) in registration order.
    pub cleaners: Cleaners,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    pub capacity: u64,
    /// Bytes the live blocks take from the system.
    pub occupied: u64,
    pub count: u64,
    pub total_allocations: u64,
    pub live_cleaners: u64,
    pub cleaners_run: u64,
}

/// Made without memory from the system (its shards are arrays, their maps empty until used), so
/// that the process-wide manager's making needs none beyond its own two parts; and at compile
/// time, so that the process-wide one is a static and not a 7 KiB value moved through the stack of
/// the thread that first calls the library (a thread with a 16 KiB stack, `PTHREAD_STACK_MIN`,
/// crashed there).
pub struct Registry {
    shards: [Mutex<Shard>; SHARDS],
    /// Sharded by handle: live cleaner handle -> start address of its block.
    handles: [Mutex<FxHashMap<u64, usize>>; SHARDS],
    next_cleaner: AtomicU64,
    live_cleaners: AtomicU64,
    cleaners_run: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub const fn new() -> Registry {
        Registry {
            shards: [const { Mutex::new(Shard::EMPTY) }; SHARDS],
            handles: [const { Mutex::new(FxHashMap::with_hasher(FxBuildHasher)) }; SHARDS],
            next_cleaner: AtomicU64::new(1),
            live_cleaners: AtomicU64::new(0),
            cleaners_run: AtomicU64::new(0),
        }
    }
}

fn shard_of(address: usize) -> usize {
    // Blocks are at least 16-byte aligned: drop the always-zero bits, then mix (Fibonacci hashing).
    ((address >> 4) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize >> (usize::BITS - SHARD_BITS)
}

impl Registry {
    /// The shard locks, for [`crate::manager::fork`], in the order they nest: block shards, then
    /// handle shards (no block shard is taken while a handle shard is held).
    pub(crate) fn locks(&self) -> impl Iterator<Item = &crate::sync::RawMutex> + '_ {
        // Safety: the raw locks are only locked and unlocked as a whole by `fork`'s handlers.
        let blocks = self.shards.iter().map(|m| unsafe { m.raw() });
        blocks.chain(self.handles.iter().map(|m| unsafe { m.raw() }))
    }

    fn handle_shard(&self, handle: u64) -> &Mutex<FxHashMap<u64, usize>> {
        &self.handles[(handle & (SHARDS as u64 - 1)) as usize]
    }

    /// Records a freshly allocated block; gives the memory back (`Err`) when the table has no
    /// memory for its entry (nothing changed).
    pub fn insert(&self, memory: Memory, size: usize) -> std::result::Result<(), Memory> {
        let address = memory.ptr.as_ptr() as usize;
        let footprint = memory.footprint(); // before the lock: for heap memory a libc call
        let mut shard = self.shards[shard_of(address)].lock();
        if shard.reserve_entry().is_err() {
            return Err(memory);
        }
        shard.count += 1;
        shard.capacity += size as u64;
        shard.occupied += footprint as u64;
        shard.total_allocations += 1;
        let block = Block { memory: Some(memory), size, cleaners: Vec::new(), footprint, moving: false };
        let previous = shard.blocks.insert(address, block);
        // The system allocator cannot hand out a live address twice, unless the program freed one
        // of our blocks behind our back with free(): undefined behaviour we cannot undo.
        debug_assert!(previous.is_none(), "address {address:#x} handed out twice");
        Ok(())
    }

    /// Attaches a cleaner to the live block starting at `address`.
    pub fn register_cleaner(&self, address: usize, action: Action) -> Result<u64> {
        self.register(address, action, || false)
    }

    /// Attaches a cleaner to the slab slot at `address`. Its first cleaner makes an entry, if
    /// `hand_over` (run under the shard lock) hands the slot's release over to the table.
    pub fn register_slot_cleaner(
        &self,
        address: usize,
        action: Action,
        hand_over: impl FnOnce() -> bool,
    ) -> Result<u64> {
        self.register(address, action, hand_over)
    }

    /// Attaches a new cleaner; on any failure nothing changed (the action is dropped unrun).
    fn register(&self, address: usize, action: Action, hand_over: impl FnOnce() -> bool) -> Result<u64> {
        let handle = self.next_cleaner.fetch_add(1, SeqCst);
        let mut shard = self.shards[shard_of(address)].lock();
        let shard = &mut *shard;
        // What takes memory first: the room in the block's list (or for its entry), the handle's.
        let mut list = Vec::new();
        match shard.blocks.get_mut(&address) {
            Some(block) if block.moving => return Err(Error::NotLive),
            Some(block) => fallible::reserve(&mut block.cleaners, 1)?,
            None => {
                shard.reserve_entry()?;
                fallible::reserve(&mut list, 1)?;
            }
        }
        {
            let mut handles = self.handle_shard(handle).lock();
            handles.try_reserve(1).map_err(|_| Error::NoMemory)?;
            handles.insert(handle, address);
        }
        let block = match shard.blocks.get_mut(&address) {
            Some(block) => block,
            None if hand_over() => shard.blocks.entry(address).or_insert(Block::slot_entry(list)),
            None => {
                self.handle_shard(handle).lock().remove(&handle);
                return Err(Error::NotLive);
            }
        };
        block.cleaners.push((handle, action));
        self.live_cleaners.fetch_add(1, SeqCst);
        Ok(handle)
    }

    /// Gives the cleaners a move took out of the block at `from` ([`Registry::claim_for_move`]) to
    /// the live block at `to`, a new block no one else knows yet: its entry (made now for a slab
    /// slot, if `hand_over` hands its release over) takes them with their handles. On failure
    /// (`NoMemory` for a slot's entry, `NotLive`) nothing changed: the caller puts them back.
    pub fn attach_moved(
        &self,
        to: usize,
        cleaners: Cleaners,
        hand_over: impl FnOnce() -> bool,
    ) -> std::result::Result<(), (Error, Cleaners)> {
        if cleaners.is_empty() {
            return Ok(());
        }
        let mut shard = self.shards[shard_of(to)].lock();
        let shard = &mut *shard;
        match shard.live(to) {
            // A fresh block's list is empty: it takes the list whole, with no memory to take.
            Some(block) => {
                debug_assert!(block.cleaners.is_empty(), "a new block already has cleaners");
                block.cleaners = cleaners;
            }
            None => {
                if let Err(e) = shard.reserve_entry() {
                    return Err((e, cleaners));
                }
                if !hand_over() {
                    return Err((Error::NotLive, cleaners));
                }
                shard.blocks.insert(to, Block::slot_entry(cleaners));
            }
        }
        for (handle, _) in &shard.blocks[&to].cleaners {
            self.repoint(*handle, to);
        }
        Ok(())
    }

    /// Points a live cleaner's handle at the block at `address` (it has an entry: no memory taken).
    fn repoint(&self, handle: u64, address: usize) {
        if let Some(at) = self.handle_shard(handle).lock().get_mut(&handle) {
            *at = address;
        }
    }

    /// The size of the live block starting at `address`, and whether it has cleaners.
    pub fn size_of(&self, address: usize) -> Result<(usize, bool)> {
        let mut shard = self.shards[shard_of(address)].lock();
        let block = shard.live(address).ok_or(Error::NotLive)?;
        Ok((block.size, !block.cleaners.is_empty()))
    }

    /// Resizes the live block at `address`, of `old_size` bytes, to `new_size` in place if its
    /// memory allows ([`Memory::resize_in_place`]); its counts follow. `Ok(false)`: not in place
    /// (a slab slot's entry, heap memory, no room, or the block changed meanwhile); nothing changed.
    pub fn resize_in_place(&self, address: usize, old_size: usize, new_size: usize) -> Result<bool> {
        let mut shard = self.shards[shard_of(address)].lock();
        let shard = &mut *shard;
        let block = shard.blocks.get_mut(&address).filter(|block| !block.moving).ok_or(Error::NotLive)?;
        let Some(memory) = block.memory.as_mut().filter(|_| block.size == old_size) else { return Ok(false) };
        if !memory.resize_in_place(old_size, new_size) {
            return Ok(false);
        }
        let footprint = memory.footprint();
        shard.capacity = shard.capacity - old_size as u64 + new_size as u64;
        shard.occupied = shard.occupied - block.footprint as u64 + footprint as u64;
        (block.size, block.footprint) = (new_size, footprint);
        Ok(true)
    }

    /// Takes the live block starting at `address` out of the table.
    pub fn claim_by_address(&self, address: usize) -> Result<Claimed> {
        let mut shard = self.shards[shard_of(address)].lock();
        self.claim(&mut shard, address)
    }

    /// Takes the block of a live cleaner out of the table.
    pub fn claim_by_cleaner(&self, handle: u64) -> Result<Claimed> {
        let address = *self.handle_shard(handle).lock().get(&handle).ok_or(Error::NotLive)?;
        let mut shard = self.shards[shard_of(address)].lock();
        // Between the two locks the block may have been released (and the address reused): only
        // a block that still lists the handle is its block.
        match shard.live(address) {
            Some(block) if block.cleaners.iter().any(|(h, _)| *h == handle) => self.claim(&mut shard, address),
            _ => Err(Error::NotLive),
        }
    }

    /// Claims the live block at `address` for a move: its entry stays, marked moving (not live to
    /// anyone else), and its cleaners are handed out with their handles still pointing here.
    /// Then either [`Registry::finish_move`] (the cleaners are on the new block) or
    /// [`Registry::undo_move`].
    /// Also returns the block's size if it has memory of its own (None: a slab slot's entry).
    pub fn claim_for_move(&self, address: usize) -> Result<(Cleaners, Option<usize>)> {
        let mut shard = self.shards[shard_of(address)].lock();
        let block = shard.live(address).ok_or(Error::NotLive)?;
        block.moving = true;
        Ok((std::mem::take(&mut block.cleaners), block.memory.as_ref().map(|_| block.size)))
    }

    /// Moves the pages of the block at `from`, claimed for a move ([`Registry::claim_for_move`]),
    /// of `old_size` bytes, into the mapping of the new block at `to`, of `new_size` bytes, which
    /// no one else knows yet (see [`sysmem::move_pages`]), and ends the move as
    /// [`Registry::finish_move`] does: `from`'s entry goes, in the same hold of its shard's lock.
    /// (Its addresses are free from the moment the pages left: a mapping made meanwhile may get
    /// them, and its block's entry must not find the old one still there.) Returns what the entry
    /// held: its memory is gone, never to be released ([`sysmem::forget_moved`]). None: nothing
    /// changed.
    pub fn move_pages(&self, from: usize, to: usize, old_size: usize, new_size: usize) -> Option<Claimed> {
        // Both shards at once when they differ, the lower first (no other path holds two).
        let (a, b) = (shard_of(from), shard_of(to));
        let mut low = self.shards[a.min(b)].lock();
        let mut high = (a != b).then(|| self.shards[a.max(b)].lock());
        fn pick<'s>(low: &'s mut Shard, high: Option<&'s mut Shard>, upper: bool) -> &'s mut Shard {
            match high {
                Some(high) if upper => high,
                _ => low,
            }
        }
        let block = pick(&mut low, high.as_deref_mut(), a > b).blocks.get(&from);
        let mapping = block.filter(|block| block.moving && block.size == old_size)?.memory.as_ref()?.mapping()?;
        let memory = pick(&mut low, high.as_deref_mut(), b > a).live(to)?.memory.as_mut()?;
        if !sysmem::move_pages(mapping, old_size, memory, new_size) {
            return None;
        }
        let block = pick(&mut low, high.as_deref_mut(), a > b).remove(from)?;
        Some(Claimed { address: from, memory: block.memory, size: block.size, cleaners: Vec::new() })
    }

    /// The move of the block at `address` is off: it is live again, with `cleaners` (no memory
    /// taken: its list was emptied into them).
    pub fn undo_move(&self, address: usize, cleaners: Cleaners) {
        let mut shard = self.shards[shard_of(address)].lock();
        if let Some(block) = shard.blocks.get_mut(&address) {
            block.cleaners = cleaners;
            block.moving = false;
        }
    }

    /// The move of the block at `address` is done (its cleaners went with it): its entry goes.
    pub fn finish_move(&self, address: usize) -> Claimed {
        let mut shard = self.shards[shard_of(address)].lock();
        let block = shard.remove(address).expect("a block being moved keeps its entry until the move ends");
        Claimed { address, memory: block.memory, size: block.size, cleaners: Vec::new() }
    }

    fn claim(&self, shard: &mut Shard, address: usize) -> Result<Claimed> {
        if shard.live(address).is_none() {
            return Err(Error::NotLive);
        }
        let block = shard.remove(address).ok_or(Error::NotLive)?;
        if !block.cleaners.is_empty() {
            for (handle, _) in &block.cleaners {
                self.handle_shard(*handle).lock().remove(handle);
            }
            self.live_cleaners.fetch_sub(block.cleaners.len() as u64, SeqCst);
        }
        Ok(Claimed { address, memory: block.memory, size: block.size, cleaners: block.cleaners })
    }

    /// Runs a claimed block's cleaner actions, in registration order, with no lock held. The claim
    /// made this caller their only owner: each runs once.
    pub fn run_actions(&self, cleaners: Cleaners) {
        for (_, action) in cleaners {
            action();
            self.cleaners_run.fetch_add(1, SeqCst);
        }
    }

    pub fn stats(&self) -> RegistryStats {
        let mut stats = RegistryStats {
            live_cleaners: self.live_cleaners.load(SeqCst),
            cleaners_run: self.cleaners_run.load(SeqCst),
            ..RegistryStats::default()
        };
        for shard in self.shards.iter() {
            let shard = shard.lock();
            stats.capacity += shard.capacity;
            stats.occupied += shard.occupied;
            stats.count += shard.count;
            stats.total_allocations += shard.total_allocations;
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocators::system as sysmem;

    fn block(registry: &Registry, size: usize) -> usize {
        let memory = sysmem::allocate_zeroed(size, 16).unwrap();
        let address = memory.ptr.as_ptr() as usize;
        assert!(registry.insert(memory, size).is_ok());
        address
    }

    fn release(claimed: Claimed) {
        sysmem::release(claimed.memory.unwrap());
    }

    fn no_action() -> Action {
        Box::new(|| {})
    }

    #[test]
    fn a_block_is_claimed_once_by_address_or_by_cleaner() {
        let r = Registry::new();
        let a = block(&r, 100);
        let c1 = r.register_cleaner(a, no_action()).unwrap();
        let c2 = r.register_cleaner(a, no_action()).unwrap();
        assert_ne!(c1, c2);
        assert_ne!(c1, 0);
        let claimed = r.claim_by_cleaner(c2).unwrap();
        assert_eq!((claimed.size, claimed.cleaners.len()), (100, 2));
        assert!(matches!(r.claim_by_address(a), Err(Error::NotLive)));
        assert!(matches!(r.claim_by_cleaner(c1), Err(Error::NotLive)));
        release(claimed);
        assert_eq!(r.stats(), RegistryStats { total_allocations: 1, ..Default::default() });
    }

    #[test]
    fn interior_and_foreign_addresses_are_not_live() {
        let r = Registry::new();
        let a = block(&r, 64);
        assert!(matches!(r.claim_by_address(a + 1), Err(Error::NotLive)));
        assert!(matches!(r.register_cleaner(a + 16, no_action()), Err(Error::NotLive)));
        assert!(matches!(r.claim_by_cleaner(0), Err(Error::NotLive)));
        assert_eq!(r.stats().count, 1);
        release(r.claim_by_address(a).unwrap());
    }

    #[test]
    fn a_stale_handle_never_reaches_a_block_that_reused_the_address() {
        let r = Registry::new();
        let a = block(&r, 64);
        let stale = r.register_cleaner(a, no_action()).unwrap();
        let claimed = r.claim_by_address(a).unwrap();
        // Put a new block at the very same address.
        assert!(r.insert(claimed.memory.unwrap(), 32).is_ok());
        let fresh = r.register_cleaner(a, no_action()).unwrap();
        assert!(matches!(r.claim_by_cleaner(stale), Err(Error::NotLive)));
        assert_eq!(r.stats().count, 1);
        release(r.claim_by_cleaner(fresh).unwrap());
    }

    #[test]
    fn stats_follow_inserts_and_claims_across_shards() {
        let r = Registry::new();
        let addresses: Vec<_> = (1..=200).map(|i| block(&r, i)).collect();
        let s = r.stats();
        assert_eq!((s.count, s.capacity, s.total_allocations), (200, 200 * 201 / 2, 200));
        for a in addresses {
            release(r.claim_by_address(a).unwrap());
        }
        let s = r.stats();
        assert_eq!((s.count, s.capacity, s.total_allocations), (0, 0, 200));
    }
}
