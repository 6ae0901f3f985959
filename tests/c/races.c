/* Threads (more than cores) racing dm_free, dm_clean and dm_cleaner_register on shared blocks, and
 * reserving near the limit with a reclaim hook that frees blocks parked in a shared cache. Afterwards
 * every cleaner action ran exactly once, every block was released by exactly one call, and the
 * counters are exactly zero. Then 300 threads whose quota credit together exceeds the limit:
 * a reservation fails only when the limit is really reached. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include "check.h"

enum { THREADS = 12, BLOCKS = 600, CLEANERS = 3, ROUNDS = 400, PARKED = 64 };

static void *blocks[BLOCKS];
static dm_cleaner handles[BLOCKS][CLEANERS];
static atomic_int runs[BLOCKS];
static atomic_int wins[BLOCKS];
static pthread_barrier_t start;

static void action(void *ctx) { atomic_fetch_add(&runs[(size_t)ctx], 1); }

/* Every thread goes for every block, in its own order, by its own means. */
static void *racer(void *arg) {
    size_t id = (size_t)arg;
    pthread_barrier_wait(&start);
    for (size_t k = 0; k < BLOCKS; k++) {
        size_t i = (k * 7 + id * 131) % BLOCKS;
        dm_cleaner extra;
        dm_status s;
        switch ((k + id) % 3) {
        case 0: s = dm_free(blocks[i]); break;
        case 1: s = dm_clean(handles[i][id % CLEANERS]); break;
        default:
            s = dm_cleaner_register(blocks[i], NULL, NULL, &extra);
            if (s == DM_OK) continue; /* still live: the next pass releases it */
            break;
        }
        if (s == DM_OK) atomic_fetch_add(&wins[i], 1);
        else ASSERT(s == DM_ERR_NOT_LIVE);
    }
    return NULL;
}

/* The cache the reclaim hook empties: blocks parked by the allocating threads. */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static void *parked[PARKED];
static int parked_count;
static atomic_long hook_frees;

static void reclaim(void *ctx, size_t bytes_wanted) {
    (void)ctx; (void)bytes_wanted;
    pthread_mutex_lock(&cache_lock);
    while (parked_count > 0) {
        CHECK(dm_free(parked[--parked_count]));
        atomic_fetch_add(&hook_frees, 1);
    }
    pthread_mutex_unlock(&cache_lock);
}

static void *allocator(void *arg) {
    size_t id = (size_t)arg;
    for (int r = 0; r < ROUNDS; r++) {
        void *p;
        size_t size = 4096u << (r % 5);
        CHECK(dm_allocate(size, 0, &p));
        memset(p, (int)id, size);
        pthread_mutex_lock(&cache_lock);
        if (parked_count < PARKED && r % 2 == 0) {
            parked[parked_count++] = p;
            p = NULL;
        }
        pthread_mutex_unlock(&cache_lock);
        if (p) CHECK(dm_free(p));
    }
    return NULL;
}

/* Many threads, each taking 64 KiB of quota credit ahead (for its small blocks) as it goes on
 * allocating: their credit together is more than the limit. It must never make a reservation
 * fail while the limit is not reached: collected back, and not taken again before the
 * reservation took its bytes. */
enum { CREDIT_THREADS = 300, BIG = 1 << 20, BIGS = 16, FILLS = 100 };
static atomic_int credit_ready, credit_stop;

static void *small_allocator(void *arg) {
    (void)arg;
    void *held, *p;
    CHECK(dm_allocate(64, 0, &held));
    atomic_fetch_add(&credit_ready, 1);
    while (!atomic_load(&credit_stop)) {
        CHECK(dm_allocate(64, 0, &p));
        CHECK(dm_free(p));
        struct timespec pause = {0, 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    CHECK(dm_free(held));
    return NULL;
}

static void credit_never_fails_a_reservation(void) {
    CHECK(dm_set_limit((uint64_t)BIGS * BIG)); /* 16 MiB; 300 threads' credit: 18.75 MiB */
    uint64_t failures = stats_now().limit_failures;
    static pthread_t t[CREDIT_THREADS];
    pthread_attr_t small_stack;
    ASSERT(pthread_attr_init(&small_stack) == 0 && pthread_attr_setstacksize(&small_stack, 64 << 10) == 0);
    for (size_t i = 0; i < CREDIT_THREADS; i++) ASSERT(pthread_create(&t[i], &small_stack, small_allocator, NULL) == 0);
    while (atomic_load(&credit_ready) < CREDIT_THREADS) {
        struct timespec pause = {0, 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    /* The threads hold at most 600 blocks of 64 B (38.4 KB): 15 MiB blocks fit beside them, a 16th does not. */
    void *big[BIGS];
    int fewest = BIGS;
    for (int round = 0; round < FILLS; round++) {
        int fitted = 0;
        dm_status last;
        while (fitted < BIGS && (last = dm_allocate(BIG, 0, &big[fitted])) == DM_OK) fitted++;
        ASSERT(fitted < BIGS && last == DM_ERR_LIMIT); /* and the limit held */
        fewest = fitted < fewest ? fitted : fewest;
        for (int i = 0; i < fitted; i++) CHECK(dm_free(big[i]));
        struct timespec pause = {0, 5 * 1000 * 1000}; /* the threads take their credit again */
        nanosleep(&pause, NULL);
    }
    printf("races: %d threads taking credit ahead, limit %d MiB: at least %d blocks of 1 MiB fitted in each of %d "
           "rounds (15 expected)\n", CREDIT_THREADS, BIGS, fewest, FILLS);
    ASSERT(fewest == BIGS - 1);
    ASSERT(stats_now().limit_failures == failures + FILLS);
    atomic_store(&credit_stop, 1);
    for (size_t i = 0; i < CREDIT_THREADS; i++) ASSERT(pthread_join(t[i], NULL) == 0);
    ASSERT(pthread_attr_destroy(&small_stack) == 0);
    dm_stats s = stats_now();
    ASSERT(s.reserved == 0 && s.count == 0);
}

int main(void) {
    pthread_t t[THREADS];
    CHECK(dm_set_limit(1u << 30));
    for (size_t i = 0; i < BLOCKS; i++) {
        CHECK(dm_allocate(64 + i, 0, &blocks[i]));
        for (int c = 0; c < CLEANERS; c++) CHECK(dm_cleaner_register(blocks[i], action, (void *)i, &handles[i][c]));
    }
    pthread_barrier_init(&start, NULL, THREADS);
    for (size_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, racer, (void *)i);
    for (size_t i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (size_t i = 0; i < BLOCKS; i++) {
        if (atomic_load(&wins[i]) == 0) { /* survived every pass: only registrations hit it */
            CHECK(dm_free(blocks[i]));
            atomic_fetch_add(&wins[i], 1);
        }
        ASSERT(atomic_load(&wins[i]) == 1);
        ASSERT(atomic_load(&runs[i]) == CLEANERS);
    }
    dm_stats s = stats_now();
    ASSERT(s.reserved == 0 && s.count == 0 && s.live_cleaners == 0);

    /* Near the limit: 12 threads, blocks of 4-64 KiB, 256 KiB in all; the hook frees the cache. */
    CHECK(dm_set_limit(256u << 10));
    CHECK(dm_set_reclaim_timeout_ms(5000));
    CHECK(dm_set_reclaim_hook(reclaim, NULL));
    for (size_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, allocator, (void *)i);
    for (size_t i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    CHECK(dm_set_reclaim_hook(NULL, NULL));
    long by_hook = atomic_load(&hook_frees);
    ASSERT(by_hook > 0 && stats_now().reclaim_requests > 0); /* the limit was reached and the hook helped */
    reclaim(NULL, 0);
    s = stats_now();
    ASSERT(s.reserved == 0 && s.count == 0 && s.live_cleaners == 0);
    ASSERT(s.limit_failures == 0);
    ASSERT(s.peak_reserved <= (256u << 10));
    credit_never_fails_a_reservation();
    printf("races: %d threads, %d blocks x %d cleaners, each released once; %d allocations near the limit, "
           "%ld freed by the hook, 0 failures\n", THREADS, BLOCKS, CLEANERS, THREADS * ROUNDS, by_hook);
    printf("races: OK\n");
    return 0;
}
