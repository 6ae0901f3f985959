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
//! sleeps. `fork()`: the child has no such thread; it starts one if it asks again. A program that
//! cannot be changed gets it from the environment: `DM_BACKGROUND_DECAY_MS` (read once, when the
//! library is first used).

use crate::manager;
use crate::sync::{Condvar, Mutex};
use crate::{Error, Result};
use std::time::{Duration, Instant};

struct Background {
    /// Milliseconds between two rounds; 0: the thread is to end.
    interval_ms: u32,
    /// A thread runs. Cleared by the thread itself when it ends, so that a new one is started only
    /// once the old one is gone.
    running: bool,
}

static STATE: Mutex<Background> = Mutex::new(Background { interval_ms: 0, running: false });
/// Notified when the interval changes.
static CHANGED: Condvar = Condvar::new();

/// Starts the thread (`interval_ms` > 0), changes its interval, or stops it (0).
pub fn set(interval_ms: u32) -> Result<()> {
    let mut state = STATE.lock();
    state.interval_ms = interval_ms;
    if state.running {
        CHANGED.notify_all(); // it looks at the new interval now (and ends if it is 0)
        return Ok(());
    }
    if interval_ms == 0 {
        return Ok(());
    }
    // The system's own thread, not Rust's `thread::spawn`, which takes memory infallibly: a refusal
    // here is an answer (DM_ERR_NO_MEMORY), not an abort.
    let mut thread: libc::pthread_t = 0;
    // Safety: `run` is an `extern "C"` function that never unwinds; its argument is unused.
    if unsafe { libc::pthread_create(&mut thread, std::ptr::null(), run, std::ptr::null_mut()) } != 0 {
        state.interval_ms = 0;
        return Err(Error::NoMemory);
    }
    // Safety: a thread just made; detached, it ends by itself. Its name is for debuggers (15 bytes).
    unsafe {
        libc::pthread_setname_np(thread, c"directmem-decay".as_ptr());
        libc::pthread_detach(thread);
    }
    state.running = true;
    Ok(())
}

/// The variable that starts the thread when the library is first used.
const ENV: &std::ffi::CStr = c"DM_BACKGROUND_DECAY_MS";

/// Starts the thread if `DM_BACKGROUND_DECAY_MS` asks for it. A value that is not a number of
/// milliseconds is reported once on stderr and ignored (as `DM_MAX_MEMORY`'s); 0 asks for nothing.
pub(crate) fn start_from_env() {
    let name = ENV.to_string_lossy(); // borrowed: it is ASCII
    crate::limit::with_env(ENV, |text| match parse_interval(text) {
        Some(ms) => {
            if set(ms).is_err() {
                eprintln!("directmem: {name}={text:?}: the system refused to start the thread");
            }
        }
        None => eprintln!("directmem: ignoring {name}={text:?}: expected milliseconds (0 to 4294967295)"),
    });
}

fn parse_interval(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    // A panic must not unwind into the system's thread start; there is nothing to report it to,
    // but a later `set` may start a thread again.
    let ended = std::panic::catch_unwind(|| loop {
        {
            let mut state = STATE.lock();
            if state.interval_ms == 0 {
                state.running = false;
                return;
            }
            let interval = Duration::from_millis(state.interval_ms.into());
            // Woken early by `set`; a spurious wake-up only runs a round early.
            CHANGED.wait_until(&mut state, Instant::now() + interval);
            if state.interval_ms == 0 {
                continue; // ends at the top
            }
        }
        if let Ok(manager) = manager::global() {
            manager.decay();
        }
    });
    if ended.is_err() {
        STATE.lock().running = false;
    }
    std::ptr::null_mut()
}

/// Its lock, for [`crate::manager::fork`].
pub(crate) fn lock() -> &'static crate::sync::RawMutex {
    // Safety: the raw lock is only locked and unlocked as a whole by `fork`'s handlers.
    unsafe { STATE.raw() }
}

/// In a child of fork(): there is no thread (the lock has just been reset by the caller).
pub(crate) fn forget_thread_in_child() {
    let mut state = STATE.lock();
    state.interval_ms = 0;
    state.running = false;
}

#[cfg(test)]
mod tests {
    use super::parse_interval;

    #[test]
    fn the_variable_is_plain_milliseconds() {
        assert_eq!(parse_interval("250"), Some(250));
        assert_eq!(parse_interval(" 0 "), Some(0));
        assert_eq!(parse_interval("4294967295"), Some(u32::MAX));
        for bad in ["", "-5", "+5", "1.5", "100ms", "4294967296", "0x10"] {
            assert_eq!(parse_interval(bad), None, "{bad:?} must not parse");
        }
    }
}
