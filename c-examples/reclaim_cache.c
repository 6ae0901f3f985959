/* A cache under a tight limit: when an allocation does not fit, the reclaim hook evicts the oldest
 * entries until the shortfall is covered, and the allocation goes through. */
#include <string.h>
#include "check.h"

#define ENTRY_SIZE (256u << 10)
#define LIMIT (4u * 1024 * 1024) /* room for 16 entries */
#define SLOTS 64

static void *cache[SLOTS]; /* a ring of live entries, oldest at `head` */
static size_t head, live;
static size_t evicted;

static void evict(void *ctx, size_t bytes_wanted) {
    size_t freed = 0;
    (void)ctx;
    while (freed < bytes_wanted && live > 0) {
        CHECK(dm_free(cache[head]));
        cache[head] = NULL;
        head = (head + 1) % SLOTS;
        live--;
        evicted++;
        freed += ENTRY_SIZE;
    }
}

int main(void) {
    size_t i;
    dm_stats s;
    CHECK(dm_set_limit(LIMIT));
    CHECK(dm_set_reclaim_hook(evict, NULL));
    for (i = 0; i < 100; i++) {
        void *entry;
        CHECK(dm_allocate(ENTRY_SIZE, 0, &entry));
        memset(entry, (int)i, 64);
        cache[(head + live) % SLOTS] = entry;
        live++;
    }
    s = stats_now();
    printf("inserted 100 entries of %u KiB under a %u KiB limit: %zu live, %zu evicted by the hook\n",
           ENTRY_SIZE >> 10, LIMIT >> 10, live, evicted);
    ASSERT(live == 16 && evicted == 84);
    ASSERT(s.limit_failures == 0 && s.reclaim_requests == 84 && s.peak_reserved == LIMIT);
    print_stats("full cache");

    CHECK(dm_set_reclaim_hook(NULL, NULL));
    {
        void *extra;
        EXPECT(dm_allocate(ENTRY_SIZE, 0, &extra), DM_ERR_LIMIT); /* no hook: fails at once */
    }
    while (live > 0) evict(NULL, ENTRY_SIZE);
    s = stats_now();
    ASSERT(s.reserved == 0 && s.count == 0);
    print_stats("emptied");
    printf("reclaim_cache: OK\n");
    return 0;
}
