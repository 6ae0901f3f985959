//! directmem: the JDK's direct-memory machinery (`java.nio.Bits` quota, zeroed allocation,
//! `Cleaner` release) rebuilt as a library that C programs and the JVM share.
//!
//! The layers, each using only those below it (the tree shows them):
//! - `os`: the operating system's memory primitives (page size, map, unmap, discard, huge-page
//!   advice, residency, a coarse clock); `barrier`: the asymmetric barrier (`membarrier`) that
//!   lets a thread work on its own data without locked instructions; `padded`: a value alone in
//!   its cache lines; `memcheck`: what valgrind cannot see for itself (one client request);
//! - [`allocators`]: where a block's memory comes from: `small` (up to 128 KiB: per-thread slabs in
//!   48 size classes, the slab table, the pool of slabs no thread owns) and [`allocators::system`]
//!   (mappings of their own above 128 KiB, freed mappings kept for reuse; the C heap for what
//!   slabs cannot serve);
//! - [`quota`]: the byte budget, with its thread credit and its reclaim protocol;
//! - [`registry`]: the table of live blocks and their cleaners, which makes every release
//!   exactly-once;
//! - [`manager`]: these composed into one process-wide direct-memory manager (and its fork
//!   handlers); its [`manager::Stats`] is the one stats layout;
//! - [`error`] and [`limit`]: the one status table and the one size parser, which every layer and
//!   both doors use; `fallible`: the library's own bookkeeping memory, taken so that a refusal is
//!   an error or a fallback, not an abort; `own_heap`: where that memory comes from (glibc's
//!   allocator under its own names, never a `malloc` that may be built on this library).
//!
//! None of these knows C or Java. Two sibling doors stand on the manager: [`ffi`] (the C ABI of
//! `include/directmem.h`) and `jni` (the native half of the Java API `dev.directmem.DirectMemory`).

pub mod allocators;
mod barrier;
mod c_callback;
pub mod error;
mod fallible;
pub mod ffi;
mod jni;
pub mod limit;
pub mod manager;
mod memcheck;
mod os;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod own_heap;
mod padded;
pub mod quota;
pub mod registry;
mod sync;

pub use error::{Error, Result};

/// The library's own memory never comes from a replaced `malloc` (see `own_heap`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static OWN_HEAP: own_heap::Glibc = own_heap::Glibc;
