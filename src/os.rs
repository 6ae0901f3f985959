//! The operating system's memory primitives, and nothing else: the page size, mapping and
//! unmapping, discarding pages, huge-page advice, residency. The allocators above ([`crate::allocators::system`],
//! [`crate::allocators::system::mappings`], the small-block slabs) decide when to use them.

use crate::{Error, Result};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};

/// The transparent huge page size on x86-64 and most arm64 kernels; mappings this big ask for them.
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// 0 until first asked. The values this module reads once are kept in atomics, not in a lazy
/// cell: threads that race to read one each read it (the same answer), and none waits. A waiter
/// in `once_cell`'s cells took a thread handle from `malloc`, infallibly: where `malloc` refused,
/// the process aborted.
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

pub fn page_size() -> usize {
    match PAGE_SIZE.load(Relaxed) {
        0 => {
            // Safety: sysconf has no preconditions.
            let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let size = if size > 0 { size as usize } else { 4096 };
            PAGE_SIZE.store(size, Relaxed);
            size
        }
        size => size,
    }
}

/// Whether the system charges every private writable mapping's addresses against a commit limit
/// (`vm.overcommit_memory` = 2), where untouched addresses cost what other allocations may need.
/// Read once; false when it cannot be read.
pub fn strict_overcommit() -> bool {
    match STRICT_OVERCOMMIT.load(Relaxed) {
        UNKNOWN => {
            let strict = read_strict_overcommit();
            STRICT_OVERCOMMIT.store(if strict { STRICT } else { NOT_STRICT }, Relaxed);
            strict
        }
        known => known == STRICT,
    }
}

/// [`strict_overcommit`]'s answer, once read.
static STRICT_OVERCOMMIT: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const NOT_STRICT: u8 = 1;
const STRICT: u8 = 2;

fn read_strict_overcommit() -> bool {
    // Read without allocating: callers may hold the block table's locks, and where directmem is
    // the process's malloc an allocation could need them.
    let mut setting = [0u8; 1];
    // Safety: a NUL-terminated path; one byte read into `setting`; the descriptor closed once.
    unsafe {
        let fd = libc::open(c"/proc/sys/vm/overcommit_memory".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let read = libc::read(fd, setting.as_mut_ptr().cast(), 1);
        libc::close(fd);
        read == 1 && setting[0] == b'2'
    }
}

/// Maps `len` bytes (a multiple of the page size) of fresh zeroed memory starting at a multiple
/// of `alignment` (a power of two, at least the page size). Returns the start.
pub fn map_region(len: usize, alignment: usize) -> Result<usize> {
    let page = page_size();
    let slack = alignment.max(page) - page; // room so that an aligned start exists inside
    let total = len.checked_add(slack).ok_or(Error::NoMemory)?;
    // Safety: an anonymous private mapping touches no existing memory.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(Error::NoMemory);
    }
    let base = base as usize;
    let start = (base + alignment - 1) & !(alignment - 1);
    // Safety: both ranges lie inside the mapping just made and are page-aligned.
    unsafe {
        if start > base {
            libc::munmap(base as *mut libc::c_void, start - base);
        }
        let tail = base + total - (start + len);
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
    }
    Ok(start)
}

/// Changes the length of the mapping of `len` bytes at `start` to `new_len` where it lies
/// (`mremap` without `MREMAP_MAYMOVE`): grown if the addresses after it are free, or cut shorter
/// (which gives the rest back). False if the system refused; then nothing changed.
pub fn remap_in_place(start: usize, len: usize, new_len: usize) -> bool {
    // Safety: the caller owns the whole mapping; without MREMAP_MAYMOVE it either changes where
    // it lies or fails and stays as it was.
    unsafe { libc::mremap(start as *mut libc::c_void, len, new_len, 0) != libc::MAP_FAILED }
}

/// Unmaps a region from [`map_region`]. False if the system refused, and then it stays mapped
/// as it was: cutting a range out of the middle of one of the system's mappings (adjacent
/// mappings of the same kind are merged into one) makes one mapping more, which is refused at
/// `vm.max_map_count` (65,530 by default: a process with many threads, mapped files or blocks).
#[must_use]
pub fn unmap_region(start: usize, len: usize) -> bool {
    // Safety: the caller owns the region and nothing refers to it any more.
    unsafe { libc::munmap(start as *mut libc::c_void, len) == 0 }
}

/// Unmaps a region from [`map_region`] that no one ever touched, on a path that gives it up: a
/// refusal (see [`unmap_region`]) leaves addresses only, no memory, so there is nothing to do.
pub fn unmap_untouched(start: usize, len: usize) {
    let _addresses_only = unmap_region(start, len);
}

/// Gives the pages of a mapped range back to the system while keeping the addresses: they read
/// as zero when touched again. The caller owns the range and keeps no data in it. False: the
/// system refused, and the pages keep what they held.
pub fn discard(start: usize, len: usize) -> bool {
    // Safety: as above; MADV_DONTNEED on private anonymous memory only drops its contents.
    unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) == 0 }
}

/// Calls `each(page, in_memory)` for every page of a mapped range (starting on a page), in
/// order, or returns None if the system will not say (`mincore`). A hint for policy only: a page
/// swapped out counts as not in memory, though it still holds data, so this must never decide
/// whether memory reads as zero.
///
/// It takes no memory (the answer goes into a buffer on the stack): it cannot be refused, and the
/// decay visit asks it while holding heaps' doors, where an allocation could come back into the
/// library through a `malloc` built on it (where the library's own memory is `malloc`'s; see
/// `own_heap`).
pub fn each_page_in_memory(start: usize, len: usize, mut each: impl FnMut(usize, bool)) -> Option<()> {
    const CHUNK: usize = 256;
    let page = page_size();
    let pages = len.div_ceil(page);
    let mut answer = [0u8; CHUNK];
    for first in (0..pages).step_by(CHUNK) {
        let n = (pages - first).min(CHUNK);
        // Safety: the range is mapped (the caller's) and `answer` has a byte for each of its n pages.
        if unsafe { libc::mincore((start + first * page) as *mut libc::c_void, n * page, answer.as_mut_ptr()) } != 0 {
            return None;
        }
        answer[..n].iter().enumerate().for_each(|(i, &v)| each(first + i, v & 1 != 0));
    }
    Some(())
}

/// [`each_page_in_memory`] as a vector, for tests.
#[cfg(test)]
pub fn pages_in_memory(start: usize, len: usize) -> Option<Vec<bool>> {
    let mut pages = Vec::new();
    each_page_in_memory(start, len, |_, in_memory| pages.push(in_memory))?;
    Some(pages)
}

/// Milliseconds of the system's coarse monotonic clock (resolution a few ms; a few ns to read,
/// where the precise clock costs ~20 ns): for decay times, not for measuring.
pub fn coarse_millis() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // Safety: `t` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut t) };
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// Asks for transparent huge pages on a mapping of ours, or asks for none. A refusal (THP off, or
/// an old kernel) changes nothing: result ignored.
pub(crate) fn advise_huge_pages(start: usize, len: usize, huge: bool) {
    let advice = if huge { libc::MADV_HUGEPAGE } else { libc::MADV_NOHUGEPAGE };
    // Safety: the range is a mapping the caller owns; the advice changes no contents.
    unsafe { libc::madvise(start as *mut libc::c_void, len, advice) };
}

/// Sets a mapping up for its next block by how its last block used it (programs tend to reuse a
/// length for one purpose), then discards its pages. Huge pages pay off when most pages get
/// touched: one fault per 2 MiB instead of 512. When a few bytes here and there are, each touch
/// zeroes 2 MiB instead of 4 KiB: in the drop loop (one byte written per 20 MiB buffer) huge
/// pages cost 40% of the allocation rate. Less than half the pages resident counts as sparse.
/// `huge` is the mapping's advice so far; returns the advice from now on, or None when the system
/// refused to drop the pages (locked memory, after `mlockall`): they keep what they held, and the
/// mapping must not be kept as clean.
pub fn discard_for_reuse(start: usize, len: usize, huge: bool) -> Option<bool> {
    let mut huge = huge;
    if len >= HUGE_PAGE {
        if let Some(dense) = mostly_resident(start, len, huge).filter(|&dense| dense != huge) {
            advise_huge_pages(start, len, dense);
            huge = dense;
        }
    }
    discard(start, len).then_some(huge)
}

/// Whether at least half the pages of a mapping of ours are in memory (`mincore`), judged by its
/// first 512 KiB, or its first 8 MiB when it had huge pages (`huge`: a single byte touched there
/// brings a whole 2 MiB page in, so a sample must span several), or None if the system will not
/// say. `mincore` costs time per small page even where nothing was ever touched, and a buffer
/// filled front to back is resident from its start. (Looking at the first 8 MiB of every mapping,
/// blocks of random sizes up to 4 MiB spent 12-16% of their time in `mincore` (perf); 2% now.)
pub(crate) fn mostly_resident(start: usize, len: usize, huge: bool) -> Option<bool> {
    let sample = if huge { 2048 } else { 128 };
    let pages = sample.min(len.div_ceil(page_size()));
    let mut resident = 0;
    each_page_in_memory(start, pages * page_size(), |_, in_memory| resident += usize::from(in_memory))?;
    Some(resident * 2 >= pages)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn strict_overcommit_is_read_from_the_system() {
        let setting = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap_or_default();
        assert_eq!(strict_overcommit(), setting.trim() == "2", "setting {setting:?}");
    }

    /// The VmFlags of the mapping that holds `address`, from /proc/self/smaps.
    pub(crate) fn vm_flags(address: usize) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ').filter(|(r, _)| r.contains('-') && !r.ends_with(':')) {
                let (from, to) = range.split_once('-').unwrap();
                let (from, to) = (usize::from_str_radix(from, 16).unwrap(), usize::from_str_radix(to, 16).unwrap());
                inside = (from..to).contains(&address);
            } else if let Some(flags) = line.strip_prefix("VmFlags:").filter(|_| inside) {
                return flags.split_whitespace().map(String::from).collect();
            }
        }
        panic!("no mapping holds {address:#x}");
    }

    #[test]
    fn a_kept_mapping_gets_huge_pages_only_if_its_last_block_touched_most_of_it() {
        let len = 8 << 20;
        let start = map_region(len, HUGE_PAGE).unwrap();
        advise_huge_pages(start, len, true);
        // Without kernel THP support there is no advice to give: only the zeroing is checked.
        let thp = std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists();
        let has = |flag: &str| vm_flags(start).iter().any(|f| f == flag);
        assert_eq!(has("hg"), thp, "a new big mapping asks for huge pages");
        let bytes = start as *mut u8;
        // Safety: the mapping is ours and `len` bytes long.
        unsafe { bytes.add(4096).write(7) }; // one byte: sparse
        assert_eq!(discard_for_reuse(start, len, true), Some(false));
        assert_eq!((has("hg"), has("nh")), (false, thp), "sparse use: no huge pages next time");
        // Safety: as above.
        let page = unsafe { std::slice::from_raw_parts_mut(bytes, len) };
        assert!(page.iter().all(|&b| b == 0), "discarded pages read as zero");
        page.iter_mut().step_by(page_size()).for_each(|b| *b = 1); // every page: dense
        assert_eq!(discard_for_reuse(start, len, false), Some(true));
        assert_eq!((has("hg"), has("nh")), (thp, false), "dense use: huge pages again");
        // Past the 512 KiB looked at when the advice is "no huge pages" already: told so, it leaves
        // the mapping alone (no madvise).
        page[4 << 20] = 1;
        assert_eq!(discard_for_reuse(start, len, false), Some(false));
        assert_eq!((has("hg"), has("nh")), (thp, false), "unchanged advice: no call");
        assert!(page.iter().all(|&b| b == 0));
        assert!(unmap_region(start, len));
    }
}
