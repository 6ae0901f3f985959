//! Model-based test of the C ABI: random sequences of every operation, with valid and invalid
//! arguments (NULL, foreign, interior, stale, huge, zero, misaligned), checked after every step
//! against a simple model: each status as documented, the stats equal to the model's, every live
//! block zeroed where untouched and writable.
//!
//! Bounded run: part of `cargo test`. Longer: `PROPTEST_CASES=20000 cargo test --release --test model`.

mod common;
use directmem::ffi::dm_status::*;
use directmem::ffi::*;
use proptest::prelude::*;
use std::ffi::c_void;

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        size: usize,
        alignment: usize,
        null_out: bool,
    },
    Free(Target),
    Register {
        target: Target,
        null_out: bool,
    },
    Clean(Handle),
    Write {
        block: usize,
        len: usize,
    },
    Reallocate {
        target: Target,
        size: usize,
        null_out: bool,
    },
    /// `dm_trim` (true) or `dm_decay` (false).
    GiveBack(bool),
    Reserve(usize),
    Unreserve(usize),
    SetLimit(u64),
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Live(usize),
    Interior(usize),
    Freed(usize),
    Foreign,
    Null,
}

#[derive(Debug, Clone, Copy)]
enum Handle {
    Live(usize),
    Stale(usize),
    Zero,
    Never,
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![
        Just(0usize),
        1usize..100,
        100usize..5000,
        // Medium slots (10-128 KiB): reused by zeroing in place or by giving pages back, as the
        // blocks before were written (see the Write op's sizes).
        8192usize..(128 << 10),
        Just(200 << 10),
        Just(1 << 20),
        Just(usize::MAX),
        Just(isize::MAX as usize),
        Just(1usize << 45)
    ];
    let sizes = size.clone();
    let alignment = prop_oneof![
        Just(0usize),
        Just(1),
        Just(8),
        Just(64),
        Just(4096),
        Just(1 << 16),
        Just(3),
        Just(24),
        Just(1 << 31)
    ];
    let target = prop_oneof![
        4 => any::<usize>().prop_map(Target::Live),
        1 => any::<usize>().prop_map(Target::Interior),
        1 => any::<usize>().prop_map(Target::Freed),
        1 => Just(Target::Foreign),
        1 => Just(Target::Null),
    ];
    let handle = prop_oneof![
        4 => any::<usize>().prop_map(Handle::Live),
        1 => any::<usize>().prop_map(Handle::Stale),
        1 => Just(Handle::Zero),
        1 => Just(Handle::Never),
    ];
    prop_oneof![
        6 => (size, alignment, prop::bool::weighted(0.05)).prop_map(|(size, alignment, null_out)| Op::Allocate { size, alignment, null_out }),
        3 => target.clone().prop_map(Op::Free),
        3 => (target.clone(), prop::bool::weighted(0.05)).prop_map(|(target, null_out)| Op::Register { target, null_out }),
        2 => handle.prop_map(Op::Clean),
        2 => (any::<usize>(), prop_oneof![3 => 0usize..300, 1 => Just(usize::MAX)])
            .prop_map(|(block, len)| Op::Write { block, len }), // usize::MAX: the whole block
        3 => (target.clone(), sizes, prop::bool::weighted(0.05))
            .prop_map(|(target, size, null_out)| Op::Reallocate { target, size, null_out }),
        1 => any::<bool>().prop_map(Op::GiveBack),
        1 => prop_oneof![Just(0usize), 1usize..100_000, Just(usize::MAX)].prop_map(Op::Reserve),
        1 => prop_oneof![Just(0usize), 1usize..100_000].prop_map(Op::Unreserve),
        1 => prop_oneof![Just(0u64), Just(1 << 20), Just(16 << 20), Just(u64::MAX)].prop_map(Op::SetLimit),
    ]
}

struct Block {
    ptr: *mut u8,
    size: usize,
    handles: Vec<dm_cleaner>,
    written: usize, // bytes [0, written) hold the pattern; the rest must still be zero
}

#[derive(Default)]
struct Model {
    live: Vec<Block>,
    freed: Vec<usize>,
    stale: Vec<dm_cleaner>,
    held: u64,
    limit: u64,
    ran: Vec<u64>, // per-cleaner run counter, indexed by ctx
}

static mut RUNS: [u32; 1 << 16] = [0; 1 << 16];

unsafe extern "C" fn count(ctx: *mut c_void) {
    // Safety: the model test is single-threaded; ctx is an index below RUNS' length.
    unsafe { RUNS[ctx as usize] += 1 };
}

fn runs(i: usize) -> u32 {
    // Safety: single-threaded reads of the counter array.
    unsafe { (*std::ptr::addr_of!(RUNS))[i] }
}

/// What a resize of a live block may answer: exactly one status, or, where only a resize in place
/// fits under the limit, OK in place or a refusal.
enum Resize {
    Exactly(dm_status),
    InPlaceOrRefused,
}

impl Model {
    /// What dm_allocate(size, alignment) answers with a valid out-pointer.
    fn allocation(&self, size: usize, alignment: usize) -> dm_status {
        let a = if alignment == 0 { 16 } else { alignment };
        let bad_request =
            !a.is_power_of_two() || a > 1 << 30 || size.checked_add(a).is_none_or(|t| t > isize::MAX as usize);
        // reserved + size overflowing 64 bits is a bad size, not a full quota.
        let overflows = size > 0 && size as u64 <= self.limit && self.reserved().checked_add(size as u64).is_none();
        if bad_request || overflows {
            DM_ERR_INVALID_ARGUMENT
        } else if size > 0 && self.reserved().checked_add(size as u64).is_none_or(|r| r > self.limit) {
            DM_ERR_LIMIT
        } else if size >= 1 << 40 {
            DM_ERR_NO_MEMORY // fits an unlimited quota, but no machine here maps a TiB: rolled back
        } else {
            DM_OK
        }
    }

    /// What dm_reallocate of live block `i` to `size` bytes (a size a block can have) answers. A
    /// move reserves the new size while the old block is held; a resize in place, the growth.
    fn resize(&self, i: usize, size: usize) -> Resize {
        let reserved = self.reserved();
        let growth = size.saturating_sub(self.live[i].size) as u64;
        let moved = reserved.checked_add(size as u64);
        let grown = reserved.checked_add(growth);
        // Reserving 0 bytes always fits, even above a lowered limit.
        if (size == 0 || moved.is_some_and(|r| r <= self.limit)) && size < 1 << 40 {
            Resize::Exactly(DM_OK)
        } else if growth > 0 && grown.is_some_and(|r| r > self.limit) && moved.is_some() {
            // (When the move's sum overflows 64 bits, a move answers as dm_allocate would:
            // DM_ERR_INVALID_ARGUMENT, which the last case takes.)
            Resize::Exactly(DM_ERR_LIMIT)
        } else {
            Resize::InPlaceOrRefused
        }
    }

    fn reserved(&self) -> u64 {
        self.held + self.live.iter().map(|b| b.size as u64).sum::<u64>()
    }

    fn pick<T>(v: &[T], i: usize) -> Option<&T> {
        if v.is_empty() {
            None
        } else {
            Some(&v[i % v.len()])
        }
    }

    fn pointer(&self, t: Target, foreign: *mut u8) -> (*mut c_void, Option<usize>) {
        match t {
            Target::Live(i) if !self.live.is_empty() => {
                (self.live[i % self.live.len()].ptr as *mut c_void, Some(i % self.live.len()))
            }
            // Strictly inside: a block's end may be the next block's start.
            Target::Interior(i) => match Self::pick(&self.live, i) {
                Some(b) if b.size >= 2 => ((b.ptr as usize + 1 + i % (b.size - 1)) as *mut c_void, None),
                _ => (foreign as *mut c_void, None),
            },
            Target::Freed(i) => (Self::pick(&self.freed, i).map_or(foreign as usize, |&a| a) as *mut c_void, None),
            Target::Null => (std::ptr::null_mut(), None),
            _ => (foreign as *mut c_void, None),
        }
    }

    /// Releases block `i` in the model; the caller checked the library said DM_OK.
    fn released(&mut self, i: usize) {
        let b = self.live.swap_remove(i);
        for &h in &b.handles {
            self.stale.push(h);
        }
        // A freed address may be handed out again: then it is live, not freed.
        self.freed.push(b.ptr as usize);
    }

    fn step(&mut self, op: &Op, foreign: *mut u8, next_ctx: &mut usize) -> Result<(), TestCaseError> {
        match *op {
            Op::Allocate { size, alignment, null_out } => {
                let mut out: *mut c_void = std::ptr::null_mut();
                let out_ptr = if null_out { std::ptr::null_mut() } else { &mut out as *mut _ };
                let got = unsafe { dm_allocate(size, alignment, out_ptr) };
                let a = if alignment == 0 { 16 } else { alignment };
                let want = if null_out { DM_ERR_INVALID_ARGUMENT } else { self.allocation(size, alignment) };
                if got == DM_OK {
                    // Recorded before any assertion, so the case's cleanup frees it whatever happens.
                    self.freed.retain(|&f| f != out as usize);
                    self.live.push(Block { ptr: out as *mut u8, size, handles: vec![], written: 0 });
                }
                prop_assert_eq!(got, want, "{:?}", op);
                if got == DM_OK {
                    prop_assert!(!out.is_null());
                    prop_assert_eq!(out as usize % a, 0);
                    // Every byte zero when handed out (after each step only samples are checked).
                    let whole = size.min(256 << 10);
                    // Safety: a live block of `size` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(out as *const u8, whole) };
                    prop_assert!(bytes.iter().all(|&x| x == 0), "a new block reads zero");
                } else {
                    prop_assert!(out.is_null(), "out written on failure");
                }
            }
            Op::Free(t) => {
                let (p, live) = self.pointer(t, foreign);
                let got = unsafe { dm_free(p) };
                let want = if p.is_null() || live.is_some() { DM_OK } else { DM_ERR_NOT_LIVE };
                prop_assert_eq!(got, want, "{:?}", op);
                if let Some(i) = live {
                    let ctxs: Vec<u64> = self.live[i].handles.clone();
                    self.released(i);
                    self.check_ran(&ctxs)?;
                }
            }
            Op::Register { target, null_out } => {
                let (p, live) = self.pointer(target, foreign);
                let mut h: dm_cleaner = 0;
                let ctx = *next_ctx;
                let out = if null_out { std::ptr::null_mut() } else { &mut h as *mut _ };
                let got = unsafe { dm_cleaner_register(p, Some(count), ctx as *mut c_void, out) };
                let want = if null_out {
                    DM_ERR_INVALID_ARGUMENT
                } else if live.is_some() {
                    DM_OK
                } else {
                    DM_ERR_NOT_LIVE
                };
                prop_assert_eq!(got, want, "{:?}", op);
                if got == DM_OK {
                    prop_assert!(h != 0);
                    *next_ctx += 1;
                    self.ran.push(h);
                    self.live[live.unwrap()].handles.push(h);
                }
            }
            Op::Clean(which) => {
                let (h, block) = match which {
                    Handle::Live(i) => {
                        let owners: Vec<(usize, dm_cleaner)> = self
                            .live
                            .iter()
                            .enumerate()
                            .flat_map(|(b, blk)| blk.handles.iter().map(move |&h| (b, h)))
                            .collect();
                        match Self::pick(&owners, i) {
                            Some(&(b, h)) => (h, Some(b)),
                            None => (0, None),
                        }
                    }
                    Handle::Stale(i) => (Self::pick(&self.stale, i).copied().unwrap_or(0), None),
                    Handle::Zero => (0, None),
                    Handle::Never => (u64::MAX - 5, None),
                };
                let got = dm_clean(h);
                prop_assert_eq!(got, if block.is_some() { DM_OK } else { DM_ERR_NOT_LIVE }, "{:?}", op);
                if let Some(b) = block {
                    let ctxs = self.live[b].handles.clone();
                    self.released(b);
                    self.check_ran(&ctxs)?;
                }
            }
            Op::Reallocate { target, size, null_out } => {
                let (p, live) = self.pointer(target, foreign);
                let mut out: *mut c_void = std::ptr::null_mut();
                let out_ptr = if null_out { std::ptr::null_mut() } else { &mut out as *mut _ };
                let got = unsafe { dm_reallocate(p, size, out_ptr) };
                let bad_size = size.checked_add(16).is_none_or(|t| t > isize::MAX as usize);
                let want = if null_out || (!p.is_null() && bad_size) {
                    Resize::Exactly(DM_ERR_INVALID_ARGUMENT)
                } else if p.is_null() {
                    Resize::Exactly(self.allocation(size, 0))
                } else if let Some(i) = live {
                    self.resize(i, size)
                } else {
                    Resize::Exactly(DM_ERR_NOT_LIVE)
                };
                // Recorded before any assertion, so the case's cleanup frees it whatever happens.
                if got == DM_OK {
                    self.freed.retain(|&f| f != out as usize);
                    match live {
                        Some(i) => {
                            let b = &mut self.live[i];
                            if out != p {
                                self.freed.push(p as usize);
                            }
                            b.ptr = out as *mut u8;
                            b.size = size;
                            b.written = b.written.min(size); // the rest must read zero (see check)
                        }
                        None => self.live.push(Block { ptr: out as *mut u8, size, handles: vec![], written: 0 }),
                    }
                }
                match want {
                    Resize::Exactly(want) => prop_assert_eq!(got, want, "{:?}", op),
                    Resize::InPlaceOrRefused => prop_assert!(
                        (got == DM_OK && out == p)
                            || [DM_ERR_LIMIT, DM_ERR_NO_MEMORY, DM_ERR_INVALID_ARGUMENT].contains(&got),
                        "{:?}: {:?}, moved: {}",
                        op,
                        got,
                        out != p
                    ),
                }
                if got != DM_OK {
                    prop_assert!(out.is_null(), "out written on failure");
                }
            }
            Op::GiveBack(trim) => {
                let before = common::memory_stats().cached;
                let mut given_back = u64::MAX;
                // Safety: a valid out-pointer.
                let got = unsafe {
                    if trim {
                        dm_trim(&mut given_back)
                    } else {
                        dm_decay(&mut given_back)
                    }
                };
                prop_assert_eq!(got, DM_OK);
                let after = common::memory_stats().cached;
                // One thread at work: what is given back is what `cached` showed, and a trim all of it.
                prop_assert_eq!(after + given_back, before, "{:?}", op);
                if trim {
                    prop_assert_eq!(after, 0);
                }
            }
            Op::Write { block, len } => {
                let n = self.live.len().max(1);
                if let Some(b) = self.live.get_mut(block % n) {
                    let len = len.min(b.size);
                    // Safety: the block is live with `size` bytes.
                    unsafe { std::ptr::write_bytes(b.ptr, 0xA5, len) };
                    b.written = b.written.max(len);
                }
            }
            Op::Reserve(n) => {
                let got = dm_reserve(n);
                let after = self.reserved().checked_add(n as u64);
                let want = if n == 0 || after.is_some_and(|r| r <= self.limit) {
                    DM_OK
                } else if n as u64 <= self.limit && after.is_none() {
                    DM_ERR_INVALID_ARGUMENT // reserved + n overflows 64 bits: a bad size, not a full quota
                } else {
                    DM_ERR_LIMIT
                };
                prop_assert_eq!(got, want, "{:?}", op);
                if got == DM_OK {
                    self.held += n as u64;
                }
            }
            Op::Unreserve(n) => {
                let got = dm_unreserve(n);
                prop_assert_eq!(got, if n as u64 <= self.held { DM_OK } else { DM_ERR_INVALID_ARGUMENT }, "{:?}", op);
                if got == DM_OK {
                    self.held -= n as u64;
                }
            }
            Op::SetLimit(l) => {
                prop_assert_eq!(dm_set_limit(l), DM_OK);
                self.limit = l;
            }
        }
        self.check()
    }

    fn check_ran(&self, handles: &[u64]) -> Result<(), TestCaseError> {
        for h in handles {
            let ctx = self.ran.iter().position(|x| x == h).unwrap();
            prop_assert_eq!(runs(ctx), 1, "cleaner {} ran exactly once", h);
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let s = common::stats();
        prop_assert_eq!(s.reserved, self.reserved());
        prop_assert_eq!(s.capacity, self.live.iter().map(|b| b.size as u64).sum::<u64>());
        prop_assert_eq!(s.count, self.live.len() as u64);
        prop_assert_eq!(s.live_cleaners, self.live.iter().map(|b| b.handles.len() as u64).sum::<u64>());
        prop_assert!(common::memory_stats().occupied >= s.capacity, "live blocks occupy at least their bytes");
        for b in &self.live {
            let mut size = usize::MAX;
            // Safety: a valid out-pointer; the block pointer is only looked up.
            prop_assert_eq!(unsafe { dm_block_size(b.ptr as *const c_void, &mut size) }, DM_OK);
            prop_assert_eq!(size, b.size, "dm_block_size");
            // Safety: live block of `size` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(b.ptr, b.size) };
            let untouched = &bytes[b.written..];
            let sample = if untouched.len() > 4096 { &untouched[..4096] } else { untouched };
            prop_assert!(sample.iter().all(|&x| x == 0), "untouched bytes are zero");
            prop_assert!(untouched.last().is_none_or(|&x| x == 0));
            prop_assert!(bytes[..b.written].iter().all(|&x| x == 0xA5), "written bytes stay");
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200),
    ))]

    #[test]
    fn the_c_abi_behaves_like_its_model(ops in prop::collection::vec(op(), 1..120)) {
        let _s = common::serial();
        let start = common::stats();
        prop_assert_eq!((start.reserved, start.count), (0, 0), "the previous case left nothing behind");
        unsafe { (*std::ptr::addr_of_mut!(RUNS)).fill(0) };
        let mut foreign = [0u8; 64];
        let mut model = Model { limit: 64 << 20, ..Model::default() };
        prop_assert_eq!(dm_set_limit(model.limit), DM_OK);
        let mut next_ctx = 0;
        let outcome = ops.iter().try_for_each(|op| model.step(op, foreign.as_mut_ptr().wrapping_add(8), &mut next_ctx));
        // Leave nothing behind for the next case, whatever happened; a failed step is the failure
        // to report (after it the model may be behind the library).
        let mut left = 0;
        for b in std::mem::take(&mut model.live) {
            left += usize::from(unsafe { dm_free(b.ptr as *mut c_void) } != DM_OK);
        }
        left += usize::from(dm_unreserve(model.held as usize) != DM_OK);
        outcome?;
        prop_assert_eq!(left, 0, "every block the model holds frees, its reservations unreserve");
        let s = common::stats();
        prop_assert_eq!((s.reserved, s.capacity, s.count, s.live_cleaners), (0, 0, 0, 0));
    }
}
