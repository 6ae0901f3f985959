/* dm_reallocate of a block with cleaners (issue 15): the cleaners move with the block, keep their
 * handles, do not run on the move and run once when the moved block is released; the old address
 * is no longer live, and a block later allocated there is not reached by the handles. */
#include <string.h>
#include "check.h"

/* A cleaner runs inside dm_free/dm_clean and may call any dm_ function: this one also gives back
 * everything kept for reuse (every thread's heap is visited, this one's included). */
static void count(void *ctx) {
    ++*(int *)ctx;
    CHECK(dm_trim(NULL));
    CHECK(dm_decay(NULL));
}

static void move_with_cleaners(size_t from, size_t to) {
    int ran = 0;
    void *p, *q, *again;
    dm_cleaner h1, h2;
    CHECK(dm_allocate(from, 0, &p));
    memset(p, 0x5a, from);
    CHECK(dm_cleaner_register(p, count, &ran, &h1));
    CHECK(dm_cleaner_register(p, count, &ran, &h2));
    CHECK(dm_reallocate(p, to, &q));
    ASSERT(q != p && ran == 0);
    size_t kept = from < to ? from : to, size = 0;
    for (size_t i = 0; i < to; i++) ASSERT(((unsigned char *)q)[i] == (i < kept ? 0x5a : 0));
    EXPECT(dm_block_size(p, &size), DM_ERR_NOT_LIVE);
    dm_stats s = stats_now();
    ASSERT(s.count == 1 && s.capacity == to && s.live_cleaners == 2);
    CHECK(dm_allocate(from, 0, &again)); /* may well land at the old address */
    CHECK(dm_clean(h2));
    ASSERT(ran == 2);
    EXPECT(dm_clean(h1), DM_ERR_NOT_LIVE);
    EXPECT(dm_free(q), DM_ERR_NOT_LIVE);
    CHECK(dm_block_size(again, &size));
    ASSERT(size == from);
    CHECK(dm_free(again));
    s = stats_now();
    ASSERT(s.count == 0 && s.reserved == 0 && s.live_cleaners == 0);
}

/* Inside a cleaner's action its block is being released: every dm_ call on it answers
 * DM_ERR_NOT_LIVE, a slab slot's as a mapping's (dm_block_size of a slot said DM_OK). */
static void *releasing;
static dm_cleaner other;
static int inside;
static void never(void *ctx) { (void)ctx; ASSERT(!"a cleaner registered during its block's release ran"); }
static void look_at_own_block(void *ctx) {
    (void)ctx;
    void *moved;
    size_t size;
    dm_cleaner late;
    EXPECT(dm_block_size(releasing, &size), DM_ERR_NOT_LIVE);
    EXPECT(dm_free(releasing), DM_ERR_NOT_LIVE);
    EXPECT(dm_clean(other), DM_ERR_NOT_LIVE);
    EXPECT(dm_cleaner_register(releasing, never, NULL, &late), DM_ERR_NOT_LIVE);
    EXPECT(dm_reallocate(releasing, 100, &moved), DM_ERR_NOT_LIVE);
    inside++;
}

static void own_block_inside_action(size_t size) {
    dm_cleaner first;
    inside = 0;
    CHECK(dm_allocate(size, 0, &releasing));
    CHECK(dm_cleaner_register(releasing, look_at_own_block, NULL, &first));
    CHECK(dm_cleaner_register(releasing, NULL, NULL, &other));
    size_t live_size = 0;
    CHECK(dm_block_size(releasing, &live_size)); /* live until then, with its own size */
    ASSERT(live_size == size);
    CHECK(dm_free(releasing));
    ASSERT(inside == 1);
    dm_stats s = stats_now();
    ASSERT(s.count == 0 && s.reserved == 0 && s.live_cleaners == 0);
}

int main(void) {
    CHECK(dm_set_limit(64u << 20));
    move_with_cleaners(64, 1000);      /* slab slot to slab slot */
    move_with_cleaners(100, 50000);    /* slot to mapping */
    move_with_cleaners(20000, 300000); /* mapping to mapping */
    move_with_cleaners(200000, 10);    /* mapping to slot */
    own_block_inside_action(64);
    own_block_inside_action(200000);
    printf("realloc_cleaners: OK\n");
    return 0;
}
