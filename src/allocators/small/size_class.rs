//! The size classes of slab slots: four per doubling, as jemalloc and mimalloc have them, so a
//! slot wastes at most a fifth of itself (powers of two waste up to half: a 5,000 B block took an
//! 8 KiB slot). Up to 64 B the classes are 16 B apart; from there each doubling has four equal
//! steps: 80, 96, 112, 128, 160, ... 7168, 8192, 10240, ... 131072. Every class is a multiple of
//! 16 B, so every slot is 16-byte aligned; a bigger alignment takes the first class that is a
//! multiple of it.
//!
//! Classes up to [`MAX_SMALL_SLOT`] (8 KiB) fill 64 KiB slabs; the 16 medium classes above it
//! (8-128 KiB) fill 1 MiB slabs, so that even their biggest class has 8 slots to a slab.

use super::slab::SLAB_SIZE;

/// The largest block (size) served from slabs. Bigger ones are mappings of their own
/// ([`crate::allocators::system::MAP_THRESHOLD`] is the same size).
pub const MAX_SMALL: usize = 128 << 10;

/// The largest slot of a 64 KiB slab; bigger classes take [`MEDIUM_SLAB_SIZE`] slabs.
pub const MAX_SMALL_SLOT: usize = 8192;

/// The slab size of the classes above [`MAX_SMALL_SLOT`].
pub const MEDIUM_SLAB_SIZE: usize = 1 << 20;

/// The largest alignment a slot can have: slabs start on [`SLAB_SIZE`] boundaries.
pub const MAX_SLOT_ALIGNMENT: usize = SLAB_SIZE;

/// The slot size of each class.
pub const SIZES: [u32; CLASSES] = sizes();

pub const CLASSES: usize = 48;

const fn sizes() -> [u32; CLASSES] {
    let mut sizes = [0u32; CLASSES];
    let mut c = 0;
    while c < 4 {
        sizes[c] = 16 * (c as u32 + 1);
        c += 1;
    }
    // 64 << k, then three steps of a quarter of the doubling.
    while c < CLASSES {
        let group = (c / 4) as u32; // 1.. ; classes 4k..4k+3 lie in (64 << (k-1), 64 << k]
        let low = 64 << (group - 1);
        sizes[c] = low + (low / 4) * ((c % 4) as u32 + 1);
        c += 1;
    }
    sizes
}

/// The bytes of a slab of `class`.
#[inline(always)]
pub const fn slab_size(class: usize) -> usize {
    if SIZES[class] as usize <= MAX_SMALL_SLOT {
        SLAB_SIZE
    } else {
        MEDIUM_SLAB_SIZE
    }
}

/// The class of each size up to 8 KiB, by 16-byte step: `BY_STEP[(size + 15) / 16]` (size 0 in
/// class 0).
static BY_STEP: [u8; MAX_SMALL_SLOT / 16 + 1] = by_step();

const fn by_step() -> [u8; MAX_SMALL_SLOT / 16 + 1] {
    let mut table = [0u8; MAX_SMALL_SLOT / 16 + 1];
    let (mut step, mut c) = (1, 0);
    while step < table.len() {
        while (SIZES[c] as usize) < step * 16 {
            c += 1;
        }
        table[step] = c as u8;
        step += 1;
    }
    table
}

/// The class of a size above 8 KiB (and at most [`MAX_SMALL`]): computed, not looked up, so the
/// table stays small enough to live in the cache. A size in (low, 2 low] is in that doubling's
/// group of four; its step is a quarter of `low`.
#[inline]
fn medium_class(size: usize) -> usize {
    let shift = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize; // low = 1 << shift
    let step = ((size - 1) >> (shift - 2)) & 3; // which quarter of (low, 2 low]
    4 * (shift - 6) + 4 + step
}

/// The class of a block of `size` bytes aligned to `alignment` (a power of two), if small.
#[inline(always)]
pub fn class_of(size: usize, alignment: usize) -> Option<usize> {
    let class = if size <= MAX_SMALL_SLOT {
        BY_STEP[size.div_ceil(16)] as usize
    } else if size <= MAX_SMALL {
        medium_class(size)
    } else {
        return None;
    };
    if alignment <= 16 {
        return Some(class);
    }
    aligned_class(class, alignment)
}

#[cold]
fn aligned_class(from: usize, alignment: usize) -> Option<usize> {
    if alignment > MAX_SLOT_ALIGNMENT {
        return None;
    }
    (from..CLASSES).find(|&c| SIZES[c] as usize % alignment == 0)
}

/// `offset / size` for any offset inside a slab (below 1 MiB) and any class size, with a multiply
/// and a shift instead of a division on the free path: `magic` is `ceil(2^40 / size)`, whose error
/// (below `size`, at most 2^17) times the offset (below 2^20) stays below 2^40, so the quotient is
/// exact; and the product stays below 2^20 * 2^36, within 64 bits.
#[inline(always)]
pub fn divide(offset: u32, magic: u64) -> u32 {
    ((offset as u64 * magic) >> 40) as u32
}

pub const fn magic(size: u32) -> u64 {
    (1u64 << 40).div_ceil(size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_classes_per_doubling_from_64_b() {
        assert_eq!(&SIZES[..9], &[16, 32, 48, 64, 80, 96, 112, 128, 160]);
        assert_eq!(&SIZES[28..32], &[5120, 6144, 7168, 8192]);
        assert_eq!(&SIZES[CLASSES - 4..], &[81920, 98304, 114688, 131072]);
        assert!(SIZES.windows(2).all(|w| w[0] < w[1] && w[1] % 16 == 0));
    }

    #[test]
    fn every_size_gets_the_smallest_class_that_holds_it_and_wastes_at_most_a_fifth() {
        for size in 0..=MAX_SMALL {
            let c = class_of(size, 0).unwrap();
            let slot = SIZES[c] as usize;
            assert!(slot >= size && (c == 0 || (SIZES[c - 1] as usize) < size), "size {size} in {slot}");
            // The bound: at most 1.25 x the payload + 16 B.
            assert!(slot * 4 <= size * 5 + 64, "size {size}: slot {slot}");
        }
        assert_eq!(class_of(MAX_SMALL + 1, 0), None);
    }

    #[test]
    fn alignments_take_a_class_that_is_a_multiple_of_them() {
        assert_eq!(SIZES[class_of(10, 64).unwrap()], 64);
        assert_eq!(SIZES[class_of(65, 64).unwrap()], 128);
        assert_eq!(SIZES[class_of(100, 32).unwrap()], 128); // 112 is not a multiple of 32
        assert_eq!(SIZES[class_of(1, 4096).unwrap()], 4096);
        assert_eq!(SIZES[class_of(5000, 2048).unwrap()], 6144);
        assert_eq!(SIZES[class_of(1, 16384).unwrap()], 16384);
        assert_eq!(SIZES[class_of(70000, 65536).unwrap()], 131072);
        assert_eq!(class_of(1, 131072), None, "slabs are only 64 KiB aligned");
        for align in [32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536] {
            for size in (0..=MAX_SMALL).step_by(7) {
                if let Some(c) = class_of(size, align) {
                    assert_eq!(SIZES[c] as usize % align, 0);
                    assert!(SIZES[c] as usize >= size);
                }
            }
        }
    }

    #[test]
    fn the_division_by_multiplication_is_exact_for_every_offset_in_a_slab() {
        for (c, &size) in SIZES.iter().enumerate() {
            let m = magic(size);
            for offset in 0..slab_size(c) as u32 {
                assert_eq!(divide(offset, m), offset / size, "offset {offset} size {size}");
            }
        }
    }

    #[test]
    fn slabs_hold_at_least_eight_slots_and_are_whole_regions_of_the_table() {
        for (c, &size) in SIZES.iter().enumerate() {
            assert!(slab_size(c) / size as usize >= 8, "class {c}");
            assert_eq!(slab_size(c) % SLAB_SIZE, 0);
        }
    }
}
