//! The asymmetric barrier (the scheme of liburcu and folly's `asymmetricHeavyBarrier`): a thread
//! that works on its own data with plain loads and stores brackets the work with a flag of its own
//! (a plain store and a compiler fence) and checks inside the bracket whether another thread wants
//! in; the rare other thread announces itself, then runs `membarrier(MEMBARRIER_CMD_PRIVATE_
//! EXPEDITED)`, which makes every running thread of the process execute a full memory barrier.
//! Afterwards either the owner's bracket is visible (the other thread waits for it to close) or the
//! owner sees the announcement. The owner pays no locked instruction; the other pays a system call.
//! Used by the quota credit ([`crate::quota::Credit`]) and by a heap's door
//! (`allocators::small::door`).
//!
//! Where `membarrier` is missing (kernels before 4.14, seccomp filters), [`asymmetric`] is false
//! and the users fall back (atomics for the credit; no visits to other threads' heaps).

use once_cell::sync::Lazy;

const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

fn membarrier(cmd: libc::c_int) -> bool {
    // Safety: membarrier takes no pointers.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
}

/// Whether the process registered for expedited barriers, so that [`heavy`] is cheap enough for
/// owners to rely on it.
static ASYMMETRIC: Lazy<bool> = Lazy::new(|| membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED));

/// Makes sure the one-time registration is done: a child of fork() must not find it half done by
/// a thread that does not exist there (it would wait for it forever).
pub(crate) fn init() {
    Lazy::force(&ASYMMETRIC);
}

/// Registers when the library is loaded. In a process that already runs several threads the
/// kernel makes the registration wait for an RCU grace period: 13-20 ms here, which the first
/// allocation paid (and a two-thread benchmark of 40 ms saw as 7 ns a pair). A program linked
/// against the library loads it before `main`, alone, where it costs microseconds; one that
/// `dlopen`s it later (a JVM) pays the wait at load time instead of at its first allocation.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static REGISTER_AT_LOAD: extern "C" fn() = {
    extern "C" fn register() {
        init();
    }
    register
};

/// Whether owners may go without fences and rely on [`heavy`] (see the module's doc).
#[inline(always)]
pub(crate) fn asymmetric() -> bool {
    *ASYMMETRIC
}

/// The rare side: every thread of the process executes a full barrier before this returns.
pub(crate) fn heavy() {
    // A child after fork() starts unregistered: register and try again, then fall back to the
    // slow global barrier. Only if the kernel refuses every kind is there no correct way on.
    if membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
        || (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) && membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED))
        || membarrier(MEMBARRIER_CMD_GLOBAL)
    {
        return;
    }
    eprintln!("directmem: membarrier failed after registering; cannot reach other threads' credit or heaps safely");
    std::process::abort();
}

