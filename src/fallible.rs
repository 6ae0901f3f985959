//! The library's own bookkeeping memory (table entries, slab headers, lists), taken so that a
//! refusal by the system is an error the caller reports (`DM_ERR_NO_MEMORY`) or a fallback (keep
//! nothing for reuse), never the abort that Rust's infallible `Box::new` and `Vec::push` make of
//! it: an allocator's own out-of-memory must not end the process that asked it for memory.

use crate::{Error, Result};
use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicUsize, Ordering::*};

/// `value` in a box of its own, or the value back when there is no memory for it.
pub fn boxed<T>(value: T) -> std::result::Result<Box<T>, T> {
    let mut value = Some(value);
    boxed_with(|| value.take().expect("made once")).ok_or_else(|| value.take().expect("not made"))
}

/// A box holding what `make` makes, made in the box's memory once it was found (None, and nothing
/// made, when there is none): a big value is not first made on the caller's stack and then copied
/// (the process-wide manager's parts are made on the stack of whatever thread calls the library
/// first, which may be a small one).
pub fn boxed_with<T>(make: impl FnOnce() -> T) -> Option<Box<T>> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Some(Box::new(make())); // takes no memory
    }
    // Safety: a non-zero size; the memory, if any, is written whole before the box owns it, and a
    // `Box<T>` may own memory from the global allocator with `T`'s layout. Should `make` unwind
    // (a panic, caught at the boundary), the memory is leaked, nothing worse.
    unsafe {
        let memory = std::alloc::alloc(layout).cast::<T>();
        if memory.is_null() {
            return None;
        }
        memory.write(make());
        Some(Box::from_raw(memory))
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

/// A value shared by reference count, like `Arc`, whose making can be refused (`Arc::new`
/// cannot: it aborts). For what a thread's heap shares with the process-wide lists: its quota
/// credit and its counters, made at a thread's first allocation.
pub struct Shared<T> {
    inner: NonNull<SharedInner<T>>,
}

struct SharedInner<T> {
    count: AtomicUsize,
    value: T,
}

// Safety: as `Arc<T>`: the value is reached from any thread that holds a `Shared`, and dropped by
// the last one.
unsafe impl<T: Send + Sync> Send for Shared<T> {}
unsafe impl<T: Send + Sync> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// None when there is no memory for it (the value is dropped).
    pub fn try_new(value: T) -> Option<Shared<T>> {
        let inner = boxed(SharedInner { count: AtomicUsize::new(1), value }).ok()?;
        Some(Shared { inner: NonNull::from(Box::leak(inner)) })
    }

    /// Whether `a` and `b` share one value.
    pub fn ptr_eq(a: &Shared<T>, b: &Shared<T>) -> bool {
        a.inner == b.inner
    }

    /// The value's address, valid while any `Shared` of it lives.
    pub fn as_ptr(this: &Shared<T>) -> *const T {
        &this.inner().value
    }

    fn inner(&self) -> &SharedInner<T> {
        // Safety: alive while this `Shared` is (the count includes it).
        unsafe { self.inner.as_ref() }
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Shared<T> {
        // Relaxed, as `Arc`: a new reference comes from an existing one, which keeps it alive.
        if self.inner().count.fetch_add(1, Relaxed) > isize::MAX as usize {
            std::process::abort(); // as `Arc`: billions of leaked clones, not a real program
        }
        Shared { inner: self.inner }
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner().value
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // As `Arc`: every use of the value happens before the last drop frees it.
        if self.inner().count.fetch_sub(1, Release) == 1 {
            fence(Acquire);
            // Safety: the last reference; the memory came from `boxed`, a `Box`.
            drop(unsafe { Box::from_raw(self.inner.as_ptr()) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    struct Counted(Arc<AtomicU32>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn a_shared_value_is_dropped_once_by_its_last_reference_on_any_thread() {
        let drops = Arc::new(AtomicU32::new(0));
        let shared = Shared::try_new(Counted(drops.clone())).unwrap();
        let clones: Vec<_> = (0..8).map(|_| shared.clone()).collect();
        assert!(Shared::ptr_eq(&shared, &clones[3]));
        assert!(std::ptr::eq(Shared::as_ptr(&shared), &*clones[5]));
        std::thread::scope(|s| {
            for clone in clones {
                s.spawn(move || {
                    let again = clone.clone();
                    drop(clone);
                    drop(again);
                });
            }
        });
        assert_eq!(drops.load(SeqCst), 0, "one reference is left");
        drop(shared);
        assert_eq!(drops.load(SeqCst), 1);
        let (a, b) = (Shared::try_new(1).unwrap(), Shared::try_new(1).unwrap());
        assert!(!Shared::ptr_eq(&a, &b), "two values");
    }
}
