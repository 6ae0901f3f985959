//! Helpers for the tests that drive the process-wide library through its C ABI. The library has
//! one global state, so such tests take `serial()` first and leave the defaults behind them.
#![allow(dead_code)]

use directmem::ffi::*;
use parking_lot::{Mutex, MutexGuard};
use std::ffi::c_void;
use std::path::PathBuf;

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises tests of one binary and restores the library's settings when dropped.
pub struct Serial(#[allow(dead_code)] MutexGuard<'static, ()>);

pub fn serial() -> Serial {
    let guard = SERIAL.lock();
    reset();
    Serial(guard)
}

impl Drop for Serial {
    fn drop(&mut self) {
        reset();
    }
}

fn reset() {
    assert_eq!(dm_set_limit(u64::MAX), dm_status::DM_OK);
    assert_eq!(unsafe { dm_set_reclaim_hook(None, std::ptr::null_mut()) }, dm_status::DM_OK);
    assert_eq!(dm_set_reclaim_timeout_ms(1000), dm_status::DM_OK);
}

pub fn stats() -> dm_stats {
    let mut s = dm_stats::default();
    assert_eq!(unsafe { dm_get_stats(&mut s) }, dm_status::DM_OK);
    s
}

pub fn memory_stats() -> dm_memory_stats {
    let mut m = dm_memory_stats::default();
    assert_eq!(unsafe { dm_get_memory_stats(&mut m) }, dm_status::DM_OK);
    m
}

pub fn allocate(size: usize, alignment: usize) -> *mut c_void {
    let mut p = std::ptr::null_mut();
    assert_eq!(unsafe { dm_allocate(size, alignment, &mut p) }, dm_status::DM_OK);
    p
}

pub fn free(p: *mut c_void) {
    assert_eq!(unsafe { dm_free(p) }, dm_status::DM_OK);
}

/// Where cargo put libdirectmem.so for this test run: next to the test binary (target/<profile>/deps).
pub fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().to_path_buf();
    assert!(dir.join("libdirectmem.so").exists(), "no libdirectmem.so in {}", dir.display());
    // Programs linked against it look for its soname, libdirectmem.so.MAJOR, at run time.
    let soname = dir.join(format!("libdirectmem.so.{}", env!("CARGO_PKG_VERSION_MAJOR")));
    if std::fs::symlink_metadata(&soname).is_err() {
        let _ = std::os::unix::fs::symlink("libdirectmem.so", &soname); // a racing test may have made it
    }
    dir
}

pub fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
