//! The library's locks: a mutex and a condition variable, each one futex word, with parking_lot's
//! API (the `lock_api` crate, which parking_lot's own `Mutex` is made of).
//!
//! Why not parking_lot's own lock: a thread that waits on one uses parking_lot's process-wide
//! table of waiting threads and its own wait data, a `thread_local!` made the first time it waits.
//! - In a child of fork() that table is as the parent's other threads left it: a bucket one of
//!   them held at the fork stays locked, and the child's first thread to wait there hangs. The
//!   library's own locks are taken around a fork (`manager::fork`), that table is not.
//! - Made in a POSIX key's destructor (a program's thread cache freeing its blocks: those run
//!   after the thread-local destructors), the wait data is never dropped: glibc keeps its
//!   destructor's registration (32 B) for good, and parking_lot's count of threads stays up,
//!   which grows its table for good. `tests/c/thread_end.c`, whose key destructors trim while
//!   another thread does, lost 36 such registrations in 240 threads under valgrind; a program
//!   whose key destructors freed a block and trimmed grew by 436 KiB over 80,000 threads.
//!
//! A futex word holds all a lock is: nothing per thread, nothing shared between locks. This is
//! the futex mutex of Drepper's "Futexes Are Tricky" (and of Rust's `std::sync::Mutex` on Linux),
//! which `std` offers only without a raw lock and unlock, which `fork`'s handlers need.

use std::sync::atomic::{AtomicU32, Ordering::*};
use std::time::{Duration, Instant};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and a thread may be waiting in the kernel: its unlock must wake one.
const CONTENDED: u32 = 2;

/// A mutex in one futex word.
pub struct RawMutex {
    state: AtomicU32,
}

// Safety: `lock` returns holding the lock and nobody else can take it until `unlock`; the
// acquire/release orderings make what one holder wrote visible to the next.
unsafe impl lock_api::RawMutex for RawMutex {
    #[allow(clippy::declare_interior_mutable_const)] // lock_api's way to make a new lock
    const INIT: RawMutex = RawMutex { state: AtomicU32::new(UNLOCKED) };
    type GuardMarker = lock_api::GuardNoSend;

    #[inline]
    fn lock(&self) {
        if self.state.compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed).is_err() {
            self.lock_contended();
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        self.state.compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed).is_ok()
    }

    #[inline]
    unsafe fn unlock(&self) {
        if self.state.swap(UNLOCKED, Release) == CONTENDED {
            futex_wake(&self.state, 1);
        }
    }

    fn is_locked(&self) -> bool {
        self.state.load(Relaxed) != UNLOCKED
    }
}

impl RawMutex {
    #[cold]
    fn lock_contended(&self) {
        // Most holds are short: a little spinning before sleeping.
        for _ in 0..100 {
            if self.state.load(Relaxed) == UNLOCKED
                && self.state.compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed).is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
        // From here on it is taken as CONTENDED, whether or not others wait: the unlock then
        // wakes one, which may find nobody (a wasted system call, not a lost wake-up).
        while self.state.swap(CONTENDED, Acquire) != UNLOCKED {
            futex_wait(&self.state, CONTENDED, None);
        }
    }

    /// In a child of fork(): the lock, which the forking thread took before the fork, is free
    /// again. Threads of the parent may have waited on it; they do not exist here, and nothing
    /// records them: the word is all there is.
    pub fn reset_in_child(&self) {
        self.state.store(UNLOCKED, Relaxed);
    }
}

pub type Mutex<T> = lock_api::Mutex<RawMutex, T>;
pub type MutexGuard<'a, T> = lock_api::MutexGuard<'a, RawMutex, T>;

/// A condition variable for [`Mutex`]: a futex word that every notification changes.
#[derive(Default)]
pub struct Condvar {
    notifications: AtomicU32,
}

impl Condvar {
    pub const fn new() -> Condvar {
        Condvar { notifications: AtomicU32::new(0) }
    }

    /// Wakes every thread waiting on it.
    pub fn notify_all(&self) {
        self.notifications.fetch_add(1, Release);
        futex_wake(&self.notifications, i32::MAX);
    }

    /// Unlocks `guard`'s mutex and waits for a notification or `deadline`, then locks it again.
    /// A notification made after the caller last held the lock is never missed (the count read
    /// under the lock then differs); as with any condition variable, the caller checks its
    /// condition again after, whatever woke it.
    pub fn wait_until<T>(&self, guard: &mut MutexGuard<'_, T>, deadline: Instant) {
        let seen = self.notifications.load(Acquire);
        let Some(timeout) = deadline.checked_duration_since(Instant::now()) else { return };
        MutexGuard::unlocked(guard, || futex_wait(&self.notifications, seen, Some(timeout)));
    }

    /// [`Condvar::wait_until`] with no deadline.
    pub fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        let seen = self.notifications.load(Acquire);
        MutexGuard::unlocked(guard, || futex_wait(&self.notifications, seen, None));
    }
}

/// Sleeps while `word` holds `expected`, at most `timeout` (wake-ups may also be spurious).
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // Safety: `word` is a valid, aligned 32-bit word for the call's duration; `ts_ptr` is null
    // or points to a live timespec. The result does not matter: every caller looks again.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, expected, ts_ptr)
    };
}

/// Wakes up to `count` threads sleeping on `word`.
fn futex_wake(word: &AtomicU32, count: i32) {
    // Safety: as in `futex_wait`; a wake of nobody is harmless.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, count) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn contended_increments_are_all_counted() {
        let m = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..200_000 {
                        *m.lock() += 1;
                        if i % 1000 == 0 {
                            std::thread::yield_now(); // let the others pile up on the lock
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*m.lock(), 800_000);
    }

    #[test]
    fn a_holder_that_sleeps_wakes_its_waiters_when_it_unlocks() {
        let m = Arc::new(Mutex::new(()));
        let held = m.lock();
        let waiter = {
            let m = m.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                drop(m.lock());
                start.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(100)); // the waiter is asleep in the kernel by now
        assert!(m.try_lock().is_none(), "still held");
        drop(held);
        let waited = waiter.join().unwrap();
        assert!(waited >= Duration::from_millis(90), "it waited for the holder: {waited:?}");
    }

    #[test]
    fn a_waiter_wakes_on_notification_or_at_its_deadline() {
        let m = Arc::new(Mutex::new(false));
        let cv = Arc::new(Condvar::new());
        let start = Instant::now();
        let mut g = m.lock();
        cv.wait_until(&mut g, start + Duration::from_millis(50));
        assert!(start.elapsed() >= Duration::from_millis(50), "no notification: the deadline");
        drop(g);
        let notifier = {
            let (m, cv) = (m.clone(), cv.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                *m.lock() = true;
                cv.notify_all();
            })
        };
        let start = Instant::now();
        let mut g = m.lock();
        while !*g {
            cv.wait_until(&mut g, start + Duration::from_secs(10));
        }
        assert!(start.elapsed() < Duration::from_secs(5), "woken by the notification");
        drop(g);
        notifier.join().unwrap();
    }
}
