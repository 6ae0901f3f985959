//! Mappings kept for reuse. A freed big block's addresses stay mapped for the next block that
//! fits: of the same length or up to half as long again (best fit), so that programs whose big
//! blocks vary in size reuse them too. Measured here for 1 MiB: `mmap` + `munmap` cost 4.2 µs,
//! `MADV_DONTNEED` 0.7 µs; an aligned mapping costs up to two more `munmap` calls for trimming.
//!
//! Its pages usually go back to the system at once (`MADV_DONTNEED`: they read as zero when
//! touched again), so what is kept costs address space only. But a program that writes its
//! blocks then pays a page fault for every page of every block it gets: blocks of random sizes up
//! to 256 KiB written whole took 9.5-12.5 µs an allocation against glibc's 2.0-2.6. So a mapping
//! under 2 MiB whose block was mostly in memory keeps its pages, *dirty*, and the next block there
//! is zeroed in place, which costs far less than the faults; at most [`DIRTY_MAX`] bytes, for at
//! most [`DECAY_MS`], shown as `cached`. Whether blocks of a length are written is judged with
//! `mincore` ([`mostly_resident`]) on one free in [`REJUDGE`] per power of two of length (a
//! system call each: in a workload of random sizes with a byte written per block, judging every
//! free cost a tenth of the time); a block that was zeroed in place is never judged (its pages
//! are in memory whatever the program did). From 2 MiB a mapping gets huge pages instead when its
//! block was mostly in memory ([`discard_for_reuse`]): a fault then brings in 2 MiB.
//!
//! Address space kept costs commit charge under strict overcommit (`vm.overcommit_memory=2`);
//! hence the bounds: at most [`KEPT_MAX`] mappings and [`KEPT_BYTES_MAX`] bytes, the oldest
//! unmapped first, and all of them unmapped before a new mapping is reported as failed.

use crate::allocators::DECAY_MS;
use crate::os::{coarse_millis, discard, discard_for_reuse, mostly_resident, unmap_region, HUGE_PAGE};
use crate::sync::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::*};

/// At most this many mappings are kept, and at most [`KEPT_BYTES_MAX`] bytes of addresses: a
/// program that frees a batch of a thousand 1 MiB blocks finds them all again for the next batch
/// (jemalloc retains such addresses too).
pub const KEPT_MAX: usize = 1024;
pub const KEPT_BYTES_MAX: usize = 1 << 30;

/// At most this many bytes of kept mappings keep their pages (the oldest give them back first).
pub const DIRTY_MAX: usize = 32 << 20;

/// One free in this many, per power of two of length, looks at whether the block was written: a
/// look costs ~1-2 µs, and at one in eight a loop of 1 MiB blocks that are not written took 1.6
/// µs a pair instead of 1.2.
const REJUDGE: u8 = 32;

/// A kept mapping.
#[derive(Clone, Copy)]
struct Entry {
    age: u64,
    /// Its huge-page advice.
    huge: bool,
    /// Since when it keeps its pages (coarse milliseconds), if it does.
    dirty_since: Option<u64>,
}

/// Kept mappings, found by best fit and evicted oldest first.
#[derive(Default)]
struct Index {
    /// (length, start) -> entry
    by_fit: BTreeMap<(usize, usize), Entry>,
    /// age -> (length, start)
    by_age: BTreeMap<u64, (usize, usize)>,
    /// The dirty ones: age -> (length, start)
    dirty: BTreeMap<u64, (usize, usize)>,
    bytes: usize,
    next_age: u64,
}

/// A kept mapping, now the caller's.
#[derive(Debug, PartialEq, Eq)]
pub struct Taken {
    pub start: usize,
    pub len: usize,
    /// Its huge-page advice.
    pub huge: bool,
    /// It kept its pages: the caller zeroes what it hands out. Otherwise it reads as zero.
    pub dirty: bool,
}

pub struct Kept {
    index: Mutex<Option<Index>>,
    /// Bytes of the dirty mappings, for the stats without the lock.
    dirty_bytes: AtomicU64,
    /// Per power of two of length: the last verdict (bit 7: written) and the frees left that take
    /// it without looking (bits 0-6). Shared by all threads; a lost update only costs a look.
    verdicts: [AtomicU8; 64],
}

const WRITTEN: u8 = 0x80;

static GLOBAL: Kept = Kept::new();

/// The process's kept mappings (what `sysmem` allocates from and releases to).
pub fn global() -> &'static Kept {
    &GLOBAL
}

impl Kept {
    pub const fn new() -> Kept {
        Kept { index: Mutex::new(None), dirty_bytes: AtomicU64::new(0), verdicts: [const { AtomicU8::new(0) }; 64] }
    }

    /// Its lock, for [`crate::fork`].
    pub(crate) fn lock(&self) -> &crate::sync::RawMutex {
        // Safety: the raw lock is only locked and unlocked as a whole by `fork`'s handlers.
        unsafe { self.index.raw() }
    }

    /// Takes a mapping out of `index` (its dirty bytes out of the count too).
    fn unlist(&self, index: &mut Index, len: usize, start: usize) -> Entry {
        let entry = index.by_fit.remove(&(len, start)).expect("listed");
        index.by_age.remove(&entry.age);
        if index.dirty.remove(&entry.age).is_some() {
            self.dirty_bytes.fetch_sub(len as u64, Relaxed);
        }
        index.bytes -= len;
        entry
    }

    /// The smallest kept mapping of `len` to `len + len / 2` bytes starting at a multiple of
    /// `alignment`, now the caller's; or None.
    pub fn take(&self, len: usize, alignment: usize) -> Option<Taken> {
        let (taken, expired) = {
            let mut guard = self.index.lock();
            let index = guard.as_mut()?;
            let most = len + len / 2;
            let (&(l, start), _) =
                index.by_fit.range((len, 0)..=(most, usize::MAX)).find(|(&(_, start), _)| start % alignment == 0)?;
            let entry = self.unlist(index, l, start);
            let taken = Taken { start, len: l, huge: entry.huge, dirty: entry.dirty_since.is_some() };
            (taken, self.expire(index, coarse_millis()))
        };
        self.clean(expired);
        Some(taken)
    }

    /// Takes back a mapping the caller is done with (`huge`: its huge-page advice; `zeroed_in_place`:
    /// its block was zeroed in place, so its pages say nothing of what the program wrote). Its
    /// addresses are kept (or unmapped, when bigger than all that may be kept); its pages too if
    /// its program writes such blocks (see the module's comment), else they go back now.
    pub fn keep(&self, start: usize, len: usize, huge: bool, zeroed_in_place: bool) {
        if len > KEPT_BYTES_MAX {
            unmap_region(start, len);
            return;
        }
        let (huge, dirty) = if len >= HUGE_PAGE {
            (discard_for_reuse(start, len, huge), false)
        } else if self.written(start, len, zeroed_in_place)
            && self.dirty_bytes.load(Relaxed) + len as u64 <= DIRTY_MAX as u64
        {
            (huge, true)
        } else {
            discard(start, len);
            (huge, false)
        };
        let mut evicted = Vec::new();
        let expired = {
            let mut guard = self.index.lock();
            let index = guard.get_or_insert_with(Index::default);
            let age = index.next_age;
            index.next_age += 1;
            let now = coarse_millis();
            index.by_fit.insert((len, start), Entry { age, huge, dirty_since: dirty.then_some(now) });
            index.by_age.insert(age, (len, start));
            if dirty {
                index.dirty.insert(age, (len, start));
                self.dirty_bytes.fetch_add(len as u64, Relaxed);
            }
            index.bytes += len;
            while index.by_age.len() > KEPT_MAX || index.bytes > KEPT_BYTES_MAX {
                let (_, &(l, s)) = index.by_age.first_key_value().expect("over the bounds: not empty");
                self.unlist(index, l, s);
                evicted.push((l, s));
            }
            self.expire(index, now)
        };
        // System calls outside the lock.
        for (len, start) in evicted {
            unmap_region(start, len);
        }
        self.clean(expired);
    }

    /// Whether the program writes blocks of about `len` bytes, judged by this one's pages (see the
    /// module's comment).
    fn written(&self, start: usize, len: usize, zeroed_in_place: bool) -> bool {
        let verdict = &self.verdicts[len.ilog2() as usize];
        let now = verdict.load(Relaxed);
        if zeroed_in_place {
            return now & WRITTEN != 0;
        }
        if now & !WRITTEN != 0 {
            verdict.store(now - 1, Relaxed);
            return now & WRITTEN != 0;
        }
        let written = mostly_resident(start, len, false).unwrap_or(false);
        verdict.store(if written { WRITTEN } else { 0 } | (REJUDGE - 1), Relaxed);
        written
    }

    /// Takes the dirty mappings past their time, or beyond [`DIRTY_MAX`], out of the index.
    fn expire(&self, index: &mut Index, now: u64) -> Vec<(usize, usize, Entry)> {
        let mut expired = Vec::new();
        while let Some((_, &(len, start))) = index.dirty.first_key_value() {
            let since = index.by_fit[&(len, start)].dirty_since.expect("dirty");
            if self.dirty_bytes.load(Relaxed) <= DIRTY_MAX as u64 && now.saturating_sub(since) < DECAY_MS {
                break;
            }
            let entry = self.unlist(index, len, start);
            expired.push((len, start, entry));
        }
        expired
    }

    /// Gives back the pages of mappings taken out of the index (no one else can reach them), then
    /// lists them again, clean. Returns the bytes.
    fn clean(&self, mappings: Vec<(usize, usize, Entry)>) -> u64 {
        if mappings.is_empty() {
            return 0;
        }
        let mut bytes = 0;
        for &(len, start, _) in &mappings {
            discard(start, len);
            bytes += len as u64;
        }
        let mut guard = self.index.lock();
        let index = guard.get_or_insert_with(Index::default);
        for (len, start, entry) in mappings {
            index.by_fit.insert((len, start), Entry { dirty_since: None, ..entry });
            index.by_age.insert(entry.age, (len, start));
            index.bytes += len;
        }
        bytes
    }

    /// Gives back the pages of the dirty mappings kept past their time (as the traffic would).
    /// Returns the bytes.
    pub fn decay(&self) -> u64 {
        let expired = match self.index.lock().as_mut() {
            Some(index) => self.expire(index, coarse_millis()),
            None => return 0,
        };
        self.clean(expired)
    }

    /// Bytes of kept mappings that keep their pages.
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty_bytes.load(Relaxed)
    }

    /// Gives every kept mapping back to the system; returns the bytes of those that kept their
    /// pages, or None if none was ever kept.
    pub fn unmap_all(&self) -> Option<u64> {
        let all = {
            let mut guard = self.index.lock();
            let index = guard.as_mut()?;
            // Ages go on from where they were: mappings out for cleaning come back with theirs,
            // which no mapping kept from now on may share.
            let after = Index { next_age: index.next_age, ..Index::default() };
            std::mem::replace(index, after)
        };
        let dirty: usize = all.dirty.values().map(|&(len, _)| len).sum();
        self.dirty_bytes.fetch_sub(dirty as u64, Relaxed);
        for &(len, start) in all.by_age.values() {
            unmap_region(start, len);
        }
        Some(dirty as u64)
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.index.lock().as_ref().map_or(0, |i| i.by_age.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::{map_region, page_size, pages_in_memory};

    fn bytes(start: usize, len: usize) -> &'static [u8] {
        // Safety: the tests' mappings stay mapped while they look.
        unsafe { std::slice::from_raw_parts(start as *const u8, len) }
    }

    #[test]
    fn a_kept_mapping_comes_back_for_a_block_that_fits_it() {
        let kept = Kept::new();
        let len = 64 * page_size();
        let start = map_region(len, 1 << 20).unwrap();
        // Safety: the mapping is ours.
        unsafe { (start as *mut u8).write(0xAB) }; // a byte: its pages go back
        kept.keep(start, len, false, false);
        assert_eq!(kept.take(len + page_size(), 1), None, "longer than kept");
        assert_eq!(kept.take(len / 2, 1), None, "would waste more than half again");
        assert_eq!(kept.take(len, 1 << 30), None, "not aligned enough");
        let taken = kept.take(len * 3 / 4, 1 << 20);
        assert_eq!(taken, Some(Taken { start, len, huge: false, dirty: false }), "a shorter block fits");
        assert_eq!(kept.take(len, 1 << 20), None, "taken once");
        assert!(bytes(start, len).iter().all(|&b| b == 0));
        unmap_region(start, len);
    }

    #[test]
    fn a_mapping_whose_block_was_written_keeps_its_pages_until_its_time_is_up() {
        let kept = Kept::new();
        let len = 64 * page_size();
        let (a, b) = (map_region(len, page_size()).unwrap(), map_region(len, page_size()).unwrap());
        // Safety: the mappings are ours.
        unsafe { std::ptr::write_bytes(a as *mut u8, 0xAB, len) };
        kept.keep(a, len, false, false);
        assert_eq!(kept.dirty_bytes(), len as u64, "shown");
        assert!(pages_in_memory(a, len).unwrap().iter().all(|&p| p), "kept");
        let taken = kept.take(len, 1).unwrap();
        assert_eq!(taken, Taken { start: a, len, huge: false, dirty: true }, "the caller zeroes it");
        assert_eq!(bytes(a, len)[0], 0xAB);
        assert_eq!(kept.dirty_bytes(), 0);
        // Zeroed in place and written again: kept dirty by the verdict, not judged by its pages.
        kept.keep(a, len, false, true);
        assert_eq!(kept.dirty_bytes(), len as u64);
        std::thread::sleep(std::time::Duration::from_millis(DECAY_MS + 20));
        kept.keep(b, len, false, false); // the traffic gives the older one's pages back
        assert!(pages_in_memory(a, len).unwrap().iter().all(|&p| !p), "given back after its time");
        assert!(bytes(a, len).iter().all(|&x| x == 0));
        // b's length was judged written a moment ago: b keeps its pages without being looked at.
        assert_eq!(kept.dirty_bytes(), len as u64);
        assert_eq!(kept.unmap_all(), Some(len as u64), "a clean, b dirty, both unmapped");
        assert_eq!(kept.dirty_bytes(), 0);
    }

    #[test]
    fn mappings_cleaned_across_a_trim_keep_ages_apart_from_the_ones_kept_after_it() {
        // A decay (or the traffic) takes a dirty mapping out to give its pages back, a trim
        // unmaps what is listed meanwhile, new mappings are kept, then the cleaned one comes back.
        // Found by a thread trimming while others freed big blocks: ages began again at 0 after
        // the trim, the cleaned mapping came back with its old age, the same as a new dirty one,
        // and taking one unlisted the other's dirty bytes: the count wrapped below zero.
        let kept = Kept::new();
        let (short, long) = (16 * page_size(), 20 * page_size());
        let (a, b) = (map_region(short, page_size()).unwrap(), map_region(long, page_size()).unwrap());
        // Safety: the mappings are ours.
        unsafe { std::ptr::write_bytes(a as *mut u8, 1, short) };
        kept.keep(a, short, false, false);
        let expired = kept.expire(kept.index.lock().as_mut().unwrap(), u64::MAX);
        assert_eq!(expired.len(), 1, "a taken out to be cleaned");
        assert_eq!(kept.unmap_all(), Some(0), "nothing else was kept");
        // Safety: as above.
        unsafe { std::ptr::write_bytes(b as *mut u8, 1, long) };
        kept.keep(b, long, false, false);
        assert_eq!(kept.dirty_bytes(), long as u64);
        kept.clean(expired);
        let taken = kept.take(short, 1).unwrap();
        assert_eq!((taken.start, taken.dirty), (a, false), "the smallest that fits: a, clean");
        assert_eq!(kept.dirty_bytes(), long as u64, "b still counted");
        assert_eq!(kept.unmap_all(), Some(long as u64));
        assert_eq!(kept.dirty_bytes(), 0);
        unmap_region(a, short);
    }

    #[test]
    fn dm_decay_gives_back_dirty_mappings_past_their_time_with_no_other_traffic() {
        let kept = Kept::new();
        let len = 16 * page_size();
        let a = map_region(len, page_size()).unwrap();
        // Safety: the mapping is ours.
        unsafe { std::ptr::write_bytes(a as *mut u8, 1, len) };
        kept.keep(a, len, false, false);
        assert_eq!(kept.decay(), 0, "not yet");
        std::thread::sleep(std::time::Duration::from_millis(DECAY_MS + 20));
        assert_eq!(kept.decay(), len as u64);
        assert_eq!(kept.dirty_bytes(), 0);
        assert!(bytes(a, len).iter().all(|&x| x == 0));
        assert_eq!(kept.unmap_all(), Some(0));
    }

    #[test]
    fn the_oldest_are_unmapped_beyond_the_bounds() {
        let kept = Kept::new();
        let len = page_size();
        let starts: Vec<usize> = (0..KEPT_MAX + 3).map(|_| map_region(len, page_size()).unwrap()).collect();
        for &s in &starts {
            kept.keep(s, len, false, false);
        }
        assert_eq!(kept.count(), KEPT_MAX);
        // The newest are kept; the three oldest went back to the system.
        let mut taken: Vec<usize> = (0..KEPT_MAX).map(|_| kept.take(len, 1).unwrap().start).collect();
        taken.sort();
        let mut newest = starts[3..].to_vec();
        newest.sort();
        assert_eq!(taken, newest);
        let big = map_region(KEPT_BYTES_MAX + page_size(), page_size()).unwrap();
        kept.keep(big, KEPT_BYTES_MAX + page_size(), false, false);
        assert_eq!(kept.count(), 0, "bigger than all that may be kept: unmapped at once");
        for s in taken {
            unmap_region(s, len);
        }
    }
}
