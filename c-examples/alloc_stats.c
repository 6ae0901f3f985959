/* Allocation and stats: zeroed, aligned blocks of several sizes, exact accounting, bad input refused. */
#include <stdint.h>
#include <string.h>
#include "check.h"

static int all_zero(const unsigned char *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (p[i] != 0) return 0;
    return 1;
}

int main(void) {
    static const size_t sizes[] = {0, 64, 4096, 65536, 1 << 20, 64u << 20};
    void *blocks[6];
    size_t i, total = 0;
    void *out = NULL;
    dm_stats s;

    CHECK(dm_set_limit(256u << 20));
    for (i = 0; i < 6; i++) {
        size_t align = (i % 2) ? dm_page_size() : 0;
        CHECK(dm_allocate(sizes[i], align, &blocks[i]));
        ASSERT(blocks[i] != NULL);
        ASSERT(all_zero(blocks[i], sizes[i]));
        if (align) ASSERT((uintptr_t)blocks[i] % align == 0);
        memset(blocks[i], 0x5a, sizes[i]);
        total += sizes[i];
        printf("allocated %zu bytes at alignment %zu: zeroed\n", sizes[i], align);
    }
    s = stats_now();
    ASSERT(s.count == 6 && s.capacity == total && s.reserved == total);
    print_stats("6 live blocks");

    /* bad input: a documented status, and nothing changes */
    EXPECT(dm_allocate(16, 3, &out), DM_ERR_INVALID_ARGUMENT);
    EXPECT(dm_allocate(SIZE_MAX, 0, &out), DM_ERR_INVALID_ARGUMENT);
    EXPECT(dm_allocate(16, 0, NULL), DM_ERR_INVALID_ARGUMENT);
    EXPECT(dm_allocate(512u << 20, 0, &out), DM_ERR_LIMIT);
    EXPECT(dm_free((char *)blocks[2] + 1), DM_ERR_NOT_LIVE);
    EXPECT(dm_free(&out), DM_ERR_NOT_LIVE);
    EXPECT(dm_unreserve(1), DM_ERR_INVALID_ARGUMENT);
    ASSERT(out == NULL);
    s = stats_now();
    ASSERT(s.count == 6 && s.reserved == total && s.limit_failures == 1);
    printf("bad input refused: %s / %s / %s\n", dm_status_message(DM_ERR_INVALID_ARGUMENT),
           dm_status_message(DM_ERR_LIMIT), dm_status_message(DM_ERR_NOT_LIVE));

    CHECK(dm_reserve(1000));
    ASSERT(stats_now().reserved == total + 1000);
    CHECK(dm_unreserve(1000));

    for (i = 0; i < 6; i++) CHECK(dm_free(blocks[i]));
    EXPECT(dm_free(blocks[3]), DM_ERR_NOT_LIVE);
    CHECK(dm_free(NULL));
    s = stats_now();
    ASSERT(s.count == 0 && s.capacity == 0 && s.reserved == 0 && s.total_allocations == 6);
    print_stats("all freed");
    printf("alloc_stats: OK\n");
    return 0;
}
