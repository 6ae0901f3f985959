//! The asymmetric barrier (the scheme of liburcu and folly's `asymmetricHeavyBarrier`): a thread
//! that works on its own data with plain loads and stores brackets the work with a flag of its own
//! (a plain store and a compiler fence) and checks inside the bracket whether another thread wants
//! in; the rare other thread announces itself, then runs `membarrier(MEMBARRIER_CMD_PRIVATE_
//! EXPEDITED)`, which makes every running thread of the process execute a full memory barrier.
//! Afterwards either the owner's bracket is visible (the other thread waits for it to close) or the
//! owner sees the announcement (and says so in its flag, so that a bracket it enters meanwhile is
//! not waited for). The owner pays no locked instruction; the other pays a system call.
//! Used by the quota credit ([`crate::quota::Credit`]) and by a heap's door
//! (`allocators::small::door`).
//!
//! Where `membarrier` is missing (kernels before 4.14, seccomp filters), [`asymmetric`] is false:
//! the credit's owners use atomics for good, and every owner fences its bracket itself (a full
//! fence when it enters, paired with one on the other side: Dekker's handshake), so other threads'
//! heaps can still be visited.

use std::sync::atomic::{compiler_fence, fence, AtomicU64, AtomicU8, Ordering::*};
use std::sync::LazyLock;

const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

fn membarrier(cmd: libc::c_int) -> bool {
    // Safety: membarrier takes no pointers.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
}

/// Whether the process registered for expedited barriers, so that [`heavy`] is cheap enough for
/// owners to rely on it. (std's cell: a thread that finds another making it waits on a futex,
/// where `once_cell`'s took a thread handle from `malloc`, infallibly.)
static ASYMMETRIC: LazyLock<bool> = LazyLock::new(|| membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED));

/// Makes sure the one-time registration is done: a child of fork() must not find it half done by
/// a thread that does not exist there (it would wait for it forever).
pub(crate) fn init() {
    LazyLock::force(&ASYMMETRIC);
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

/// The rare side, after asking owners something ([`Bracket::ask`]): from here on each owner either
/// sees the request or its bracket is visible (to [`Bracket::owner_complies`]). Without
/// `membarrier`, a full fence here pairs with the one each owner makes when it enters.
pub(crate) fn publish_asks() {
    if asymmetric() {
        heavy();
    } else {
        fence(SeqCst);
    }
}

/// Every thread of the process executes a full barrier before this returns.
fn heavy() {
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

/// Another thread, after [`publish_asks`]: runs `pass` until it returns true, yielding between
/// passes. Each pass takes every owner that complies now ([`Bracket::owner_complies`]) and says
/// whether any is left: owners descheduled inside their bracket run again in the scheduler's
/// order, not the caller's, and waiting for each in turn summed their delays (1000 threads busy
/// on 2 cores: 9-16 owners waited for, 11-20 s, against one round of them all).
pub(crate) fn in_passes(mut pass: impl FnMut() -> bool) {
    while !pass() {
        std::thread::yield_now(); // the owners left may have been descheduled in their bracket
    }
}

/// What another thread asks of an owner through its [`Bracket`] (bits of `wanted`).
pub(crate) mod ask {
    /// Update the words others read with atomic read-modify-writes (a collector is at work, or
    /// for good without `membarrier`).
    pub const ATOMICS: u8 = 1;
    /// Do not work on the data at all: a visitor is in (or on its way). The owner takes a path
    /// that waits for it.
    pub const STAND_ASIDE: u8 = 2;
}

/// The owner's side of the barrier: `busy` while it works on its data, and what other threads ask
/// of it meanwhile. One per thread and data set (a thread's quota credit and its heap share one:
/// a fast path brackets its work once).
#[repr(C)]
pub(crate) struct Bracket {
    /// 0 while the owner is out; inside, `1 | seen << 1`, where `seen` is what it found asked when
    /// it entered (0 until it has looked). A visitor waits only for a bracket that did not see its
    /// request: waiting until the owner was seen out, a collector kept missing a busy thread that
    /// left and entered again between its looks (100 threads allocating on 2 cores, a 1 MiB
    /// block near the limit waited 3-8 s).
    busy: AtomicU8,
    /// The bits of [`ask`], in a word of its own: read right after `busy` is written, a byte
    /// beside it made the load wait for the store on this machine's AMD EPYC (64 B allocate +
    /// free pairs 19.0 ns against 16.0, medians of 9 alternating runs).
    wanted: AtomicU64,
}

impl Default for Bracket {
    fn default() -> Bracket {
        let wanted = if asymmetric() { 0 } else { ask::ATOMICS };
        Bracket { busy: AtomicU8::new(0), wanted: AtomicU64::new(wanted as u64) }
    }
}

impl Bracket {
    /// Owner: starts working; returns what is asked of it (see [`ask`]).
    #[inline(always)]
    pub(crate) fn enter(&self) -> u8 {
        self.busy.store(1, Relaxed);
        // The light side of the barrier: only the compiler must keep `busy` before `wanted`; the
        // hardware's reordering is undone by the other thread's heavy barrier. Acquire: the work
        // of a visit that just ended happened before what follows.
        compiler_fence(SeqCst);
        let mut asked = self.wanted.load(Acquire) as u8;
        if asked != 0 {
            // Without `membarrier` nobody runs the heavy barrier, and atomics are asked for good,
            // so every bracket comes here: the owner's own full fence keeps `busy` before a second
            // look at `wanted` (Dekker's handshake, paired with [`publish_asks`]), so a visitor
            // sees the bracket open or the owner sees the visitor. With it, this is the rare path
            // (something is asked): a fence more is nothing.
            fence(SeqCst);
            asked = self.wanted.load(Acquire) as u8;
            // Release: the owner's plain updates before are seen by whoever reads that it complies.
            self.busy.store(1 | asked << 1, Release);
        }
        asked
    }

    /// Owner: done working.
    #[inline(always)]
    pub(crate) fn leave(&self) {
        compiler_fence(SeqCst);
        // Release: what the owner did happens before the work of whoever waits for it.
        self.busy.store(0, Release);
    }

    /// Owner: runs `work` inside the bracket; `work` gets what is asked of it (see [`ask`]).
    #[inline(always)]
    pub(crate) fn around<R>(&self, work: impl FnOnce(u8) -> R) -> R {
        let asked = self.enter();
        let result = work(asked);
        self.leave();
        result
    }

    /// Another thread: asks `what` of the owner. Then [`publish_asks`] (once for many brackets), then
    /// [`Bracket::owner_complies`]; from there on the owner complies until [`Bracket::withdraw`].
    pub(crate) fn ask(&self, what: u8) {
        self.wanted.fetch_or(what as u64, SeqCst);
    }

    /// Another thread that asked `what`, after [`publish_asks`]: true when the owner is out of its
    /// bracket or in one that saw `what` asked; from then on it complies until
    /// [`Bracket::withdraw`]. False: a bracket entered before the request is open (wait, yielding:
    /// the owner may have been descheduled inside it).
    pub(crate) fn owner_complies(&self, what: u8) -> bool {
        let busy = self.busy.load(Acquire);
        busy == 0 || (busy >> 1) & what != 0
    }

    /// Another thread: no longer asks `what` (atomics stay asked for good without `membarrier`).
    pub(crate) fn withdraw(&self, what: u8) {
        let keep = if asymmetric() { 0 } else { ask::ATOMICS };
        self.wanted.fetch_and(!(what as u64) | keep as u64, Release);
    }

    /// In a child of fork(): an owner caught inside its bracket at the fork is a thread the child
    /// does not have, and would leave `busy` set for good (whoever waits for it would wait
    /// forever). What it was doing is lost, as any other of its operations in flight.
    pub(crate) fn forget_owner_in_child(&self) {
        self.busy.store(0, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_complies_while_out_or_in_a_bracket_that_saw_the_ask_and_only_then() {
        let bracket = Bracket::default();
        bracket.enter(); // entered before the ask: its updates may be plain
        bracket.ask(ask::ATOMICS);
        publish_asks();
        // Without membarrier atomics are asked for good, so that bracket saw them too.
        assert_eq!(bracket.owner_complies(ask::ATOMICS), !asymmetric());
        bracket.leave();
        assert!(bracket.owner_complies(ask::ATOMICS));
        // A busy owner that entered again between a collector's looks: it saw the ask, and a
        // collector waiting for it to be seen out could miss it for long.
        assert_ne!(bracket.enter() & ask::ATOMICS, 0);
        assert!(bracket.owner_complies(ask::ATOMICS));
        assert!(!bracket.owner_complies(ask::STAND_ASIDE), "it complies with what it saw asked only");
        bracket.leave();
        bracket.withdraw(ask::ATOMICS);
    }

    /// The handshake itself, with `membarrier` or without (scripts/test.sh also runs the unit
    /// tests, optimised, where every `membarrier` call fails): a visitor that found the owner
    /// complying and an owner inside a bracket that did not see the visitor's request are never at
    /// work at once. Without the owner's fence it failed in 9 of 10 such runs (5-395 overlaps);
    /// unoptimised code hides the race.
    #[test]
    fn a_visitor_and_an_owner_that_did_not_see_it_are_never_at_work_at_once() {
        use std::sync::atomic::{AtomicBool, AtomicU32};
        let bracket = Bracket::default();
        let (visiting, done, overlaps) = (AtomicBool::new(false), AtomicBool::new(false), AtomicU32::new(0));
        // Owners that enter again at once make visits slow (a visitor keeps finding a bracket that
        // has not looked yet): at most a second of them.
        let (visits, until) = (200_000, std::time::Instant::now() + std::time::Duration::from_secs(1));
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(SeqCst) {
                    let asked = bracket.enter();
                    if asked & ask::STAND_ASIDE == 0 {
                        for _ in 0..16 {
                            std::hint::spin_loop(); // the owner's work
                        }
                        if visiting.load(SeqCst) {
                            overlaps.fetch_add(1, SeqCst);
                        }
                        bracket.leave();
                    } else {
                        bracket.leave(); // and in again at once (a real owner would wait at the door)
                    }
                }
            });
            for _ in 0..visits {
                if std::time::Instant::now() > until {
                    break;
                }
                bracket.ask(ask::STAND_ASIDE);
                publish_asks();
                in_passes(|| bracket.owner_complies(ask::STAND_ASIDE));
                visiting.store(true, SeqCst);
                for _ in 0..64 {
                    std::hint::spin_loop(); // a visit's work, for the owner to run into
                }
                visiting.store(false, SeqCst);
                bracket.withdraw(ask::STAND_ASIDE);
            }
            done.store(true, SeqCst);
        });
        assert_eq!(overlaps.load(SeqCst), 0);
    }
}
