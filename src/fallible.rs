//! The library's own bookkeeping memory (table entries, slab headers, lists), taken so that a
//! refusal by the system is an error the caller reports (`DM_ERR_NO_MEMORY`) or a fallback (keep
//! nothing for reuse), never the abort that Rust's infallible `Box::new` and `Vec::push` make of
//! it: an allocator's own out-of-memory must not end the process that asked it for memory.

use crate::{Error, Result};
use std::alloc::Layout;

/// `value` in a box of its own, or the value back when there is no memory for it.
pub fn boxed<T>(value: T) -> std::result::Result<Box<T>, T> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(Box::new(value)); // takes no memory
    }
    // Safety: a non-zero size; the memory, if any, is written whole before the box owns it, and a
    // `Box<T>` may own memory from the global allocator with `T`'s layout.
    unsafe {
        let memory = std::alloc::alloc(layout).cast::<T>();
        if memory.is_null() {
            return Err(value);
        }
        memory.write(value);
        Ok(Box::from_raw(memory))
    }
}

/// Room for `additional` more items in `list`, or `NoMemory` (nothing changed).
pub fn reserve<T>(list: &mut Vec<T>, additional: usize) -> Result<()> {
    list.try_reserve(additional).map_err(|_| Error::NoMemory)
}

/// Pushes `item`, or gives it back when there is no memory for it (nothing changed).
pub fn push<T>(list: &mut Vec<T>, item: T) -> std::result::Result<(), T> {
    match list.try_reserve(1) {
        Ok(()) => {
            list.push(item);
            Ok(())
        }
        Err(_) => Err(item),
    }
}
