//! The heap this thread used last, as (pool id, heap): one thread-local pair that the fast paths
//! read at every allocation and free (pool 0: none).
//!
//! `thread_local!` in a shared library takes the general-dynamic TLS model: each read is a call
//! to `__tls_get_addr`, about 25 instructions with its wrapper, twice per allocate + free pair.
//! Stable Rust cannot ask for the initial-exec model, so on x86-64 Linux the pair is declared in
//! assembly, in `.tbss`, and read with one `fs:`-relative load through its GOT slot, which is
//! what C's `__attribute__((tls_model("initial-exec")))` compiles to (jemalloc and mimalloc
//! declare their thread caches so). The price: the library's thread-local block becomes static
//! TLS (the `STATIC_TLS` flag), which a `dlopen` (a JVM's `System.load`) takes from the reserve
//! glibc keeps for it (512 B by default; the whole block here is 176 B). Other targets keep
//! `thread_local!`.

use super::heap::Heap;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use super::Heap;
    use std::arch::{asm, global_asm};

    // 16 zero bytes in every thread's static TLS: the pool id, then the heap pointer. Hidden: the
    // library exports only its dm_ and JNI functions.
    global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".balign 16",
        ".globl directmem_last_heap",
        ".hidden directmem_last_heap",
        ".type directmem_last_heap,@object",
        ".size directmem_last_heap,16",
        "directmem_last_heap:",
        ".zero 16",
        ".popsection",
    );

    #[inline(always)]
    pub fn get() -> (u64, *mut Heap) {
        let (pool, heap): (u64, *mut Heap);
        // Safety: reads this thread's own 16 bytes declared above, at the offset the dynamic
        // linker put in the GOT; nothing else is touched.
        unsafe {
            asm!(
                "mov {offset}, qword ptr [rip + directmem_last_heap@GOTTPOFF]",
                "mov {pool}, qword ptr fs:[{offset}]",
                "mov {heap}, qword ptr fs:[{offset} + 8]",
                offset = out(reg) _,
                pool = out(reg) pool,
                heap = out(reg) heap,
                options(nostack, preserves_flags, readonly, pure),
            );
        }
        (pool, heap)
    }

    pub fn set(pool: u64, heap: *mut Heap) {
        // Safety: as in `get`, writing instead.
        unsafe {
            asm!(
                "mov {offset}, qword ptr [rip + directmem_last_heap@GOTTPOFF]",
                "mov qword ptr fs:[{offset}], {pool}",
                "mov qword ptr fs:[{offset} + 8], {heap}",
                offset = out(reg) _,
                pool = in(reg) pool,
                heap = in(reg) heap,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use super::Heap;
    use std::cell::Cell;

    thread_local! {
        static LAST_HEAP: Cell<(u64, *mut Heap)> = const { Cell::new((0, std::ptr::null_mut())) };
    }

    #[inline(always)]
    pub fn get() -> (u64, *mut Heap) {
        LAST_HEAP.try_with(Cell::get).unwrap_or((0, std::ptr::null_mut()))
    }

    pub fn set(pool: u64, heap: *mut Heap) {
        let _ = LAST_HEAP.try_with(|last| last.set((pool, heap)));
    }
}

/// (pool id, heap) of the heap this thread used last; pool 0 when there is none.
#[inline(always)]
pub fn get() -> (u64, *mut Heap) {
    imp::get()
}

/// Records the heap this thread uses; `(0, null)` when it is gone.
pub fn set(pool: u64, heap: *mut Heap) {
    imp::set(pool, heap)
}
