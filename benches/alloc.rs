//! dm_allocate + dm_free against libc malloc + free and calloc + free, side by side in one run,
//! at 64 B, 4 KiB, 64 KiB, 1 MiB and 64 MiB, single-threaded; and the same pairs from 2 threads.
//! Run: `cargo bench --bench alloc` (reports in target/criterion).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use directmem::ffi::{dm_allocate, dm_free, dm_set_limit, dm_status};
use std::ffi::c_void;
use std::hint::black_box;
use std::time::{Duration, Instant};

const SIZES: [(usize, &str); 5] =
    [(64, "64B"), (4 << 10, "4KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB"), (64 << 20, "64MiB")];

fn dm_pair(size: usize) {
    let mut p: *mut c_void = std::ptr::null_mut();
    // Safety: valid out-pointer; the block is freed right away.
    unsafe {
        assert_eq!(dm_allocate(size, 0, &mut p), dm_status::DM_OK);
        black_box(p);
        dm_free(p);
    }
}

fn malloc_pair(size: usize) {
    // Safety: plain libc allocation, freed right away.
    unsafe {
        let p = libc::malloc(size);
        black_box(p);
        libc::free(p);
    }
}

fn calloc_pair(size: usize) {
    // Safety: plain libc allocation, freed right away.
    unsafe {
        let p = libc::calloc(1, size);
        black_box(p);
        libc::free(p);
    }
}

/// A named allocate+free pair of one size.
type Pair = (&'static str, fn(usize));

const PAIRS: [Pair; 3] = [("directmem", dm_pair), ("malloc", malloc_pair), ("calloc", calloc_pair)];

fn single_thread(c: &mut Criterion) {
    dm_set_limit(u64::MAX);
    for (size, label) in SIZES {
        let mut group = c.benchmark_group(format!("alloc_free/{label}"));
        group.throughput(Throughput::Elements(1));
        if size >= 1 << 20 {
            group.sample_size(30).measurement_time(Duration::from_secs(2));
        }
        for (name, pair) in PAIRS {
            group.bench_function(BenchmarkId::from_parameter(name), |b| b.iter(|| pair(size)));
        }
        group.finish();
    }
}

/// Two threads doing the pair at once; time per pair as seen by one thread.
fn two_threads(c: &mut Criterion) {
    dm_set_limit(u64::MAX);
    for (size, label) in &SIZES[..3] {
        let size = *size;
        let mut group = c.benchmark_group(format!("alloc_free_2_threads/{label}"));
        for (name, pair) in PAIRS {
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| {
                    let started = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..2 {
                            s.spawn(move || (0..iters).for_each(|_| pair(size)));
                        }
                    });
                    started.elapsed()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, single_thread, two_threads);
criterion_main!(benches);
