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
//!
//! The system may refuse to unmap one: it merges adjacent mappings of the same kind into one of
//! its own, and cutting a part out of the middle of that makes one more, which is refused at
//! `vm.max_map_count`. Forgotten then, a mapping would stay in memory for good, unseen by the
//! stats (20 MB of written blocks freed and trimmed at that limit stayed resident, though
//! `dm_trim` said it gave them back). So such a mapping gives its pages back instead and is
//! listed again, beyond the bounds if it must ([`STUCK_MAX`] more), for reuse or a later try; and
//! [`Kept::unmap_all`] unmaps runs of adjacent kept mappings in one call, which the system can
//! do at the limit, dropping one of its mappings when a run is a whole one.
//!
//! The index is made once, with room for [`ROOM`] entries (and without memory for it,
//! nothing is kept): keeping a mapping is a free path, which must never need memory. Entries are
//! linked three ways in that room: in a bucket per length class (four per doubling, newest
//! first: a best fit looks at the buckets from the length's up to half as long again, and stops
//! at an exact length), in age order (the oldest evicted first) and, for the dirty ones, in
//! dirty order (the oldest given back first).

use crate::allocators::DECAY_MS;
use crate::os::{coarse_millis, discard, discard_for_reuse, mostly_resident, remap_in_place, unmap_region, HUGE_PAGE};
use crate::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::*};

/// At most this many mappings are kept, and at most [`KEPT_BYTES_MAX`] bytes of addresses: a
/// program that frees a batch of a thousand 1 MiB blocks finds them all again for the next batch
/// (jemalloc retains such addresses too).
pub const KEPT_MAX: usize = 1024;
pub const KEPT_BYTES_MAX: usize = 1 << 30;

/// Mappings the system would not unmap (see the module's comment) may be listed beyond
/// [`KEPT_MAX`], this many more.
const STUCK_MAX: usize = KEPT_MAX;

/// The entries the index has room for.
const ROOM: usize = KEPT_MAX + STUCK_MAX;

/// At most this many bytes of kept mappings keep their pages (the oldest give them back first).
pub const DIRTY_MAX: usize = 32 << 20;

/// One free in this many, per power of two of length, looks at whether the block was written: a
/// look costs ~1-2 µs, and at one in eight a loop of 1 MiB blocks that are not written took 1.6
/// µs a pair instead of 1.2.
const REJUDGE: u8 = 32;

/// A kept mapping.
#[derive(Clone, Copy)]
struct Entry {
    len: usize,
    start: usize,
    /// Its huge-page advice.
    huge: bool,
    /// Since when it keeps its pages (coarse milliseconds), if it does.
    dirty_since: Option<u64>,
    /// Its places in its length's bucket, in the age order and in the dirty order.
    links: [Link; 3],
}

impl Entry {
    /// An entry for a mapping, not listed yet.
    fn new(start: usize, len: usize, huge: bool, dirty_since: Option<u64>) -> Entry {
        Entry { len, start, huge, dirty_since, links: [Link { prev: NIL, next: NIL }; 3] }
    }
}

/// An entry's neighbours in one of its lists ([`NIL`]: none).
#[derive(Clone, Copy)]
struct Link {
    prev: u16,
    next: u16,
}

const NIL: u16 = u16::MAX;
const _: () = assert!(ROOM < NIL as usize, "entries are numbered in 16 bits");

/// Which of an entry's lists: its length's bucket, the age order, the dirty order.
#[derive(Clone, Copy)]
enum List {
    Bucket(usize),
    Age,
    Dirty,
}

impl List {
    fn link(self) -> usize {
        match self {
            List::Bucket(_) => 0,
            List::Age => 1,
            List::Dirty => 2,
        }
    }
}

/// Four per doubling of length, as the small blocks' size classes: monotonic in the length.
const BUCKETS: usize = 256;

fn bucket(len: usize) -> usize {
    let log = len.max(4).ilog2() as usize;
    (log * 4 + ((len >> (log - 2)) & 3)).min(BUCKETS - 1)
}

/// The first and last entry of a list (NIL when empty).
#[derive(Clone, Copy)]
struct Ends {
    first: u16,
    last: u16,
}

const EMPTY: Ends = Ends { first: NIL, last: NIL };

/// Kept mappings, found by best fit and evicted oldest first (see the module's comment).
struct Index {
    /// Room for [`ROOM`], taken when the index is made; entries taken out go on `free`.
    entries: Vec<Entry>,
    free: Vec<u16>,
    /// Room for [`ROOM`] entry numbers, for [`Kept::unmap_all`] to sort.
    scratch: Vec<u16>,
    buckets: [Ends; BUCKETS],
    by_age: Ends,
    dirty: Ends,
    bytes: usize,
}

impl Index {
    /// None when the system has no memory for it.
    fn try_new() -> Option<Index> {
        let (mut entries, mut free, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
        entries.try_reserve_exact(ROOM).ok()?;
        free.try_reserve_exact(ROOM).ok()?;
        scratch.try_reserve_exact(ROOM).ok()?;
        Some(Index { entries, free, scratch, buckets: [EMPTY; BUCKETS], by_age: EMPTY, dirty: EMPTY, bytes: 0 })
    }

    fn ends(&mut self, list: List) -> &mut Ends {
        match list {
            List::Bucket(b) => &mut self.buckets[b],
            List::Age => &mut self.by_age,
            List::Dirty => &mut self.dirty,
        }
    }

    fn link(&mut self, i: u16, list: List) -> &mut Link {
        &mut self.entries[i as usize].links[list.link()]
    }

    fn push_last(&mut self, i: u16, list: List) {
        let last = self.ends(list).last;
        *self.link(i, list) = Link { prev: last, next: NIL };
        if last == NIL {
            self.ends(list).first = i;
        } else {
            self.link(last, list).next = i;
        }
        self.ends(list).last = i;
    }

    fn push_first(&mut self, i: u16, list: List) {
        let first = self.ends(list).first;
        *self.link(i, list) = Link { prev: NIL, next: first };
        if first == NIL {
            self.ends(list).last = i;
        } else {
            self.link(first, list).prev = i;
        }
        self.ends(list).first = i;
    }

    fn unlink(&mut self, i: u16, list: List) {
        let Link { prev, next } = *self.link(i, list);
        if prev == NIL {
            self.ends(list).first = next;
        } else {
            self.link(prev, list).next = next;
        }
        if next == NIL {
            self.ends(list).last = prev;
        } else {
            self.link(next, list).prev = prev;
        }
    }

    /// Whether an entry can be listed now within [`KEPT_MAX`], without taking one out first.
    fn has_room(&self) -> bool {
        self.entries.len() - self.free.len() < KEPT_MAX
    }

    /// Whether a mapping the system would not unmap can be listed again (see [`STUCK_MAX`]).
    fn has_room_for_stuck(&self) -> bool {
        self.entries.len() - self.free.len() < ROOM
    }

    /// Lists a mapping (newest); the caller made room ([`Index::has_room`]).
    fn list(&mut self, entry: Entry) {
        let i = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = entry;
                i
            }
            None => {
                // Within the room taken when the index was made: no memory is needed.
                self.entries.push(entry);
                (self.entries.len() - 1) as u16
            }
        };
        self.push_first(i, List::Bucket(bucket(entry.len)));
        self.push_last(i, List::Age);
        if entry.dirty_since.is_some() {
            self.push_last(i, List::Dirty);
        }
        self.bytes += entry.len;
    }

    /// Takes entry `i` off its lists.
    fn unlist(&mut self, i: u16) -> Entry {
        let entry = self.entries[i as usize];
        self.unlink(i, List::Bucket(bucket(entry.len)));
        self.unlink(i, List::Age);
        if entry.dirty_since.is_some() {
            self.unlink(i, List::Dirty);
        }
        self.free.push(i); // within its room too
        self.bytes -= entry.len;
        entry
    }

    /// The smallest mapping of `len` to `most` bytes starting at a multiple of `alignment`.
    fn best_fit(&self, len: usize, most: usize, alignment: usize) -> Option<u16> {
        let mut best: Option<u16> = None;
        for b in bucket(len)..=bucket(most) {
            let mut i = self.buckets[b].first;
            while i != NIL {
                let e = &self.entries[i as usize];
                if (len..=most).contains(&e.len)
                    && e.start % alignment == 0
                    && best.is_none_or(|j| e.len < self.entries[j as usize].len)
                {
                    best = Some(i);
                    if e.len == len {
                        return best; // nothing fits better
                    }
                }
                i = e.links[0].next;
            }
            if best.is_some() {
                return best; // the later buckets hold longer mappings only
            }
        }
        best
    }
}

/// What [`Kept::unmap_all`] gave back: the bytes of pages, and how many mappings it unmapped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GivenBack {
    pub bytes: u64,
    pub unmapped: usize,
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

    /// Takes entry `i` out of `index` (its dirty bytes out of the count too).
    fn unlist(&self, index: &mut Index, i: u16) -> Entry {
        let entry = index.unlist(i);
        if entry.dirty_since.is_some() {
            self.dirty_bytes.fetch_sub(entry.len as u64, Relaxed);
        }
        entry
    }

    /// Lists `entry` in `index` (its dirty bytes in the count too); the caller made room.
    fn list(&self, index: &mut Index, entry: Entry) {
        if entry.dirty_since.is_some() {
            self.dirty_bytes.fetch_add(entry.len as u64, Relaxed);
        }
        index.list(entry);
    }

    /// The smallest kept mapping of `len` to `len + len / 2` bytes starting at a multiple of
    /// `alignment`, now the caller's; or None.
    pub fn take(&self, len: usize, alignment: usize) -> Option<Taken> {
        let now = coarse_millis();
        let (taken, expired) = {
            let mut guard = self.index.lock();
            let index = guard.as_mut()?;
            let i = index.best_fit(len, len + len / 2, alignment)?;
            let entry = self.unlist(index, i);
            let taken =
                Taken { start: entry.start, len: entry.len, huge: entry.huge, dirty: entry.dirty_since.is_some() };
            (taken, self.pop_expired(index, now))
        };
        self.give_back_expired_after(expired, now);
        Some(taken)
    }

    /// Takes back a mapping of `len` bytes the caller is done with (`touched`: the length up to
    /// the end of the last page a block ever used, at most `len`; `huge`: its huge-page advice;
    /// `zeroed_in_place`: its block was zeroed in place, so its pages say nothing of what the
    /// program wrote). Its addresses are kept (or unmapped, when bigger than all that may be kept,
    /// or when there is no memory for the index); its pages too if its program writes such blocks
    /// (see the module's comment), else they go back now.
    pub fn keep(&self, start: usize, mut len: usize, touched: usize, huge: bool, zeroed_in_place: bool) {
        if len > KEPT_BYTES_MAX {
            self.unmap(Entry::new(start, len, huge, None));
            return;
        }
        let (huge, dirty) = if len >= HUGE_PAGE {
            match discard_for_reuse(start, len, huge) {
                Some(huge) => (huge, false),
                None => {
                    // Its pages could not be dropped (locked memory).
                    self.unmap(Entry::new(start, len, huge, None));
                    return;
                }
            }
        } else if self.written(start, touched, zeroed_in_place)
            && self.dirty_bytes.load(Relaxed) + touched as u64 <= DIRTY_MAX as u64
        {
            // Kept with its pages, it counts as `cached`: the addresses past the pages a block
            // used (a grown block's headroom, the rest of a mapping a shorter block took) are cut
            // off first, so that what is counted is pages held.
            if touched < len && remap_in_place(start, len, touched) {
                len = touched;
            }
            (huge, true)
        } else if discard(start, len) {
            (huge, false)
        } else {
            // Locked memory (`mlockall`) keeps its pages: listed as clean, the next block there
            // would have held this one's bytes.
            self.unmap(Entry::new(start, len, huge, None));
            return;
        };
        let now = coarse_millis();
        let entry = Entry::new(start, len, huge, dirty.then_some(now));
        let (evicted, beyond, expired) = {
            let mut guard = self.index.lock();
            if guard.is_none() {
                *guard = Index::try_new();
            }
            match guard.as_mut() {
                Some(index) => {
                    // Full: the oldest makes room (unmapped below). (A full index lists every
                    // entry: an entry taken out to be cleaned leaves its room.)
                    let evicted = (!index.has_room()).then(|| self.unlist(index, index.by_age.first));
                    self.list(index, entry);
                    (evicted, self.pop_beyond_bytes(index), self.pop_expired(index, now))
                }
                None => (Some(entry), None, None), // no memory for the index: nothing is kept
            }
        };
        // System calls outside the lock.
        if let Some(e) = evicted {
            self.unmap(e);
        }
        self.evict_beyond_bytes_after(beyond);
        self.give_back_expired_after(expired, now);
    }

    /// The oldest mapping, taken out of the index if more than [`KEPT_BYTES_MAX`] bytes are kept.
    fn pop_beyond_bytes(&self, index: &mut Index) -> Option<Entry> {
        (index.bytes > KEPT_BYTES_MAX).then(|| self.unlist(index, index.by_age.first))
    }

    /// Unmaps `first` (taken out by [`Kept::pop_beyond_bytes`]), then the oldest while more than
    /// [`KEPT_BYTES_MAX`] bytes are kept, one at a time (until the system refuses one: listed
    /// again, the newest, it would come round again).
    fn evict_beyond_bytes_after(&self, first: Option<Entry>) {
        let mut next = first;
        while let Some(e) = next {
            if !self.unmap(e) {
                return;
            }
            next = self.index.lock().as_mut().and_then(|index| self.pop_beyond_bytes(index));
        }
    }

    /// Unmaps a mapping taken out of the index. Where the system refuses (see the module's
    /// comment), its pages go back instead and it is listed again, the newest, even beyond the
    /// bounds (up to [`STUCK_MAX`] more; past that it is lost, as it was before that room), so that
    /// nothing is forgotten in memory. Returns whether it was unmapped.
    fn unmap(&self, entry: Entry) -> bool {
        if unmap_region(entry.start, entry.len) {
            return true;
        }
        // Locked memory keeps its pages: listed as dirty, whoever takes it zeroes it.
        let dirty_since = (!discard(entry.start, entry.len)).then(coarse_millis);
        if let Some(index) = self.index.lock().as_mut().filter(|index| index.has_room_for_stuck()) {
            self.list(index, Entry { dirty_since, ..entry });
        }
        false
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

    /// The oldest dirty mapping, taken out of the index if it is past its time or beyond
    /// [`DIRTY_MAX`] (no one else can reach it then).
    fn pop_expired(&self, index: &mut Index, now: u64) -> Option<Entry> {
        let oldest = index.dirty.first;
        if oldest == NIL {
            return None;
        }
        let since = index.entries[oldest as usize].dirty_since.expect("dirty");
        if self.dirty_bytes.load(Relaxed) <= DIRTY_MAX as u64 && now.saturating_sub(since) < DECAY_MS {
            return None;
        }
        Some(self.unlist(index, oldest))
    }

    /// Gives back the pages of the dirty mappings past their time, one at a time (taken out under
    /// the lock, given back outside it, listed again clean, as the newest). Returns the bytes.
    fn give_back_expired(&self, now: u64) -> u64 {
        let first = self.index.lock().as_mut().and_then(|index| self.pop_expired(index, now));
        self.give_back_expired_after(first, now)
    }

    /// [`Kept::give_back_expired`] for a caller that took the `first` out already, under the lock
    /// it held anyway (most of the time there is none, and no second lock is taken).
    fn give_back_expired_after(&self, first: Option<Entry>, now: u64) -> u64 {
        let mut bytes = 0;
        let mut next = first;
        while let Some(entry) = next {
            if discard(entry.start, entry.len) {
                self.relist_clean(entry);
            } else if !self.unmap(entry) {
                return bytes; // locked, and listed again dirty: it would come round again
            }
            bytes += entry.len as u64;
            next = self.index.lock().as_mut().and_then(|index| self.pop_expired(index, now));
        }
        bytes
    }

    /// Lists again a mapping taken out to give its pages back, now clean, as the newest (or
    /// unmaps it, if the index filled up meanwhile).
    fn relist_clean(&self, entry: Entry) {
        let unlisted = match self.index.lock().as_mut() {
            // Room: the one it left, unless a keep took it meanwhile.
            Some(index) if index.has_room() => {
                self.list(index, Entry { dirty_since: None, ..entry });
                None
            }
            _ => Some(entry),
        };
        if let Some(e) = unlisted {
            self.unmap(e);
        }
    }

    /// Gives back the pages of the dirty mappings kept past their time (as the traffic would).
    /// Returns the bytes.
    pub fn decay(&self) -> u64 {
        self.give_back_expired(coarse_millis())
    }

    /// Bytes of kept mappings that keep their pages.
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty_bytes.load(Relaxed)
    }

    /// Gives every kept mapping back to the system, runs of adjacent ones in one call each (see
    /// the module's comment); one the system will not unmap gives its pages back and stays
    /// listed. Returns what went back, or None if nothing was ever kept.
    pub fn unmap_all(&self) -> Option<GivenBack> {
        let mut guard = self.index.lock();
        let index = guard.as_mut()?;
        // The system calls are made under the lock, this once: the entries must stay where they
        // are while they are sorted and merged into runs. (Only `dm_trim` and a refused mapping
        // come here.)
        let mut ids = std::mem::take(&mut index.scratch);
        ids.clear();
        let mut i = index.by_age.first;
        while i != NIL {
            ids.push(i); // within the room taken with the index
            i = index.entries[i as usize].links[List::Age.link()].next;
        }
        ids.sort_unstable_by_key(|&i| index.entries[i as usize].start);
        let mut given = GivenBack::default();
        let mut first = 0;
        while first < ids.len() {
            let start = index.entries[ids[first] as usize].start;
            let (mut end, mut past) = (start, first);
            while past < ids.len() && index.entries[ids[past] as usize].start == end {
                end += index.entries[ids[past] as usize].len;
                past += 1;
            }
            let unmapped = unmap_region(start, end - start);
            for &i in &ids[first..past] {
                let entry = index.entries[i as usize];
                if unmapped {
                    self.unlist(index, i);
                    given.unmapped += 1;
                } else if entry.dirty_since.is_none() || !discard(entry.start, entry.len) {
                    continue; // nothing held, or locked memory: it stays as it is
                } else {
                    self.unlist(index, i);
                    self.list(index, Entry { dirty_since: None, ..entry });
                }
                if entry.dirty_since.is_some() {
                    given.bytes += entry.len as u64;
                }
            }
            first = past;
        }
        index.scratch = ids;
        Some(given)
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        // Every entry made is listed or free: one taken out to be cleaned left its room.
        self.index.lock().as_ref().map_or(0, |i| i.entries.len() - i.free.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::{discard, map_region, page_size, pages_in_memory};

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
        kept.keep(start, len, len, false, false);
        assert_eq!(kept.take(len + page_size(), 1), None, "longer than kept");
        assert_eq!(kept.take(len / 2, 1), None, "would waste more than half again");
        assert_eq!(kept.take(len, 1 << 30), None, "not aligned enough");
        let taken = kept.take(len * 3 / 4, 1 << 20);
        assert_eq!(taken, Some(Taken { start, len, huge: false, dirty: false }), "a shorter block fits");
        assert_eq!(kept.take(len, 1 << 20), None, "taken once");
        assert!(bytes(start, len).iter().all(|&b| b == 0));
        assert!(unmap_region(start, len));
    }

    #[test]
    fn a_mapping_whose_block_was_written_keeps_its_pages_until_its_time_is_up() {
        let kept = Kept::new();
        let len = 64 * page_size();
        let (a, b) = (map_region(len, page_size()).unwrap(), map_region(len, page_size()).unwrap());
        // Safety: the mappings are ours.
        unsafe { std::ptr::write_bytes(a as *mut u8, 0xAB, len) };
        kept.keep(a, len, len, false, false);
        assert_eq!(kept.dirty_bytes(), len as u64, "shown");
        assert!(pages_in_memory(a, len).unwrap().iter().all(|&p| p), "kept");
        let taken = kept.take(len, 1).unwrap();
        assert_eq!(taken, Taken { start: a, len, huge: false, dirty: true }, "the caller zeroes it");
        assert_eq!(bytes(a, len)[0], 0xAB);
        assert_eq!(kept.dirty_bytes(), 0);
        // Zeroed in place and written again: kept dirty by the verdict, not judged by its pages.
        kept.keep(a, len, len, false, true);
        assert_eq!(kept.dirty_bytes(), len as u64);
        std::thread::sleep(std::time::Duration::from_millis(DECAY_MS + 20));
        kept.keep(b, len, len, false, false); // the traffic gives the older one's pages back
        assert!(pages_in_memory(a, len).unwrap().iter().all(|&p| !p), "given back after its time");
        assert!(bytes(a, len).iter().all(|&x| x == 0));
        // b's length was judged written a moment ago: b keeps its pages without being looked at.
        assert_eq!(kept.dirty_bytes(), len as u64);
        assert_eq!(
            kept.unmap_all(),
            Some(GivenBack { bytes: len as u64, unmapped: 2 }),
            "a clean, b dirty, both unmapped"
        );
        assert_eq!(kept.dirty_bytes(), 0);
    }

    #[test]
    fn a_mapping_kept_with_its_pages_is_cut_to_the_pages_its_block_used() {
        // Mappings half as long again as their blocks (headroom, or a shorter block in a kept
        // mapping): kept with its pages, the written one loses the rest and counts its pages only;
        // the other keeps its length (its pages go back, the addresses cost nothing).
        let kept = Kept::new();
        let (used, len) = (64 * page_size(), 96 * page_size());
        let (a, b) = (map_region(len, page_size()).unwrap(), map_region(len, page_size()).unwrap());
        // Safety: the mappings are ours.
        unsafe { std::ptr::write_bytes(a as *mut u8, 0xAB, used) };
        kept.keep(a, len, used, false, false);
        assert_eq!(kept.dirty_bytes(), used as u64, "its pages only");
        // Listed at its pages' length, which it has only if the system cut it. (Not looked at
        // with `mincore`: another test's mapping may take the addresses given back meanwhile.)
        assert_eq!(kept.take(used, 1), Some(Taken { start: a, len: used, huge: false, dirty: true }));
        // Judged afresh (the first keep's verdict holds for its length for a while).
        let kept = Kept::new();
        unsafe { (b as *mut u8).write(0xAB) }; // a byte: judged not written
        kept.keep(b, len, used, false, false);
        assert_eq!(kept.dirty_bytes(), 0);
        assert_eq!(kept.take(used, 1), Some(Taken { start: b, len, huge: false, dirty: false }), "not cut");
        assert!(unmap_region(a, used));
        assert!(unmap_region(b, len));
    }

    #[test]
    fn a_mapping_cleaned_across_a_trim_comes_back_clean_beside_the_ones_kept_after_it() {
        // A decay (or the traffic) takes a dirty mapping out to give its pages back, a trim
        // unmaps what is listed meanwhile, new mappings are kept, then the cleaned one comes back.
        // (Found with the index before this one, by a thread trimming while others freed big
        // blocks: a cleaned mapping came back with the age of a new dirty one, and taking one
        // unlisted the other's dirty bytes: the count wrapped below zero.)
        let kept = Kept::new();
        let (short, long) = (16 * page_size(), 20 * page_size());
        let (a, b) = (map_region(short, page_size()).unwrap(), map_region(long, page_size()).unwrap());
        // Safety: the mappings are ours.
        unsafe { std::ptr::write_bytes(a as *mut u8, 1, short) };
        kept.keep(a, short, short, false, false);
        let out = kept.pop_expired(kept.index.lock().as_mut().unwrap(), u64::MAX).expect("a taken out to be cleaned");
        assert_eq!(out.start, a);
        assert_eq!(kept.unmap_all(), Some(GivenBack::default()), "nothing else was kept");
        // Safety: as above.
        unsafe { std::ptr::write_bytes(b as *mut u8, 1, long) };
        kept.keep(b, long, long, false, false);
        assert_eq!(kept.dirty_bytes(), long as u64);
        discard(out.start, out.len);
        kept.relist_clean(out);
        let taken = kept.take(short, 1).unwrap();
        assert_eq!((taken.start, taken.dirty), (a, false), "the smallest that fits: a, clean");
        assert_eq!(kept.dirty_bytes(), long as u64, "b still counted");
        assert_eq!(kept.unmap_all(), Some(GivenBack { bytes: long as u64, unmapped: 1 }));
        assert_eq!(kept.dirty_bytes(), 0);
        assert!(unmap_region(a, short));
    }

    #[test]
    fn best_fit_takes_an_exact_length_first_and_the_shortest_that_fits_otherwise() {
        let kept = Kept::new();
        let page = page_size();
        let lens = [40 * page, 33 * page, 36 * page, 32 * page, 47 * page];
        let starts: Vec<usize> = lens.iter().map(|&len| map_region(len, page).unwrap()).collect();
        for (&start, &len) in starts.iter().zip(&lens) {
            kept.keep(start, len, len, false, false);
        }
        assert_eq!(kept.take(32 * page, 1).map(|t| t.len), Some(32 * page), "exact");
        assert_eq!(kept.take(32 * page, 1).map(|t| t.len), Some(33 * page), "the shortest above");
        assert_eq!(kept.take(35 * page, 1).map(|t| t.len), Some(36 * page));
        assert_eq!(kept.take(26 * page, 1), None, "40 pages are more than half again of 26");
        assert_eq!(kept.take(39 * page, 1).map(|t| t.len), Some(40 * page));
        assert_eq!(kept.take(47 * page, 1).map(|t| t.len), Some(47 * page));
        assert_eq!(kept.count(), 0);
        for (start, len) in starts.into_iter().zip(lens) {
            assert!(unmap_region(start, len));
        }
    }

    #[test]
    fn entries_out_being_cleaned_leave_their_room_and_come_back_while_there_is_room() {
        let kept = Kept::new();
        let len = page_size();
        let starts: Vec<usize> = (0..KEPT_MAX).map(|_| map_region(len, page_size()).unwrap()).collect();
        for &s in &starts {
            // Safety: the mapping is ours. Written whole: kept dirty.
            unsafe { std::ptr::write_bytes(s as *mut u8, 1, len) };
            kept.keep(s, len, len, false, false);
        }
        assert_eq!(kept.count(), KEPT_MAX);
        let out: Vec<Entry> = (0..KEPT_MAX)
            .map(|_| kept.pop_expired(kept.index.lock().as_mut().unwrap(), u64::MAX).expect("dirty"))
            .collect();
        assert_eq!(kept.count(), 0);
        let one_more = map_region(len, page_size()).unwrap();
        kept.keep(one_more, len, len, false, false);
        assert_eq!(kept.count(), 1, "kept in the room an entry out being cleaned left");
        let another = map_region(len, page_size()).unwrap();
        kept.keep(another, len, len, false, false);
        assert_eq!(kept.count(), 2);
        for e in out {
            kept.relist_clean(e); // two find the index full: unmapped
        }
        assert_eq!(kept.count(), KEPT_MAX);
        assert!(kept.unmap_all().is_some());
    }

    #[test]
    fn dm_decay_gives_back_dirty_mappings_past_their_time_with_no_other_traffic() {
        let kept = Kept::new();
        let len = 16 * page_size();
        let a = map_region(len, page_size()).unwrap();
        // Safety: the mapping is ours.
        unsafe { std::ptr::write_bytes(a as *mut u8, 1, len) };
        kept.keep(a, len, len, false, false);
        assert_eq!(kept.decay(), 0, "not yet");
        std::thread::sleep(std::time::Duration::from_millis(DECAY_MS + 20));
        assert_eq!(kept.decay(), len as u64);
        assert_eq!(kept.dirty_bytes(), 0);
        assert!(bytes(a, len).iter().all(|&x| x == 0));
        assert_eq!(kept.unmap_all(), Some(GivenBack { bytes: 0, unmapped: 1 }));
    }

    #[test]
    fn a_trim_unmaps_adjacent_kept_mappings_together_and_the_others_alone() {
        // Three mappings side by side (cut from one, kept in an order that is not their
        // addresses'), and one elsewhere: every one unmapped, nothing left listed. The first kept
        // is written: judged so, its length counts as written for the next frees, so all four are
        // kept with their pages and count.
        let kept = Kept::new();
        let len = 16 * page_size();
        let run = map_region(3 * len, page_size()).unwrap();
        let alone = map_region(len, page_size()).unwrap();
        // Safety: the mappings are ours.
        unsafe { std::ptr::write_bytes((run + len) as *mut u8, 1, len) };
        for start in [run + len, alone, run + 2 * len, run] {
            kept.keep(start, len, len, false, false);
        }
        assert_eq!(kept.count(), 4);
        let given = kept.unmap_all().unwrap();
        assert_eq!(given.unmapped, 4);
        assert_eq!(given.bytes, 4 * len as u64);
        assert_eq!((kept.count(), kept.dirty_bytes()), (0, 0));
        assert_eq!(kept.unmap_all(), Some(GivenBack::default()));
    }

    #[test]
    fn the_oldest_are_unmapped_beyond_the_bounds() {
        let kept = Kept::new();
        let len = page_size();
        let starts: Vec<usize> = (0..KEPT_MAX + 3).map(|_| map_region(len, page_size()).unwrap()).collect();
        for &s in &starts {
            kept.keep(s, len, len, false, false);
        }
        assert_eq!(kept.count(), KEPT_MAX);
        // The newest are kept; the three oldest went back to the system.
        let mut taken: Vec<usize> = (0..KEPT_MAX).map(|_| kept.take(len, 1).unwrap().start).collect();
        taken.sort();
        let mut newest = starts[3..].to_vec();
        newest.sort();
        assert_eq!(taken, newest);
        let big = map_region(KEPT_BYTES_MAX + page_size(), page_size()).unwrap();
        kept.keep(big, KEPT_BYTES_MAX + page_size(), KEPT_BYTES_MAX + page_size(), false, false);
        assert_eq!(kept.count(), 0, "bigger than all that may be kept: unmapped at once");
        for s in taken {
            assert!(unmap_region(s, len));
        }
    }
}
