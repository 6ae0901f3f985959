//! The C ABI's contract, checked through the exported functions: bad input gets its documented
//! status and changes nothing; dm_free/dm_clean races release each block exactly once; the reclaim
//! protocol serves waiters from a hook or from other threads' frees.

mod common;
use common::{allocate, free, serial, stats};
use directmem::ffi::dm_status::*;
use directmem::ffi::*;
use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};

#[test]
fn bad_input_gets_its_documented_status_and_changes_nothing() {
    let _s = serial();
    let live = allocate(256, 0);
    let mut cleaner = 0;
    assert_eq!(unsafe { dm_cleaner_register(live, None, std::ptr::null_mut(), &mut cleaner) }, DM_OK);
    let freed = allocate(64, 0);
    free(freed);
    let mut local = 0u64;
    let local_ptr = &mut local as *mut u64 as *mut c_void;
    let mut out: *mut c_void = std::ptr::null_mut();
    let mut c_out: dm_cleaner = 0;
    let before = stats();

    type Case<'a> = (&'a str, Box<dyn Fn() -> dm_status + 'a>, dm_status);
    let out_ptr = &mut out as *mut *mut c_void;
    let c_out_ptr = &mut c_out as *mut dm_cleaner;
    let cases: Vec<Case> = vec![
        (
            "allocate: NULL out",
            Box::new(|| unsafe { dm_allocate(16, 0, std::ptr::null_mut()) }),
            DM_ERR_INVALID_ARGUMENT,
        ),
        ("allocate: alignment 3", Box::new(|| unsafe { dm_allocate(16, 3, out_ptr) }), DM_ERR_INVALID_ARGUMENT),
        (
            "allocate: alignment 2 GiB",
            Box::new(|| unsafe { dm_allocate(16, 2 << 30, out_ptr) }),
            DM_ERR_INVALID_ARGUMENT,
        ),
        ("allocate: SIZE_MAX", Box::new(|| unsafe { dm_allocate(usize::MAX, 0, out_ptr) }), DM_ERR_INVALID_ARGUMENT),
        (
            "allocate: SIZE_MAX - 8 page-aligned",
            Box::new(|| unsafe { dm_allocate(usize::MAX - 8, 4096, out_ptr) }),
            DM_ERR_INVALID_ARGUMENT,
        ),
        ("allocate: above the limit", Box::new(|| unsafe { dm_allocate(1 << 40, 0, out_ptr) }), DM_ERR_LIMIT),
        (
            "free: interior pointer",
            Box::new(|| unsafe { dm_free((live as *mut u8).add(1) as *mut c_void) }),
            DM_ERR_NOT_LIVE,
        ),
        ("free: already freed", Box::new(|| unsafe { dm_free(freed) }), DM_ERR_NOT_LIVE),
        ("free: stack pointer", Box::new(|| unsafe { dm_free(local_ptr) }), DM_ERR_NOT_LIVE),
        ("free: wild pointer", Box::new(|| unsafe { dm_free(8 as *mut c_void) }), DM_ERR_NOT_LIVE),
        (
            "register: NULL out",
            Box::new(|| unsafe { dm_cleaner_register(live, None, std::ptr::null_mut(), std::ptr::null_mut()) }),
            DM_ERR_INVALID_ARGUMENT,
        ),
        (
            "register: freed block",
            Box::new(|| unsafe { dm_cleaner_register(freed, None, std::ptr::null_mut(), c_out_ptr) }),
            DM_ERR_NOT_LIVE,
        ),
        (
            "register: NULL block",
            Box::new(|| unsafe { dm_cleaner_register(std::ptr::null_mut(), None, std::ptr::null_mut(), c_out_ptr) }),
            DM_ERR_NOT_LIVE,
        ),
        ("clean: 0", Box::new(|| dm_clean(0)), DM_ERR_NOT_LIVE),
        ("clean: never issued", Box::new(|| dm_clean(u64::MAX)), DM_ERR_NOT_LIVE),
        ("clean: neighbour of a live handle", Box::new(|| dm_clean(cleaner + 1)), DM_ERR_NOT_LIVE),
        ("unreserve: more than held", Box::new(|| dm_unreserve(1)), DM_ERR_INVALID_ARGUMENT),
        ("reserve: above the limit", Box::new(|| dm_reserve(usize::MAX)), DM_ERR_LIMIT),
        ("stats: NULL out", Box::new(|| unsafe { dm_get_stats(std::ptr::null_mut()) }), DM_ERR_INVALID_ARGUMENT),
    ];
    assert_eq!(dm_set_limit(1 << 30), DM_OK);
    let mut failures = 0;
    for (name, call, want) in &cases {
        let got = call();
        assert_eq!(got, *want, "{name}");
        if got == DM_ERR_LIMIT {
            failures += 1;
        }
        let now = stats();
        assert_eq!(
            (now.reserved, now.capacity, now.count, now.live_cleaners, now.total_allocations),
            (before.reserved, before.capacity, before.count, before.live_cleaners, before.total_allocations),
            "{name} changed the accounting"
        );
        assert!(out.is_null() && c_out == 0, "{name} wrote an out-pointer on failure");
    }
    assert_eq!(stats().limit_failures, before.limit_failures + failures);
    // The no-ops that succeed.
    assert_eq!(unsafe { dm_free(std::ptr::null_mut()) }, DM_OK);
    assert_eq!(dm_reserve(0), DM_OK);
    assert_eq!(dm_unreserve(0), DM_OK);
    assert_eq!(dm_clean(cleaner), DM_OK);
    assert_eq!(stats().count, 0);
}

#[test]
fn status_messages_exist_for_every_integer() {
    for status in [-1, 0, 1, 2, 3, 4, 5, 6, i32::MIN, i32::MAX] {
        let text = unsafe { CStr::from_ptr(dm_status_message(status)) }.to_str().unwrap();
        assert!(!text.is_empty(), "{status}");
    }
    let limit = unsafe { CStr::from_ptr(dm_status_message(DM_ERR_LIMIT as i32)) };
    assert!(limit.to_str().unwrap().contains("limit"));
    assert_eq!(unsafe { CStr::from_ptr(dm_status_message(42)) }.to_str().unwrap(), "unknown status");
    assert!(dm_page_size().is_power_of_two());
}

static ACTION_RUNS: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn count_action(ctx: *mut c_void) {
    // Safety: ctx is a `&AtomicUsize` that outlives the test.
    unsafe { &*(ctx as *const AtomicUsize) }.fetch_add(1, SeqCst);
    ACTION_RUNS.fetch_add(1, SeqCst);
}

#[test]
fn racing_frees_and_cleans_release_each_block_exactly_once() {
    let _s = serial();
    const BLOCKS: usize = 2000;
    const THREADS: usize = 6;
    const CLEANERS: usize = 3;
    let before = stats();
    let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..BLOCKS * CLEANERS).map(|_| AtomicUsize::new(0)).collect());
    let mut blocks = Vec::new();
    for b in 0..BLOCKS {
        let p = allocate(if b % 10 == 0 { 200 << 10 } else { 64 + b }, 0);
        let mut handles = Vec::new();
        for c in 0..CLEANERS {
            let mut h = 0;
            let ctx = &runs[b * CLEANERS + c] as *const AtomicUsize as *mut c_void;
            assert_eq!(unsafe { dm_cleaner_register(p, Some(count_action), ctx, &mut h) }, DM_OK);
            handles.push(h);
        }
        blocks.push((p as usize, handles));
    }
    let blocks = Arc::new(blocks);
    let winners: Arc<Vec<AtomicUsize>> = Arc::new((0..BLOCKS).map(|_| AtomicUsize::new(0)).collect());
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (blocks, winners, barrier) = (blocks.clone(), winners.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for (b, (address, handles)) in blocks.iter().enumerate() {
                    // Each thread goes at the block by a different route.
                    let status = match (t + b) % (CLEANERS + 1) {
                        0 => unsafe { dm_free(*address as *mut c_void) },
                        k => dm_clean(handles[k - 1]),
                    };
                    match status {
                        DM_OK => {
                            winners[b].fetch_add(1, SeqCst);
                        }
                        DM_ERR_NOT_LIVE => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(winners.iter().all(|w| w.load(SeqCst) == 1), "every block has exactly one DM_OK");
    assert!(runs.iter().all(|r| r.load(SeqCst) == 1), "every action ran exactly once");
    let after = stats();
    assert_eq!((after.reserved, after.capacity, after.count, after.live_cleaners), (0, 0, 0, 0));
    assert_eq!(after.cleaners_run - before.cleaners_run, (BLOCKS * CLEANERS) as u64);
}

struct Chain {
    next: *mut c_void,
}

unsafe extern "C" fn free_next(ctx: *mut c_void) {
    // Safety: ctx is a live `Chain` owned by the test.
    let chain = unsafe { &*(ctx as *const Chain) };
    assert_eq!(unsafe { dm_free(chain.next) }, DM_OK, "an action may call back into the library");
}

#[test]
fn an_action_may_free_other_blocks() {
    let _s = serial();
    let second = allocate(64, 0);
    let first = allocate(64, 0);
    let chain = Chain { next: second };
    let mut h = 0;
    assert_eq!(
        unsafe { dm_cleaner_register(first, Some(free_next), &chain as *const Chain as *mut c_void, &mut h) },
        DM_OK
    );
    free(first);
    assert_eq!(stats().count, 0);
}

struct Pool {
    blocks: parking_lot::Mutex<Vec<usize>>,
}

unsafe extern "C" fn release_pool(ctx: *mut c_void, _wanted: usize) {
    // Safety: ctx is the test's `Pool`, installed only while it lives.
    let pool = unsafe { &*(ctx as *const Pool) };
    let taken: Vec<usize> = std::mem::take(&mut *pool.blocks.lock());
    for b in taken {
        assert_eq!(unsafe { dm_free(b as *mut c_void) }, DM_OK);
    }
}

#[test]
fn threads_over_the_limit_wait_for_memory_and_none_fails() {
    let _s = serial();
    const THREADS: usize = 8;
    const ROUNDS: usize = 300;
    const BLOCK: usize = 256 << 10;
    let pool = Pool { blocks: parking_lot::Mutex::new(Vec::new()) };
    assert_eq!(dm_set_limit((4 * BLOCK) as u64), DM_OK);
    assert_eq!(dm_set_reclaim_timeout_ms(30_000), DM_OK);
    assert_eq!(unsafe { dm_set_reclaim_hook(Some(release_pool), &pool as *const Pool as *mut c_void) }, DM_OK);
    let before = stats();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let pool = &pool;
            scope.spawn(move || {
                for i in 0..ROUNDS {
                    let p = allocate(BLOCK, 0);
                    if (t + i) % 3 == 0 {
                        pool.blocks.lock().push(p as usize); // "dropped": only the hook frees it
                    } else {
                        free(p);
                    }
                }
            });
        }
    });
    unsafe { release_pool(&pool as *const Pool as *mut c_void, 0) };
    let after = stats();
    assert_eq!(after.limit_failures, before.limit_failures, "no thread hit the limit");
    assert_eq!(after.total_allocations - before.total_allocations, (THREADS * ROUNDS) as u64);
    assert_eq!((after.reserved, after.count), (0, 0));
}

#[test]
fn stale_cleaner_handles_leave_reused_addresses_alone() {
    let _s = serial();
    let mut reused = 0;
    for _ in 0..200 {
        let p = allocate(48, 0);
        let mut old = 0;
        assert_eq!(unsafe { dm_cleaner_register(p, None, std::ptr::null_mut(), &mut old) }, DM_OK);
        free(p);
        let q = allocate(48, 0);
        if q == p {
            reused += 1;
        }
        assert_eq!(dm_clean(old), DM_ERR_NOT_LIVE);
        assert_eq!(stats().count, 1, "the new block is still live");
        free(q);
    }
    assert!(reused > 0, "the allocator reused an address at least once, so the case was exercised");
}

#[test]
fn limit_zero_and_limit_below_reserved() {
    let _s = serial();
    let p = allocate(1000, 0);
    assert_eq!(dm_set_limit(0), DM_OK);
    let mut out = std::ptr::null_mut();
    assert_eq!(unsafe { dm_allocate(1, 0, &mut out) }, DM_ERR_LIMIT);
    assert_eq!(dm_reserve(1), DM_ERR_LIMIT);
    let z = allocate(0, 0); // charged nothing: still fits
    assert_eq!(dm_set_limit(500), DM_OK);
    assert_eq!(stats().reserved, 1000, "existing blocks stay");
    assert_eq!(unsafe { dm_allocate(1, 0, &mut out) }, DM_ERR_LIMIT);
    free(p);
    let q = allocate(500, 0);
    free(q);
    free(z);
}

/// A program built against an older header passes a `dm_stats` of the size it knew; the library
/// must never write past it. New counters go into a struct of their own (`dm_memory_stats`).
#[test]
fn dm_stats_keeps_the_layout_of_0_1() {
    assert_eq!(std::mem::size_of::<dm_stats>(), 10 * 8, "dm_stats grew: old programs would be overrun");
    assert_eq!(std::mem::size_of::<dm_memory_stats>(), 2 * 8);
}
