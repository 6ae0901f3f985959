/* Threads with small stacks, as a C user may make them (thousands of threads, or a library that
 * asks for PTHREAD_STACK_MIN, 16 KiB here): every dm_ function works on such a thread, the
 * library's very first call included. That first call made the process-wide manager, a 7 KiB value
 * moved through the caller's stack twice: it crashed on a 16 KiB stack (release build), while
 * malloc works there.
 *
 * Usage: small_stacks [stack bytes]; default PTHREAD_STACK_MIN, or DM_TEST_STACK when set. Debug
 * builds of the library (unoptimised Rust) need more: cargo test runs this against the debug build
 * with a bigger stack, and scripts/test.sh against the release build with the default. */
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include "check.h"

static int cleaned;
static void count_cleaning(void *ctx) {
    (void)ctx;
    cleaned++;
}

static void *spare; /* freed by the reclaim hook when a reservation does not fit */
static void free_spare(void *ctx, size_t wanted) {
    (void)ctx;
    (void)wanted;
    if (spare != NULL) {
        CHECK(dm_free(spare));
        spare = NULL;
    }
}

static void *every_call(void *arg) {
    (void)arg;
    void *p;
    CHECK(dm_allocate(100, 0, &p)); /* the library's first call in this process */
    CHECK(dm_free(p));
    static const size_t sizes[] = {1, 64, 5000, 65536, 200000, 3u << 20};
    void *blocks[sizeof sizes / sizeof *sizes];
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            CHECK(dm_allocate(sizes[i], i % 2 ? 4096 : 0, &blocks[i]));
            memset(blocks[i], 0x77, sizes[i]);
        }
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            size_t size;
            CHECK(dm_block_size(blocks[i], &size));
            ASSERT(size == sizes[i]);
            CHECK(dm_reallocate(blocks[i], sizes[i] * 3 + 1, &blocks[i])); /* in place or moved */
            CHECK(dm_reallocate(blocks[i], sizes[i] / 2 + 1, &blocks[i]));
        }
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) CHECK(dm_free(blocks[i]));
    }
    /* Cleaners: run by dm_free, and by dm_clean. */
    dm_cleaner c;
    CHECK(dm_allocate(64, 0, &p));
    CHECK(dm_cleaner_register(p, count_cleaning, NULL, &c));
    CHECK(dm_free(p));
    CHECK(dm_allocate(300000, 0, &p));
    CHECK(dm_cleaner_register(p, count_cleaning, NULL, &c));
    CHECK(dm_clean(c));
    ASSERT(cleaned == 2);
    /* The quota: a reservation that does not fit calls the hook, which frees what it needs. */
    CHECK(dm_reserve(4096));
    CHECK(dm_unreserve(4096));
    CHECK(dm_set_limit(1 << 20));
    CHECK(dm_allocate(600 << 10, 0, &spare));
    CHECK(dm_set_reclaim_hook(free_spare, NULL));
    CHECK(dm_allocate(600 << 10, 0, &p));
    ASSERT(spare == NULL);
    CHECK(dm_free(p));
    EXPECT(dm_allocate(2 << 20, 0, &p), DM_ERR_LIMIT);
    CHECK(dm_set_reclaim_hook(NULL, NULL));
    CHECK(dm_set_limit(UINT64_MAX));
    /* Bad input: errors, not crashes. */
    char local;
    EXPECT(dm_free(&local), DM_ERR_NOT_LIVE);
    EXPECT(dm_allocate(64, 3, &p), DM_ERR_INVALID_ARGUMENT);
    EXPECT(dm_allocate(SIZE_MAX, 0, &p), DM_ERR_INVALID_ARGUMENT);
    ASSERT(dm_status_message(DM_ERR_LIMIT) != NULL);
    /* Stats and giving memory back. */
    dm_stats s;
    dm_memory_stats m;
    CHECK(dm_get_stats(&s));
    CHECK(dm_get_memory_stats(&m));
    ASSERT(s.count == 0 && s.reserved == 0);
    uint64_t given_back;
    CHECK(dm_decay(&given_back));
    CHECK(dm_trim(&given_back));
    CHECK(dm_set_reclaim_timeout_ms(1000));
    return NULL;
}

int main(int argc, char **argv) {
    const char *from_env = getenv("DM_TEST_STACK");
    size_t stack = argc > 1 ? strtoul(argv[1], NULL, 0) : from_env ? strtoul(from_env, NULL, 0) : PTHREAD_STACK_MIN;
    pthread_attr_t attr;
    ASSERT(pthread_attr_init(&attr) == 0 && pthread_attr_setstacksize(&attr, stack) == 0);
    /* Twice: the first thread makes the library's state, the second finds it made (and a heap of
     * the first thread's to reuse). */
    for (int thread = 0; thread < 2; thread++) {
        pthread_t t;
        ASSERT(pthread_create(&t, &attr, every_call, NULL) == 0);
        ASSERT(pthread_join(t, NULL) == 0);
        cleaned = 0;
    }
    printf("small_stacks: OK (%zu-byte stacks)\n", stack);
    return 0;
}
