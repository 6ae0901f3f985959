//! This thread's heaps, one per pool it allocated in, and their retirement when it ends.
//!
//! A `thread_local!` that needs dropping registers a destructor at the thread's first use: Rust's
//! list of them (a `Vec`) and glibc's `__cxa_thread_atexit_impl` (a `calloc`), ~1,300 instructions,
//! and the list of heaps itself was a `Vec` (~400 more): half of what a thread that allocates one
//! block spent beyond glibc's own. Here the list is plain data, which registers nothing, and one
//! POSIX thread-specific key, made once per process, says which threads have heaps: glibc runs its
//! destructor when such a thread ends, after every `thread_local!` and C++ `thread_local`
//! destructor, so those may still allocate and free through their heap.
//!
//! The key's destructor is code of this library: the library is linked with `-z nodelete`
//! (build.rs), so that a `dlclose` never unmaps it while threads with heaps live.

use super::heap::Heap;
use std::cell::UnsafeCell;
use std::sync::OnceLock;

/// Pools a thread keeps a heap in (a program has one; a unit test up to two). In a further pool
/// the thread has no heap: its small blocks there take the general path. Each entry is 16 B of
/// the library's static TLS block (176 B in all with two; see `last_heap.rs`).
const POOLS: usize = 2;

#[derive(Clone, Copy)]
struct Heaps {
    /// (pool id, heap); pool 0: free entry.
    heaps: [(u64, *mut Heap); POOLS],
    /// The thread is ending and its heaps are retired: none is made again.
    ended: bool,
}

thread_local! {
    static HEAPS: UnsafeCell<Heaps> = const { UnsafeCell::new(Heaps { heaps: [(0, std::ptr::null_mut()); POOLS], ended: false }) };
}

/// The key whose destructor retires a thread's heaps; None if the system has no key left.
static KEY: OnceLock<Option<libc::pthread_key_t>> = OnceLock::new();

/// Makes sure the key's one-time creation is done: a child of fork() must not find it half done
/// by a thread that does not exist there (it would wait for it forever).
pub(crate) fn init() {
    key();
}

fn key() -> Option<libc::pthread_key_t> {
    *KEY.get_or_init(|| {
        let mut key = 0;
        // Safety: `key` is written on success; `end_thread` is a valid destructor.
        (unsafe { libc::pthread_key_create(&mut key, Some(end_thread)) } == 0).then_some(key)
    })
}

/// This thread's heap in pool `pool`, if it has one.
pub(super) fn find(pool: u64) -> Option<*mut Heap> {
    // Safety: only this thread touches its list, and not reentrantly (nothing here calls out).
    HEAPS.with(|h| unsafe { &*h.get() }.heaps.iter().find(|(p, _)| *p == pool).map(|&(_, heap)| heap))
}

/// Records `make()`'s heap as this thread's in `pool`. None (nothing made) when the thread is
/// ending, or has heaps in [`POOLS`] pools already, or no key could be made.
pub(super) fn add(pool: u64, make: impl FnOnce() -> Option<Box<Heap>>) -> Option<*mut Heap> {
    let key = key()?;
    HEAPS.with(|h| {
        // Safety: as in `find`; `make` does not come back here.
        let h = unsafe { &mut *h.get() };
        if h.ended {
            return None;
        }
        let entry = h.heaps.iter_mut().find(|(p, _)| *p == 0)?;
        // Any non-null value: glibc calls the destructor of keys whose value is not null.
        // Safety: a key of this process.
        if unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<libc::c_void>()) } != 0 {
            return None;
        }
        *entry = (pool, Box::into_raw(make()?));
        Some(entry.1)
    })
}

/// The key's destructor: the thread is ending; each heap goes back to its pool.
extern "C" fn end_thread(_: *mut libc::c_void) {
    // A panic must not unwind into glibc; there is nothing to report it to.
    let _ = std::panic::catch_unwind(|| {
        let heaps = HEAPS.with(|h| {
            // Safety: as in `find`.
            let h = unsafe { &mut *h.get() };
            h.ended = true;
            std::mem::replace(&mut h.heaps, [(0, std::ptr::null_mut()); POOLS])
        });
        for (pool, heap) in heaps {
            if pool != 0 {
                // Safety: made by `add` with Box::into_raw, and taken off the list just now.
                let heap = unsafe { Box::from_raw(heap) };
                let pool = heap.pool;
                pool.retire(heap);
            }
        }
    });
}
