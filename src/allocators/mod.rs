//! Where a block's memory comes from. Each allocator hands out zeroed memory and takes it back;
//! none of them knows the quota, the block table, C or Java.
//! - `small`: blocks of up to 128 KiB, slots of per-thread slabs in 48 size classes;
//! - [`system`]: the rest, mappings of their own (above 128 KiB), with freed mappings kept for the
//!   next block that fits; or from the C heap when slabs cannot serve (alignments above 64 KiB, a
//!   thread that is ending).

pub(crate) mod small;
pub mod system;

/// How long memory kept for reuse with its pages (empty slabs, written big blocks' mappings)
/// waits for the next block before its pages go back to the system, in milliseconds.
pub const DECAY_MS: u64 = 100;
