//! An optional thread that gives back what the library keeps for reuse while the program is quiet.
//!
//! Empty slabs and freed big blocks' pages are kept ~100 ms for the next allocations, and given
//! back when the library is next used after that: a program that frees a batch and then goes quiet
//! keeps them (up to 256 MiB of slabs and 32 MiB of pages) until it allocates again, as with
//! jemalloc and mimalloc without their background threads. A program with an idle loop calls
//! `dm_decay` there; one without asks for this thread (jemalloc's `background_thread` is the same
//! idea, and off by default as here). In a JVM the cleaner thread's tick does it.
//!
//! The thread runs `Manager::decay` every interval and does nothing else; it holds no lock while it
//! sleeps. `fork()`: the child has no such thread; it starts one if it asks again.

use crate::manager;
use crate::{Error, Result};
use parking_lot::Mutex;
use std::time::Duration;

struct Background {
    /// Milliseconds between two rounds; 0: the thread is to end.
    interval_ms: u32,
    /// The running thread, to wake when the interval changes. Cleared by the thread itself when it
    /// ends, so that a new one is started only once the old one is gone.
    thread: Option<std::thread::Thread>,
}

static STATE: Mutex<Background> = Mutex::new(Background { interval_ms: 0, thread: None });

/// Starts the thread (`interval_ms` > 0), changes its interval, or stops it (0).
pub fn set(interval_ms: u32) -> Result<()> {
    let mut state = STATE.lock();
    state.interval_ms = interval_ms;
    if let Some(thread) = &state.thread {
        thread.unpark(); // it looks at the new interval now (and ends if it is 0)
        return Ok(());
    }
    if interval_ms == 0 {
        return Ok(());
    }
    let handle = std::thread::Builder::new().name("directmem-decay".into()).spawn(run).map_err(|_| {
        state.interval_ms = 0;
        Error::NoMemory
    })?;
    state.thread = Some(handle.thread().clone());
    Ok(()) // detached: it ends by itself
}

fn run() {
    loop {
        let interval = {
            let mut state = STATE.lock();
            if state.interval_ms == 0 {
                state.thread = None;
                return;
            }
            state.interval_ms
        };
        // Woken early by `set`; a spurious wake-up only runs a round early.
        std::thread::park_timeout(Duration::from_millis(interval.into()));
        if STATE.lock().interval_ms != 0 {
            manager::global().decay();
        }
    }
}

/// Its lock, for [`crate::manager::fork`].
pub(crate) fn lock() -> &'static parking_lot::RawMutex {
    // Safety: the raw lock is only locked and unlocked as a whole by `fork`'s handlers.
    unsafe { STATE.raw() }
}

/// In a child of fork(): there is no thread (the lock has just been reset by the caller).
pub(crate) fn forget_thread_in_child() {
    let mut state = STATE.lock();
    state.interval_ms = 0;
    state.thread = None;
}
