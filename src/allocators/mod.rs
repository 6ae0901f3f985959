//! Where a block's memory comes from. Each allocator hands out zeroed memory and takes it back;
//! none of them knows the quota, the block table, C or Java.
//! - `small`: blocks of up to 8 KiB, slots of per-thread slabs in 32 size classes;
//! - [`system`]: the rest, from the C heap (8-128 KiB) or mappings of their own (128 KiB and up),
//!   with freed mappings kept for the next block that fits.

pub(crate) mod small;
pub mod system;
