//! Where the library's own Rust memory comes from (the crate's global allocator): glibc's
//! allocator under its own names (`__libc_malloc` and the rest), never the `malloc` a program may
//! put in its place.
//!
//! Why: a program may build its `malloc` on directmem (`tests/c/malloc_shim.c` does, to run whole
//! programs on the library). The library takes bookkeeping (lists of heaps, table entries) while
//! it holds its own locks (the heap list, a heap's door); had that come from the program's
//! `malloc`, it would come back into the library on the same thread and wait on that lock for
//! good. A `malloc` can send elsewhere the calls made while it is itself inside a `dm_` call, but
//! not those of threads that reach the library another way: the background decay thread, a JVM's
//! calls through the JNI binding. jemalloc and mimalloc take their metadata from an allocator of
//! their own for the same reason. glibc's names reach the same heap that its `malloc` serves when
//! nothing replaces it, so an ordinary program sees no change.
//!
//! User blocks are not served from here: the system allocator's C-heap blocks call the `calloc`
//! and `free` the program chose, as before. Rust's standard library calls `malloc` itself in a few
//! places (a thread's handle for `thread::current`, the list of thread-local destructors); the
//! library uses none of them under a lock. Elsewhere than glibc (musl has no such names) Rust's
//! `System` allocator stays, and the rule in the header (`dm_set_background_decay`) holds there.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::mem::size_of;

// Not `__libc_memalign`: the sanitizers (AddressSanitizer, ThreadSanitizer, LeakSanitizer) put
// their own in its place, but not `__libc_free`, so a block from one went to the other's `free`
// ("munmap_chunk(): invalid pointer", an abort in a C program built with -fsanitize=address).
// Over-aligned blocks are cut from a plain `malloc` block instead (`Aligned`).
extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(count: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(memory: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_free(memory: *mut c_void);
}

/// What glibc's `malloc` guarantees without being asked (at least two words; 16 on x86-64 and
/// AArch64): a layout that asks no more, and is no smaller than its alignment, takes plain
/// `malloc`. The same rule as Rust's `System` allocator.
const MALLOC_ALIGNMENT: usize = 2 * size_of::<usize>();

fn plain(layout: Layout) -> bool {
    layout.align() <= MALLOC_ALIGNMENT && layout.align() <= layout.size()
}

/// An over-aligned block: the first aligned address in a plain block big enough for the layout,
/// with room before it for the plain block's address, which `free` needs. Few blocks take this
/// way (a thread's heap and credit, padded to their cache lines), so its waste (at most the
/// alignment and a word) does not matter.
struct Aligned;

impl Aligned {
    const HEADER: usize = size_of::<usize>();

    unsafe fn alloc(layout: Layout) -> *mut u8 {
        let Some(size) = layout.size().checked_add(layout.align() + Self::HEADER) else {
            return std::ptr::null_mut();
        };
        let base: *mut u8 = __libc_malloc(size).cast();
        if base.is_null() {
            return base;
        }
        let offset = (base as usize + Self::HEADER).next_multiple_of(layout.align()) - base as usize;
        let block = base.add(offset);
        // Safety: offset >= HEADER, so the word before `block` lies in the plain block.
        block.sub(Self::HEADER).cast::<usize>().write_unaligned(base as usize);
        block
    }

    unsafe fn free(block: *mut u8) {
        let base = block.sub(Self::HEADER).cast::<usize>().read_unaligned();
        __libc_free(base as *mut c_void);
    }
}

/// glibc's allocator, reached under its own names (see the module's comment).
pub struct Glibc;

// Safety: every block comes from glibc's allocator with at least the layout's size and alignment
// (plain `malloc` only where it guarantees the alignment, cut from a bigger `malloc` block
// otherwise) and goes back to `free` of the same allocator by the way it came; `realloc` keeps the
// contents up to the smaller size.
unsafe impl GlobalAlloc for Glibc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout) {
            __libc_malloc(layout.size()).cast()
        } else {
            Aligned::alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout) {
            return __libc_calloc(1, layout.size()).cast();
        }
        let memory = Aligned::alloc(layout);
        if !memory.is_null() {
            std::ptr::write_bytes(memory, 0, layout.size());
        }
        memory
    }

    unsafe fn dealloc(&self, memory: *mut u8, layout: Layout) {
        if plain(layout) {
            __libc_free(memory.cast());
        } else {
            Aligned::free(memory);
        }
    }

    unsafe fn realloc(&self, memory: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Safety (caller's): `new_size` rounded up to the alignment does not overflow.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        // `realloc` only where both the old block and the new one are plain.
        if plain(layout) && plain(new_layout) {
            return __libc_realloc(memory.cast(), new_size).cast();
        }
        let moved = self.alloc(new_layout);
        if !moved.is_null() {
            std::ptr::copy_nonoverlapping(memory, moved, layout.size().min(new_size));
            self.dealloc(memory, layout);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_their_alignment_contents_and_zeroes() {
        let heap = Glibc;
        // (8, 16) grows from a block smaller than its alignment to a plain one.
        for (size, align) in [(1, 1), (8, 16), (24, 8), (100, 16), (100, 64), (8, 32), (5000, 4096)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // Safety: non-zero sizes; each block is used within its layout and freed once.
            unsafe {
                let zeroed = heap.alloc_zeroed(layout);
                assert!(!zeroed.is_null());
                assert_eq!(zeroed as usize % align, 0, "{size} B aligned to {align}");
                assert!(std::slice::from_raw_parts(zeroed, size).iter().all(|&b| b == 0));
                for i in 0..size {
                    *zeroed.add(i) = i as u8;
                }
                let grown = heap.realloc(zeroed, layout, 3 * size);
                assert!(!grown.is_null());
                assert_eq!(grown as usize % align, 0, "{size} B grown, aligned to {align}");
                assert!((0..size).all(|i| *grown.add(i) == i as u8), "{size} B kept its bytes");
                heap.dealloc(grown, Layout::from_size_align(3 * size, align).unwrap());
            }
        }
    }
}
