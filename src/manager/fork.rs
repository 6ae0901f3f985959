//! Fork safety, as glibc's malloc, jemalloc and mimalloc have it: `pthread_atfork` handlers that
//! take every lock of the process-wide manager (and of the kept mappings) just before `fork()`,
//! so that no lock is held by a thread that does not exist in the child, and the data each guards
//! is whole. The parent then unlocks them; the child resets them to unlocked in place (other
//! threads may have been waiting on them in the parent: the child must not try to wake them).
//! Each lock is one futex word (`crate::sync`): no table of waiting threads outside the locks
//! that a fork could leave half changed.
//!
//! What holds in the child: every dm_ function works; blocks allocated before the fork are
//! live copies (free them in the child as in the parent); other threads' small-block slabs and
//! quota credit stay theirs, counted, and are reached as usual (frees from the child work); a
//! thread caught at the fork inside the few instructions where it updates its credit without
//! atomics would leave the credit marked busy for good, so the child clears those marks (a
//! collection, when a reservation does not fit, would wait for them forever); and the parent's
//! other threads waiting in the quota's queue, or running a reclaim hook call, are forgotten (the
//! child would queue behind them for good). A fork from inside the hook keeps the forking thread's
//! own place and round. Not covered: a block another thread was releasing or resizing at the fork
//! (the child has no such call to finish it: it stays counted there), and, like malloc, a signal
//! handler calling dm_ functions. The background decay thread is not in the child: it is off there
//! until asked for again. The handlers are registered when the library is loaded, so that those a
//! program registers later (all of them, for a program linked against the library) run before
//! ours in `prepare` and may use the library.

use crate::allocators::system::mappings;
use crate::manager::{self, background};
use lock_api::RawMutex as _;
use std::sync::Once;

static INSTALL: Once = Once::new();

/// Registers the handlers when the library is loaded, not only at its first use: `fork()` runs the
/// prepare handlers in the reverse order of their registration, so handlers a program registered
/// before ours ran after ours, when ours held every lock, and one that called a `dm_` function
/// needing a lock (a block above 128 KiB, say) waited for ours for good. Registered at load, ours
/// come first for a program linked against the library (before `main`), and run last.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static INSTALL_AT_LOAD: extern "C" fn() = {
    extern "C" fn at_load() {
        install();
    }
    at_load
};

/// Registers the handlers once; at load, and when the process-wide manager is made.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        // Safety: the three handlers are `extern "C"` functions that never unwind.
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if rc != 0 {
            eprintln!("directmem: pthread_atfork failed ({rc}): using the library in a child of fork() may deadlock");
        }
    });
}

/// Every lock, in the order `prepare` takes them (no list made: a fork must not need memory).
fn locks() -> impl Iterator<Item = &'static crate::sync::RawMutex> {
    let own = [manager::making_lock(), mappings::global().lock(), background::lock()];
    manager::made().into_iter().flat_map(|m| m.locks()).chain(own)
}

extern "C" fn prepare() {
    // One-time initialisations another thread may be in the middle of: finished before the fork,
    // or the child would wait for a thread it does not have.
    crate::barrier::init();
    crate::allocators::small::thread_heaps::init();
    // The manager too (made here if it was not: no harm). When the system has no memory for
    // it, nobody has it, and it has no locks to take.
    let _ = manager::global();
    // Safety of the order: locks that nest are listed in the order they nest (the quota's state,
    // then its credits; a block shard, then a handle shard; two block shards, the lower first, in
    // a move by pages; the manager's making, then the background thread's state, while no lock of
    // the manager is held, as there is no manager yet); every other lock is taken alone (a
    // lock guard that lives to the end of a statement counts: a slab pool's class list was once
    // held across the resident list, and the fork test hung). So taking them one by one cannot
    // deadlock.
    for lock in locks() {
        lock.lock();
    }
}

extern "C" fn parent() {
    for lock in locks() {
        // Safety: `prepare` took every one of them on this thread.
        unsafe { lock.unlock() };
    }
}

extern "C" fn child() {
    for lock in locks() {
        // This thread holds it (taken in `prepare`) and is the only thread there is: free again,
        // with no thread of the parent's recorded as waiting.
        lock.reset_in_child();
    }
    if let Some(manager) = manager::made() {
        manager.forget_other_threads_in_child();
    }
    background::forget_thread_in_child();
}
