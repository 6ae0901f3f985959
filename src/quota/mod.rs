//! The byte budget (`java.nio.Bits` done better).
//!
//! `reserved` counts the bytes of live blocks plus the bytes held through `dm_reserve`; it never
//! exceeds `limit` except when the limit is lowered below it. A reservation first tries a lock-free
//! compare-and-swap. When that does not fit and a reclaim hook is installed, the thread queues and
//! the reclaim protocol takes over (`reclaim`).
//!
//! Invariant: `waiters` is the length of `state.queue` (kept in an atomic so the release path can
//! skip the lock when nobody waits, the common case) plus `COLLECTOR` for each reservation
//! collecting the threads' credit to take its bytes at once: while it is not 0, no thread takes
//! new credit, and what threads free goes straight to the budget.
//!
//! Small blocks do not touch the shared counter each time: a thread takes [`Credit`] ahead of
//! need, in chunks of [`CREDIT_CHUNK`], and spends and refills it with no contention. Credit is
//! counted in `reserved` internally but not in what [`Quota::stats`] reports, and it never costs
//! anyone memory: before a reservation fails or waits, all credit is collected back
//! (`credit`).

pub use credit::Credit;

pub(crate) mod credit;
mod reclaim;

use crate::fallible::Shared;
use crate::padded::Padded;
use crate::sync::{Condvar, Mutex};
use crate::{Error, Result};
use reclaim::{ReclaimState, IN_HOOK};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

/// The reclaim hook: called with the shortfall in bytes, asks whoever holds releasable memory
/// (a garbage collector, a cache) to give some back. Shared by the quota and the rounds that call
/// it; made fallibly ([`Hook::new`]).
#[derive(Clone)]
pub struct Hook(Shared<Box<dyn Fn(u64) + Send + Sync>>);

impl Hook {
    /// None when there is no memory for it.
    pub fn new(call: impl Fn(u64) + Send + Sync + 'static) -> Option<Hook> {
        let call: Box<dyn Fn(u64) + Send + Sync> = crate::fallible::boxed(call).ok()?;
        Shared::try_new(call).map(Hook)
    }

    pub(super) fn call(&self, bytes: u64) {
        (self.0)(bytes)
    }
}

pub const DEFAULT_RECLAIM_TIMEOUT_MS: u32 = 1000;

/// How much a thread takes from the budget ahead of need when its credit runs out. It keeps
/// at most twice this; anything more goes back to the shared counter.
pub const CREDIT_CHUNK: u64 = 64 << 10;

pub struct Quota {
    limit: AtomicU64,
    /// Written whenever a thread's credit is refilled or given back, while `pressure` is read at
    /// every allocation and free: alone in its line.
    reserved: Padded<AtomicU64>,
    /// The part of `reserved` held through `reserve_raw` (dm_reserve), so unreserving can be checked.
    held: AtomicU64,
    peak_reserved: AtomicU64,
    reclaim_requests: AtomicU64,
    limit_failures: AtomicU64,
    reclaim_timeout_ms: AtomicU32,
    pressure: Pressure,
    state: Mutex<ReclaimState>,
    memory_returned: Condvar,
    /// Every live thread's credit, so that it can be collected and left out of the stats.
    credits: Mutex<Vec<Shared<Credit>>>,
    /// Collections of credit begun, for those asked for at once to be made once.
    collections: AtomicU64,
}

/// What makes a thread's frees skip its credit and go back to the budget at once: reservations
/// waiting or collecting credit, or `reserved` above a limit lowered below it. Read at every
/// free, so in one line (not on `reserved`'s, written by every thread's refills, nor `limit`'s: a
/// free read both before, ~0.4 ns of a 64 B free).
#[repr(C)]
struct Pressure {
    /// Reservations queued, plus [`COLLECTOR`] per reservation collecting credit (module docs).
    waiters: AtomicUsize,
    over_limit: AtomicBool,
}

/// What a reservation collecting credit adds to `waiters`: one count for every thread's credit
/// paths (not 0: take no new credit), none for those that look at the queue ([`queued`]).
const COLLECTOR: usize = 1 << (usize::BITS / 2);

/// The reservations queued, of a `waiters` value.
fn queued(waiters: usize) -> usize {
    waiters & (COLLECTOR - 1)
}

/// A reservation collecting credit, counted in `waiters` until dropped.
struct Collecting<'a>(&'a Pressure);

impl<'a> Collecting<'a> {
    fn new(pressure: &'a Pressure) -> Collecting<'a> {
        pressure.waiters.fetch_add(COLLECTOR, SeqCst);
        Collecting(pressure)
    }
}

impl Drop for Collecting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(COLLECTOR, SeqCst);
    }
}

/// A snapshot of the quota's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaStats {
    pub limit: u64,
    pub reserved: u64,
    pub peak_reserved: u64,
    pub reclaim_requests: u64,
    pub limit_failures: u64,
}

impl Quota {
    pub fn new(limit: u64) -> Quota {
        Quota {
            limit: AtomicU64::new(limit),
            reserved: Padded(AtomicU64::new(0)),
            held: AtomicU64::new(0),
            peak_reserved: AtomicU64::new(0),
            reclaim_requests: AtomicU64::new(0),
            limit_failures: AtomicU64::new(0),
            reclaim_timeout_ms: AtomicU32::new(DEFAULT_RECLAIM_TIMEOUT_MS),
            pressure: Pressure { waiters: AtomicUsize::new(0), over_limit: AtomicBool::new(false) },
            state: Mutex::new(ReclaimState::default()),
            memory_returned: Condvar::new(),
            credits: Mutex::new(Vec::new()),
            collections: AtomicU64::new(0),
        }
    }

    /// Its locks, in the order [`crate::manager::fork`] takes them, which is the order they nest:
    /// state, then credits (a waiter holding the state lock may sum the credits for the peak).
    /// Nothing takes the state lock while holding the credits lock.
    pub(crate) fn locks(&self) -> [&crate::sync::RawMutex; 2] {
        // Safety: the raw locks are only locked and unlocked as a whole by `fork`'s handlers.
        unsafe { [self.state.raw(), self.credits.raw()] }
    }

    /// `reserved` and `peak_reserved` leave out credit taken ahead of need, so they are exact
    /// whenever no other thread is allocating or freeing at the same moment.
    pub fn stats(&self) -> QuotaStats {
        QuotaStats {
            limit: self.limit.load(SeqCst),
            reserved: self.reserved.load(SeqCst).saturating_sub(self.credit_total()),
            peak_reserved: self.peak_reserved.load(SeqCst),
            reclaim_requests: self.reclaim_requests.load(SeqCst),
            limit_failures: self.limit_failures.load(SeqCst),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(SeqCst)
    }

    /// Sets the limit. Lowering it below `reserved` is allowed: nothing is taken back, new
    /// reservations fail until enough is released. Raising it lets waiters through at once.
    pub fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, SeqCst);
        // Before the credit is collected: from here on, frees give theirs back at once.
        self.note_over_limit();
        // Credit was taken under the old limit: a lower one must hold for every thread from now.
        self.collect_credits();
        self.wake_waiters();
    }

    /// Sets `over_limit` to whether `reserved` is above the limit now. Each caller checks again
    /// after its store, so that of two racing callers (a `set_limit` and a `release`) the last
    /// store cannot leave a stale answer.
    fn note_over_limit(&self) {
        let over_now = || self.reserved.load(SeqCst) > self.limit.load(SeqCst);
        loop {
            let over = over_now();
            self.pressure.over_limit.store(over, SeqCst);
            if over == over_now() {
                return;
            }
        }
    }

    pub fn set_reclaim_timeout(&self, millis: u32) {
        self.reclaim_timeout_ms.store(millis, SeqCst);
    }

    /// Installs or removes the reclaim hook. Once this returns, the hook it replaced is not
    /// running (a call in flight on another thread is waited for) and is never called again, so
    /// the caller may free what it used; from inside a hook call, which is this thread's own
    /// round, it returns at once.
    pub fn set_hook(&self, hook: Option<Hook>) {
        let mut state = self.state.lock();
        state.hook = hook;
        // Waiters that relied on a removed hook are not left behind: they keep waiting for
        // returned memory until their timeout, as the contract says.
        self.wait_for_round_in_flight(state);
    }

    /// In a child of fork(), on its only thread: what the parent's other threads were doing here
    /// at the fork (inside their credit's bracket, waiting in the queue, running a round) must
    /// not be waited for.
    pub(crate) fn forget_other_threads_in_child(&self) {
        self.forget_credit_owners_in_child();
        self.forget_waiters_in_child();
    }

    /// Accounts for `bytes` held by the caller without allocating (`dm_reserve`).
    pub fn reserve_raw(&self, bytes: u64) -> Result<()> {
        self.reserve(bytes)?;
        self.held.fetch_add(bytes, SeqCst);
        Ok(())
    }

    /// Gives back bytes taken with [`Quota::reserve_raw`]. More than is held is refused and
    /// changes nothing.
    pub fn unreserve_raw(&self, bytes: u64) -> Result<()> {
        self.held.fetch_update(SeqCst, SeqCst, |held| held.checked_sub(bytes)).map_err(|_| Error::InvalidArgument)?;
        self.release(bytes);
        Ok(())
    }

    /// Takes `bytes` from the budget, reclaiming and waiting if need be (see the module docs).
    pub fn reserve(&self, bytes: u64) -> Result<()> {
        if self.try_reserve_collecting(bytes).is_ok() {
            return Ok(());
        }
        if IN_HOOK.with(|depth| depth.get() > 0) {
            // Inside the hook its own thread holds a ticket: served now if it fits, else refused.
            return self.take_now(bytes);
        }
        if bytes > self.limit.load(SeqCst) {
            return Err(self.fail()); // no amount of reclaiming can help
        }
        if self.reserved.load(SeqCst).checked_add(bytes).is_none() {
            // Under a limit near 2^64 (the default is physical memory): reserved + bytes would
            // overflow, which is a bad size, not a full quota.
            return Err(Error::InvalidArgument);
        }
        self.reserve_slow(bytes)
    }

    /// [`Quota::try_reserve`], and once more after collecting the threads' credit: credit taken
    /// ahead is the first memory to reclaim, it costs no one anything.
    pub fn try_reserve_collecting(&self, bytes: u64) -> Result<()> {
        self.try_reserve(bytes).or_else(|e| if self.collect_and_take(bytes, true) { Ok(()) } else { Err(e) })
    }

    /// Takes `bytes` if they fit now, queue or not (credit collected if need be); otherwise a
    /// counted `Limit`. For reservations that must not wait: with no hook, or inside the hook.
    fn take_now(&self, bytes: u64) -> Result<()> {
        if self.try_take(bytes) || self.collect_and_take(bytes, false) {
            Ok(())
        } else {
            Err(self.fail())
        }
    }

    /// Collects every thread's credit and takes `bytes` if they fit then (`behind_queue`: and
    /// nobody is queued), counted in `waiters` meanwhile, so that no thread takes credit again
    /// before this one has taken its bytes (see [`Quota::refill`]). Without that, threads that
    /// went on allocating took the collected credit back first: 300 threads allocating a 64 B
    /// block a millisecond, limit 16 MiB, and 1 MiB blocks failed with `DM_ERR_LIMIT` after 7 of
    /// them, with 8 MiB of the limit free (the threads' credit held it).
    fn collect_and_take(&self, bytes: u64, behind_queue: bool) -> bool {
        let _collecting = Collecting::new(&self.pressure);
        self.collect_credits_until(|| {
            (!behind_queue || queued(self.pressure.waiters.load(SeqCst)) == 0) && self.try_take(bytes)
        })
    }

    /// Takes `bytes` only if they fit now and nobody is queued: no reclaim round, no waiting, and
    /// a refusal is not counted as a limit failure (the caller has another way to get memory).
    pub fn try_reserve(&self, bytes: u64) -> Result<()> {
        if bytes == 0 || (queued(self.pressure.waiters.load(SeqCst)) == 0 && self.try_take(bytes)) {
            Ok(())
        } else {
            Err(Error::Limit)
        }
    }

    /// Returns `bytes` to the budget and wakes the waiters, if any.
    pub fn release(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.give_back(bytes);
        self.after_give_back();
    }

    /// The first half of [`Quota::release`], which takes no lock.
    fn give_back(&self, bytes: u64) {
        self.reserved.fetch_sub(bytes, SeqCst);
    }

    /// The second half of [`Quota::release`]: the bytes are back in the budget.
    fn after_give_back(&self) {
        if self.pressure.over_limit.load(SeqCst) {
            self.note_over_limit();
        }
        // SeqCst pairs with the waiter's increment of `waiters` before its retry: either we see
        // the waiter and wake it, or its retry sees the bytes we just returned.
        if queued(self.pressure.waiters.load(SeqCst)) > 0 {
            self.wake_waiters();
        }
    }

    fn wake_waiters(&self) {
        let _state = self.state.lock();
        self.memory_returned.notify_all();
    }

    fn fail(&self) -> Error {
        self.limit_failures.fetch_add(1, SeqCst);
        Error::Limit
    }

    /// Takes `bytes` if they fit, and notes the peak.
    fn try_take(&self, bytes: u64) -> bool {
        self.take_budget(bytes).map(|before| self.note_peak(before + bytes, 0)).is_some()
    }

    /// Takes `bytes` from the budget if they fit, with no lock; returns `reserved` before.
    fn take_budget(&self, bytes: u64) -> Option<u64> {
        let limit = self.limit.load(SeqCst);
        self.reserved
            .fetch_update(SeqCst, SeqCst, |reserved| reserved.checked_add(bytes).filter(|&after| after <= limit))
            .ok()
    }

    /// `reserved` was `after` plus `ahead`, credit this thread has just taken ahead (in its credit
    /// now), and may be a new peak.
    fn note_peak(&self, after: u64, ahead: u64) {
        // Only for a candidate peak (rare once a program reached its working size) is the credit
        // summed, so that the peak counts blocks, not allowances. Not waiting for the credits
        // lock: when another thread holds it, the peak keeps the other threads' credit in, as
        // the stats allow. Near the limit every small allocation is a candidate, and 1000 threads
        // summing 1000 credits each in turn kept a 1 MiB allocation waiting seconds for the lock.
        if after > self.peak_reserved.load(Relaxed) {
            let credit = self.credit_total_now().unwrap_or(ahead);
            self.peak_reserved.fetch_max((after + ahead).saturating_sub(credit), SeqCst);
        }
    }

    fn shortfall(&self, bytes: u64) -> u64 {
        bytes.saturating_sub(self.free()).max(1)
    }

    /// The bytes under the limit that nobody holds now (credit counts as held).
    fn free(&self) -> u64 {
        self.limit.load(SeqCst).saturating_sub(self.reserved.load(SeqCst))
    }
}

#[cfg(test)]
mod tests;
