/* Everything at once, as a busy program would: 4 threads allocate blocks of every kind (1 B to
 * 6 MiB, some aligned up to 2 MiB), tag them, check the tags and sizes at every touch, resize them (in place or moved),
 * attach cleaners, hand blocks to each other through a shared exchange (the taker resizes and
 * frees them), end after a while and leave their blocks in the exchange for the threads that
 * replace them, and now and then set the limit; a fifth thread trims and decays over and over, the
 * background decay thread runs every 1 ms, and a reclaim hook is installed. First with a roomy
 * limit (64-256 MiB), then a tight one (4-32 MiB: refusals, hook rounds, waits of 50 ms). Every new
 * block reads zero (sampled), a resize keeps the first byte and its growth reads zero, no block
 * loses its tag or size while live, every cleaner runs once, and the counters end at zero. Natively
 * only: its waits and races need threads that run at once. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include "check.h"

#define FAIL(...)                     \
    do {                              \
        fprintf(stderr, __VA_ARGS__); \
        fprintf(stderr, "\n");        \
        exit(1);                      \
    } while (0)
enum { THREADS = 4, LIVE = 40, EXCHANGE = 32 };

typedef struct { unsigned char *p; size_t size; uint8_t tag; } blk;
static _Atomic(blk *) exchange[EXCHANGE];
static atomic_long registered, ran, hook_calls;
static atomic_int stop;
static atomic_int ended[THREADS]; /* worker k's thread has returned: phase() joins it, starts another */
static unsigned limit_base, limit_span; /* MiB */

static uint64_t rnd(uint64_t *s) { *s = *s * 6364136223846793005ULL + 1442695040888963407ULL; return *s >> 11; }
static size_t pick(uint64_t *s) {
    switch (rnd(s) % 7) {
    case 0: return 1 + rnd(s) % 64;
    case 1: return 64 + rnd(s) % 1000;
    case 2: return 1000 + rnd(s) % 8000;
    case 3: return 8192 + rnd(s) % 120000;
    case 4: return 131072 + rnd(s) % 300000;
    case 5: /* 1-6 MiB now and then, under the roomy limits only (under 4 MiB they would wait and fail) */
        if (limit_base >= 64 && rnd(s) % 8 == 0) return (1 << 20) + rnd(s) % (5 << 20);
        /* fall through */
    default: return 16 + rnd(s) % 200;
    }
}
static void cleaner(void *ctx) { (void)ctx; atomic_fetch_add(&ran, 1); }
static void hook(void *ctx, size_t want) { (void)ctx; (void)want; atomic_fetch_add(&hook_calls, 1); }

static void fill(blk *b) { if (b->size) { b->p[0] = b->tag; b->p[b->size - 1] = b->tag; b->p[b->size / 2] = b->tag; } }
static void check(blk *b, const char *when) {
    size_t got = 0;
    dm_status s = dm_block_size(b->p, &got);
    if (s != DM_OK || got != b->size) FAIL("%s: block %p size %zu: block_size %d %zu", when, (void *)b->p, b->size, s, got);
    if (b->size && (b->p[0] != b->tag || b->p[b->size - 1] != b->tag || b->p[b->size / 2] != b->tag))
        FAIL("%s: block %p of %zu lost its tag %u: %u %u %u", when, (void *)b->p, b->size, b->tag, b->p[0], b->p[b->size / 2], b->p[b->size - 1]);
}
static blk *make(uint64_t *s, uint8_t tag) {
    blk *b = malloc(sizeof *b);
    b->size = pick(s); b->tag = tag;
    static const size_t alignments[] = {0, 0, 0, 0, 0, 64, 4096, 65536, 2 << 20};
    size_t alignment = alignments[rnd(s) % 9];
    void *p;
    dm_status st = dm_allocate(b->size, alignment, &p);
    if (st == DM_ERR_LIMIT) { free(b); return NULL; } /* under a tight limit, after the hook and a wait */
    if (st != DM_OK) FAIL("allocate %zu: %s", b->size, dm_status_message(st));
    if ((uintptr_t)p % (alignment ? alignment : 16)) FAIL("block %p of %zu not aligned to %zu", p, b->size, alignment);
    b->p = p;
    for (size_t i = 0; i < b->size; i += (b->size > 4096 ? 4093 : 1)) if (b->p[i]) FAIL("new block %p of %zu not zero at %zu", p, b->size, i);
    if (b->size && b->p[b->size - 1]) FAIL("new block not zero at its end");
    fill(b);
    return b;
}
static void drop(blk *b) {
    check(b, "free");
    if (dm_free(b->p) != DM_OK) FAIL("free %p failed", (void *)b->p);
    free(b);
}
static void resize(blk *b, uint64_t *s) {
    check(b, "resize");
    size_t to = pick(s);
    void *q;
    dm_status st = dm_reallocate(b->p, to, &q);
    if (st == DM_ERR_LIMIT) return;
    if (st != DM_OK) FAIL("resize to %zu: %s", to, dm_status_message(st));
    size_t old = b->size;
    unsigned char keep0 = b->tag;
    b->p = q; b->size = to;
    if (to && ((unsigned char *)q)[0] != keep0) FAIL("realloc lost the first byte");
    for (size_t i = old; i < to; i += (to - old > 4096 ? 4093 : 1)) if (b->p[i]) FAIL("realloc growth not zero at %zu (old %zu new %zu)", i, old, to);
    fill(b);
}

/* `arg`: the worker's number; its slot in phase()'s threads is that modulo THREADS. */
static void *worker(void *arg) {
    uint64_t s = (uintptr_t)arg * 7919 + 1;
    uint8_t tag = (uint8_t)(0x10 + (uintptr_t)arg);
    blk *live[LIVE] = {0};
    long life = 2000 + rnd(&s) % 20000; /* operations before it ends */
    while (!atomic_load(&stop) && life-- > 0) {
        int k = rnd(&s) % LIVE;
        int op = rnd(&s) % 10;
        if (!live[k]) { live[k] = make(&s, tag); continue; }
        switch (op) {
        case 0: case 1: drop(live[k]); live[k] = NULL; break;
        case 2: resize(live[k], &s); break;
        case 3: {
            dm_cleaner h;
            CHECK(dm_cleaner_register(live[k]->p, cleaner, NULL, &h));
            atomic_fetch_add(&registered, 1);
            break;
        }
        case 4: { /* hand over */
            check(live[k], "hand over");
            blk *old = atomic_exchange(&exchange[rnd(&s) % EXCHANGE], live[k]);
            live[k] = NULL;
            if (old) { if (rnd(&s) % 2) resize(old, &s); drop(old); }
            break;
        }
        case 5: if (rnd(&s) % 50 == 0) CHECK(dm_set_limit((uint64_t)(limit_base + rnd(&s) % limit_span) << 20)); break;
        default: check(live[k], "look"); break;
        }
    }
    /* Half its blocks outlive it, in the exchange, for the threads that come next. */
    for (int k = 0; k < LIVE; k++) {
        if (live[k] && rnd(&s) % 2) live[k] = atomic_exchange(&exchange[rnd(&s) % EXCHANGE], live[k]);
        if (live[k]) drop(live[k]);
    }
    atomic_store(&ended[(uintptr_t)arg % THREADS], 1);
    return NULL;
}
static void *trimmer(void *a) {
    (void)a;
    struct timespec pause = {0, 200 * 1000};
    while (!atomic_load(&stop)) {
        CHECK(dm_trim(NULL));
        nanosleep(&pause, NULL);
        CHECK(dm_decay(NULL));
        nanosleep(&pause, NULL);
    }
    return NULL;
}

/* One phase: the threads run `seconds` under limits of `base` to `base + span` MiB. */
static void phase(unsigned base, unsigned span, unsigned seconds) {
    limit_base = base, limit_span = span;
    atomic_store(&stop, 0);
    for (int i = 0; i < THREADS; i++) atomic_store(&ended[i], 0); /* the last phase's workers, joined */
    CHECK(dm_set_limit((uint64_t)base << 20));
    pthread_t t[THREADS + 1];
    /* A worker's number: its seed and tag; worker (base * 10000 + r) * THREADS + i is slot i's r-th. */
    uintptr_t first = (uintptr_t)base * 10000 * THREADS, restarts = 0;
    for (uintptr_t i = 0; i < THREADS; i++) ASSERT(pthread_create(&t[i], NULL, worker, (void *)(first + i)) == 0);
    ASSERT(pthread_create(&t[THREADS], NULL, trimmer, NULL) == 0);
    struct timespec pause = {0, 1000 * 1000};
    for (unsigned ms = 0; ms < seconds * 1000; ms++) { /* about: pauses and the loop's own time */
        nanosleep(&pause, NULL);
        for (int i = 0; i < THREADS; i++) {
            if (!atomic_exchange(&ended[i], 0)) continue;
            ASSERT(pthread_join(t[i], NULL) == 0);
            uintptr_t next = first + ++restarts * THREADS + i;
            ASSERT(pthread_create(&t[i], NULL, worker, (void *)next) == 0);
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i <= THREADS; i++) ASSERT(pthread_join(t[i], NULL) == 0);
    for (int i = 0; i < EXCHANGE; i++) {
        blk *b = atomic_exchange(&exchange[i], NULL);
        if (b) drop(b);
    }
    dm_stats st = stats_now();
    printf("limits %u-%u MiB: %lu threads ended and were replaced, %ld cleaners registered, %ld ran, %ld hook calls so far\n",
           base, base + span, (unsigned long)restarts, atomic_load(&registered), atomic_load(&ran), atomic_load(&hook_calls));
    ASSERT(st.count == 0 && st.reserved == 0 && st.live_cleaners == 0);
    ASSERT(atomic_load(&registered) == atomic_load(&ran));
}

int main(void) {
    CHECK(dm_set_reclaim_hook(hook, NULL));
    CHECK(dm_set_reclaim_timeout_ms(50));
    CHECK(dm_set_background_decay(1));
    phase(64, 192, 4);
    phase(4, 28, 4);
    CHECK(dm_set_background_decay(0));
    CHECK(dm_set_reclaim_hook(NULL, NULL));
    printf("all_at_once: OK\n");
    return 0;
}
