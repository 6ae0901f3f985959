/* Slabs that ended threads leave, under load: rounds of three short threads allocate blocks of 16 B
 * to 100 KB (each must read zero), stamp them, put them in a shared table (freeing the block they
 * replace) and end; two long-lived threads free blocks from the table (into slabs whose owner has
 * ended: the pool notices those that empty and keeps them as empty ones) and trim now and then,
 * while the next round's threads adopt those same slabs. Every block's stamp must be intact when it
 * is freed (a slot handed out twice would show), every free succeed, and at the end nothing is
 * left counted and dm_trim gives back exactly what `cached` said. Runs SECONDS seconds (argument;
 * default 4), natively: valgrind runs one thread at a time. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "check.h"

enum { SLOTS = 4096, PER_THREAD = 200, AT_ONCE = 3, FREERS = 2 };
static const size_t sizes[] = {16, 64, 200, 1000, 5000, 40000, 100000};
static _Atomic(uintptr_t) table[SLOTS];
static atomic_int stop;
static atomic_long made, freed;

static unsigned char stamp_of(uintptr_t block) { return (unsigned char)(block >> 4 ^ block >> 12); }

/* Checks the stamp of `block` (its first 64 bytes and its last) and frees it. */
static void check_and_free(uintptr_t block) {
    size_t size;
    CHECK(dm_block_size((void *)block, &size));
    const unsigned char *b = (const void *)block, stamp = stamp_of(block);
    for (size_t i = 0; i < size && i < 64; i++) ASSERT(b[i] == stamp);
    ASSERT(b[size - 1] == stamp);
    CHECK(dm_free((void *)block));
    atomic_fetch_add(&freed, 1);
}

static void *short_lived(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (int k = 0; k < PER_THREAD; k++) {
        size_t size = sizes[rand_r(&seed) % (sizeof sizes / sizeof *sizes)];
        void *p;
        CHECK(dm_allocate(size, 0, &p));
        unsigned char *b = p, stamp = stamp_of((uintptr_t)p);
        for (size_t i = 0; i < size; i += 1021) ASSERT(b[i] == 0);
        ASSERT(b[size - 1] == 0);
        memset(b, stamp, size < 64 ? size : 64);
        b[size - 1] = stamp;
        atomic_fetch_add(&made, 1);
        uintptr_t old = atomic_exchange(&table[rand_r(&seed) % SLOTS], (uintptr_t)p);
        if (old) check_and_free(old);
    }
    return NULL;
}

static void *freer(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&stop)) {
        uintptr_t old = atomic_exchange(&table[rand_r(&seed) % SLOTS], 0);
        if (old) check_and_free(old);
        if (rand_r(&seed) % 5000 == 0) CHECK(dm_trim(NULL));
    }
    return NULL;
}

int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 4;
    pthread_t freers[FREERS];
    for (int i = 0; i < FREERS; i++) ASSERT(pthread_create(&freers[i], NULL, freer, (void *)(uintptr_t)(i + 1000)) == 0);
    time_t end = time(NULL) + seconds;
    unsigned threads = 0;
    while (time(NULL) < end) {
        pthread_t round[AT_ONCE];
        for (int i = 0; i < AT_ONCE; i++) ASSERT(pthread_create(&round[i], NULL, short_lived, (void *)(uintptr_t)threads++) == 0);
        for (int i = 0; i < AT_ONCE; i++) ASSERT(pthread_join(round[i], NULL) == 0);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < FREERS; i++) ASSERT(pthread_join(freers[i], NULL) == 0);
    for (int i = 0; i < SLOTS; i++) {
        uintptr_t left = atomic_exchange(&table[i], 0);
        if (left) check_and_free(left);
    }
    dm_stats s = stats_now();
    ASSERT(s.count == 0 && s.reserved == 0 && atomic_load(&made) == atomic_load(&freed));
    dm_memory_stats m;
    uint64_t given_back = 0;
    CHECK(dm_get_memory_stats(&m));
    CHECK(dm_trim(&given_back));
    ASSERT(given_back == m.cached);
    printf("ended_slabs: OK (%u short threads, %ld blocks, every stamp intact, %llu bytes cached at the end)\n", threads,
           atomic_load(&made), (unsigned long long)m.cached);
    return 0;
}
