//! Fault injection (feature `fault-injection`): the system allocator refusing, and a reclaim hook
//! that panics. The documented status comes back, nothing stays reserved, the library keeps working.

mod common;
use common::{allocate, free, serial, stats};
use directmem::allocators::system::fault::fail_nth_allocation;
use directmem::ffi::dm_status::*;
use directmem::ffi::*;

#[test]
fn a_refused_system_allocation_rolls_back_and_the_next_one_works() {
    let _s = serial();
    for size in [64usize, 4096, 1 << 20] {
        let before = stats();
        fail_nth_allocation(1);
        let mut p = std::ptr::null_mut();
        assert_eq!(unsafe { dm_allocate(size, 0, &mut p) }, DM_ERR_NO_MEMORY);
        assert!(p.is_null());
        let now = stats();
        assert_eq!(
            (now.reserved, now.count, now.total_allocations),
            (before.reserved, before.count, before.total_allocations)
        );
        free(allocate(size, 0));
    }
}

#[test]
fn the_nth_allocation_fails_and_only_that_one() {
    let _s = serial();
    fail_nth_allocation(3);
    let a = allocate(100, 0);
    let b = allocate(100, 0);
    let mut p = std::ptr::null_mut();
    assert_eq!(unsafe { dm_allocate(100, 0, &mut p) }, DM_ERR_NO_MEMORY);
    let c = allocate(100, 0);
    assert_eq!(stats().reserved, 300);
    for x in [a, b, c] {
        free(x);
    }
    assert_eq!(stats().reserved, 0);
}

#[test]
fn a_panicking_reclaim_hook_becomes_dm_err_internal_and_leaves_nothing_behind() {
    let _s = serial();
    assert_eq!(dm_set_limit(1000), DM_OK);
    let held = allocate(1000, 0);
    directmem::manager::global()
        .expect("the manager")
        .set_reclaim_hook(directmem::quota::Hook::new(|_| panic!("injected panic in the reclaim hook")));
    let mut p = std::ptr::null_mut();
    assert_eq!(unsafe { dm_allocate(10, 0, &mut p) }, DM_ERR_INTERNAL);
    assert_eq!(dm_reserve(10), DM_ERR_INTERNAL);
    assert!(p.is_null());
    assert_eq!(stats().reserved, 1000);
    // Still working: the queue was left, the round ended.
    directmem::manager::global().expect("the manager").set_reclaim_hook(None);
    free(held);
    free(allocate(1000, 0));
    assert_eq!((stats().reserved, stats().count), (0, 0));
}
