/* How long an allocation waits at the limit while many threads allocate small blocks: each
 * thread holds one 64 B block and allocates and frees another, without pause ("busy") or with
 * 1 ms sleeps ("paced"); the main thread fills the limit with 1 MiB blocks until one is refused,
 * frees them and starts again. Near the limit each 1 MiB block needs the quota credit those
 * threads took ahead, and the refused one needs all of it: collecting it waits for threads that
 * were descheduled in the middle of an allocation.
 *
 * Prints, over the fills, the fewest blocks a fill held (the limit holds limit - 1 of them when no
 * credit is lost) and the median and largest of each fill's slowest allocation.
 * Run: scripts/bench-limit.sh, or limit_stall THREADS busy|paced FILLS [LIMIT_MIB]. */
#include "directmem.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_FILLS = 101, MAX_BLOCKS = 4096 };

static atomic_int stop;
static int paced;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void pause_ns(long ns) {
    struct timespec t = {ns / 1000000000L, ns % 1000000000L};
    nanosleep(&t, NULL);
}

static void *small_blocks(void *arg) {
    (void)arg;
    void *held = NULL;
    dm_allocate(64, 0, &held); /* a live block, as threads of a real program have */
    while (!atomic_load(&stop)) {
        void *block;
        if (dm_allocate(64, 0, &block) == DM_OK) dm_free(block);
        if (paced) pause_ns(1000000);
    }
    if (held) dm_free(held);
    return NULL;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 4 || (strcmp(argv[2], "busy") && strcmp(argv[2], "paced"))) {
        fprintf(stderr, "usage: limit_stall THREADS busy|paced FILLS [LIMIT_MIB]\n");
        return 2;
    }
    int threads = atoi(argv[1]), fills = atoi(argv[3]);
    int limit_mib = argc > 4 ? atoi(argv[4]) : 64;
    paced = !strcmp(argv[2], "paced");
    if (threads < 1 || fills < 1 || fills > MAX_FILLS || limit_mib < 2 || limit_mib > MAX_BLOCKS) {
        fprintf(stderr, "limit_stall: THREADS >= 1, 1 <= FILLS <= %d, 2 <= LIMIT_MIB <= %d\n", MAX_FILLS, MAX_BLOCKS);
        return 2;
    }
    if (dm_set_limit((uint64_t)limit_mib << 20) != DM_OK) return 1;
    pthread_t *ids = calloc(threads, sizeof *ids);
    pthread_attr_t small_stack;
    pthread_attr_init(&small_stack);
    pthread_attr_setstacksize(&small_stack, 64 << 10); /* 1000 threads fit anywhere */
    for (int i = 0; i < threads; i++)
        if (pthread_create(&ids[i], &small_stack, small_blocks, NULL)) return 1;
    pause_ns(200000000); /* every thread has taken its credit */

    static void *blocks[MAX_BLOCKS];
    double slowest[MAX_FILLS];
    int fewest = MAX_BLOCKS;
    for (int f = 0; f < fills; f++) {
        int held = 0;
        slowest[f] = 0;
        for (;;) {
            double start = now_s();
            dm_status status = dm_allocate(1 << 20, 0, &blocks[held]);
            double took = now_s() - start;
            if (took > slowest[f]) slowest[f] = took;
            if (status != DM_OK) break;
            held++;
        }
        if (held < fewest) fewest = held;
        for (int i = 0; i < held; i++) dm_free(blocks[i]);
        pause_ns(5000000);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);

    qsort(slowest, fills, sizeof slowest[0], by_value);
    printf("| %d | %s | %d | %d of %d | %.3f | %.3f |\n", threads, argv[2], fills, fewest, limit_mib - 1,
           slowest[fills / 2], slowest[fills - 1]);
    return fewest == limit_mib - 1 ? 0 : 1;
}
