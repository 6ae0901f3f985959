/* Several threads allocating against one limit. A reclaim hook is installed (it has nothing to
 * free: the other threads return memory by themselves), so a thread that does not fit waits for
 * the memory the others return, in arrival order, instead of failing. */
#include <pthread.h>
#include <string.h>
#include "check.h"

#define THREADS 4
#define ROUNDS 200
#define BLOCK (3u << 20)    /* 3 MiB */
#define LIMIT (8u << 20)    /* room for 2 blocks at once for 4 threads */

static void nothing_to_reclaim(void *ctx, size_t bytes_wanted) { (void)ctx; (void)bytes_wanted; }

static void *worker(void *arg) {
    int i;
    (void)arg;
    for (i = 0; i < ROUNDS; i++) {
        unsigned char *p;
        CHECK(dm_allocate(BLOCK, 0, (void **)&p));
        ASSERT(p[BLOCK - 1] == 0);
        p[0] = p[BLOCK - 1] = 0xff;
        CHECK(dm_free(p));
    }
    return NULL;
}

int main(void) {
    pthread_t t[THREADS];
    int i;
    dm_stats s;
    CHECK(dm_set_limit(LIMIT));
    CHECK(dm_set_reclaim_timeout_ms(10000));
    CHECK(dm_set_reclaim_hook(nothing_to_reclaim, NULL));
    for (i = 0; i < THREADS; i++) ASSERT(pthread_create(&t[i], NULL, worker, NULL) == 0);
    for (i = 0; i < THREADS; i++) ASSERT(pthread_join(t[i], NULL) == 0);
    s = stats_now();
    printf("%d threads x %d allocations of %u MiB under a %u MiB limit: %llu allocations, "
           "%llu limit failures, peak %llu bytes\n",
           THREADS, ROUNDS, BLOCK >> 20, LIMIT >> 20, (unsigned long long)s.total_allocations,
           (unsigned long long)s.limit_failures, (unsigned long long)s.peak_reserved);
    ASSERT(s.total_allocations == THREADS * ROUNDS && s.limit_failures == 0);
    ASSERT(s.peak_reserved <= LIMIT && s.reserved == 0 && s.count == 0);
    print_stats("done");
    printf("threads: OK\n");
    return 0;
}
