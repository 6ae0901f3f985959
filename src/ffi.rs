//! The C ABI (`include/directmem.h`, generated from this file by cbindgen).
//!
//! Thin on purpose: each export checks its pointers, calls the safe [`Manager`](crate::manager),
//! and turns the outcome into a `dm_status`. `boundary` wraps every export so that a Rust panic
//! becomes `DM_ERR_INTERNAL` instead of unwinding into C. Out-pointers are written only on success.
//! The names are C's, as the header shows them, because the header is the contract.
//!
//! Like `malloc`, no dm_ function is async-signal-safe: calling one from a signal handler that
//! interrupted the library (a dm_ call on the same thread) may hand a block out twice or deadlock.
#![allow(non_camel_case_types)]

use crate::c_callback::without_cancellation;
use crate::manager::{self, Stats};
use crate::quota::Hook;
use crate::registry::Action;
use crate::{Error, Result};
use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Outcome of every fallible dm_ function. `dm_status_message` describes each one.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dm_status {
    /// Success.
    DM_OK = 0,
    /// NULL out-pointer, alignment not a power of two or above 1 GiB, size whose reservation or
    /// alignment padding would overflow, unreserving more than dm_reserve holds.
    DM_ERR_INVALID_ARGUMENT = 1,
    /// The limit would be exceeded, even after reclaiming.
    DM_ERR_LIMIT = 2,
    /// The system allocator refused; nothing stays reserved.
    DM_ERR_NO_MEMORY = 3,
    /// Pointer or cleaner is not live: never ours, already freed/cleaned, or an interior pointer.
    DM_ERR_NOT_LIVE = 4,
    /// A Rust panic was caught at the boundary; the library's state stays consistent.
    DM_ERR_INTERNAL = 5,
}

impl From<Error> for dm_status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument => dm_status::DM_ERR_INVALID_ARGUMENT,
            Error::Limit => dm_status::DM_ERR_LIMIT,
            Error::NoMemory => dm_status::DM_ERR_NO_MEMORY,
            Error::NotLive => dm_status::DM_ERR_NOT_LIVE,
            Error::Internal => dm_status::DM_ERR_INTERNAL,
        }
    }
}

/// Handle of one cleaner: never 0, never reused within a process.
pub type dm_cleaner = u64;

/// A cleaner's action: called once, with the `ctx` given at registration, when its block is
/// released (by dm_free or dm_clean), on the releasing thread, with no library lock held.
pub type dm_cleanup_fn = Option<unsafe extern "C" fn(ctx: *mut c_void)>;

/// The reclaim hook: called when a reservation does not fit, with the shortfall in bytes. It
/// should release memory (dm_free, dm_clean, dm_unreserve) or make others do so. Called with no
/// library lock held, at most one call in flight at a time.
pub type dm_reclaim_fn = Option<unsafe extern "C" fn(ctx: *mut c_void, bytes_wanted: usize)>;

/// A snapshot of the library's counters. Exact whenever no dm_ call is in flight.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct dm_stats {
    /// Bytes that may be reserved at once.
    pub limit: u64,
    /// Capacity of live allocations + bytes held through dm_reserve; the limit applies to this.
    pub reserved: u64,
    /// Sum of the sizes of live allocations.
    pub capacity: u64,
    /// Live allocations.
    pub count: u64,
    /// Highest `reserved` seen. While other threads allocate small blocks at the same moment it
    /// may include quota they took ahead of need (up to 128 KiB per thread).
    pub peak_reserved: u64,
    /// Allocations ever made.
    pub total_allocations: u64,
    /// Cleaners registered and not yet run.
    pub live_cleaners: u64,
    /// Cleaners that have run.
    pub cleaners_run: u64,
    /// Times the reclaim hook was called.
    pub reclaim_requests: u64,
    /// Times DM_ERR_LIMIT was returned.
    pub limit_failures: u64,
}

/// Where the memory behind the live allocations is, beside what they hold (dm_get_memory_stats).
/// A struct of its own, not new fields of dm_stats: a program built against an older header
/// passes a dm_stats of the older size, which the library must not write past.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct dm_memory_stats {
    /// Bytes the live allocations take from the system: their slots, heap chunks and mappings
    /// (`capacity` of dm_stats plus what rounding up to those costs). Not limited; slab headers
    /// are left out, and so are the untouched addresses a growing mapping takes ahead (see
    /// dm_reallocate).
    pub occupied: u64,
    /// Bytes kept in memory for reuse that no allocation uses: the pages blocks touched in empty
    /// slabs, kept by the library for a short while and by each thread (up to 1 MiB of slabs)
    /// for itself, and in the slab each thread allocates from in each size class when it is
    /// empty; and freed big blocks' mappings under 2 MiB that keep their pages for the next
    /// block (up to 32 MiB, for a short while) (see dm_trim and dm_decay). Not limited: never a
    /// cause of DM_ERR_LIMIT. A thread's slabs that other threads' frees emptied count here (or
    /// go back) only once they are noticed: when that thread next needs a slab of their size, or
    /// at a visit of dm_trim or dm_decay (see dm_trim); until then neither here nor in `occupied`.
    pub cached: u64,
}

impl From<Stats> for dm_stats {
    fn from(s: Stats) -> Self {
        dm_stats {
            limit: s.limit,
            reserved: s.reserved,
            capacity: s.capacity,
            count: s.count,
            peak_reserved: s.peak_reserved,
            total_allocations: s.total_allocations,
            live_cleaners: s.live_cleaners,
            cleaners_run: s.cleaners_run,
            reclaim_requests: s.reclaim_requests,
            limit_failures: s.limit_failures,
        }
    }
}

impl From<Stats> for dm_memory_stats {
    fn from(s: Stats) -> Self {
        dm_memory_stats { occupied: s.occupied, cached: s.cached }
    }
}

/// Runs an export's body; a panic becomes DM_ERR_INTERNAL, never an unwind into C.
fn boundary(body: impl FnOnce() -> Result<()>) -> dm_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => dm_status::DM_OK,
        Ok(Err(e)) => e.into(),
        Err(_) => dm_status::DM_ERR_INTERNAL,
    }
}

/// Runs a fast path with panics caught (see `boundary`), keeping its small result in registers.
#[inline(always)]
fn fast<T>(body: impl FnOnce() -> T) -> std::thread::Result<T> {
    catch_unwind(AssertUnwindSafe(body))
}

/// Writes `value` through an out-pointer, which has already been checked for NULL.
fn write_out<T>(out: *mut T, value: T) {
    // Safety: non-NULL (checked by every caller first); the C caller promised it points to a T.
    unsafe { out.write(value) }
}

fn non_null<T>(p: *mut T) -> Result<*mut T> {
    if p.is_null() {
        Err(Error::InvalidArgument)
    } else {
        Ok(p)
    }
}

/// Accounts for `bytes` of direct memory held by the caller without allocating them
/// (Bits.reserveMemory), e.g. for memory the caller maps itself. Undo with dm_unreserve.
///
/// Thread-safe. May call the reclaim hook and wait (see dm_set_reclaim_hook).
/// Returns DM_OK (also for 0 bytes); DM_ERR_INVALID_ARGUMENT when what is reserved plus `bytes`
/// overflows 64 bits (not counted in `limit_failures`, no hook called); DM_ERR_LIMIT; DM_ERR_INTERNAL.
#[unsafe(no_mangle)]
pub extern "C" fn dm_reserve(bytes: usize) -> dm_status {
    boundary(|| manager::global()?.reserve(bytes as u64))
}

/// Gives back bytes taken with dm_reserve (Bits.unreserveMemory) and wakes waiting reservations.
///
/// Thread-safe. Returns DM_OK (also for 0 bytes); DM_ERR_INVALID_ARGUMENT when `bytes` is more
/// than dm_reserve currently holds (nothing changes); DM_ERR_INTERNAL.
#[unsafe(no_mangle)]
pub extern "C" fn dm_unreserve(bytes: usize) -> dm_status {
    boundary(|| manager::global()?.unreserve(bytes as u64))
}

/// Reserves `size` bytes, allocates them zeroed and aligned, and tracks the block.
///
/// `alignment`: 0 for the platform's max_align_t, else a power of two up to 1 GiB
/// (dm_page_size() for page alignment). The block is charged `size` bytes only. `size` 0 gives a
/// distinct live pointer, charged 0 bytes, that must be freed like any other. Blocks of up to
/// 128 KiB (aligned to at most 64 KiB) come from the calling thread's own slabs, with no lock and
/// no shared counter on the way; a thread takes quota for them in chunks of 64 KiB ahead of need
/// (left out of dm_stats, and given back before any reservation fails or waits). Blocks above
/// 128 KiB are pages of their own: their cost does not grow with their size.
///
/// Ownership: on DM_OK `*out` is a block the caller owns until it is released by dm_free or by
/// dm_clean of one of its cleaners; never pass it to free(). `*out` is written only on DM_OK.
/// Thread-safe. May call the reclaim hook and wait (see dm_set_reclaim_hook).
/// Returns DM_OK; DM_ERR_INVALID_ARGUMENT (NULL `out`, bad alignment, `size` whose reservation or
/// padding overflows: checked before the limit); DM_ERR_LIMIT; DM_ERR_NO_MEMORY (the system
/// refused; nothing stays reserved); DM_ERR_INTERNAL.
///
/// # Safety
/// `out` must be NULL or point to writable storage for a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dm_allocate(size: usize, alignment: usize, out: *mut *mut c_void) -> dm_status {
    // The common case first, inlined here (the general path's frame and result cost more than
    // the slot). Its slice indexes cannot fail (they come from the slab's own bitmap), but a panic
    // would still be caught, for about 5 instructions per allocate + free pair (callgrind).
    if out.is_null() {
        return dm_status::DM_ERR_INVALID_ARGUMENT;
    }
    match fast(|| manager::made().and_then(|m| m.allocate_fast(size, alignment))) {
        Ok(Some(block)) => {
            write_out(out, block.as_ptr() as *mut c_void);
            dm_status::DM_OK
        }
        Ok(None) => allocate_general(size, alignment, out),
        Err(_) => dm_status::DM_ERR_INTERNAL,
    }
}

// `extern "C"` (it cannot unwind: `boundary` catches panics) lets `dm_allocate` jump to it as
// its last step instead of calling it and keeping a frame of its own.
#[cold]
#[inline(never)]
extern "C" fn allocate_general(size: usize, alignment: usize, out: *mut *mut c_void) -> dm_status {
    boundary(|| {
        let out = non_null(out)?;
        let block = manager::global()?.allocate(size, alignment)?;
        write_out(out, block.as_ptr() as *mut c_void);
        Ok(())
    })
}

/// Releases the block starting at `ptr`: runs its cleaners' actions (in registration order, on
/// this thread), frees the memory, unreserves its bytes and wakes waiting reservations.
///
/// Thread-safe; of any number of concurrent dm_free/dm_clean calls on one block exactly one
/// returns DM_OK. Needs no memory: it succeeds when the system has none left to give. Returns
/// DM_OK (also for NULL, which does nothing); DM_ERR_NOT_LIVE when `ptr` is not the start of a
/// live block (never allocated here, already released, interior pointer): nothing changes;
/// DM_ERR_INTERNAL.
///
/// # Safety
/// Any pointer value may be passed; it is only looked up, never dereferenced unless live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dm_free(ptr: *mut c_void) -> dm_status {
    match fast(|| manager::made().is_some_and(|m| m.free_fast(ptr as usize))) {
        Ok(true) => dm_status::DM_OK,
        Ok(false) => free_general(ptr),
        Err(_) => dm_status::DM_ERR_INTERNAL,
    }
}

#[cold]
#[inline(never)]
extern "C" fn free_general(ptr: *mut c_void) -> dm_status {
    boundary(|| if ptr.is_null() { Ok(()) } else { manager::global()?.free(ptr as usize) })
}

/// Resizes the live block starting at `ptr` to `new_size` bytes, for allocator hooks shaped like
/// realloc (SQLite's xRealloc, Lua's lua_Alloc, zlib's). It stays in place (`*out` == `ptr`) when
/// it can: a block of up to 128 KiB without cleaners that stays in its size class (four per
/// doubling: ..., 80, 96, 112, 128, 160, ...), or a block above 128 KiB (a mapping of its own)
/// that stays above 128 KiB and shrinks (its mapping is cut to it: the pages past it go back to
/// the system), still fits its mapping, or whose mapping can grow where it lies (`mremap`).
/// Otherwise it moves: `*out` is a new block (default alignment) holding the first min(old, new)
/// bytes, and the old block is freed; a block above 128 KiB that grows moves its pages, as glibc's
/// `realloc` moves them (`mremap`): nothing is copied, so growing a block costs the same at 64 MiB
/// as at 1 MiB (one that doubles or more is copied into a mapping an earlier block left, if one
/// fits, which costs less than fresh pages). A mapping that grows takes up to an eighth more
/// addresses than the block needs (at most 64 MiB; pages no block touched, not in `occupied`;
/// none under strict overcommit, `vm.overcommit_memory` = 2, where they would cost commit
/// charge), so that a block grown in small steps mostly grows within its mapping, without a
/// system call. A block's cleaners move with it: the same handles, not run by the move, run once
/// when the new block is released. Bytes beyond the old size are zero either way, and the quota
/// is charged the difference.
/// `ptr` NULL: as dm_allocate(new_size, 0, out). On any failure nothing changes and `ptr` stays
/// valid. A dm_free, dm_clean or dm_reallocate of the same block racing with a move: one of
/// them wins and the others return DM_ERR_NOT_LIVE (a dm_clean may also find the block in
/// neither place); the old block is claimed before a byte of it is read, so a move that loses
/// reads nothing freed. One that stayed in place leaves the block live for the others.
///
/// Thread-safe. May call the reclaim hook and wait. Returns DM_OK and writes `*out`;
/// DM_ERR_INVALID_ARGUMENT (NULL `out`, a size that overflows); DM_ERR_NOT_LIVE (`ptr` not the
/// start of a live block); DM_ERR_LIMIT; DM_ERR_NO_MEMORY; DM_ERR_INTERNAL.
///
/// # Safety
/// `out` must be NULL or valid for writing one pointer; `ptr` is only looked up, never
/// dereferenced unless live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dm_reallocate(ptr: *mut c_void, new_size: usize, out: *mut *mut c_void) -> dm_status {
    boundary(|| {
        let out = non_null(out)?;
        let m = manager::global()?;
        let block = if ptr.is_null() { m.allocate(new_size, 0)? } else { m.reallocate(ptr as usize, new_size)? };
        write_out(out, block.as_ptr() as *mut c_void);
        Ok(())
    })
}

/// Writes the size of the live block starting at `ptr` (what it was allocated or resized with)
/// to `*size` (SQLite's xSize).
///
/// Thread-safe. Returns DM_OK; DM_ERR_INVALID_ARGUMENT (NULL `size`); DM_ERR_NOT_LIVE;
/// DM_ERR_INTERNAL.
///
/// # Safety
/// `size` must be NULL or valid for writing one size_t; `ptr` is only looked up.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dm_block_size(ptr: *const c_void, size: *mut usize) -> dm_status {
    boundary(|| {
        let size = non_null(size)?;
        write_out(size, manager::global()?.block_size(ptr as usize)?);
        Ok(())
    })
}

/// Attaches a cleaner to the live block starting at `ptr` (jdk.internal.ref.Cleaner): when the
/// block is released, by dm_free or by dm_clean of any of its cleaners, `action(ctx)` is called
/// once. `action` may be NULL (the cleaner is then just a handle that releases the block).
///
/// Actions run on the releasing thread with no library lock held and may call any dm_ function;
/// their own block is no longer live then (a dm_ call on it, a release, a resize, its size, a new
/// cleaner, returns DM_ERR_NOT_LIVE). `ctx` is passed through untouched; the caller keeps it
/// valid until the action has run.
/// Thread-safe. Returns DM_OK and writes `*out`; DM_ERR_INVALID_ARGUMENT (NULL `out`);
/// DM_ERR_NOT_LIVE (`ptr` is not the start of a live block); DM_ERR_NO_MEMORY (none for the
/// cleaner's record: nothing attached, `action` will not run); DM_ERR_INTERNAL.
///
/// # Safety
/// `out` must be NULL or point to writable storage for a dm_cleaner; `action`, if not NULL, must
/// be safe to call once with `ctx` from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dm_cleaner_register(
    ptr: *mut c_void,
    action: dm_cleanup_fn,
    ctx: *mut c_void,
    out: *mut dm_cleaner,
) -> dm_status {
    boundary(|| {
        let out = non_null(out)?;
        let handle = manager::global()?.register_cleaner(ptr as usize, c_action(action, ctx)?)?;
        write_out(out, handle);
        Ok(())
    })
}

/// A C cleaner action as the core's [`Action`]: `function(ctx)`, or nothing for a NULL function.
/// `NoMemory` when there is none for it.
fn c_action(function: dm_cleanup_fn, ctx: *mut c_void) -> Result<Action> {
    struct Call(unsafe extern "C" fn(*mut c_void), *mut c_void);
    // Safety: `ctx` is the registrant's opaque value, handed back to its function on whichever
    // thread releases the block, as the header documents.
    unsafe impl Send for Call {}
    impl Call {
        fn run(self) {
            // Safety: the registrant promised `function(ctx)` may be called once when the block is
            // released; the core runs an action exactly once.
            without_cancellation(|| unsafe { (self.0)(self.1) })
        }
    }
    match function {
        Some(function) => {
            let call = Call(function, ctx);
            Ok(crate::fallible::boxed(move || call.run()).map_err(|_| Error::NoMemory)?)
        }
        None => Ok(Box::new(|| {})), // takes no memory
    }
}

/// Releases the block `cleaner` is attached to, exactly as dm_free does (all of that block's
/// actions run). Meant for a garbage collector's callback: a stale handle, whose block was already
/// released (even if its address now belongs to a new block), leaves everything alone.
///
/// Thread-safe. Returns DM_OK; DM_ERR_NOT_LIVE (0, never issued, or its block already released);
/// DM_ERR_INTERNAL.
#[unsafe(no_mangle)]
pub extern "C" fn dm_clean(cleaner: dm_cleaner) -> dm_status {
    boundary(|| manager::global()?.clean(cleaner))
}

/// Sets the limit on `reserved`. 0 means nothing can be reserved. It may go below what is
/// reserved now: existing blocks stay valid, new reservations fail until enough is released.
/// The default is the environment variable DM_MAX_MEMORY (bytes, or with a k/K, m/M, g/G, t/T
/// suffix in powers of 1024, as the JVM's -XX:MaxDirectMemorySize), else the machine's physical
/// memory.
///
/// Thread-safe. Returns DM_OK; DM_ERR_INTERNAL.
#[unsafe(no_mangle)]
pub extern "C" fn dm_set_limit(bytes: u64) -> dm_status {
    boundary(|| {
        manager::global()?.set_limit(bytes);
        Ok(())
    })
}

/// Installs the reclaim hook (NULL removes it). When a reservation does not fit:
/// - with no hook, it fails at once with DM_ERR_LIMIT;
/// - with a hook, the hook is called with the shortfall (one call in flight at a time; threads
///   that fail meanwhile wait for that call), then the reservation is retried each time memory is
///   returned, first come first served, until the queue has not moved (no waiter served) for the
///   whole reclaim timeout: a waiter in a queue that moves is not refused however long the queue;
///   at its deadline a waiter still takes memory that fits, so DM_ERR_LIMIT means the limit would
///   really be exceeded.
///   A queued request of at most a quarter of the first waiter's size may take free memory before
///   it while that waiter has waited less than half the timeout (so a small request does not wait
///   a whole slow hook call behind a big one; the big one is never starved).
///
/// A request larger than the limit fails at once without calling the hook. The hook runs on the
/// failing thread with no library lock held and may call any dm_ function; a reservation it makes
/// (dm_allocate, dm_reserve) is served at once if it fits and fails at once with DM_ERR_LIMIT if
/// not (it cannot wait for the hook call it is part of). `ctx` is passed to it untouched and must
/// stay valid while the hook is installed. When this returns, the hook it replaced is not running
/// on any thread and will not be called again (a call in flight is waited for), so what it used
/// may be freed; called from inside the hook, it returns at once (that call is the caller's own).
/// So it must not be called while holding what a hook call in flight waits for (a lock the hook
/// takes, a cleaner action the hook waits to see run).
/// Thread-safe. Returns DM_OK; DM_ERR_NO_MEMORY (none for the hook's record: the hook installed
/// before stays); DM_ERR_INTERNAL.
///
/// # Safety
/// `hook`, if not NULL, must be safe to call with `ctx` from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dm_set_reclaim_hook(hook: dm_reclaim_fn, ctx: *mut c_void) -> dm_status {
    boundary(|| {
        let hook = match hook {
            Some(function) => {
                let ctx = SendPtr(ctx);
                // Safety: the caller promised `function(ctx, _)` may be called from any thread.
                let call = move |bytes: u64| without_cancellation(|| unsafe { function(ctx.get(), bytes as usize) });
                Some(Hook::new(call).ok_or(Error::NoMemory)?)
            }
            None => None,
        };
        manager::global()?.set_reclaim_hook(hook);
        Ok(())
    })
}

/// The C caller's opaque context, handed back to its own hook on whichever thread needs it.
#[derive(Clone, Copy)]
struct SendPtr(*mut c_void);
// Safety: never dereferenced here; the dm_set_reclaim_hook contract makes cross-thread use the
// caller's promise.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut c_void {
        self.0
    }
}

/// Sets how long a reservation may wait for memory after calling the reclaim hook while no
/// waiter is served (default 1000 ms; 0: call the hook, retry once, give up).
///
/// Thread-safe. Returns DM_OK; DM_ERR_INTERNAL.
#[unsafe(no_mangle)]
pub extern "C" fn dm_set_reclaim_timeout_ms(millis: u32) -> dm_status {
    boundary(|| {
        manager::global()?.set_reclaim_timeout_ms(millis);
        Ok(())
    })
}

/// Copies the library's counters into `*out`. Counters are gathered one after another (small
/// blocks are counted per thread): the snapshot is exact when no other thread allocates or
/// frees at that moment.
///
/// Thread-safe. Returns DM_OK; DM_ERR_INVALID_ARGUMENT (NULL `out`); DM_ERR_INTERNAL.
///
/// # Safety
/// `out` must be NULL or point to writable storage for a dm_stats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dm_get_stats(out: *mut dm_stats) -> dm_status {
    boundary(|| {
        let out = non_null(out)?;
        write_out(out, manager::global()?.stats().into());
        Ok(())
    })
}

/// Gives back the memory kept for reuse whose time is up: the pages of the empty slabs and of the
/// freed big blocks' mappings the library has kept over ~100 ms, which it otherwise gives back only
/// at an allocation that leaves the fast path (a big block, or a small one whose thread needs a
/// new slab or more quota; as jemalloc does without its background threads), and what
/// each thread keeps for itself (as dm_trim) once the thread has neither allocated nor freed a
/// block since a dm_decay at least ~100 ms before (once per such idle stretch; other threads as
/// dm_trim reaches them). From a thread that is not idle it takes, at most once a second: the
/// slabs other threads' frees emptied (which that thread takes back itself only when it needs a
/// new slab, at most once a second), as its own frees
/// would have (it keeps up to 1 MiB of them, the rest goes back within ~100 ms); and what the
/// thread keeps for itself but did not use since the last such visit (its empty slabs kept
/// back; its empty current slabs are set aside as slabs that empty are, so they go back unless
/// the thread allocates from them again soon). For a program's idle loop or timer; the JVM
/// binding calls it about once a second. Unlike dm_trim, memory still in its time, and what
/// active threads use, stays. If `given_back` is not NULL, the bytes of pages given back are
/// stored there.
///
/// Thread-safe. Returns DM_OK; DM_ERR_INTERNAL.
///
/// # Safety
/// `given_back` must be NULL or point to a writable uint64_t.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dm_decay(given_back: *mut u64) -> dm_status {
    give_back(given_back, manager::Manager::decay)
}

/// Starts a library thread that calls dm_decay every `interval_ms` milliseconds, for a program
/// that goes quiet and has no idle loop to call it from: what the library keeps for reuse then goes
/// back ~100 ms after its last use plus up to one interval, not at the next allocation. Called
/// again, changes the interval; with 0, stops the thread (it ends within moments, by itself). Off
/// until asked for (as jemalloc's background threads), here or by the environment variable
/// DM_BACKGROUND_DECAY_MS (milliseconds, read when the library is first used; a value that does
/// not parse is reported on stderr and ignored); in a child of fork() it is off until asked for
/// again. Costs a thread that wakes once per interval; 100-1000 ms suit most programs.
///
/// A process whose `malloc` is itself built on this library (an interposed `malloc` that calls
/// dm_allocate) may run the thread too: with glibc, the library takes its own bookkeeping from
/// glibc's allocator under glibc's own names (`__libc_malloc`, ...), never from `malloc`, so none
/// of it comes back in while the library holds its locks. Elsewhere it takes it from `malloc`,
/// and such a process must not start the thread (it would wait on itself).
///
/// Thread-safe. Returns DM_OK; DM_ERR_NO_MEMORY when the system refused to start the thread
/// (nothing changes); DM_ERR_INTERNAL.
#[unsafe(no_mangle)]
pub extern "C" fn dm_set_background_decay(interval_ms: u32) -> dm_status {
    boundary(|| manager::background::set(interval_ms))
}

/// dm_decay and dm_trim: gives memory back through `give`, storing the bytes if asked for.
fn give_back(given_back: *mut u64, give: impl FnOnce(&manager::Manager) -> u64) -> dm_status {
    boundary(|| {
        let bytes = give(manager::global()?);
        if let Ok(out) = non_null(given_back) {
            write_out(out, bytes);
        }
        Ok(())
    })
}

/// Gives memory kept for reuse back to the system now: the pages of the empty slabs the library
/// keeps (otherwise given back by themselves ~100 ms after they emptied, as the library is used),
/// of those every thread keeps back for itself and of the ones it allocates from (one per size
/// class) that are empty, of a thread's slabs that other threads' frees emptied (which only that
/// thread notices, when it next needs a slab of their size, or a visit from here or dm_decay),
/// and the freed big blocks' mappings kept for the next block that fits
/// (pages and addresses). Other threads are reached without slowing their allocations: each
/// steps aside for the microseconds a visit of its heap takes; one caught in the library's slow
/// path at that moment (so not idle) keeps its own. Where the kernel has no `membarrier` (before
/// Linux 4.14, or filtered by seccomp), every thread pays a memory fence per allocation and free
/// instead, and all of this holds the same. Like glibc's `malloc_trim`: for a program about to
/// idle or to be measured. Live blocks are untouched. A kept mapping the system will not unmap
/// (at `vm.max_map_count` it refuses to cut one out of a bigger mapping of its own) gives its
/// pages back and stays kept. If `given_back` is not NULL, the bytes of pages given back are stored there: all
/// of `cached` when no other thread allocates or frees meanwhile (and those of slabs other
/// threads emptied, which `cached` did not show yet).
///
/// Thread-safe. Returns DM_OK; DM_ERR_INTERNAL.
///
/// # Safety
/// `given_back` must be NULL or point to a writable uint64_t.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dm_trim(given_back: *mut u64) -> dm_status {
    give_back(given_back, manager::Manager::trim)
}

/// Copies where the live allocations' memory is into `*out`: what they occupy and what is cached
/// for reuse (see dm_memory_stats). Gathered like dm_get_stats.
///
/// Thread-safe. Returns DM_OK; DM_ERR_INVALID_ARGUMENT (NULL `out`); DM_ERR_INTERNAL.
///
/// # Safety
/// `out` must be NULL or point to writable storage for a dm_memory_stats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dm_get_memory_stats(out: *mut dm_memory_stats) -> dm_status {
    boundary(|| {
        let out = non_null(out)?;
        write_out(out, manager::global()?.stats().into());
        Ok(())
    })
}

/// The version of the library actually loaded, as DM_VERSION_NUMBER (major * 10000 + minor * 100
/// + patch): compare it with the DM_VERSION_NUMBER of the header a program was compiled with.
///
/// Thread-safe; cannot fail.
#[unsafe(no_mangle)]
pub extern "C" fn dm_version() -> u32 {
    let part = |text: &str| text.parse::<u32>().unwrap_or(0);
    part(env!("CARGO_PKG_VERSION_MAJOR")) * 10000
        + part(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + part(env!("CARGO_PKG_VERSION_PATCH"))
}

/// A static, NUL-terminated description of a status. Never NULL, also for values that are not a
/// dm_status. The caller must not free it. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn dm_status_message(status: c_int) -> *const c_char {
    let text = match Error::from_code(status) {
        _ if status == dm_status::DM_OK as c_int => "success\0",
        Some(e) => e.message_with_nul(),
        None => "unknown status\0",
    };
    text.as_ptr() as *const c_char
}

/// The system's page size in bytes: the alignment to ask for page-aligned blocks. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn dm_page_size() -> usize {
    crate::os::page_size()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_the_code_of_the_core_table() {
        for e in Error::ALL {
            assert_eq!(dm_status::from(e) as i32, e.code(), "{e:?}");
            // Safety: dm_status_message returns a static NUL-terminated string for any input.
            let text = unsafe { std::ffi::CStr::from_ptr(dm_status_message(e.code())) };
            assert_eq!(text.to_str().unwrap(), e.message());
        }
        assert_eq!(dm_status::DM_OK as i32, 0);
    }
}
