/* What the library keeps for reuse, as a C user sees it (issue 13):
 * - `occupied` says what the live blocks take (never less than their capacity, 0 when none is live);
 * - a freed batch's empty slabs keep their pages for the next batch, shown as `cached`, not charged
 *   to the quota (a batch of the whole limit still fits afterwards);
 * - dm_trim gives them back now: `cached` drops to 0, the pages leave memory (mincore). */
#define _DEFAULT_SOURCE
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>
#include "check.h"

#define BATCH 1000
#define SIZE 4096

static int resident(void *p) {
    long page = sysconf(_SC_PAGESIZE);
    unsigned char in_core = 0;
    ASSERT(mincore((void *)((uintptr_t)p & ~(uintptr_t)(page - 1)), (size_t)page, &in_core) == 0);
    return in_core & 1;
}

int main(void) {
    static void *blocks[BATCH];
    CHECK(dm_set_limit((uint64_t)BATCH * SIZE));

    void *p;
    CHECK(dm_allocate(100, 0, &p));
    dm_stats s = stats_now();
    ASSERT(s.capacity == 100 && s.occupied >= 100 && s.occupied <= 256);
    CHECK(dm_free(p));
    CHECK(dm_allocate(1 << 20, 0, &p));
    s = stats_now();
    ASSERT(s.occupied == 1 << 20);
    CHECK(dm_free(p));

    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < BATCH; i++) {
            CHECK(dm_allocate(SIZE, 0, &blocks[i]));
            *(volatile char *)blocks[i] = 1;
        }
        s = stats_now();
        ASSERT(s.reserved == (uint64_t)BATCH * SIZE && s.occupied >= s.capacity);
        /* The whole limit is in use: one byte more does not fit. */
        EXPECT(dm_allocate(1, 0, &p), DM_ERR_LIMIT);
        void *probe = blocks[BATCH / 2];
        for (int i = 0; i < BATCH; i++) CHECK(dm_free(blocks[i]));
        s = stats_now();
        ASSERT(s.count == 0 && s.capacity == 0 && s.occupied == 0 && s.reserved == 0);
        /* About 60 of the batch's 63 slabs are empty and kept, with their pages. */
        ASSERT(s.cached >= 32u * 65536);
        if (round == 0) {
            ASSERT(resident(probe));
            continue; /* the next batch reuses them, with the quota all its own */
        }
        uint64_t given_back = 0;
        CHECK(dm_trim(&given_back));
        ASSERT(given_back == s.cached);
        ASSERT(stats_now().cached == 0);
        ASSERT(!resident(probe));
    }
    CHECK(dm_trim(NULL));
    printf("memory_reuse: OK\n");
    return 0;
}
