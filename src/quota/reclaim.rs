//! The reclaim protocol: what a reservation that does not fit goes through when a reclaim hook is
//! installed.
//! - one hook call at a time ("a round"): a thread that fails starts one, or, if one is in
//!   flight, waits for that round instead of starting another, so N failing threads cause one GC,
//!   not N. When the round was not enough and no memory comes back for a while (at most 100 ms),
//!   the head of the queue asks again, so memory that became reclaimable after the last round
//!   (a buffer dropped just after a GC) is still found; the JDK asks once, sleeps, and fails;
//! - a thread that fails while others are queued starts no round sooner than one round's length
//!   (at most 100 ms) after the last one ended: the threads that round served often still hold what they are
//!   about to drop, and one GC a moment later finds all of it (8 threads dropping 8 MiB buffers
//!   under a 32 MiB limit: 4 buffers per GC instead of 2, and 1.3x the allocation rate); and
//!   none at all while the memory free covers its request and every one queued ahead of it: they
//!   are about to take theirs, and it its own;
//! - waiters are woken when memory is actually returned ([`Quota::release`]), never by fixed
//!   sleeps, and the head of the queue takes memory first: first come, first served, and a
//!   newcomer whose request would fit still queues behind them (the JDK's spurious OOMs come from
//!   newcomers taking what a sleeping waiter was waiting for);
//! - bounded barging, as the handoff of Linux's mutexes and `parking_lot`'s fair unlock bound
//!   theirs: a queued request of at most a quarter of the head's may take memory that fits
//!   before the head, while the head has waited less than half its timeout. A 16-byte request
//!   does not wait a whole (slow) round behind a 600 KiB one while its 16 bytes are free, and the
//!   big one cannot be starved: it loses at most a quarter of its size per barger, for half its
//!   time, and then nobody passes it; equal requests (the JDK's spurious-OOM case) never pass;
//! - a waiter's timeout counts from the last time the queue moved (a queued reservation served):
//!   a waiter in a queue that moves is never refused, however long the queue, since the memory it
//!   waits for is coming; a queue that stands still for a whole timeout fails together. A fixed
//!   deadline from the first refusal failed the tail of a long queue that was being served the whole
//!   time (64 virtual threads on 4 slots, a noisy machine);
//! - a waiter at its deadline takes memory that fits, head or not: `Limit` means the limit would
//!   really be exceeded;
//! - a reservation made from inside the hook (on the thread that runs the round) is served at
//!   once if it fits and refused at once if not: it cannot queue behind its own thread's ticket;
//! - no lock is held while the hook runs or while a thread waits, so a hook or another thread
//!   that frees memory can never deadlock against a waiter.

use super::{Hook, Quota};
use crate::sync::MutexGuard;
use crate::{Error, Result};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

/// A queued reservation: its ticket, its size, and when it joined the queue.
#[derive(Clone, Copy)]
pub(super) struct Waiter {
    ticket: u64,
    bytes: u64,
    since: Instant,
}

thread_local! {
    /// How many hook calls this thread is inside of: a reservation made there must not queue.
    pub(super) static IN_HOOK: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

#[derive(Default)]
pub(super) struct ReclaimState {
    pub(super) hook: Option<Hook>,
    pub(super) queue: VecDeque<Waiter>,
    next_ticket: u64,
    pub(super) round_in_flight: bool,
    /// The ticket of the waiter whose thread runs the round in flight.
    round_runner: u64,
    rounds_started: u64,
    rounds_completed: u64,
    /// Queued reservations served so far: while it grows the queue moves, and no deadline comes.
    served: u64,
    /// When the last round ended and how long it took.
    last_round: Option<(Instant, Duration)>,
}

impl Quota {
    pub(super) fn reserve_slow(&self, bytes: u64) -> Result<()> {
        let mut state = self.state.lock();
        if state.hook.is_none() {
            // Without a hook nothing will be reclaimed: no queue, no waiting.
            drop(state);
            return self.take_now(bytes);
        }
        // Leaves the queue however this ends, a panic in the hook included. `wait_turn` consumes
        // the lock guard, so it is released before the slot's Drop takes the lock again.
        let Some(slot) = self.enqueue(&mut state, bytes) else {
            return Err(Error::NoMemory); // no memory to wait with
        };
        // Credit taken since `reserve` collected it: with `waiters` raised, no more is taken
        // and what is released goes straight to the budget. (Collecting wakes waiters, which
        // takes the state lock: not held here.)
        drop(state);
        self.collect_credits();
        let state = self.state.lock();
        self.wait_turn(state, &slot)
    }

    /// Puts a reservation of `bytes` at the end of the queue. None: no memory to queue it with.
    fn enqueue(&self, state: &mut ReclaimState, bytes: u64) -> Option<QueueSlot<'_>> {
        state.queue.try_reserve(1).ok()?;
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(Waiter { ticket, bytes, since: Instant::now() });
        self.pressure.waiters.fetch_add(1, SeqCst);
        // A thread that fails joins the round in flight, or needs a new one; fixed here, when it
        // is queued (and counted in `waiters`), not when it starts waiting: a round that ends in
        // between (while it collects credit) was a round for it too. Judged later, it could start a
        // round of its own at once, while memory was free and the threads ahead of it were about
        // to take theirs: a hook call (a GC) for nothing (see the test below).
        let mark = if state.round_in_flight { state.rounds_started - 1 } else { state.rounds_started };
        Some(QueueSlot { quota: self, ticket, bytes, mark })
    }

    /// The queued part of [`Quota::reserve_slow`]: hook rounds and waiting, as the head or behind it.
    fn wait_turn<'a>(&'a self, mut state: MutexGuard<'a, ReclaimState>, slot: &QueueSlot) -> Result<()> {
        let (ticket, bytes) = (slot.ticket, slot.bytes);
        let timeout = Duration::from_millis(u64::from(self.reclaim_timeout_ms.load(SeqCst)));
        let mut deadline = Instant::now() + timeout;
        let mut served = state.served;
        // Asking again while memory stays away: often enough to find memory that became
        // reclaimable after the last round, rarely enough not to turn waiting into GC churn.
        let reask_after = (timeout / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
        // Rounds up to `mark` were before this waiter; a later one that completed was for it too
        // (see `enqueue`). When the head's round is done and memory stays away for
        // `reask_after`, the head asks again.
        let mut mark = slot.mark;
        // A newcomer that finds others queued starts no round sooner than one round's length after
        // the last (capped at `reask_after`): the threads that round served may still hold the
        // memory they are about to drop, and a round a moment later finds theirs too, rather
        // than one round per thread.
        let not_before = match state.last_round {
            Some((ended, took)) if state.queue.len() > 1 => ended + took.min(reask_after),
            _ => Instant::now(),
        };
        let mut next_ask: Option<Instant> = None;
        loop {
            let head = state.queue.front().map(|w| w.ticket) == Some(ticket);
            if (head || state.may_pass_the_head(bytes, timeout)) && self.try_take(bytes) {
                state.served += 1;
                return Ok(());
            }
            let now = Instant::now();
            if state.served != served {
                served = state.served; // the queue moved: the timeout counts from now
                deadline = now + timeout;
            }
            if head && state.rounds_completed > mark {
                match next_ask {
                    None => next_ask = Some(now + reask_after),
                    Some(at) if now >= at => {
                        mark = state.rounds_started;
                        next_ask = None;
                    }
                    Some(_) => {}
                }
            }
            // With the hook removed meanwhile there is nobody to ask: just wait for memory. Nor
            // while the memory free covers this request and every one ahead of it: they take
            // theirs and this one its own, no GC needed (checked last: it walks the queue).
            let may_ask = state.rounds_completed <= mark
                && !state.round_in_flight
                && now >= not_before
                && state.queued_bytes_up_to(ticket) > self.free();
            if let Some(hook) = state.hook.clone().filter(|_| may_ask) {
                state.round_in_flight = true;
                state.round_runner = ticket;
                state.rounds_started += 1;
                self.reclaim_requests.fetch_add(1, SeqCst);
                drop(state);
                {
                    let _round = Round { quota: self, started: Instant::now() };
                    let _inside = InHook::enter();
                    hook.call(self.shortfall(bytes));
                }
                state = self.state.lock();
                continue; // retry at once: the hook may have freed synchronously
            }
            if now >= deadline {
                // Head or not: at its deadline a waiter takes what fits before it says Limit.
                if self.try_take(bytes) {
                    state.served += 1;
                    return Ok(());
                }
                return Err(self.fail());
            }
            let mut wake_at = next_ask.map_or(deadline, |at| at.min(deadline));
            if now < not_before && state.rounds_completed <= mark {
                wake_at = wake_at.min(not_before);
            }
            self.memory_returned.wait_until(&mut state, wake_at);
        }
    }
}

impl Quota {
    /// Waits until the round in flight, if any, has ended; at once from inside a hook call (the
    /// round in flight is then this thread's own).
    pub(super) fn wait_for_round_in_flight(&self, mut state: MutexGuard<'_, ReclaimState>) {
        if IN_HOOK.with(|depth| depth.get()) > 0 {
            return;
        }
        // Rounds run one at a time: the one in flight, if any, is number `rounds_started`.
        let round = state.rounds_started;
        while state.round_in_flight && state.rounds_started == round {
            self.memory_returned.wait(&mut state); // a round's end notifies
        }
    }

    /// In a child of fork(), on its only thread: the parent's other threads that were queued
    /// here, or running a round, are not in the child. Left in, they would stand at the head of
    /// the queue for good: every reservation of the child not covered by credit would wait its
    /// whole timeout behind them, and no round would ever start again. Only the forking thread's
    /// own place stays, when it forked from inside the hook call of its round.
    pub(super) fn forget_waiters_in_child(&self) {
        let mut state = self.state.lock();
        let ours = (IN_HOOK.with(|depth| depth.get()) > 0).then_some(state.round_runner);
        state.queue.retain(|w| Some(w.ticket) == ours);
        state.round_in_flight = ours.is_some();
        self.pressure.waiters.store(state.queue.len(), SeqCst);
    }
}

impl ReclaimState {
    /// The bytes asked for by the queue from its head up to and including `ticket`.
    fn queued_bytes_up_to(&self, ticket: u64) -> u64 {
        let mut bytes = 0u64;
        for waiter in &self.queue {
            bytes = bytes.saturating_add(waiter.bytes);
            if waiter.ticket == ticket {
                break;
            }
        }
        bytes
    }

    /// Bounded barging (module docs): a request of at most a quarter of the head's may take
    /// memory before it while the head has waited less than half its timeout.
    fn may_pass_the_head(&self, bytes: u64, timeout: Duration) -> bool {
        match self.queue.front() {
            Some(head) => bytes.saturating_mul(4) <= head.bytes && head.since.elapsed() < timeout / 2,
            None => true,
        }
    }
}

/// Marks this thread as inside a hook call for as long as it lives (a panic included).
struct InHook;

impl InHook {
    fn enter() -> InHook {
        IN_HOOK.with(|depth| depth.set(depth.get() + 1));
        InHook
    }
}

impl Drop for InHook {
    fn drop(&mut self) {
        IN_HOOK.with(|depth| depth.set(depth.get() - 1));
    }
}

/// A queued reservation; dropping it leaves the queue and lets the next head try.
struct QueueSlot<'a> {
    quota: &'a Quota,
    ticket: u64,
    /// The bytes it asks for (as its entry in the queue says).
    bytes: u64,
    /// `rounds_started` before the first round that counts for it (see [`Quota::enqueue`]).
    mark: u64,
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        let mut state = self.quota.state.lock();
        if let Some(i) = state.queue.iter().position(|w| w.ticket == self.ticket) {
            state.queue.remove(i);
        }
        self.quota.pressure.waiters.fetch_sub(1, SeqCst);
        self.quota.memory_returned.notify_all();
    }
}

/// A hook call in flight; dropping it (also on a panic in the hook) ends the round.
struct Round<'a> {
    quota: &'a Quota,
    started: Instant,
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        let mut state = self.quota.state.lock();
        state.round_in_flight = false;
        state.rounds_completed += 1;
        state.last_round = Some((Instant::now(), self.started.elapsed()));
        self.quota.memory_returned.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    /// A quota of 100 bytes, all reserved, whose hook only counts its calls.
    fn full_quota_counting_hook_calls(timeout_ms: u32) -> (Quota, Arc<AtomicU64>) {
        let q = Quota::new(100);
        q.set_reclaim_timeout(timeout_ms);
        q.reserve(100).unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        q.set_hook(Hook::new(move |_| {
            c.fetch_add(1, SeqCst);
        }));
        (q, calls)
    }

    /// A thread queued while a round was in flight, and the round ended before it started waiting
    /// (it was collecting credit). The round was for it too: no new hook call while the memory it
    /// needs is free and only the head of the queue, queued before it, stands in its way.
    #[test]
    fn a_round_that_ends_before_a_waiter_looks_still_counts_for_it() {
        let (q, calls) = full_quota_counting_hook_calls(300);
        let mut state = q.state.lock();
        // Another thread's round is in flight, and two reservations queue meanwhile.
        state.round_in_flight = true;
        state.rounds_started += 1;
        let head = q.enqueue(&mut state, 80).unwrap();
        let waiter = q.enqueue(&mut state, 30).unwrap();
        // The round ends before the second one looks.
        state.round_in_flight = false;
        state.rounds_completed += 1;
        state.last_round = Some((Instant::now(), Duration::ZERO));
        drop(state);
        // 30 fit, 80 do not; 30 may not pass a head of 80 (more than a quarter of it).
        q.release(50);
        let started = Instant::now();
        let state = q.state.lock();
        assert_eq!(q.wait_turn(state, &waiter), Ok(()), "served at its deadline: it fits");
        assert_eq!(calls.load(SeqCst), 0, "the round it joined counted: no hook call of its own");
        assert!(started.elapsed() >= Duration::from_millis(300), "it waited behind the head until its deadline");
        assert_eq!(q.stats().reserved, 80);
        drop((waiter, head));
    }

    /// A thread that queues just after a short round, behind a waiter about to take memory that
    /// came back, with enough left for itself too: it waits for its turn and starts no round (a
    /// GC for nothing). It used to start one once a round's length had passed, at once after a
    /// short round.
    #[test]
    fn a_waiter_starts_no_round_while_free_memory_covers_the_queue_up_to_it() {
        let (q, calls) = full_quota_counting_hook_calls(200);
        let mut state = q.state.lock();
        // A round that took no time has just ended; two reservations queue after it.
        state.rounds_started += 1;
        state.rounds_completed += 1;
        state.last_round = Some((Instant::now(), Duration::ZERO));
        let head = q.enqueue(&mut state, 40).unwrap();
        let waiter = q.enqueue(&mut state, 40).unwrap();
        drop(state);
        // Memory comes back before the head looks: 100 free, 80 queued. (The head is never
        // served here, so the waiter waits its whole timeout and then takes what fits.)
        q.release(100);
        let state = q.state.lock();
        assert_eq!(q.wait_turn(state, &waiter), Ok(()));
        assert_eq!(calls.load(SeqCst), 0, "no round while the memory free covered the queue up to it");
        drop((waiter, head));
    }
}
