//! directmem: the JDK's direct-memory machinery (`java.nio.Bits` quota, zeroed allocation,
//! `Cleaner` release) rebuilt as a library that C programs and the JVM share.
//!
//! The safe core knows nothing of C or Java:
//! - [`quota`]: the byte budget, and the reclaim protocol when a reservation does not fit;
//! - [`sysmem`]: zeroed, aligned memory from the system (heap for small blocks, fresh pages for big ones);
//! - [`registry`]: the table of live blocks and their cleaners, which makes every release exactly-once;
//! - [`manager`]: the three composed into one process-wide direct-memory manager.
//!
//! The boundaries are thin layers on top: [`ffi`] (the C ABI of `include/directmem.h`) and
//! `jni` (the native half of the Java API `dev.directmem.DirectMemory`).

pub mod error;
pub mod ffi;
mod jni;
pub mod limit;
pub mod manager;
pub mod quota;
pub mod registry;
pub mod sysmem;

pub use error::{Error, Result};
