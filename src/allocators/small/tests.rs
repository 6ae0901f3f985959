//! Unit tests of the small-block allocator: slabs, size classes, thread heaps, medium slots, collection.

use super::size_class::{slab_size, CLASSES, MAX_SMALL, SIZES};
use super::slab::Place;
use super::*;
use std::sync::Arc;

type Pool = &'static SmallBlocks;

/// A pool of its own for a test, leaked (as the process-wide one lives for good).
fn pool() -> Pool {
    Box::leak(Box::new(SmallBlocks::new(Box::leak(Box::new(Quota::new(1 << 30))))))
}

fn allocate(pool: &Pool, size: usize) -> usize {
    match pool.allocate(size, class_of(size, 0).unwrap()) {
        Served::Block(p) => p.as_ptr() as usize,
        _ => panic!("not served"),
    }
}

fn free(pool: &Pool, address: usize) -> Result<()> {
    let slot = pool.find(address).ok_or(Error::NotLive)??;
    match slot.claim() {
        Claim::Won(size) => {
            pool.release(slot, size);
            Ok(())
        }
        _ => Err(Error::NotLive),
    }
}

#[test]
fn blocks_are_zeroed_aligned_distinct_and_counted_exactly() {
    let p = pool();
    let mut live = Vec::new();
    for i in 0..3000 {
        let size = [0, 1, 48, 64, 500, 4096, 8192][i % 7];
        let a = allocate(&p, size);
        let slot = crate::allocators::small::size_class::SIZES[class_of(size, 0).unwrap()] as usize;
        assert_eq!(a % (slot & slot.wrapping_neg()).min(4096), 0, "aligned as its slot size allows");
        // Safety: a live block of `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(a as *mut u8, size) };
        assert!(bytes.iter().all(|&b| b == 0));
        bytes.fill(0xEE);
        live.push((a, size));
    }
    let mut sorted: Vec<_> = live.iter().map(|b| b.0).collect();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3000);
    let s = p.stats();
    assert_eq!((s.count, s.capacity), (3000, live.iter().map(|b| b.1 as u64).sum()));
    assert_eq!(p.quota.stats().reserved, s.capacity);
    for &(a, _) in &live {
        free(&p, a).unwrap();
        assert_eq!(free(&p, a), Err(Error::NotLive));
    }
    let s = p.stats();
    assert_eq!((s.count, s.capacity, s.total_allocations), (0, 0, 3000));
    assert_eq!(p.quota.stats().reserved, 0);
}

#[test]
fn a_reused_slot_comes_back_zeroed_whole_in_every_class() {
    let p = pool();
    for size in [1, 16, 17, 32, 48, 64, 65, 100, 4000, 8192, 8193, 20000, 65536, 100_000, 131_072] {
        let a = allocate(&p, size);
        // Safety: a live block of `size` bytes.
        unsafe { std::ptr::write_bytes(a as *mut u8, 0xFF, size) };
        free(&p, a).unwrap();
        let b = allocate(&p, size);
        assert_eq!(a, b, "the freed slot is the next one handed out");
        // Safety: as above.
        let bytes = unsafe { std::slice::from_raw_parts(b as *const u8, size) };
        assert!(bytes.iter().all(|&x| x == 0), "{size} B block not zeroed");
        free(&p, b).unwrap();
    }
}

#[test]
fn medium_blocks_fill_one_mib_slabs_and_are_found_in_every_region_of_them() {
    let p = pool();
    for size in [8193, 16384, 50_000, 65536, 131_072] {
        let class = class_of(size, 0).unwrap();
        let slot = size_class::SIZES[class] as usize;
        let slots = (1 << 20) / slot;
        let mut blocks: Vec<usize> = (0..slots).map(|_| allocate(&p, size)).collect();
        let slab = table::find(blocks[0]).unwrap();
        assert_eq!(slab.bytes, 1 << 20);
        blocks.sort();
        for (i, &a) in blocks.iter().enumerate() {
            // One slab, every slot: the last ones lie in its last 64 KiB regions.
            assert_eq!(a, slab.base + i * slot, "{size} B, slot {i}");
            assert!(std::ptr::eq(table::find(a).unwrap(), slab));
            assert!(matches!(p.find(a + 16), Some(Err(Error::NotLive))), "inside a slot");
        }
        assert_eq!(p.stats().occupied, (slots * size_class::SIZES[class] as usize) as u64);
        for a in blocks {
            free(&p, a).unwrap();
            assert_eq!(free(&p, a), Err(Error::NotLive));
        }
    }
    assert_eq!(p.stats().count, 0);
}

#[test]
fn alignments_up_to_64_kib_are_slots_of_aligned_slabs() {
    let p = pool();
    for (size, alignment) in [(100, 4096), (1, 16384), (70_000, 65536), (5000, 32768)] {
        let class = class_of(size, alignment).unwrap();
        let a = match p.allocate(size, class) {
            Served::Block(b) => b.as_ptr() as usize,
            _ => panic!("not served"),
        };
        assert_eq!(a % alignment, 0, "{size} B aligned to {alignment}");
        free(&p, a).unwrap();
    }
    assert_eq!(class_of(1, 131_072), None);
}

#[test]
fn a_slot_is_zeroed_unless_it_was_never_handed_out() {
    let p = pool();
    let size = 40_000;
    let a = allocate(&p, size);
    // Safety (throughout): blocks are live where written.
    unsafe { std::ptr::write_bytes(a as *mut u8, 0xFF, size) };
    // The next slot was never handed out: it reads as zero without being zeroed.
    let b = allocate(&p, size);
    assert_eq!(b, a + size_class::SIZES[class_of(size, 0).unwrap()] as usize);
    free(&p, a).unwrap();
    let again = allocate(&p, size);
    assert_eq!(again, a);
    assert!(unsafe { std::slice::from_raw_parts(a as *const u8, size) }.iter().all(|&x| x == 0));
    free(&p, again).unwrap();
    free(&p, b).unwrap();
}

/// Fills one medium slab with 64 KiB blocks (and starts the next, so that the first is not the
/// heap's current slab any more), writes `written` bytes of each block in it, frees them all;
/// returns the slab's start.
fn fill_and_empty_a_medium_slab(p: &Pool, written: usize) -> usize {
    let size = 65536;
    let slots = size_class::MEDIUM_SLAB_SIZE / size;
    let blocks: Vec<usize> = (0..=slots).map(|_| allocate(p, size)).collect();
    let slab = blocks[0];
    assert!(blocks[..slots].iter().all(|&b| b - slab < size_class::MEDIUM_SLAB_SIZE), "one slab, from its start");
    for &b in &blocks[..slots] {
        // Safety: live blocks of `size` bytes.
        unsafe { std::ptr::write_bytes(b as *mut u8, 0xFF, written) };
        free(p, b).unwrap();
    }
    slab
}

#[test]
fn an_empty_medium_slab_whose_blocks_were_barely_touched_gives_its_pages_back_at_once() {
    let p = pool();
    let slab = fill_and_empty_a_medium_slab(&p, 1);
    let in_memory = crate::os::pages_in_memory(slab, size_class::MEDIUM_SLAB_SIZE).unwrap();
    assert!(in_memory.iter().all(|&p| !p), "a byte written per block, then given back");
    assert_eq!(p.cached_bytes(), 0, "nothing kept");
    // Its slots are fresh again: the next blocks there read as zero without being zeroed.
    let again: Vec<usize> = (0..32).map(|_| allocate(&p, 65536)).collect();
    assert!(again.contains(&slab));
    // Safety: a live block.
    assert_eq!(unsafe { *(slab as *const u8) }, 0);
}

#[test]
fn an_empty_medium_slab_whose_blocks_were_written_whole_keeps_its_pages() {
    let p = pool();
    let slab = fill_and_empty_a_medium_slab(&p, 65536);
    let in_memory = crate::os::pages_in_memory(slab, size_class::MEDIUM_SLAB_SIZE).unwrap();
    assert!(in_memory.iter().all(|&p| p), "written whole, and kept");
    assert_eq!(p.cached_bytes(), size_class::MEDIUM_SLAB_SIZE as u64, "kept for reuse, and shown");
    // Safety: the slab's memory stays mapped; no block is live there.
    assert_eq!(unsafe { *(slab as *const u8) }, 0xFF, "its pages were kept as they were");
}

#[test]
fn slots_zeroed_in_place_do_not_count_when_a_medium_slab_is_judged() {
    let p = pool();
    // Slot 0 of a new slab, barely touched, freed while its slab is the heap's current one
    // (not judged then); the next block there is zeroed in place, which puts all its pages
    // in memory whatever the program does.
    let first = allocate(&p, 65536);
    free(&p, first).unwrap();
    let slab = fill_and_empty_a_medium_slab(&p, 65536);
    assert_eq!(slab, first);
    // Judged by the other fifteen, written whole: kept.
    let in_memory = crate::os::pages_in_memory(slab, size_class::MEDIUM_SLAB_SIZE).unwrap();
    assert!(in_memory.iter().all(|&p| p));
    assert_eq!(p.cached_bytes(), size_class::MEDIUM_SLAB_SIZE as u64);
}

#[test]
fn a_reused_slot_of_a_class_found_sparse_is_zeroed_by_giving_its_pages_back_unless_freed_last() {
    let p = pool();
    // A slab of 64 KiB blocks, a byte written in each, empties: the class is found sparse.
    fill_and_empty_a_medium_slab(&p, 1);
    let in_memory = |p| resident_pages(p, 65536);
    let (a, b) = (allocate(&p, 65536), allocate(&p, 65536));
    for block in [a, b] {
        // Safety: live blocks of 64 KiB.
        unsafe { std::ptr::write_bytes(block as *mut u8, 0xFF, 65536) };
    }
    free(&p, a).unwrap();
    free(&p, b).unwrap();
    let (again_a, again_b) = (allocate(&p, 65536), allocate(&p, 65536));
    assert_eq!((again_a, again_b), (a, b));
    // Safety (both): live blocks of 64 KiB.
    let zero = |block| unsafe { std::slice::from_raw_parts(block as *const u8, 65536) }.iter().all(|&x| x == 0);
    assert_eq!(in_memory(a), 0, "zeroed by giving its pages back");
    assert_eq!(in_memory(b), 65536 / crate::os::page_size(), "freed last: zeroed in place");
    assert!(zero(a) && zero(b));
}

#[test]
fn a_few_blocks_freed_and_allocated_over_and_over_are_zeroed_in_place_from_their_third_reuse() {
    let p = pool();
    // A slab of 64 KiB blocks, a byte written in each, empties: the class is found sparse.
    fill_and_empty_a_medium_slab(&p, 1);
    let pages = 65536 / crate::os::page_size();
    let in_memory = |b| resident_pages(b, 65536);
    // Safety (both): live blocks of 64 KiB. Only their first byte (the one written) is read
    // until the end: a page read maps the zero page, which the next look counts as in memory.
    let zero = |b| unsafe { std::slice::from_raw_parts(b as *const u8, 65536) }.iter().all(|&x| x == 0);
    let touch_and_free = |blocks: &[usize]| {
        for &b in blocks {
            // Safety: a live block.
            unsafe { *(b as *mut u8) = 0xFF };
            free(&p, b).unwrap();
        }
    };
    // Four blocks allocated and freed over and over, as a zlib stream's.
    let first: Vec<usize> = (0..4).map(|_| allocate(&p, 65536)).collect();
    let mut blocks = first.clone();
    for round in 1..=5 {
        touch_and_free(&blocks);
        blocks = (0..4).map(|_| allocate(&p, 65536)).collect();
        assert_eq!(blocks, first, "the same slots");
        let resident: Vec<usize> = blocks.iter().map(|&b| in_memory(b)).collect();
        // The one freed last is zeroed in place from the first reuse, the others from the third.
        let expected = if round < 3 { vec![0, 0, 0, pages] } else { vec![pages; 4] };
        assert_eq!(resident, expected, "round {round}");
        // Safety: live blocks.
        assert!(blocks.iter().all(|&b| unsafe { *(b as *const u8) } == 0), "round {round}");
    }
    // Reused after eight other medium slots were freed: given back again.
    let others: Vec<usize> = (0..8).map(|_| allocate(&p, 40960)).collect();
    touch_and_free(&blocks);
    for &o in &others {
        free(&p, o).unwrap();
    }
    blocks = (0..4).map(|_| allocate(&p, 65536)).collect();
    assert_eq!(blocks, first);
    assert!(blocks.iter().all(|&b| in_memory(b) == 0 && zero(b)));
}

#[test]
fn a_pipelines_blocks_are_zeroed_in_place_from_their_third_reuse_while_few_are_live() {
    let p = pool();
    // The class is found sparse; the heap's current slab is the next one, its first slot live.
    fill_and_empty_a_medium_slab(&p, 1);
    let slots = size_class::MEDIUM_SLAB_SIZE / 65536;
    let pages = 65536 / crate::os::page_size();
    let in_memory = |b| resident_pages(b, 65536);
    for round in 1..=6 {
        // The rest of that slab, a byte written in each block, freed by another thread.
        let blocks: Vec<usize> = (1..slots).map(|_| allocate(&p, 65536)).collect();
        let resident: Vec<usize> = blocks.iter().map(|&b| in_memory(b)).collect();
        // Round 1: fresh slots. Then reused: while at most a quarter of the slab's 16 slots
        // are live (the first one and the first three here), the same three slots are reused
        // soon, in place from their third reuse; the others' pages go back.
        let in_place = if round < 4 { 0 } else { 3 };
        let expected: Vec<usize> = (0..slots - 1).map(|i| if i < in_place { pages } else { 0 }).collect();
        assert_eq!(resident, expected, "round {round}");
        for (i, &b) in blocks.iter().enumerate() {
            // Safety: live blocks of 64 KiB, read whole only where in memory already (see the
            // test above).
            let read = if i < in_place { 65536 } else { 1 };
            assert!(unsafe { std::slice::from_raw_parts(b as *const u8, read) }.iter().all(|&x| x == 0));
            unsafe { *(b as *mut u8) = 0xFF };
        }
        std::thread::scope(|s| {
            s.spawn(|| blocks.iter().for_each(|&b| free(&p, b).unwrap()));
        });
    }
}

/// How many of the pages of [`start`, `start + len`) are in memory.
fn resident_pages(start: usize, len: usize) -> usize {
    crate::os::pages_in_memory(start, len).unwrap().iter().filter(|&&r| r).count()
}

/// The live 64 KiB block at `b`, written whole (0xFF).
fn written_whole(b: usize) -> usize {
    // Safety: a live block of 64 KiB.
    unsafe { std::ptr::write_bytes(b as *mut u8, 0xFF, 65536) };
    b
}

/// Whether the live 64 KiB block at `b` reads zero throughout.
fn reads_zero(b: usize) -> bool {
    // Safety: a live block of 64 KiB.
    unsafe { std::slice::from_raw_parts(b as *const u8, 65536) }.iter().all(|&x| x == 0)
}

#[test]
fn a_pipeline_with_one_block_in_flight_cycles_through_two_medium_slots() {
    let p = pool();
    // One slab's 64 KiB slots, written whole (its class is dense: they keep their pages), freed.
    let slots = size_class::MEDIUM_SLAB_SIZE / 65536;
    let blocks: Vec<usize> = (0..slots).map(|_| allocate(&p, 65536)).collect();
    for &b in &blocks {
        written_whole(b);
        free(&p, b).unwrap();
    }
    // Allocated here, freed by another thread, again: the slot freed there is taken back at
    // the next reuse, not after every other free slot of the slab (whose pages, and cache
    // lines, would all be touched in turn).
    let mut used = std::collections::BTreeSet::new();
    for _ in 0..4 * slots {
        let b = allocate(&p, 65536);
        assert!(blocks.contains(&b), "the same slab");
        used.insert(b);
        std::thread::scope(|s| {
            s.spawn(|| free(&p, b).unwrap());
        });
    }
    assert_eq!(used.len(), 2, "{used:x?}");
}

#[test]
fn slabs_other_threads_emptied_show_and_go_back_at_the_next_trim() {
    let p = pool();
    // Four slabs of 64 KiB blocks written whole, all freed by another thread: the last slab is
    // the heap's current one, the other three wait on its list of full slabs.
    let blocks: Vec<usize> = (0..64).map(|_| written_whole(allocate(&p, 65536))).collect();
    std::thread::scope(|s| {
        s.spawn(|| blocks.iter().for_each(|&b| free(&p, b).unwrap()));
    });
    let in_memory = |b| resident_pages(b, 65536);
    assert_eq!(blocks.iter().map(|&b| in_memory(b)).sum::<usize>(), 64 * 65536 / crate::os::page_size());
    assert_eq!(p.trim(), 64 * 65536, "the four slabs' pages");
    assert!(blocks.iter().all(|&b| in_memory(b) == 0));
    assert_eq!(p.cached_bytes(), 0);
    // The heap goes on as before: the blocks are its own again, zeroed.
    let again: Vec<usize> = (0..64).map(|_| allocate(&p, 65536)).collect();
    assert_eq!(again.iter().collect::<std::collections::BTreeSet<_>>(), blocks.iter().collect());
    for &b in &again {
        assert!(reads_zero(b));
        written_whole(b);
    }
    // Freed by another thread again, then this thread idle: dm_decay takes them back too (the
    // slabs it hands the pool go back a decay time later).
    std::thread::scope(|s| {
        s.spawn(|| again.iter().for_each(|&b| free(&p, b).unwrap()));
    });
    let mut given_back = p.decay(); // a first look: not idle yet
    for _ in 0..2 {
        std::thread::sleep(std::time::Duration::from_millis(crate::allocators::DECAY_MS + 50));
        given_back += p.decay();
    }
    assert_eq!(given_back, 64 * 65536);
    assert!(blocks.iter().all(|&b| in_memory(b) == 0));
}

/// Four slabs' worth of 64 KiB blocks, written whole, each sent on `to` (for another thread
/// to free).
fn hand_over_written_64_kib_blocks(p: &Pool, to: &std::sync::mpsc::Sender<usize>) {
    for _ in 0..64 {
        to.send(written_whole(allocate(p, 65536))).unwrap();
    }
}

#[test]
fn slabs_other_threads_emptied_in_a_busy_threads_heap_go_back_at_decay() {
    let p = pool();
    let (freed, stop) = (Arc::new(std::sync::Barrier::new(2)), Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let (all_freed, stopped) = (freed.clone(), stop.clone());
    let (send, blocks) = std::sync::mpsc::channel();
    // Four slabs of 64 KiB blocks written whole, freed by another thread; then the thread
    // never allocates that size again but stays busy, so dm_decay never finds it idle.
    let owner = std::thread::spawn(move || {
        hand_over_written_64_kib_blocks(&p, &send);
        all_freed.wait();
        while !stopped.load(SeqCst) {
            let b = allocate(&p, 64);
            free(&p, b).unwrap();
        }
        let again: Vec<usize> = (0..64).map(|_| allocate(&p, 65536)).collect();
        assert!(again.iter().all(|&b| reads_zero(b)));
        again
    });
    let blocks: Vec<usize> = blocks.iter().take(64).collect();
    blocks.iter().for_each(|&b| free(&p, b).unwrap());
    freed.wait();
    let in_memory = |b| resident_pages(b, 65536);
    let resident = || blocks.iter().map(|&b| in_memory(b)).sum::<usize>() * crate::os::page_size();
    assert_eq!(resident(), 64 * 65536);
    // Taken back as the owner's last frees would have: one slab kept back for it (SPARE_MAX),
    // the current one stays, the other two go to the pool, whose decay gives them back.
    let mut given_back = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while given_back < 2 << 20 && std::time::Instant::now() < deadline {
        given_back += p.decay();
        std::thread::sleep(std::time::Duration::from_millis(crate::allocators::DECAY_MS / 4));
    }
    // Measured before the owner stops: then it allocates the 64 blocks again, touching them.
    let resident_at_the_end = resident();
    stop.store(true, SeqCst);
    assert!(given_back >= 2 << 20, "{given_back}");
    assert!(resident_at_the_end <= 2 << 20, "{resident_at_the_end}");
    let again = owner.join().unwrap();
    assert_eq!(again.iter().collect::<std::collections::BTreeSet<_>>(), blocks.iter().collect());
}

#[test]
fn what_a_busy_thread_keeps_unused_goes_back_at_decay_and_what_it_uses_stays() {
    let p = pool();
    let (kept, stop) = (Arc::new(std::sync::Barrier::new(2)), Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let (all_kept, stopped) = (kept.clone(), stop.clone());
    // The thread frees its own blocks: a medium slab's worth of 64 KiB ones written whole (its
    // current slab then) and seven small slabs' worth of 4 KiB ones (six kept back, the last
    // current); then it only allocates and frees 64 B blocks, so it is never idle.
    let owner = std::thread::spawn(move || {
        let medium: Vec<usize> = (0..16).map(|_| written_whole(allocate(&p, 65536))).collect();
        let small: Vec<usize> = (0..112).map(|_| allocate(&p, 4096)).collect();
        // Safety: live blocks of 4 KiB.
        small.iter().for_each(|&b| unsafe { std::ptr::write_bytes(b as *mut u8, 0xFF, 4096) });
        medium.iter().chain(&small).for_each(|&b| free(&p, b).unwrap());
        let first = allocate(&p, 64);
        free(&p, first).unwrap();
        all_kept.wait();
        let mut moved = 0;
        while !stopped.load(SeqCst) {
            let b = allocate(&p, 64);
            moved += usize::from(b != first);
            free(&p, b).unwrap();
        }
        (medium, small, moved)
    });
    kept.wait();
    let cached_before = p.cached_bytes();
    assert!(cached_before >= (1 << 20) + 7 * 65536, "{cached_before}");
    let mut given_back = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while p.cached_bytes() > 65536 && std::time::Instant::now() < deadline {
        given_back += p.decay();
        std::thread::sleep(std::time::Duration::from_millis(crate::allocators::DECAY_MS / 4));
    }
    stop.store(true, SeqCst);
    let (medium, small, moved) = owner.join().unwrap();
    let cached = p.cached_bytes();
    assert!(cached <= 65536, "cached {cached} of {cached_before}");
    assert!(given_back >= (1 << 20) + 6 * 65536, "{given_back}");
    let resident = |blocks: &[usize], size| blocks.iter().map(|&b| resident_pages(b, size)).sum::<usize>();
    assert_eq!(resident(&medium, 65536), 0);
    assert!(resident(&small, 4096) * crate::os::page_size() <= 65536);
    // The 64 B blocks kept their slot all along: the slab set aside came back at the next
    // block.
    assert_eq!(moved, 0);
}

#[test]
fn a_thread_takes_back_slabs_others_emptied_when_it_next_needs_a_slab_of_any_class() {
    let p = pool();
    let (freed, looked) = (Arc::new(std::sync::Barrier::new(2)), Arc::new(std::sync::Barrier::new(2)));
    let (all_freed, has_looked) = (freed.clone(), looked.clone());
    let (send, blocks) = std::sync::mpsc::channel();
    // Four slabs of 64 KiB blocks written whole, all freed by another thread; then blocks of
    // another size only, a slab's worth and more, once the time between looks has passed.
    let owner = std::thread::spawn(move || {
        hand_over_written_64_kib_blocks(&p, &send);
        all_freed.wait();
        std::thread::sleep(std::time::Duration::from_millis(counters::EMPTIED_LOOK_MS + 50));
        let small: Vec<usize> = (0..2000).map(|_| allocate(&p, 64)).collect();
        has_looked.wait();
        has_looked.wait();
        small.into_iter().for_each(|b| free(&p, b).unwrap());
    });
    let blocks: Vec<usize> = blocks.iter().take(64).collect();
    let seen_before = p.cached_bytes();
    blocks.iter().for_each(|&b| free(&p, b).unwrap());
    freed.wait();
    looked.wait();
    // Three of the four (the fourth is the slab it allocates from): one kept back for it, two
    // handed to the pool, which keeps their pages for its decay time. All shown as cached.
    let seen = p.cached_bytes() - seen_before;
    assert!(seen >= 3 << 20, "{seen}");
    looked.wait();
    owner.join().unwrap();
}

#[test]
fn before_any_slab_empties_a_reused_slot_is_judged_by_its_own_pages() {
    // Three blocks in 32 KiB slots of a slab that stays far from empty; `written` bytes of each
    // written; the first two freed and the first taken again (not the one freed last). The
    // blocks end inside their slots' last page, which a block barely touched leaves alone.
    let reuse = |written: usize| {
        let p = pool();
        let size = 30000;
        let blocks: Vec<usize> = (0..3).map(|_| allocate(&p, size)).collect();
        for &b in &blocks {
            // Safety: live blocks of `size` bytes.
            unsafe { std::ptr::write_bytes(b as *mut u8, 0xFF, written) };
        }
        free(&p, blocks[0]).unwrap();
        free(&p, blocks[1]).unwrap();
        let again = allocate(&p, size);
        assert_eq!(again, blocks[0]);
        // Counted before reading it (reading maps the pages in).
        let in_memory = resident_pages(again, size);
        // Safety: a live block of `size` bytes.
        assert!(unsafe { std::slice::from_raw_parts(again as *const u8, size) }.iter().all(|&x| x == 0));
        in_memory
    };
    assert_eq!(reuse(1), 0, "a byte written: zeroed by giving its pages back");
    assert_eq!(reuse(30000), 30000_usize.div_ceil(crate::os::page_size()), "written whole: zeroed in place");
}

#[test]
fn the_empty_slab_a_thread_allocates_from_shows_as_cached_and_trim_gives_it_back() {
    let p = pool();
    let blocks: Vec<usize> = (0..3).map(|_| allocate(&p, 65536)).collect();
    for &b in &blocks {
        // Safety: a live block of 64 KiB.
        unsafe { std::ptr::write_bytes(b as *mut u8, 0xFF, 65536) };
    }
    assert_eq!(p.cached_bytes(), 0, "its blocks are live");
    for &b in &blocks {
        free(&p, b).unwrap(); // their slab is the heap's current one, now empty
    }
    let in_memory = |p| resident_pages(p, 3 * 65536);
    assert_eq!(in_memory(blocks[0]), 3 * 65536 / crate::os::page_size(), "kept for the next block");
    assert_eq!(p.cached_bytes(), 3 * 65536, "and shown: the three slots handed out, not the whole slab");
    // Another thread's current slab shows too, while that thread lives (4 KiB slots: 16 KiB).
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let (theirs, pause) = (p, barrier.clone());
    // Not a scoped thread: its join waits for the thread's end, where its heap leaves.
    let thread = std::thread::spawn(move || {
        let blocks: Vec<usize> = (0..4).map(|_| allocate(&theirs, 4096)).collect();
        blocks.into_iter().for_each(|b| free(&theirs, b).unwrap());
        pause.wait();
        pause.wait();
    });
    barrier.wait();
    assert_eq!(p.cached_bytes(), 3 * 65536 + 4 * 4096);
    barrier.wait();
    thread.join().unwrap();
    // Ended, that thread gave its slab to the pool, which keeps it with its pages: counted once.
    assert_eq!(p.cached_bytes(), 3 * 65536 + 4 * 4096);
    // This thread's current slab: trim gives back what `cached` showed for it, then none.
    assert_eq!(p.heap().map(|h| unsafe { &mut *h }.give_back_empty_current()), Some(3 * 65536));
    assert_eq!(in_memory(blocks[0]), 0);
    assert_eq!(p.cached_bytes(), 4 * 4096);
    assert_eq!(p.trim(), 4 * 4096);
    assert_eq!(p.cached_bytes(), 0);
    let again = allocate(&p, 65536);
    assert_eq!(again, blocks[0], "still the slab it allocates from");
    // Safety: a live block of 64 KiB.
    assert!(unsafe { std::slice::from_raw_parts(again as *const u8, 65536) }.iter().all(|&b| b == 0));
}

#[test]
fn trim_gives_back_what_an_idle_thread_keeps_and_the_thread_goes_on_as_before() {
    let p = pool();
    let (go, idle) = (Arc::new(std::sync::Barrier::new(2)), Arc::new(std::sync::Barrier::new(2)));
    let (theirs, go_on, idle_now) = (p, go.clone(), idle.clone());
    let thread = std::thread::spawn(move || {
        // 20 medium blocks written whole (their empty slab keeps its pages), 40 small ones
        // spread over more than one slab (one empty slab is kept back, another is current).
        let medium: Vec<usize> = (0..20).map(|_| allocate(&theirs, 40000)).collect();
        let small: Vec<usize> = (0..40).map(|_| allocate(&theirs, 4096)).collect();
        for &b in &medium {
            // Safety: a live block of 40000 bytes.
            unsafe { std::ptr::write_bytes(b as *mut u8, 0xEE, 40000) };
        }
        for &b in &small {
            // Safety: a live block of 4 KiB.
            unsafe { std::ptr::write_bytes(b as *mut u8, 0xEE, 4096) };
        }
        medium.iter().chain(&small).for_each(|&b| free(&theirs, b).unwrap());
        idle_now.wait(); // idle, holding its empty slabs
        go_on.wait();
        // Its slabs work as before, and what it gets reads zero.
        let again: Vec<usize> = (0..20).map(|_| allocate(&theirs, 40000)).collect();
        for &b in &again {
            // Safety: a live block of 40000 bytes.
            assert!(unsafe { std::slice::from_raw_parts(b as *const u8, 40000) }.iter().all(|&x| x == 0));
        }
        again.into_iter().for_each(|b| free(&theirs, b).unwrap());
        (medium[0], small[0])
    });
    idle.wait();
    let cached = p.cached_bytes();
    assert!(cached >= 20 * 40000 + 40 * 4096, "{cached} bytes cached");
    assert_eq!(p.trim(), cached, "all of it given back from this thread");
    assert_eq!(p.cached_bytes(), 0);
    go.wait();
    let (medium, small) = thread.join().unwrap();
    // The thread's end gave its slabs to the pool; what the last round touched goes with trim.
    p.trim();
    assert_eq!(resident_pages(medium, 20 * 40960), 0, "the medium slab's pages went back");
    assert_eq!(resident_pages(small, SLAB_SIZE), 0, "the small slab's pages went back");
    assert_eq!(p.stats().count, 0);
}

/// A thread whose heap keeps an empty slab, or whose slab holds a live block while it freed as
/// many blocks as it allocated (`keeps_nothing`), sitting 300 ms inside its bracket, as a fast
/// path slow to finish; returns once it is in.
fn owner_inside_its_bracket(p: &Pool, keeps_nothing: bool) -> std::thread::JoinHandle<()> {
    let inside = Arc::new(std::sync::Barrier::new(2));
    let (theirs, entered) = (*p, inside.clone());
    let thread = std::thread::spawn(move || {
        let live = allocate(&theirs, 4096);
        if !keeps_nothing {
            free(&theirs, live).unwrap();
        } else {
            // A block of another thread's freed here: this heap allocated no more blocks than
            // it freed, so no other thread can have emptied its slabs.
            let other = std::thread::spawn(move || allocate(&theirs, 4096)).join().unwrap();
            free(&theirs, other).unwrap();
            theirs.trim(); // the emptied slab that thread left to the pool
        }
        // Safety: this thread's heap; its credit lives as long as the heap.
        let bracket = &unsafe { &(*theirs.heap().unwrap()).credit }.bracket;
        bracket.enter();
        entered.wait();
        std::thread::sleep(std::time::Duration::from_millis(300));
        bracket.leave();
        if keeps_nothing {
            free(&theirs, live).unwrap();
        }
    });
    inside.wait();
    thread
}

#[test]
fn a_visit_waits_for_the_owner_to_close_its_bracket() {
    let p = pool();
    let thread = owner_inside_its_bracket(&p, false);
    let started = std::time::Instant::now();
    p.trim();
    assert!(started.elapsed() >= std::time::Duration::from_millis(250), "the visit did not wait");
    thread.join().unwrap();
}

#[test]
fn a_heap_that_keeps_nothing_is_not_visited() {
    let p = pool();
    let thread = owner_inside_its_bracket(&p, true);
    let started = std::time::Instant::now();
    assert_eq!(p.trim(), 0);
    assert!(started.elapsed() < std::time::Duration::from_millis(200), "the trim waited for a busy heap");
    thread.join().unwrap();
}

#[test]
fn an_owner_asked_to_stand_aside_waits_for_the_visit() {
    use std::sync::atomic::AtomicBool;
    let p = pool();
    let (sender, receiver) = std::sync::mpsc::channel();
    let go = Arc::new(std::sync::Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let (theirs, go_on, finished) = (p, go.clone(), done.clone());
    let thread = std::thread::spawn(move || {
        free(&theirs, allocate(&theirs, 64)).unwrap(); // its current slab has room: the fast path
        sender.send(theirs.heap().unwrap() as usize).unwrap();
        go_on.wait();
        let block = allocate(&theirs, 64);
        finished.store(true, SeqCst);
        free(&theirs, block).unwrap();
    });
    let heap = receiver.recv().unwrap() as *mut Heap;
    // A visitor's first steps: the heap's lock, then the request.
    // Safety: the thread's heap lives until the thread ends (joined below).
    let door = &unsafe { &(*heap).counters }.door;
    // Safety: as above.
    let bracket = &unsafe { &(*heap).credit }.bracket;
    let visiting = door.lock();
    bracket.ask(ask::STAND_ASIDE);
    go.wait();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!done.load(SeqCst), "the owner allocated in its heap during the visit");
    bracket.withdraw(ask::STAND_ASIDE);
    drop(visiting);
    thread.join().unwrap();
    assert!(done.load(SeqCst));
}

#[test]
fn decay_gives_back_what_a_thread_idle_for_the_decay_time_keeps_once() {
    let p = pool();
    let (go, idle) = (Arc::new(std::sync::Barrier::new(2)), Arc::new(std::sync::Barrier::new(2)));
    let (theirs, go_on, idle_now) = (p, go.clone(), idle.clone());
    let round = move || {
        let blocks: Vec<usize> = (0..40).map(|_| allocate(&theirs, 4096)).collect();
        for &b in &blocks {
            // Safety: a live block of 4 KiB.
            unsafe { std::ptr::write_bytes(b as *mut u8, 0xEE, 4096) };
        }
        blocks.into_iter().for_each(|b| free(&theirs, b).unwrap());
    };
    let thread = std::thread::spawn(move || {
        round();
        idle_now.wait(); // idle, keeping its empty slabs
        go_on.wait();
        round(); // active again
        idle_now.wait();
        go_on.wait();
    });
    idle.wait();
    let kept = p.cached_bytes();
    assert!(kept >= 40 * 4096, "{kept}");
    assert_eq!(p.decay(), 0, "first look: not idle yet");
    std::thread::sleep(std::time::Duration::from_millis(crate::allocators::DECAY_MS + 50));
    assert_eq!(p.decay(), kept, "idle for the decay time: what it keeps goes back");
    assert_eq!(p.cached_bytes(), 0);
    go.wait();
    idle.wait();
    let kept = p.cached_bytes();
    assert!(kept > 0);
    assert_eq!(p.decay(), 0, "it moved since the last look");
    std::thread::sleep(std::time::Duration::from_millis(crate::allocators::DECAY_MS + 50));
    assert_eq!(p.decay(), kept);
    std::thread::sleep(std::time::Duration::from_millis(crate::allocators::DECAY_MS + 50));
    assert_eq!(p.decay(), 0, "once per idle stretch");
    go.wait();
    thread.join().unwrap();
}

#[test]
fn under_a_limit_lowered_below_what_is_reserved_freed_blocks_are_not_reused_through_the_credit() {
    let p = pool();
    p.quota.set_reclaim_timeout(10);
    let blocks: Vec<usize> = (0..100).map(|_| allocate(&p, 4096)).collect();
    p.quota.set_limit(100 << 10); // 400 KiB reserved
    for &b in &blocks[..10] {
        free(&p, b).unwrap();
    }
    // The 40 KiB went back to the budget, not to this thread's credit: still 360 KiB over.
    assert!(matches!(p.allocate(4096, class_of(4096, 0).unwrap()), Served::Failed(Error::Limit)));
    for &b in &blocks[10..] {
        free(&p, b).unwrap();
    }
    assert_eq!(p.quota.stats().reserved, 0);
    // Below the limit again: allocations go on, and frees keep credit for the next ones.
    let again: Vec<usize> = (0..20).map(|_| allocate(&p, 4096)).collect();
    again.into_iter().for_each(|b| free(&p, b).unwrap());
    assert!(p.quota.collect_credits() >= 80 << 10, "the 80 KiB freed were kept as credit again");
}

/// Every slab the heap lists knows where it is, and none is in two places.
fn check_lists(p: &Pool) {
    // Safety: this thread's heap, not in use meanwhile.
    let heap = unsafe { &*p.heap().unwrap() };
    let mut all = Vec::new();
    for c in 0..CLASSES {
        let Some(slabs) = &heap.classes[c] else {
            assert!(heap.current[c].is_none(), "a current slab in a class never used");
            continue;
        };
        for (list, kind) in [(&slabs.partial, true), (&slabs.full, false)] {
            for (i, slab) in list.slabs.iter().enumerate() {
                let want = if kind { Place::Partial(i) } else { Place::Full(i) };
                assert_eq!(unsafe { slab.place() }, want);
                all.push(*slab as *const Slab);
            }
        }
        for slab in heap.current[c].iter().chain(slabs.spare.iter()) {
            assert_eq!(unsafe { slab.place() }, Place::Unlisted);
            all.push(*slab as *const Slab);
        }
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count, "a slab is in two places");
}

#[test]
fn slab_lists_stay_consistent_under_random_frees_and_allocations() {
    let p = pool();
    let sizes = [64, 4096];
    let mut live: Vec<(usize, usize)> = (0..3000).map(|i| sizes[i % 2]).map(|s| (allocate(&p, s), s)).collect();
    let mut rng = 7u64;
    for step in 0..30_000 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let k = (rng >> 33) as usize % live.len();
        let (old, size) = live[k];
        // Safety: a live block of `size` bytes.
        unsafe { std::ptr::write_bytes(old as *mut u8, 0x5A, size) };
        free(&p, old).unwrap();
        let new = allocate(&p, size);
        // Safety: as above.
        assert!(unsafe { std::slice::from_raw_parts(new as *const u8, size) }.iter().all(|&b| b == 0));
        live[k] = (new, size);
        if step % 5000 == 0 {
            check_lists(&p);
            let mut addresses: Vec<_> = live.iter().map(|b| b.0).collect();
            addresses.sort();
            addresses.dedup();
            assert_eq!(addresses.len(), live.len(), "a live slot handed out twice");
        }
    }
    for (a, _) in live {
        free(&p, a).unwrap();
    }
    check_lists(&p);
    let s = p.stats();
    assert_eq!((s.count, s.capacity, s.total_allocations), (0, 0, 33_000));
}

#[test]
fn other_pools_and_interiors_are_not_found() {
    let (p, q) = (pool(), pool());
    let a = allocate(&p, 100);
    assert!(q.find(a).is_none());
    assert!(matches!(p.find(a + 8), Some(Err(Error::NotLive))));
    assert!(p.find(&p as *const _ as usize).is_none());
    free(&p, a).unwrap();
}

#[test]
fn blocks_freed_by_other_threads_and_heaps_of_ended_threads_are_reused() {
    let p = pool();
    let blocks: Vec<usize> = std::thread::spawn(move || (0..5000).map(|_| allocate(&p, 64)).collect()).join().unwrap();
    assert_eq!(p.stats().count, 5000);
    std::thread::scope(|s| {
        for part in blocks.chunks(1250) {
            let p = &p;
            s.spawn(move || part.iter().for_each(|&a| free(p, a).unwrap()));
        }
    });
    let s = p.stats();
    assert_eq!((s.count, s.capacity, s.total_allocations), (0, 0, 5000));
    assert_eq!(p.quota.stats().reserved, 0);
    // The ended thread's slabs are adopted rather than new ones mapped.
    let again: Vec<_> = (0..5000).map(|_| allocate(&p, 64)).collect();
    let reused = again.iter().filter(|a| blocks.contains(a)).count();
    assert!(reused > 4000, "only {reused} slots reused");
    again.into_iter().for_each(|a| free(&p, a).unwrap());
}

/// Threads that end one after another all use the one heap the first left; blocks a thread
/// left live are freed by the next one; counts and the quota stay exact throughout.
#[test]
fn heaps_of_ended_threads_are_reused_emptied() {
    let p = pool();
    let mut live: Vec<(usize, usize)> = Vec::new();
    for round in 0..50usize {
        let left = std::mem::take(&mut live);
        live = std::thread::spawn({
            move || {
                left.into_iter().for_each(|(a, _)| free(&p, a).unwrap());
                let sizes = [16, 64 + round, 4096, 40_000];
                let blocks: Vec<(usize, usize)> = (0..40).map(|i| sizes[i % 4]).map(|s| (allocate(&p, s), s)).collect();
                let (kept, gone): (Vec<_>, Vec<_>) = blocks.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
                gone.into_iter().for_each(|(_, (a, _))| free(&p, a).unwrap());
                kept.into_iter().map(|(_, block)| block).collect()
            }
        })
        .join()
        .unwrap();
        let retired = p.retired.lock();
        assert_eq!(retired.len(), 1, "round {round}: one heap, reused each time");
        let heap = &retired[0];
        assert!(heap.current.iter().all(Option::is_none), "round {round}: a retired heap has no current slab");
        for slabs in heap.classes.iter().flatten() {
            assert!(slabs.partial.slabs.is_empty() && slabs.full.slabs.is_empty() && slabs.spare.is_empty());
        }
        drop(retired);
        let s = p.stats();
        let bytes: usize = live.iter().map(|&(_, size)| size).sum();
        assert_eq!((s.count, s.capacity, s.total_allocations), (20, bytes as u64, 40 * (round as u64 + 1)));
        assert_eq!(p.quota.stats().reserved, bytes as u64, "round {round}");
        assert_eq!(p.quota.collect_credits(), 0, "round {round}: credit left in a retired heap");
    }
    live.into_iter().for_each(|(a, _)| free(&p, a).unwrap());
    let s = p.stats();
    assert_eq!((s.count, s.capacity, p.quota.stats().reserved), (0, 0, 0));
}

/// A thread keeps heaps in two pools; in a third it has none, and nothing is taken.
#[test]
fn a_thread_has_heaps_in_two_pools_and_no_more() {
    std::thread::spawn(|| {
        let pools: Vec<_> = (0..3).map(|_| pool()).collect();
        let blocks: Vec<usize> = pools[..2].iter().map(|p| allocate(p, 64)).collect();
        assert!(matches!(pools[2].allocate(64, class_of(64, 0).unwrap()), Served::Elsewhere));
        assert_eq!(pools[2].quota.stats().reserved, 0, "nothing left reserved");
        for (p, a) in pools.iter().zip(blocks) {
            free(p, a).unwrap();
        }
    })
    .join()
    .unwrap();
}

/// Threads that end together: at most [`RETIRED_MAX`] heaps are kept, the rest go.
#[test]
fn at_most_retired_max_heaps_are_kept() {
    let p = pool();
    let all = RETIRED_MAX + 8;
    let barrier = std::sync::Barrier::new(all);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..all)
            .map(|_| {
                s.spawn(|| {
                    let a = allocate(&p, 64);
                    barrier.wait(); // every heap exists before any thread ends
                    free(&p, a).unwrap();
                })
            })
            .collect();
        // Joined by hand: the scope's own join does not wait for the threads' ends (where the
        // heaps are retired).
        threads.into_iter().for_each(|t| t.join().unwrap());
    });
    assert_eq!(p.retired.lock().len(), RETIRED_MAX);
    assert_eq!(p.heaps.lock().len(), RETIRED_MAX, "the others' counters are no longer summed");
    let s = p.stats();
    assert_eq!((s.count, s.total_allocations, p.quota.stats().reserved), (0, all as u64, 0));
}

/// A heap that ends gives up the slabs of every class it used (it looks only at those), from
/// the first class to the last: the slots its thread freed are all handed out again.
#[test]
fn an_ended_heap_gives_up_its_slabs_of_every_class() {
    let p = pool();
    // This thread's heap first, so that the ended thread's stays retired: reused, it would
    // still list whatever it failed to give up.
    let own = allocate(&p, 64);
    let sizes = [16, 1000, 4096, 30_000, MAX_SMALL];
    let freed: Vec<Vec<usize>> = std::thread::spawn({
        move || {
            let mut freed = Vec::new();
            for size in sizes {
                // Two slabs' worth and one block more: two listed slabs and a current one;
                // every other block stays live when the thread ends.
                let c = class_of(size, 0).unwrap();
                let blocks: Vec<usize> =
                    (0..2 * slab_size(c) / SIZES[c] as usize + 1).map(|_| allocate(&p, size)).collect();
                let gone: Vec<usize> = blocks.into_iter().step_by(2).collect();
                gone.iter().for_each(|&a| free(&p, a).unwrap());
                freed.push(gone);
            }
            freed
        }
    })
    .join()
    .unwrap();
    for (size, freed) in sizes.into_iter().zip(freed) {
        // As many blocks as the thread made, and a slab's more: its current slab may have been
        // empty and have gone back first, on top of those with room.
        let c = class_of(size, 0).unwrap();
        let again: Vec<_> = (0..3 * slab_size(c) / SIZES[c] as usize + 1).map(|_| allocate(&p, size)).collect();
        let lost = freed.iter().filter(|a| !again.contains(a)).count();
        assert_eq!(lost, 0, "{size} B: {lost} of {} freed slots never handed out again", freed.len());
    }
    assert_eq!(p.retired.lock().len(), 1);
    free(&p, own).unwrap();
}
