/* Every block reads zero when handed out, whatever happened to its memory before (issue 13): threads
 * allocate blocks of mixed sizes (mostly 8-128 KiB, the medium slots whose reuse is zeroed either in
 * place or by giving pages back, as the program was found to write its blocks), write a byte or the
 * whole block with their own pattern, and free them in random order, a third through another
 * thread (remote frees). Each thread's blocks of one size class are written alike for a while, so
 * the library finds some classes barely touched and others written, and changes its mind as the
 * pattern flips. Every byte of every new block is checked in the stretches that write whole blocks
 * (the first 4 KiB and the last byte in the others: reading a page brings it into memory, which
 * would make the blocks look written); the counters end at zero. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include "check.h"

enum { THREADS = 4, ROUNDS = 300, LIVE = 48, EXCHANGE = 64 };

static _Atomic(void *) exchange[EXCHANGE]; /* blocks handed to whichever thread frees them */

static uint64_t next_random(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 11;
}

static size_t pick_size(uint64_t *s) {
    switch (next_random(s) % 8) {
    case 0: return 1 + next_random(s) % 8192;            /* small slots */
    case 1: return (128 << 10) + next_random(s) % (256 << 10); /* mappings of their own */
    default: return 8192 + next_random(s) % (120 << 10); /* medium slots */
    }
}

static void all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            fprintf(stderr, "a new block reads 0x%02x at offset %zu\n", p[i], i);
            exit(1);
        }
    }
}

static void *worker(void *arg) {
    size_t id = (size_t)arg;
    uint64_t s = 0x9e3779b97f4a7c15ULL * (id + 1);
    void *live[LIVE] = {0};
    for (size_t r = 0; r < ROUNDS; r++) {
        /* Written whole in some stretches, a byte per block in others. */
        int whole = (r / 50 + id) % 2;
        for (size_t k = 0; k < LIVE / 4; k++) {
            size_t i = next_random(&s) % LIVE;
            if (live[i]) {
                if (next_random(&s) % 3 == 0) {
                    /* Hand it to another thread; free what was there. */
                    void *old = atomic_exchange(&exchange[next_random(&s) % EXCHANGE], live[i]);
                    if (old) CHECK(dm_free(old));
                } else {
                    CHECK(dm_free(live[i]));
                }
                live[i] = NULL;
            }
            size_t n = pick_size(&s);
            void *p;
            CHECK(dm_allocate(n, 0, &p));
            if (whole) {
                all_zero(p, n);
            } else {
                /* Reading a page puts it in memory, which would make the block look written: only
                 * its first 4 KiB and its last byte, where a stale byte of an earlier block would
                 * show first (a byte per block is written at the start). */
                all_zero(p, n < 4096 ? n : 4096);
                all_zero((unsigned char *)p + n - 1, 1);
            }
            memset(p, 0xA0 + (int)id, whole ? n : 1);
            live[i] = p;
        }
    }
    for (size_t i = 0; i < LIVE; i++)
        if (live[i]) CHECK(dm_free(live[i]));
    return NULL;
}

int main(void) {
    pthread_t t[THREADS];
    for (size_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (size_t i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (size_t i = 0; i < EXCHANGE; i++) {
        void *p = atomic_exchange(&exchange[i], NULL);
        if (p) CHECK(dm_free(p));
    }
    dm_stats st = stats_now();
    ASSERT(st.count == 0 && st.capacity == 0 && st.reserved == 0);
    printf("zeroing: OK (%d threads, %d blocks each, every new block zero)\n", THREADS,
           ROUNDS * LIVE / 4);
    return 0;
}
