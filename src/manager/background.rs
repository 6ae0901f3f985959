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
use crate::sync::Mutex;
use crate::{Error, Result};
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

/// The variable that starts the thread when the library is first used.
const ENV: &str = "DM_BACKGROUND_DECAY_MS";

/// Starts the thread if `DM_BACKGROUND_DECAY_MS` asks for it. A value that is not a number of
/// milliseconds is reported once on stderr and ignored (as `DM_MAX_MEMORY`'s); 0 asks for nothing.
pub(crate) fn start_from_env() {
    let Ok(text) = std::env::var(ENV) else { return };
    match parse_interval(&text) {
        Some(ms) => {
            if set(ms).is_err() {
                eprintln!("directmem: {ENV}={text:?}: the system refused to start the thread");
            }
        }
        None => eprintln!("directmem: ignoring {ENV}={text:?}: expected milliseconds (0 to 4294967295)"),
    }
}

fn parse_interval(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
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
pub(crate) fn lock() -> &'static crate::sync::RawMutex {
    // Safety: the raw lock is only locked and unlocked as a whole by `fork`'s handlers.
    unsafe { STATE.raw() }
}

/// In a child of fork(): there is no thread (the lock has just been reset by the caller).
pub(crate) fn forget_thread_in_child() {
    let mut state = STATE.lock();
    state.interval_ms = 0;
    state.thread = None;
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
