//! How the C door calls back into C (a reclaim hook, a cleaner action): with the thread's
//! cancellation disabled. Apart from `src/ffi.rs` because cbindgen writes every declaration of that
//! file into the public header, a declaration of glibc's `pthread_setcancelstate` included.

use std::ffi::c_int;

unsafe extern "C" {
    fn pthread_setcancelstate(state: c_int, old_state: *mut c_int) -> c_int;
}
/// `PTHREAD_CANCEL_DISABLE` (glibc and musl alike; the libc crate does not have it).
const PTHREAD_CANCEL_DISABLE: c_int = 1;

/// Runs a C callback (a reclaim hook, a cleaner action) with the thread's cancellation disabled.
/// A cancellation acted on inside it (a `sleep`, a `close`, a condition wait: cancellation points)
/// would unwind through the library's frames, which cannot run their clean-up for it: the process
/// aborted ("exception not rethrown"). Disabled, a cancellation request waits for the next
/// cancellation point after the dm_ call returns, as glibc defers it in its own functions.
pub(crate) fn without_cancellation<R>(call: impl FnOnce() -> R) -> R {
    let mut before: c_int = 0;
    // Safety: sets this thread's own cancellation state; `before` is a valid out-pointer.
    unsafe { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &mut before) };
    let result = call();
    // Safety: as above; puts back what the caller had (disabled stays disabled).
    unsafe { pthread_setcancelstate(before, &mut before) };
    result
}
