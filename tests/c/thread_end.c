/* A thread's end (issue 13, thread churn). The library gives an ending thread's heap back from the
 * destructor of a POSIX thread-specific key of its own, made at the first allocation. Destructors
 * of the program's own keys use the library while threads end: one key made before the library's
 * (its destructor runs first, while the thread still has its heap) and one made after (its
 * destructor runs once the heap is gone: the library serves it without one). Short-lived threads
 * in a row, a few at a time, each free blocks earlier threads left, allocate blocks of mixed sizes
 * (every one must read zero), and leave some live for later threads. Meanwhile another thread
 * trims and decays, visiting the heaps of threads that are starting, working and ending. At the
 * end the counters and the quota are back at zero, and every allocation was counted. Run natively
 * and under valgrind. */
#include <time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include "check.h"

enum { ROUNDS = 60, AT_ONCE = 4, LEFT = 32 };

static pthread_key_t before, after;
static _Atomic(void *) left[LEFT];          /* blocks a thread left live for later ones */
static atomic_ullong allocations, destructor_runs;

static void *take_zeroed(size_t size) {
    void *p;
    CHECK(dm_allocate(size, 0, &p));
    atomic_fetch_add(&allocations, 1);
    for (size_t i = 0; i < size; i += 997) ASSERT(((unsigned char *)p)[i] == 0);
    ASSERT(((unsigned char *)p)[size - 1] == 0);
    memset(p, 0xA5, size);
    return p;
}

/* Both keys' destructor: frees the block it was given, and allocates, writes and frees more. */
static void at_thread_end(void *block) {
    CHECK(dm_free(block));
    /* Before the library's own destructor (`before`) this thread's heap is visited; after it
     * (`after`) the thread has none any more. */
    CHECK(dm_trim(NULL));
    CHECK(dm_decay(NULL));
    static const size_t sizes[] = {16, 64, 4096, 40000};
    for (int i = 0; i < 4; i++) CHECK(dm_free(take_zeroed(sizes[i])));
    void *kept = take_zeroed(100);
    void *old = atomic_exchange(&left[(uintptr_t)kept / 16 % LEFT], kept);
    if (old) CHECK(dm_free(old));
    atomic_fetch_add(&destructor_runs, 1);
}

static void *one_thread(void *arg) {
    uint64_t s = (uintptr_t)arg * 0x9E3779B97F4A7C15ULL + 1;
    void *mine[16];
    for (int i = 0; i < 16; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t size = (size_t)1 << (4 + (s >> 40) % 14); /* 16 B .. 128 KiB */
        mine[i] = take_zeroed(size);
    }
    for (int i = 0; i < 16; i += 2) CHECK(dm_free(mine[i]));
    for (int i = 1; i < 16; i += 2) {
        void *old = atomic_exchange(&left[(s + (uint64_t)i) % LEFT], mine[i]);
        if (old) CHECK(dm_free(old)); /* most likely another thread's */
    }
    ASSERT(pthread_setspecific(before, take_zeroed(48)) == 0);
    ASSERT(pthread_setspecific(after, take_zeroed(3000)) == 0);
    return NULL;
}

static atomic_int running = 1;

/* dm_trim and dm_decay, a little apart, while the rounds run. */
static void *trim_and_decay(void *arg) {
    unsigned long *calls = arg;
    struct timespec pause = {0, 50 * 1000};
    for (; atomic_load(&running); ++*calls) {
        CHECK(*calls % 2 ? dm_trim(NULL) : dm_decay(NULL));
        nanosleep(&pause, NULL);
    }
    return NULL;
}

int main(void) {
    /* The program's first key, then the library's (at its first allocation), then the second. */
    ASSERT(pthread_key_create(&before, at_thread_end) == 0);
    CHECK(dm_free(take_zeroed(64)));
    ASSERT(pthread_key_create(&after, at_thread_end) == 0);

    pthread_t trimmer;
    unsigned long trims = 0;
    ASSERT(pthread_create(&trimmer, NULL, trim_and_decay, &trims) == 0);
    for (int round = 0; round < ROUNDS; round++) {
        pthread_t t[AT_ONCE];
        for (int i = 0; i < AT_ONCE; i++)
            ASSERT(pthread_create(&t[i], NULL, one_thread, (void *)(uintptr_t)(round * AT_ONCE + i)) == 0);
        for (int i = 0; i < AT_ONCE; i++) ASSERT(pthread_join(t[i], NULL) == 0);
    }
    atomic_store(&running, 0);
    ASSERT(pthread_join(trimmer, NULL) == 0);
    ASSERT(trims > 0);
    ASSERT(atomic_load(&destructor_runs) == 2 * ROUNDS * AT_ONCE);
    for (int i = 0; i < LEFT; i++) {
        void *old = atomic_exchange(&left[i], NULL);
        if (old) CHECK(dm_free(old));
    }
    dm_stats st = stats_now();
    if (st.count != 0 || st.reserved != 0 || st.total_allocations != atomic_load(&allocations)) {
        print_stats("end");
        fprintf(stderr, "expected 0 blocks, 0 reserved, %llu allocations\n",
                (unsigned long long)atomic_load(&allocations));
        return 1;
    }
    printf("%d threads, %llu allocations (%llu in key destructors), %lu trims and decays meanwhile, "
           "stats exact\nthread_end: OK\n",
           ROUNDS * AT_ONCE, (unsigned long long)st.total_allocations,
           (unsigned long long)atomic_load(&destructor_runs) * 5, trims);
    return 0;
}
