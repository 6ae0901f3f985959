//! Zeroed, aligned memory from the system.
//!
//! Blocks under [`MAP_THRESHOLD`] that slabs cannot serve (aligned above 64 KiB, or for a thread
//! that is ending) come from the C heap (`calloc`, or `posix_memalign` + `memset` above
//! `max_align_t`). From there on (or aligned to
//! that much) a block is an anonymous mapping of its own: fresh pages come zeroed from the
//! kernel, so allocation costs the same at 1 MiB as at 1 GiB, where the JDK's `allocateDirect`
//! spends ~50 ms zeroing 64 MiB. (glibc's `calloc` would often do the same, but its mmap threshold
//! moves up after the first free, after which big blocks come from the heap and get memset.) A
//! freed mapping is kept for the next block that fits (see `mappings`).

pub(crate) mod mappings;

use crate::os::{map_region, page_size, HUGE_PAGE};
use crate::{Error, Result};
use std::ptr::NonNull;

/// Largest alignment a caller may ask for.
pub const MAX_ALIGNMENT: usize = 1 << 30;

/// From this size on, blocks are their own mapping. (16 KiB was tried: a batch of a thousand
/// freed 64 KiB blocks then held 7 MiB instead of 64 MiB, but with two threads each block's
/// `MADV_DONTNEED` interrupts the other core to flush its TLB, and the batch took 15-23 µs per
/// block instead of 6.9 µs. See docs/benchmarks.md.)
pub const MAP_THRESHOLD: usize = 128 << 10;

/// What alignment 0 stands for: the platform's `max_align_t`, which `calloc` already meets.
pub const DEFAULT_ALIGNMENT: usize = std::mem::align_of::<libc::max_align_t>();

/// Memory obtained from the system, released only through [`release`].
#[derive(Debug)]
pub struct Memory {
    /// Start of the block, aligned as asked.
    pub ptr: NonNull<u8>,
    /// 0: heap memory (give back with `free`); otherwise the length of the mapping at `ptr`.
    mapped_len: usize,
    /// Whether the mapping was last advised to have huge pages (2 MiB and more only), so that a
    /// release changes the advice only when the block's use says so: `madvise` for it takes the
    /// process's mmap lock for writing, stalling every other thread's page faults meanwhile.
    huge_pages: bool,
    /// The block was zeroed in place in a kept mapping that kept its pages (see `mappings`).
    zeroed_in_place: bool,
    /// From this offset on, the mapping has never held a block's bytes: they read zero and their
    /// pages were never touched, so growth there zeroes nothing and they are not `occupied`
    /// (0 for heap memory).
    clean_from: usize,
}

// Safety: Memory is an owned region of process memory; which thread releases it does not matter.
unsafe impl Send for Memory {}

impl Memory {
    /// Resizes a mapped block of `old_size` bytes to `new_size` in place, if it can: shrunk, with
    /// the mapping cut to the block's pages when pages past them were used (they go back to the
    /// system, as glibc's `realloc` gives them back: a 64 MiB block written whole and shrunk to
    /// 50 MiB kept all 64 MiB in memory); grown within its mapping, or by growing the mapping
    /// where the addresses after it are free (`mremap` without moving). A mapping that grows takes
    /// `headroom` more addresses when it can, so that a block grown in small steps (a log, a
    /// vector) mostly grows within its mapping, without a system call. Bytes that come into the
    /// block read as zero.
    /// False: not in place (heap memory, a block that would fall under [`MAP_THRESHOLD`], no
    /// room); nothing changed.
    pub fn resize_in_place(&mut self, old_size: usize, new_size: usize) -> bool {
        if self.mapped_len == 0 || new_size < MAP_THRESHOLD {
            return false;
        }
        let Ok(len) = mapping_len(new_size) else { return false };
        if len > self.mapped_len {
            // With the headroom if the addresses after the mapping are free, else without.
            let wanted = len.saturating_add(headroom(len));
            let grown = if self.remap(wanted) {
                wanted
            } else if wanted != len && self.remap(len) {
                len
            } else {
                return false;
            };
            // Valgrind takes the grown part's permissions through a segment pointer its own
            // address-space manager declares invalid by then (as in a move, see `move_pages`); no
            // report came from here, but say what the part is rather than rely on that.
            crate::memcheck::mark_defined(self.ptr.as_ptr() as usize + self.mapped_len, grown - self.mapped_len);
            self.mapped_len = grown;
        } else if new_size < old_size && len < self.touched_len() {
            // Cut to the block's pages, when pages past them were touched (a headroom that was
            // never touched holds no memory, and stays for the next growth). Cut shorter, a
            // mapping cannot fail to change but for a lack of memory to split it. The tail left
            // may hold this block's earlier bytes.
            if !self.remap(len) {
                return false;
            }
            self.mapped_len = len;
            self.clean_from = self.clean_from.min(len);
        }
        if new_size > old_size {
            // Bytes after a block's end may hold what an earlier block (or this one before a
            // shrink) wrote there; from `clean_from` on they read zero already (new pages too).
            let stale = self.clean_from.min(new_size).saturating_sub(old_size);
            // Safety: inside the mapping, which is this block's.
            unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(old_size), 0, stale) };
            self.clean_from = self.clean_from.max(new_size);
        }
        true
    }

    /// The mapping's length up to the end of the last page that ever held a block's bytes.
    fn touched_len(&self) -> usize {
        mapping_len(self.clean_from).map_or(self.mapped_len, |len| len.min(self.mapped_len))
    }

    /// Changes the length of this block's mapping to `len` where it is (`mremap` without
    /// `MREMAP_MAYMOVE`); false if the kernel refused, and then nothing changed.
    fn remap(&self, len: usize) -> bool {
        crate::os::remap_in_place(self.ptr.as_ptr() as usize, self.mapped_len, len)
    }

    /// Bytes the block takes from the system: its mapping's pages that ever held a block's bytes
    /// (the headroom of a grown block, never touched, takes addresses only), or what the C heap
    /// gave it.
    pub fn footprint(&self) -> usize {
        if self.mapped_len != 0 {
            self.touched_len()
        } else {
            // Safety: heap memory from calloc or posix_memalign, live.
            unsafe { libc::malloc_usable_size(self.ptr.as_ptr() as *mut libc::c_void) }
        }
    }
}

/// Checks an allocation request and resolves alignment 0. Overflow of the size plus its
/// alignment padding is refused here, before any quota is touched.
#[inline]
pub fn check_request(size: usize, alignment: usize) -> Result<usize> {
    let alignment = if alignment == 0 { DEFAULT_ALIGNMENT } else { alignment };
    if !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT {
        return Err(Error::InvalidArgument);
    }
    match size.checked_add(alignment) {
        Some(total) if total <= isize::MAX as usize => Ok(alignment),
        _ => Err(Error::InvalidArgument),
    }
}

/// Allocates `size` zeroed bytes aligned to `alignment` (as returned by [`check_request`]).
/// Size 0 yields a distinct one-byte block, so every live block has its own address.
pub fn allocate_zeroed(size: usize, alignment: usize) -> Result<Memory> {
    fault::before_allocation()?;
    // Mapped blocks too: a zero-length mapping would be no block at all.
    let size = size.max(1);
    // Big alignments are mapped too: a mapping's slack is given back to the system, while
    // memalign keeps it (and valgrind's memalign refuses alignments of 16 MiB and more).
    if size >= MAP_THRESHOLD || alignment >= MAP_THRESHOLD {
        return map_zeroed(size, alignment.max(natural_alignment(size)));
    }
    // The C heap grows by mappings too: refused (at `vm.max_map_count`, say), the kept mappings
    // go back first, as for a mapping of ours (see `new_mapping`). Small blocks come here when no
    // slab could be mapped.
    let mut ptr = NonNull::new(heap_zeroed(size, alignment));
    if ptr.is_none() && gave_back_kept_mappings() {
        ptr = NonNull::new(heap_zeroed(size, alignment));
    }
    ptr.map(|ptr| Memory { ptr, mapped_len: 0, huge_pages: false, zeroed_in_place: false, clean_from: 0 })
        .ok_or(Error::NoMemory)
}

/// `size` zeroed bytes from the C heap aligned to `alignment`, or NULL.
fn heap_zeroed(size: usize, alignment: usize) -> *mut u8 {
    if alignment <= DEFAULT_ALIGNMENT {
        // Safety: plain C allocation; the caller handles NULL.
        return unsafe { libc::calloc(1, size) } as *mut u8;
    }
    let mut out: *mut libc::c_void = std::ptr::null_mut();
    // Safety: alignment is a power of two and a multiple of sizeof(void*) (it exceeds max_align_t).
    let rc = unsafe { libc::posix_memalign(&mut out, alignment, size) };
    if rc == 0 {
        // Safety: `out` points to `size` writable bytes.
        unsafe { std::ptr::write_bytes(out as *mut u8, 0, size) };
    }
    out as *mut u8
}

/// Unmaps the kept mappings, after the system refused memory; whether any went.
fn gave_back_kept_mappings() -> bool {
    mappings::global().unmap_all().is_some_and(|given| given.unmapped > 0)
}

/// A private mapping of `size` bytes (rounded up to pages) for a block, starting at a multiple of
/// `alignment`: a kept one, zeroed, or a new one.
fn map_zeroed(size: usize, alignment: usize) -> Result<Memory> {
    let len = mapping_len(size)?;
    // A kept mapping is advised by how its last block used it; a new one has no huge pages (the
    // system's default under THP "madvise" mode): a program that touches a few bytes of a big
    // block would pay 2 MiB of zeroing (and of memory) per touch. Random sizes up to 4 MiB with
    // the first byte written (benches/c/peers.c, mixed) took 23 µs per block with huge pages on new
    // mappings and 175 MB peak RSS, 4.6 µs and 19 MB without.
    match mappings::global().take(len, alignment) {
        Some(kept) => block_in(kept, size, 0),
        None => block_in(new_mapping(len, alignment)?, size, size),
    }
}

/// Big mappings start on a huge-page boundary, so that huge pages can cover all of them.
fn natural_alignment(size: usize) -> usize {
    if size >= HUGE_PAGE {
        HUGE_PAGE
    } else {
        page_size()
    }
}

/// The block of `size` bytes at the start of `taken`, its bytes from `written` on zeroed if the
/// mapping kept an earlier block's pages (the caller writes those before).
fn block_in(taken: mappings::Taken, size: usize, written: usize) -> Result<Memory> {
    if taken.dirty {
        let written = written.min(size);
        // Safety: the mapping is the caller's now; it kept the pages of an earlier block.
        unsafe { std::ptr::write_bytes((taken.start + written) as *mut u8, 0, size - written) };
    }
    let ptr = NonNull::new(taken.start as *mut u8).ok_or(Error::NoMemory)?;
    // A mapping that kept its pages may hold an earlier block's bytes anywhere.
    let clean_from = if taken.dirty { taken.len } else { size };
    Ok(Memory { ptr, mapped_len: taken.len, huge_pages: taken.huge, zeroed_in_place: taken.dirty, clean_from })
}

/// Addresses a mapping that grows takes beyond `len`: an eighth (whole pages), at most
/// [`HEADROOM_MAX`]. Untouched, they cost no memory; none under strict overcommit, where they
/// would cost commit charge that other allocations may need, and that nothing could give back.
fn headroom(len: usize) -> usize {
    if crate::os::strict_overcommit() {
        return 0;
    }
    (len / 8).min(HEADROOM_MAX) & !(page_size() - 1)
}

/// The most headroom a growing mapping takes.
const HEADROOM_MAX: usize = 64 << 20;

/// `size` rounded up to whole pages; `NoMemory` if that overflows.
fn mapping_len(size: usize) -> Result<usize> {
    let page = page_size();
    Ok(size.checked_add(page - 1).ok_or(Error::NoMemory)? & !(page - 1))
}

/// A new, untouched mapping of `len` bytes at a multiple of `alignment`. Kept mappings cost commit
/// charge under strict overcommit: they never make a mapping fail (they go first, and it is tried
/// again).
fn new_mapping(len: usize, alignment: usize) -> Result<mappings::Taken> {
    let start = map_region(len, alignment).or_else(|e| {
        if gave_back_kept_mappings() {
            map_region(len, alignment)
        } else {
            Err(e)
        }
    })?;
    Ok(mappings::Taken { start, len, huge: false, dirty: false })
}

/// Where a mapped block lies, to move its pages ([`Memory::mapping`], [`move_pages`]).
#[derive(Debug, Clone, Copy)]
pub struct Mapping {
    start: usize,
    len: usize,
    huge_pages: bool,
    clean_from: usize,
}

impl Memory {
    /// Where the block lies, if it is a mapping of its own (None: heap memory).
    pub fn mapping(&self) -> Option<Mapping> {
        let mapping = Mapping {
            start: self.ptr.as_ptr() as usize,
            len: self.mapped_len,
            huge_pages: self.huge_pages,
            clean_from: self.clean_from,
        };
        (self.mapped_len != 0).then_some(mapping)
    }
}

/// A mapping for a block of `size` bytes that is to take a moved block's first `copied` bytes:
/// with `prefer_kept`, a kept mapping if one fits (its pages kept in memory, or advised huge: the
/// caller copies into it; only the bytes past `copied` are zeroed, the copy writes the rest), else
/// a new, untouched one for the moved block's pages ([`move_pages`]: never a kept one, whose
/// pages would be dropped, and not zeroed, since a fresh mapping reads zero). Aligned as
/// [`allocate_zeroed`] aligns big blocks. Returns it, and whether it is new.
pub fn map_for_move(size: usize, copied: usize, prefer_kept: bool) -> Result<(Memory, bool)> {
    fault::before_allocation()?;
    let (len, alignment) = (mapping_len(size)?, natural_alignment(size));
    if let Some(kept) = prefer_kept.then(|| mappings::global().take(len, alignment)).flatten() {
        return Ok((block_in(kept, size, copied)?, false));
    }
    // A block that grows gets headroom here too, as in place (see `Memory::resize_in_place`),
    // unless the system will not map that much.
    let room = if size > copied { len.saturating_add(headroom(len)) } else { len };
    let roomy = (room > len).then(|| map_region(room, alignment).ok()).flatten();
    let fresh = match roomy {
        Some(start) => mappings::Taken { start, len: room, huge: false, dirty: false },
        None => new_mapping(len, alignment)?,
    };
    Ok((block_in(fresh, size, size)?, true))
}

/// Moves the pages of the mapped block at `from` (its data: the first `old_size` bytes) into `to`,
/// a new mapping from [`map_for_move`] for a block of `new_size` bytes, as `realloc` does with
/// `mremap`: the kernel moves them, so nothing is copied and no page is faulted in again (a
/// block grown to 64 MiB in 64 KiB steps took 0.88 s by copying, 100 times glibc's time). The
/// old mapping is gone then: its `Memory` must not be released ([`forget_moved`]). Bytes after
/// `old_size` read zero, as in any grown block. False: `to` is not a mapping, or the kernel
/// refused; nothing changed (the caller copies).
pub fn move_pages(from: Mapping, old_size: usize, to: &mut Memory, new_size: usize) -> bool {
    if to.mapped_len == 0 {
        return false;
    }
    let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
    let target = to.ptr.as_ptr() as *mut libc::c_void;
    // Safety: `from` is a whole mapping the caller holds for a move (no one else uses it), `to` a
    // whole mapping no one else knows yet; MREMAP_FIXED replaces `to`'s pages with `from`'s, and
    // on failure both stay as they were.
    if unsafe { libc::mremap(from.start as *mut libc::c_void, from.len, to.mapped_len, flags, target) }
        == libc::MAP_FAILED
    {
        return false;
    }
    // The kernel grew the moved pages into one mapping of `to`'s length (moved at their own
    // length, the rest of `to` would stay a mapping of its own, and no later mremap takes a range
    // of two mappings: every growth of the block would be copied, 4.2 ms a step of 64 KiB in one
    // run instead of 5.9 µs). Valgrind 3.19 marks the grown part unaddressable in some
    // address-space layouts and reports every use of it (tests/c/zeroing.c failed so in a CI run,
    // and in 15 of 34 runs here, two at a time, syscalls traced; 0 of 32 with this): say what it is.
    if to.mapped_len > from.len {
        crate::memcheck::mark_defined(to.ptr.as_ptr() as usize + from.len, to.mapped_len - from.len);
    }
    // Bytes between the old block's end and its mapping's `clean_from` may hold what an earlier
    // block (in a kept mapping) or this one (before shrinking in place) wrote; beyond it they read
    // zero (the old mapping's headroom, then the new pages).
    let from_clean = from.clean_from.min(from.len);
    let stale = from_clean.min(new_size).saturating_sub(old_size);
    // Safety: inside `to`'s mapping, which now holds the moved pages and is the caller's.
    unsafe { std::ptr::write_bytes(to.ptr.as_ptr().add(old_size), 0, stale) };
    to.huge_pages = from.huge_pages;
    to.clean_from = from_clean.max(new_size);
    true
}

/// The `Memory` of a block whose pages [`move_pages`] moved away: there is nothing left to give
/// back (the addresses may already be another mapping's).
pub fn forget_moved(_memory: Memory) {}

/// Gives memory back to the system.
pub fn release(memory: Memory) {
    // `memory` came from allocate_zeroed and is released exactly once (it is moved in).
    if memory.mapped_len == 0 {
        // Safety: as above: heap memory from calloc or posix_memalign.
        unsafe { libc::free(memory.ptr.as_ptr() as *mut libc::c_void) };
    } else {
        mappings::global().keep(
            memory.ptr.as_ptr() as usize,
            memory.mapped_len,
            memory.touched_len(),
            memory.huge_pages,
            memory.zeroed_in_place,
        );
    }
}

/// Test switch (feature `fault-injection`): make the Nth system allocation from now fail.
#[cfg(feature = "fault-injection")]
pub mod fault {
    use std::sync::atomic::{AtomicU64, Ordering};

    static COUNTDOWN: AtomicU64 = AtomicU64::new(0);

    /// The `n`th allocation from now (1 = the next one) returns `NoMemory`; 0 disarms.
    pub fn fail_nth_allocation(n: u64) {
        COUNTDOWN.store(n, Ordering::SeqCst);
    }

    pub(crate) fn before_allocation() -> crate::Result<()> {
        let hit =
            COUNTDOWN.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| if n == 0 { None } else { Some(n - 1) })
                == Ok(1);
        if hit {
            Err(crate::Error::NoMemory)
        } else {
            Ok(())
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
pub(crate) mod fault {
    #[inline(always)]
    pub(crate) fn before_allocation() -> crate::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_zeroed_and_aligned(size: usize, alignment: usize) {
        let alignment = check_request(size, alignment).unwrap();
        let m = allocate_zeroed(size, alignment).unwrap();
        assert_eq!(m.ptr.as_ptr() as usize % alignment, 0, "size {size} alignment {alignment}");
        // Safety: the block has `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(m.ptr.as_ptr(), size) };
        assert!(bytes.iter().all(|&b| b == 0), "size {size} not zeroed");
        bytes.iter_mut().for_each(|b| *b = 0xAB);
        release(m);
    }

    #[test]
    fn heap_and_mapped_blocks_are_zeroed_and_aligned() {
        for &size in &[0, 1, 64, 4096, MAP_THRESHOLD - 1, MAP_THRESHOLD, 1 << 20, (1 << 20) + 3] {
            for &alignment in &[0, 8, 16, 64, 4096, 1 << 16, 2 << 20] {
                assert_zeroed_and_aligned(size, alignment);
            }
        }
    }

    #[test]
    fn reused_heap_memory_is_zeroed_again() {
        for _ in 0..100 {
            assert_zeroed_and_aligned(1000, 0);
            assert_zeroed_and_aligned(1000, 256);
        }
    }

    #[test]
    fn a_written_big_block_freed_and_taken_again_reads_zero() {
        // Written whole, so its mapping keeps its pages (unless another test's blocks of this
        // length just had the verdict say otherwise): the next block there is zeroed in place.
        let size = 3 * 256 * 1024 + 100;
        for _ in 0..10 {
            let m = allocate_zeroed(size, 0).unwrap();
            // Safety: a block of `size` bytes.
            let bytes = unsafe { std::slice::from_raw_parts_mut(m.ptr.as_ptr(), size) };
            assert!(bytes.iter().all(|&b| b == 0));
            bytes.fill(0xFF);
            release(m);
        }
    }

    /// A fresh 1 MiB block written whole, in a mapping with 64 MiB of free addresses after it
    /// (the gap is so wide that a mapping another test makes meanwhile, placed at its top by the
    /// kernel, leaves room after the block).
    fn written_block_before_a_gap() -> Memory {
        let (size, gap) = (1 << 20, 64 << 20);
        let start = crate::os::map_region(size + gap, page_size()).unwrap();
        assert!(crate::os::unmap_region(start + size, gap));
        let taken = mappings::Taken { start, len: size, huge: false, dirty: false };
        let memory = block_in(taken, size, size).unwrap();
        // Safety: the block's bytes.
        unsafe { std::ptr::write_bytes(memory.ptr.as_ptr(), 0xAB, size) };
        memory
    }

    /// [`written_block_before_a_gap`] grown in place by `growth` bytes, with headroom; None under
    /// strict overcommit, where no mapping takes headroom (checked).
    fn grown_with_headroom(growth: usize) -> Option<Memory> {
        if crate::os::strict_overcommit() {
            assert_eq!(headroom(1 << 20), 0);
            return None;
        }
        let mut m = written_block_before_a_gap();
        let size = 1 << 20;
        assert!(m.resize_in_place(size, size + growth));
        let len = mapping_len(size + growth).unwrap();
        assert_eq!(m.mapped_len, len + headroom(len), "grown with headroom");
        Some(m)
    }

    /// Whether each page of `len` bytes from `start` is in memory.
    fn resident(start: *mut u8, len: usize) -> Vec<bool> {
        crate::os::pages_in_memory(start as usize, len).unwrap()
    }

    #[test]
    fn a_growing_mapping_takes_headroom_and_grows_within_it_touching_nothing() {
        let (size, page) = (1 << 20, page_size());
        // Under strict overcommit growth in place is tested without headroom elsewhere.
        let Some(mut m) = grown_with_headroom(page) else { return };
        // Steps within the headroom: no system call changes the mapping, nothing is zeroed (the
        // pages are new), so no page of the growth is brought into memory, and none counts.
        for step in 2..=8 {
            assert!(m.resize_in_place(size + (step - 1) * page, size + step * page));
        }
        assert_eq!(m.mapped_len, size + page + headroom(size + page), "grown within the headroom");
        assert!(resident(m.ptr.as_ptr().wrapping_add(size), 8 * page).iter().all(|&p| !p), "touched nothing");
        assert_eq!(m.footprint(), size + 8 * page, "the headroom is not occupied");
        // Safety (below): the block's bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(m.ptr.as_ptr(), size + 8 * page) };
        assert!(bytes[..size].iter().all(|&b| b == 0xAB) && bytes[size..].iter().all(|&b| b == 0));
        bytes.fill(0xCD);
        // Shrunk by less than a page: no page to give back, the headroom stays; grown back in it.
        let full = size + 8 * page;
        assert!(m.resize_in_place(full, full - 100));
        assert_eq!(m.mapped_len, size + page + headroom(size + page), "headroom kept");
        assert!(m.resize_in_place(full - 100, full));
        assert_eq!(m.mapped_len, size + page + headroom(size + page));
        let bytes = unsafe { std::slice::from_raw_parts_mut(m.ptr.as_ptr(), full) };
        assert!(bytes[..full - 100].iter().all(|&b| b == 0xCD) && bytes[full - 100..].iter().all(|&b| b == 0));
        bytes.fill(0xCD);
        // Shrunk (the mapping cut to its pages, headroom gone) and grown back: what the block
        // held past its new end reads zero again, whether in the mapping or past it.
        assert!(m.resize_in_place(size + 8 * page, size + 100));
        assert_eq!(m.mapped_len, size + page);
        assert!(m.resize_in_place(size + 100, size + 8 * page));
        let bytes = unsafe { std::slice::from_raw_parts(m.ptr.as_ptr(), size + 8 * page) };
        assert!(bytes[..size + 100].iter().all(|&b| b == 0xCD), "kept");
        assert!(bytes[size + 100..].iter().all(|&b| b == 0), "read zero after the shrink");
        release(m);
    }

    #[test]
    fn moved_pages_leave_the_headroom_untouched() {
        // A block grown into its headroom and written whole, then moved by its pages: the moved
        // headroom reads zero and its pages stay out of memory (the move zeroes only what a block
        // may have written; the written tail case is `moved_pages_make_one_mapping_...` below).
        let (size, page) = (1 << 20, page_size());
        let Some(m) = grown_with_headroom(2 * page) else { return };
        // Safety (below): the block's bytes.
        unsafe { std::ptr::write_bytes(m.ptr.as_ptr().add(size), 0xEE, 2 * page) };
        let old_len = m.mapped_len;
        let new_size = 2 * old_len;
        let (mut to, fresh) = map_for_move(new_size, size + 2 * page, false).unwrap();
        assert!(fresh);
        assert!(move_pages(m.mapping().unwrap(), size + 2 * page, &mut to, new_size));
        forget_moved(m);
        let bytes = unsafe { std::slice::from_raw_parts(to.ptr.as_ptr(), new_size) };
        assert!(bytes[..size].iter().all(|&b| b == 0xAB) && bytes[size..size + 2 * page].iter().all(|&b| b == 0xEE));
        let headroom = to.ptr.as_ptr().wrapping_add(size + 2 * page);
        assert!(resident(headroom, old_len - size - 2 * page).iter().all(|&p| !p), "headroom untouched");
        assert!(bytes[size + 2 * page..].iter().all(|&b| b == 0), "the growth reads zero");
        release(to);
    }

    #[test]
    fn bad_alignments_and_overflowing_sizes_are_refused() {
        assert_eq!(check_request(1, 3), Err(Error::InvalidArgument));
        assert_eq!(check_request(1, MAX_ALIGNMENT * 2), Err(Error::InvalidArgument));
        assert_eq!(check_request(usize::MAX, 0), Err(Error::InvalidArgument));
        assert_eq!(check_request(isize::MAX as usize, 16), Err(Error::InvalidArgument));
        assert_eq!(check_request(1, MAX_ALIGNMENT), Ok(MAX_ALIGNMENT));
        assert_eq!(check_request(0, 0), Ok(DEFAULT_ALIGNMENT));
    }

    #[test]
    fn moved_pages_make_one_mapping_advised_as_they_were() {
        // A block of a little over 2 MiB, with a stale byte past its end, in a mapping advised
        // huge or not, moved by its pages into a fresh mapping of 6 MiB, then again into 8 MiB.
        let (old_size, new_size, bigger) = (HUGE_PAGE + 5000, 3 * HUGE_PAGE, 4 * HUGE_PAGE);
        let pattern = |i: usize| (i % 251 + 1) as u8;
        for huge in [false, true] {
            let from_len = mapping_len(old_size).unwrap();
            let from_start = crate::os::map_region(from_len, HUGE_PAGE).unwrap();
            crate::os::advise_huge_pages(from_start, from_len, huge);
            // Safety (throughout): the mappings' bytes, theirs alone.
            let old = unsafe { std::slice::from_raw_parts_mut(from_start as *mut u8, from_len) };
            old[..old_size].iter_mut().enumerate().for_each(|(i, b)| *b = pattern(i));
            old[old_size] = 0xEE;
            let (mut to, fresh) = map_for_move(new_size, old_size, false).unwrap();
            assert!(fresh);
            assert!(move_pages(
                // Written anywhere, as far as the move knows (the stale byte is).
                Mapping { start: from_start, len: from_len, huge_pages: huge, clean_from: from_len },
                old_size,
                &mut to,
                new_size
            ));
            let bytes = unsafe { std::slice::from_raw_parts(to.ptr.as_ptr(), new_size) };
            assert!(bytes[..old_size].iter().enumerate().all(|(i, &b)| b == pattern(i)), "moved");
            assert!(bytes[old_size..].iter().all(|&b| b == 0), "the growth reads zero, the stale byte too");
            assert_eq!(to.huge_pages, huge);
            // Without kernel THP support there is no advice to see.
            if std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
                for at in [to.ptr.as_ptr() as usize, to.ptr.as_ptr() as usize + to.mapped_len - 1] {
                    let flags = crate::os::tests::vm_flags(at);
                    assert_eq!(flags.iter().any(|f| f == "hg"), huge, "{at:#x}: advised as the moved pages");
                }
            }
            // One mapping, which the next move takes whole: the kernel refuses to move or grow a
            // range of two mappings, and every later growth of the block would be copied.
            let (mut next, _) = map_for_move(bigger, new_size, false).unwrap();
            assert!(move_pages(to.mapping().unwrap(), new_size, &mut next, bigger), "moved again by its pages");
            forget_moved(to);
            let bytes = unsafe { std::slice::from_raw_parts(next.ptr.as_ptr(), bigger) };
            assert!(bytes[..old_size].iter().enumerate().all(|(i, &b)| b == pattern(i)), "moved twice");
            assert!(bytes[old_size..].iter().all(|&b| b == 0));
            release(next);
        }
    }

    #[test]
    fn gigabyte_alignment_works() {
        assert_zeroed_and_aligned(MAP_THRESHOLD, MAX_ALIGNMENT);
        assert_zeroed_and_aligned(64, MAX_ALIGNMENT);
    }
}
