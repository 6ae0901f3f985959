//! Unit tests of the quota: limits, thread credit, the reclaim queue and its hook rounds.

use super::*;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// Waits until `ready()` holds. A fault that keeps it from ever holding fails the test after
/// 30 s rather than hanging the whole run (a clean-clone CI run once hung in such a wait).
fn wait_for(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "waited 30 s for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn reservations_fit_until_the_limit_and_release_makes_room() {
    let q = Quota::new(10);
    q.reserve(6).unwrap();
    q.reserve(4).unwrap();
    assert_eq!(q.reserve(1), Err(Error::Limit));
    q.release(4);
    q.reserve(3).unwrap();
    let s = q.stats();
    assert_eq!((s.reserved, s.peak_reserved, s.limit_failures, s.reclaim_requests), (9, 10, 1, 0));
}

#[test]
fn zero_bytes_always_fit_even_under_limit_zero() {
    let q = Quota::new(0);
    q.reserve(0).unwrap();
    assert_eq!(q.reserve(1), Err(Error::Limit));
}

#[test]
fn unreserving_more_than_is_held_is_refused_and_changes_nothing() {
    let q = Quota::new(100);
    q.reserve_raw(10).unwrap();
    q.reserve(50).unwrap(); // a block's bytes are not "held"
    assert_eq!(q.unreserve_raw(11), Err(Error::InvalidArgument));
    assert_eq!(q.stats().reserved, 60);
    q.unreserve_raw(10).unwrap();
    assert_eq!(q.stats().reserved, 50);
    assert_eq!(q.unreserve_raw(1), Err(Error::InvalidArgument));
}

#[test]
fn a_request_larger_than_the_limit_fails_without_calling_the_hook() {
    let q = Quota::new(10);
    let called = Arc::new(AtomicBool::new(false));
    let c = called.clone();
    q.set_hook(Hook::new(move |_| c.store(true, SeqCst)));
    assert_eq!(q.reserve(11), Err(Error::Limit));
    assert!(!called.load(SeqCst));
    assert_eq!(q.stats().reclaim_requests, 0);
}

#[test]
fn lowering_the_limit_below_reserved_keeps_blocks_and_refuses_new_ones() {
    let q = Quota::new(100);
    q.reserve(80).unwrap();
    q.set_limit(50);
    assert_eq!(q.reserve(1), Err(Error::Limit));
    q.release(40);
    q.reserve(10).unwrap();
    assert_eq!(q.stats().reserved, 50);
}

#[test]
fn a_hook_that_frees_synchronously_lets_the_reservation_through() {
    let q = Arc::new(Quota::new(10));
    q.reserve(10).unwrap();
    let weak = Arc::downgrade(&q);
    q.set_hook(Hook::new(move |wanted| {
        assert_eq!(wanted, 4);
        weak.upgrade().unwrap().release(10);
    }));
    q.reserve(4).unwrap();
    let s = q.stats();
    assert_eq!((s.reserved, s.reclaim_requests, s.limit_failures), (4, 1, 0));
}

#[test]
fn a_waiter_is_woken_by_a_release_from_another_thread_long_before_its_timeout() {
    let q = Arc::new(Quota::new(MIB));
    q.set_reclaim_timeout(60_000);
    q.reserve(MIB).unwrap();
    q.set_hook(Hook::new(|_| {}));
    let q2 = q.clone();
    let releaser = std::thread::spawn(move || {
        wait_for("a queued waiter", || queued(q2.pressure.waiters.load(SeqCst)) > 0);
        q2.release(MIB);
    });
    let started = Instant::now();
    q.reserve(MIB / 2).unwrap();
    releaser.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30), "woken by the release, not the timeout");
}

#[test]
fn a_newcomer_behind_waiters_asks_no_sooner_than_a_round_length_after_the_last_round() {
    let q = Arc::new(Quota::new(10));
    q.set_reclaim_timeout(2_000); // the head asks again after 100 ms of nothing coming back
    q.reserve(10).unwrap();
    let rounds: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let r = rounds.clone();
    q.set_hook(Hook::new(move |_| {
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(60)); // a GC that finds nothing
        r.lock().push((started, Instant::now()));
    }));
    std::thread::scope(|s| {
        let first = s.spawn(|| q.reserve(5));
        wait_for("the first round", || !rounds.lock().is_empty());
        // The first waiter is queued behind an empty round; a second one arrives at once.
        let second = s.spawn(|| q.reserve(5));
        wait_for("a second round", || rounds.lock().len() >= 2);
        let (_, first_ended) = rounds.lock()[0];
        let (second_started, _) = rounds.lock()[1];
        assert!(
            second_started - first_ended >= Duration::from_millis(50),
            "second round {:?} after the first",
            second_started - first_ended
        );
        q.release(10);
        first.join().unwrap().unwrap();
        second.join().unwrap().unwrap();
    });
}

#[test]
fn a_waiter_gives_up_after_the_timeout() {
    let q = Quota::new(10);
    q.set_reclaim_timeout(50);
    q.reserve(10).unwrap();
    q.set_hook(Hook::new(|_| {}));
    let started = Instant::now();
    assert_eq!(q.reserve(1), Err(Error::Limit));
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(q.pressure.waiters.load(SeqCst), 0);
    assert_eq!(q.state.lock().queue.len(), 0);
}

#[test]
fn a_queue_that_keeps_moving_is_never_refused_however_long_it_waits() {
    // Five threads each hold the whole budget 300 ms in turn: the last waits ~1.2 s, longer
    // than its 1 s timeout, but the queue moves every 300 ms. With a deadline fixed at the
    // first refusal the last one was refused.
    let q = Arc::new(Quota::new(10));
    q.set_reclaim_timeout(1_000);
    q.set_hook(Hook::new(|_| {}));
    q.reserve(10).unwrap();
    let takers: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let got = q.reserve(10);
                if got.is_ok() {
                    std::thread::sleep(Duration::from_millis(300));
                    q.release(10);
                }
                got
            })
        })
        .collect();
    wait_for("4 queued waiters", || queued(q.pressure.waiters.load(SeqCst)) >= 4);
    std::thread::sleep(Duration::from_millis(300));
    q.release(10);
    for taker in takers {
        assert_eq!(taker.join().unwrap(), Ok(()));
    }
    assert_eq!(q.stats().reserved, 0);
    assert_eq!(q.stats().limit_failures, 0);
}

#[test]
fn a_waiter_whose_hook_is_removed_meanwhile_waits_for_memory_until_its_timeout() {
    // Both ways out: memory comes back (it gets it), or not (it fails at the deadline, no
    // earlier, and does not hang). Before the fix the second case never reached its deadline.
    for release_meanwhile in [true, false] {
        let q = Arc::new(Quota::new(10));
        q.set_reclaim_timeout(300);
        q.reserve(10).unwrap();
        let weak = Arc::downgrade(&q);
        q.set_hook(Hook::new(move |_| weak.upgrade().unwrap().set_hook(None)));
        let q2 = q.clone();
        let releaser = std::thread::spawn(move || {
            if release_meanwhile {
                wait_for("a hook call", || q2.stats().reclaim_requests > 0);
                std::thread::sleep(Duration::from_millis(50));
                q2.release(10);
            }
        });
        let started = Instant::now();
        let outcome = q.reserve(5);
        releaser.join().unwrap();
        let s = q.stats();
        assert_eq!(s.reclaim_requests, 1, "one round, then no hook to ask");
        if release_meanwhile {
            assert_eq!(outcome, Ok(()));
            assert_eq!(s.reserved, 5);
        } else {
            assert_eq!(outcome, Err(Error::Limit));
            assert!(started.elapsed() >= Duration::from_millis(300));
            assert_eq!(s.reserved, 10);
        }
        assert_eq!(q.pressure.waiters.load(SeqCst), 0);
    }
}

#[test]
fn try_reserve_never_waits_nor_counts_a_failure() {
    let q = Quota::new(10);
    q.set_hook(Hook::new(|_| panic!("try_reserve must not reclaim")));
    q.try_reserve(6).unwrap();
    assert_eq!(q.try_reserve(5), Err(Error::Limit));
    let s = q.stats();
    assert_eq!((s.reserved, s.limit_failures, s.reclaim_requests), (6, 0, 0));
}

#[test]
fn concurrent_failures_share_one_hook_round() {
    let q = Arc::new(Quota::new(100));
    q.set_reclaim_timeout(5_000);
    q.reserve(100).unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let (c, weak) = (calls.clone(), Arc::downgrade(&q));
    q.set_hook(Hook::new(move |_| {
        // A second call is the failure looked for: it returns at once and the count below
        // says so (it used to wait here for 4 waiters that had been served: a hang).
        if c.fetch_add(1, SeqCst) > 0 {
            return;
        }
        let q = weak.upgrade().unwrap();
        // Let every other thread fail and join this round before memory comes back. Queued
        // ones only: `waiters` also counts reservations collecting credit, by the billion.
        let deadline = Instant::now() + Duration::from_secs(10);
        while queued(q.pressure.waiters.load(SeqCst)) < 4 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        q.release(100);
    }));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || q.reserve(25))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(q.stats().reserved, 100);
}

/// A quota of 100 with 90 held, a hook that frees nothing, and a thread reserving `bytes`, which
/// does not fit: the head of the queue once it has queued.
fn ninety_held_and_a_waiter(timeout_ms: u32, bytes: u64) -> (Arc<Quota>, std::thread::JoinHandle<Result<()>>) {
    let q = Arc::new(Quota::new(100));
    q.set_reclaim_timeout(timeout_ms);
    q.reserve(90).unwrap();
    q.set_hook(Hook::new(|_| {}));
    let q2 = q.clone();
    (q, std::thread::spawn(move || q2.reserve(bytes)))
}

#[test]
fn a_newcomer_queues_behind_a_waiter_even_when_its_request_fits() {
    let (q, big) = ninety_held_and_a_waiter(10_000, 12); // waits for 2 more bytes
    wait_for("the big request queued", || queued(q.pressure.waiters.load(SeqCst)) > 0);
    let q3 = q.clone();
    // Fits, but is more than a quarter of the head's request: must queue.
    let small = std::thread::spawn(move || q3.reserve(5));
    wait_for("the newcomer queued", || queued(q.pressure.waiters.load(SeqCst)) >= 2);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(q.stats().reserved, 90, "the newcomer did not jump the queue");
    q.release(90);
    big.join().unwrap().unwrap();
    small.join().unwrap().unwrap();
    assert_eq!(q.stats().reserved, 17);
}

#[test]
fn a_request_of_a_quarter_of_the_heads_or_less_passes_it_while_memory_for_it_is_free() {
    let q = Arc::new(Quota::new(100));
    q.set_reclaim_timeout(10_000);
    q.reserve(80).unwrap();
    let gate = Arc::new(std::sync::Barrier::new(2));
    let g = gate.clone();
    // A slow round: the hook holds the big request's round until the test lets it go.
    q.set_hook(Hook::new(move |_| {
        g.wait();
        g.wait();
    }));
    let q2 = q.clone();
    let big = std::thread::spawn(move || q2.reserve(60));
    gate.wait(); // the round is in flight
    let started = Instant::now();
    q.reserve(5).unwrap(); // 5 * 4 <= 60, and 5 bytes are free: served now, not after the round
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(q.stats().reserved, 85);
    gate.wait();
    q.release(85);
    big.join().unwrap().unwrap();
    assert_eq!(q.stats().reserved, 60);
}

#[test]
fn a_reservation_inside_the_hook_is_served_at_once_when_it_fits() {
    let q = Arc::new(Quota::new(1000));
    q.set_reclaim_timeout(10_000);
    q.reserve(600).unwrap();
    let q2 = q.clone();
    let nested = Arc::new(std::sync::Mutex::new(Vec::new()));
    let n = nested.clone();
    q.set_hook(Hook::new(move |_| {
        n.lock().unwrap().push(q2.reserve(64)); // fits: 336 free
        n.lock().unwrap().push(q2.reserve(10_000)); // never fits: refused at once
        q2.release(600);
    }));
    let started = Instant::now();
    q.reserve(600).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "no wait behind its own ticket");
    assert_eq!(*nested.lock().unwrap(), vec![Ok(()), Err(Error::Limit)]);
    assert_eq!(q.stats().reserved, 664);
}

#[test]
fn a_waiter_at_its_deadline_takes_memory_that_fits_even_behind_the_head() {
    let (q, big) = ninety_held_and_a_waiter(2_000, 20); // can never fit while 90 are held
                                                        // Until the head asked the hook: it reads its timeout just before. (Waiting for `waiters`
                                                        // instead let the timeout below reach the head too, which then failed first: 6 of 6 runs
                                                        // of this test alone.)
    wait_for("the head's hook call", || q.stats().reclaim_requests > 0);
    q.set_reclaim_timeout(100); // the newcomer's deadline comes long before the head's
                                // 8 bytes fit, but 8 * 4 > 20: it queues, and at its deadline it takes them anyway.
    assert_eq!(q.reserve(8), Ok(()));
    assert_eq!(q.pressure.waiters.load(SeqCst), 1, "the head was still queued");
    assert_eq!(big.join().unwrap(), Err(Error::Limit));
    assert_eq!(q.stats().reserved, 98);
}

#[test]
fn memory_that_becomes_reclaimable_after_the_round_is_found_by_asking_again() {
    let q = Arc::new(Quota::new(10));
    q.set_reclaim_timeout(10_000);
    q.reserve(10).unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let (c, weak) = (calls.clone(), Arc::downgrade(&q));
    // The first round finds nothing; the memory is "dropped" only afterwards.
    q.set_hook(Hook::new(move |_| {
        if c.fetch_add(1, SeqCst) == 1 {
            weak.upgrade().unwrap().release(10);
        }
    }));
    let started = Instant::now();
    q.reserve(5).unwrap();
    assert_eq!(calls.load(SeqCst), 2);
    assert!(started.elapsed() < Duration::from_secs(5), "asked again long before the timeout");
}

#[test]
fn a_panicking_hook_leaves_the_queue_and_the_round_clean() {
    let q = Quota::new(10);
    q.reserve(10).unwrap();
    q.set_hook(Hook::new(|_| panic!("injected")));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.reserve(1)));
    assert!(r.is_err());
    assert_eq!(q.pressure.waiters.load(SeqCst), 0);
    let state = q.state.lock();
    assert!(state.queue.is_empty() && !state.round_in_flight);
    drop(state);
    q.set_hook(None);
    q.release(10);
    q.reserve(10).unwrap();
}

#[test]
fn credit_is_left_out_of_the_stats_and_spent_without_touching_the_budget() {
    let q = Quota::new(MIB);
    let credit = q.new_credit().unwrap();
    q.reserve_with(&credit, 100).unwrap();
    let taken = q.reserved.load(SeqCst);
    assert_eq!(taken, 100 + CREDIT_CHUNK, "a chunk taken ahead");
    assert_eq!((q.stats().reserved, q.stats().peak_reserved), (100, 100));
    assert!(q.spend(&credit, 50));
    assert_eq!(q.reserved.load(SeqCst), taken, "spent from the credit alone");
    q.release_with(&credit, 150);
    assert_eq!(q.stats().reserved, 0);
    q.retire_credit(&credit);
    assert_eq!(q.reserved.load(SeqCst), 0, "a retired credit goes back to the budget");
}

#[test]
fn other_threads_credit_is_collected_before_a_reservation_fails() {
    let q = Arc::new(Quota::new(CREDIT_CHUNK + 100));
    let q2 = q.clone();
    // Another thread takes a chunk ahead and stays alive holding it.
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let credit = q2.new_credit().unwrap();
        q2.reserve_with(&credit, 10).unwrap();
        q2.release_with(&credit, 10);
        tx.send(()).unwrap();
        done_rx.recv().unwrap();
        q2.retire_credit(&credit);
    });
    rx.recv().unwrap();
    assert!(q.reserved.load(SeqCst) > 100, "the holder has credit");
    q.reserve(CREDIT_CHUNK + 100).unwrap();
    assert_eq!(q.stats().limit_failures, 0);
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(q.stats().reserved, CREDIT_CHUNK + 100);
}

#[test]
fn idle_threads_credit_serves_a_reservation_without_waiting_for_a_thread_inside_its_bracket() {
    let q = Arc::new(Quota::new(2 * CREDIT_CHUNK + 200));
    let (inside, idle) = (q.new_credit().unwrap(), q.new_credit().unwrap());
    for credit in [&inside, &idle] {
        q.reserve_with(credit, 100).unwrap();
        q.release_with(credit, 100); // each holds a chunk and 100 bytes: the budget is full
    }
    // What a thread descheduled inside its bracket leaves, for as long as it is away.
    inside.bracket.enter();
    let reserve_in_thread = |bytes| {
        let (sender, receiver) = std::sync::mpsc::channel();
        let q = q.clone();
        std::thread::spawn(move || sender.send(q.reserve(bytes)).unwrap());
        receiver
    };
    let served = reserve_in_thread(CREDIT_CHUNK).recv_timeout(Duration::from_secs(10));
    assert_eq!(served, Ok(Ok(())), "the reservation waited for the thread inside its bracket");
    // Needing that thread's credit too, a reservation waits for it (and then gets it). Without
    // `membarrier` owners update their credit with atomics, so it is taken at once.
    let waiting = reserve_in_thread(CREDIT_CHUNK + 100);
    if crate::barrier::asymmetric() {
        assert!(waiting.recv_timeout(Duration::from_millis(100)).is_err(), "served before the credit came back");
        inside.bracket.leave();
        assert_eq!(waiting.recv_timeout(Duration::from_secs(10)), Ok(Ok(())));
    } else {
        assert_eq!(waiting.recv_timeout(Duration::from_secs(10)), Ok(Ok(())), "atomics: served at once");
        inside.bracket.leave();
    }
    assert_eq!(q.stats().limit_failures, 0);
    assert_eq!(q.reserved.load(SeqCst), 2 * CREDIT_CHUNK + 100);
}

#[test]
fn a_lowered_limit_holds_for_credit_too() {
    let q = Quota::new(MIB);
    let credit = q.new_credit().unwrap();
    q.reserve_with(&credit, 1000).unwrap();
    q.set_limit(500);
    assert!(!q.spend(&credit, 1), "set_limit collected the credit");
    assert_eq!(q.reserve_with(&credit, 1), Err(Error::Limit));
    // Freed while above the limit: back to the budget, not into the credit.
    q.release_with(&credit, 1000);
    assert_eq!(q.reserved.load(SeqCst), 0);
    q.reserve_with(&credit, 500).unwrap();
    assert_eq!(q.reserve_with(&credit, 1), Err(Error::Limit));
}
