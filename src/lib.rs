//! directmem: the JDK's direct-memory machinery (`java.nio.Bits` quota, zeroed allocation,
//! `Cleaner` release) rebuilt as a library that C programs and the JVM share.
//!
//! The safe core knows nothing of C or Java:
//! - [`quota`]: the byte budget, and the reclaim protocol when a reservation does not fit;
//!   `credit`: a thread's share of it taken ahead of need, spent without locked instructions;
//! - `os`: the operating system's memory primitives (page size, map, unmap, discard, huge-page
//!   advice, residency), used by the layers above it and using none of them;
//! - [`sysmem`]: zeroed, aligned memory from the system (heap for small blocks, fresh pages for big ones);
//!   `mappings`: freed big blocks' addresses kept (their pages given back) for the next of that length;
//! - [`registry`]: the table of live blocks and their cleaners, which makes every release exactly-once;
//! - `small` and `slab`: blocks of up to 8 KiB from per-thread slabs, with no shared state on
//!   the way (one compare-and-swap per free);
//! - [`manager`]: these composed into one process-wide direct-memory manager.
//!
//! The boundaries are thin layers on top: [`ffi`] (the C ABI of `include/directmem.h`) and
//! `jni` (the native half of the Java API `dev.directmem.DirectMemory`).

pub mod allocators;
pub mod error;
pub mod ffi;
mod jni;
pub mod limit;
pub mod manager;
mod os;
pub mod quota;
pub mod registry;

pub use error::{Error, Result};
