//! Which slab an address lies in: a two-level table over the 48-bit address space, one entry per
//! [`SLAB_SIZE`] region (a 1 MiB slab has 16). Entries are set once and never cleared (slabs are permanent), so a
//! lookup is two loads and no lock.

use super::slab::{Slab, SLAB_SHIFT, SLAB_SIZE};
use std::sync::atomic::{AtomicPtr, Ordering::*};

const LEVEL_BITS: u32 = 16;
const ADDRESS_BITS: u32 = SLAB_SHIFT + 2 * LEVEL_BITS; // 48

type Leaf = [AtomicPtr<Slab>; 1 << LEVEL_BITS];

static ROOT: [AtomicPtr<Leaf>; 1 << LEVEL_BITS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 1 << LEVEL_BITS];

#[inline(always)]
fn indexes(address: usize) -> Option<(usize, usize)> {
    if address >> ADDRESS_BITS != 0 {
        return None;
    }
    let region = address >> SLAB_SHIFT;
    Some((region >> LEVEL_BITS, region & ((1 << LEVEL_BITS) - 1)))
}

/// True if slabs can live at `base` (it lies in the addresses the table covers).
pub fn covers(base: usize) -> bool {
    indexes(base).is_some()
}

/// The slab whose region holds `address`, if any.
#[inline(always)]
pub fn find(address: usize) -> Option<&'static Slab> {
    let (top, low) = indexes(address)?;
    let leaf = ROOT[top].load(Acquire);
    if leaf.is_null() {
        return None;
    }
    // Safety: leaves are never freed; slab headers are leaked, never freed.
    let slab = unsafe { (*leaf)[low].load(Acquire) };
    unsafe { slab.as_ref() }
}

/// Makes the table's entries for the regions of `len` bytes at `base` (aligned to SLAB_SIZE),
/// so that [`insert`] needs no memory; false when the system has none for them. What was made
/// stays (leaves are never freed; a later slab there uses them).
pub fn prepare(base: usize, len: usize) -> bool {
    (base..base + len).step_by(SLAB_SIZE).all(|region| indexes(region).is_some_and(|(top, _)| leaf(top).is_some()))
}

/// Records a new slab, for good, in every region it spans. `slab.base` must be aligned to
/// SLAB_SIZE, the whole slab covered and [`prepare`]d.
pub fn insert(slab: &'static Slab) {
    for region in (slab.base..slab.base + slab.bytes).step_by(SLAB_SIZE) {
        let (top, low) = indexes(region).expect("slab outside the table");
        let leaf = ROOT[top].load(Acquire);
        assert!(!leaf.is_null(), "a slab's regions are prepared before it is recorded");
        // Safety: `leaf` is a live leaf (never freed).
        unsafe { (*leaf)[low].store(slab as *const Slab as *mut Slab, Release) };
    }
}

/// The leaf at `top`, made if need be; None when the system has no memory for it.
fn leaf(top: usize) -> Option<*mut Leaf> {
    let leaf = ROOT[top].load(Acquire);
    if !leaf.is_null() {
        return Some(leaf);
    }
    let layout = std::alloc::Layout::new::<Leaf>();
    // Safety: all-zero bytes are null AtomicPtrs; the layout is not zero-sized.
    let fresh = unsafe { std::alloc::alloc_zeroed(layout) } as *mut Leaf;
    if fresh.is_null() {
        return None;
    }
    match ROOT[top].compare_exchange(std::ptr::null_mut(), fresh, AcqRel, Acquire) {
        Ok(_) => Some(fresh),
        Err(theirs) => {
            // Safety: `fresh` was never shared.
            unsafe { std::alloc::dealloc(fresh as *mut u8, layout) };
            Some(theirs)
        }
    }
}
