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

/// Records a new slab, for good, in every region it spans. `slab.base` must be aligned to
/// SLAB_SIZE and the whole slab covered.
pub fn insert(slab: &'static Slab) {
    for region in (slab.base..slab.base + slab.bytes).step_by(SLAB_SIZE) {
        insert_region(region, slab);
    }
}

fn insert_region(region: usize, slab: &'static Slab) {
    let (top, low) = indexes(region).expect("slab outside the table");
    let mut leaf = ROOT[top].load(Acquire);
    if leaf.is_null() {
        let layout = std::alloc::Layout::new::<Leaf>();
        // Safety: all-zero bytes are null AtomicPtrs; the layout is not zero-sized.
        let fresh = unsafe { std::alloc::alloc_zeroed(layout) } as *mut Leaf;
        if fresh.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        leaf = match ROOT[top].compare_exchange(std::ptr::null_mut(), fresh, AcqRel, Acquire) {
            Ok(_) => fresh,
            Err(theirs) => {
                // Safety: `fresh` was never shared.
                unsafe { std::alloc::dealloc(fresh as *mut u8, layout) };
                theirs
            }
        };
    }
    // Safety: `leaf` is a live leaf (never freed).
    unsafe { (*leaf)[low].store(slab as *const Slab as *mut Slab, Release) };
}
