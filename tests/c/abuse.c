/* A C program that misuses libdirectmem on purpose: foreign, interior, stale and NULL pointers,
 * double frees and cleans, sizes around SIZE_MAX, alignments up to 1 GiB, limit 0 and a limit below
 * what is reserved. Every call must return its documented status and change nothing; run under
 * valgrind, no call may touch memory it does not own. */
#include <stdint.h>
#include <string.h>
#include "check.h"

static int actions_run;
static void count_action(void *ctx) { (void)ctx; actions_run++; }

static void same_stats(dm_stats a, dm_stats b) {
    ASSERT(a.reserved == b.reserved);
    ASSERT(a.capacity == b.capacity);
    ASSERT(a.count == b.count);
    ASSERT(a.live_cleaners == b.live_cleaners);
}

int main(void) {
    void *p = NULL, *live = NULL;
    dm_cleaner c = 0, stale = 0;
    CHECK(dm_set_limit(1u << 30));
    CHECK(dm_allocate(100, 0, &live));
    dm_stats before = stats_now();

    /* Pointers that are not live blocks. */
    char *foreign = malloc(64);
    ASSERT(foreign != NULL);
    EXPECT(dm_free(foreign), DM_ERR_NOT_LIVE);
    EXPECT(dm_free((char *)live + 1), DM_ERR_NOT_LIVE);
    CHECK(dm_free(NULL)); /* like free(NULL) */
    EXPECT(dm_cleaner_register(foreign, count_action, NULL, &c), DM_ERR_NOT_LIVE);
    EXPECT(dm_cleaner_register((char *)live + 8, count_action, NULL, &c), DM_ERR_NOT_LIVE);
    EXPECT(dm_cleaner_register(live, count_action, NULL, NULL), DM_ERR_INVALID_ARGUMENT);
    EXPECT(dm_clean(0), DM_ERR_NOT_LIVE);
    EXPECT(dm_clean(UINT64_MAX), DM_ERR_NOT_LIVE);
    free(foreign);

    /* Sizes and alignments the library refuses before touching the quota. */
    EXPECT(dm_allocate(16, 0, NULL), DM_ERR_INVALID_ARGUMENT);
    EXPECT(dm_allocate(SIZE_MAX, 0, &p), DM_ERR_INVALID_ARGUMENT);
    EXPECT(dm_allocate(SIZE_MAX - 4095, 4096, &p), DM_ERR_INVALID_ARGUMENT);
    EXPECT(dm_allocate((size_t)INT64_MAX, 0, &p), DM_ERR_INVALID_ARGUMENT);
    EXPECT(dm_allocate(16, 3, &p), DM_ERR_INVALID_ARGUMENT);
    EXPECT(dm_allocate(16, (size_t)2 << 30, &p), DM_ERR_INVALID_ARGUMENT);
    EXPECT(dm_allocate((size_t)2 << 30, 0, &p), DM_ERR_LIMIT); /* valid, but above the 1 GiB limit */
    EXPECT(dm_reserve(SIZE_MAX), DM_ERR_LIMIT);
    EXPECT(dm_unreserve(1), DM_ERR_INVALID_ARGUMENT);
    EXPECT(dm_get_stats(NULL), DM_ERR_INVALID_ARGUMENT);
    ASSERT(p == NULL);
    same_stats(before, stats_now());

    /* Alignment up to 1 GiB is honoured. */
    for (size_t align = 1; align <= ((size_t)1 << 30); align <<= 3) {
        CHECK(dm_allocate(1, align, &p));
        ASSERT(((uintptr_t)p % align) == 0);
        ASSERT(*(unsigned char *)p == 0);
        CHECK(dm_free(p));
    }

    /* Double free and double clean; a stale handle after the address is reused. */
    CHECK(dm_allocate(256, 0, &p));
    CHECK(dm_cleaner_register(p, count_action, NULL, &stale));
    CHECK(dm_free(p));
    ASSERT(actions_run == 1);
    EXPECT(dm_free(p), DM_ERR_NOT_LIVE);
    EXPECT(dm_clean(stale), DM_ERR_NOT_LIVE);
    CHECK(dm_allocate(256, 0, &p)); /* malloc often hands the same address out again */
    EXPECT(dm_clean(stale), DM_ERR_NOT_LIVE);
    memset(p, 0xab, 256);
    CHECK(dm_free(p));
    ASSERT(actions_run == 1);

    /* Limit 0: nothing fits; existing blocks stay valid. */
    CHECK(dm_set_limit(0));
    EXPECT(dm_allocate(1, 0, &p), DM_ERR_LIMIT);
    EXPECT(dm_reserve(1), DM_ERR_LIMIT);
    memset(live, 1, 100);
    /* A limit below what is reserved: frees still work and count down. */
    CHECK(dm_set_limit(10));
    EXPECT(dm_allocate(1, 0, &p), DM_ERR_LIMIT);
    CHECK(dm_free(live));
    dm_stats end = stats_now();
    ASSERT(end.reserved == 0 && end.count == 0 && end.live_cleaners == 0);
    ASSERT(end.limit_failures >= 4);
    CHECK(dm_set_limit(1000));
    CHECK(dm_allocate(0, 0, &p)); /* size 0: a distinct, freeable block */
    CHECK(dm_free(p));
    printf("abuse: OK\n");
    return 0;
}
