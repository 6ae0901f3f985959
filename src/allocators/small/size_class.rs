//! The size classes of small blocks: four per doubling, as jemalloc and mimalloc have them, so a
//! slot wastes at most a fifth of itself (powers of two waste up to half: a 5,000 B block took an
//! 8 KiB slot). Up to 64 B the classes are 16 B apart; from there each doubling has four equal
//! steps: 80, 96, 112, 128, 160, ... 7168, 8192. Every class is a multiple of 16 B, so every slot
//! is 16-byte aligned; a bigger alignment takes the first class that is a multiple of it.

/// The largest block (size or alignment) served from slabs.
pub const MAX_SMALL: usize = 8192;

/// The slot size of each class.
pub const SIZES: [u32; CLASSES] = sizes();

pub const CLASSES: usize = 32;

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

/// The class of each size, by 16-byte step: `BY_STEP[(size + 15) / 16]` (size 0 in class 0).
static BY_STEP: [u8; MAX_SMALL / 16 + 1] = by_step();

const fn by_step() -> [u8; MAX_SMALL / 16 + 1] {
    let mut table = [0u8; MAX_SMALL / 16 + 1];
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

/// The class of a block of `size` bytes aligned to `alignment` (a power of two), if small.
#[inline(always)]
pub fn class_of(size: usize, alignment: usize) -> Option<usize> {
    if size > MAX_SMALL {
        return None;
    }
    let class = BY_STEP[size.div_ceil(16)] as usize;
    if alignment <= 16 {
        return Some(class);
    }
    aligned_class(class, alignment)
}

#[cold]
fn aligned_class(from: usize, alignment: usize) -> Option<usize> {
    (from..CLASSES).find(|&c| SIZES[c] as usize % alignment == 0)
}

/// `offset / size` for any offset inside a slab (below 64 KiB) and any class size, with a multiply
/// and a shift instead of a division on the free path: `magic` is `ceil(2^32 / size)`, whose error
/// (below `size`) times the offset (below 2^16) stays below 2^32, so the quotient is exact.
#[inline(always)]
pub fn divide(offset: u32, magic: u64) -> u32 {
    ((offset as u64 * magic) >> 32) as u32
}

pub const fn magic(size: u32) -> u64 {
    (1u64 << 32).div_ceil(size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_classes_per_doubling_from_64_b() {
        assert_eq!(&SIZES[..9], &[16, 32, 48, 64, 80, 96, 112, 128, 160]);
        assert_eq!(&SIZES[CLASSES - 4..], &[5120, 6144, 7168, 8192]);
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
        assert_eq!(class_of(1, 16384), None);
        for align in [32, 64, 128, 256, 512, 1024, 2048, 4096, 8192] {
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
        for &size in &SIZES {
            let m = magic(size);
            for offset in 0..(1u32 << 16) {
                assert_eq!(divide(offset, m), offset / size, "offset {offset} size {size}");
            }
        }
    }
}
