/* Cleaners: every action runs exactly once, whether the block goes by dm_free or dm_clean, and a
 * stale handle never touches the block that reused its address. */
#include "check.h"

static int runs[4];

static void count_run(void *ctx) { runs[*(int *)ctx]++; }

static void free_own_block(void *ctx) {
    /* Releasing the block from inside one of its own actions: it is already being released. */
    EXPECT(dm_free(*(void **)ctx), DM_ERR_NOT_LIVE);
}

int main(void) {
    static int ids[4] = {0, 1, 2, 3};
    void *a, *b, *c;
    dm_cleaner ca0, ca1, cb, cc, cc_null;

    CHECK(dm_allocate(128, 0, &a));
    CHECK(dm_cleaner_register(a, count_run, &ids[0], &ca0));
    CHECK(dm_cleaner_register(a, count_run, &ids[1], &ca1));
    ASSERT(ca0 != 0 && ca1 != 0 && ca0 != ca1);
    ASSERT(stats_now().live_cleaners == 2);
    CHECK(dm_clean(ca1)); /* runs both actions of the block, in registration order */
    EXPECT(dm_clean(ca0), DM_ERR_NOT_LIVE);
    EXPECT(dm_clean(ca1), DM_ERR_NOT_LIVE);
    EXPECT(dm_free(a), DM_ERR_NOT_LIVE);
    ASSERT(runs[0] == 1 && runs[1] == 1);
    printf("dm_clean ran both cleaners of a block once each\n");

    CHECK(dm_allocate(128, 0, &b));
    CHECK(dm_cleaner_register(b, count_run, &ids[2], &cb));
    CHECK(dm_free(b));
    EXPECT(dm_clean(cb), DM_ERR_NOT_LIVE);
    ASSERT(runs[2] == 1);
    printf("dm_free ran the cleaner once; the late dm_clean was refused\n");

    /* Stale handle: a new block may get the freed address; cleaning the old handle leaves it alone. */
    CHECK(dm_allocate(128, 0, &c));
    CHECK(dm_cleaner_register(c, count_run, &ids[3], &cc));
    CHECK(dm_cleaner_register(c, NULL, NULL, &cc_null));
    EXPECT(dm_clean(cb), DM_ERR_NOT_LIVE);
    EXPECT(dm_clean(0), DM_ERR_NOT_LIVE);
    ASSERT(runs[3] == 0 && stats_now().count == 1);
    printf("stale handle left the new block%s alone\n", c == b ? " (same address)" : "");

    {
        void *d;
        dm_cleaner cd;
        CHECK(dm_allocate(64, 0, &d));
        CHECK(dm_cleaner_register(d, free_own_block, &d, &cd));
        CHECK(dm_clean(cd));
    }

    CHECK(dm_clean(cc_null));
    ASSERT(runs[3] == 1);
    {
        dm_stats s = stats_now();
        ASSERT(s.count == 0 && s.reserved == 0 && s.live_cleaners == 0 && s.cleaners_run == 6);
    }
    print_stats("done");
    printf("cleaners: OK\n");
    return 0;
}
