/* What the library keeps for reuse, as a C user sees it (issue 13):
 * - dm_get_memory_stats: `occupied` says what the live blocks take: never less than their capacity, at most 1.25 x it
 *   + 16 B per block at every size, 0 when none is live;
 * - a freed batch's empty slabs keep their pages for the next batch, shown as `cached`, not charged
 *   to the quota (a batch of the whole limit still fits afterwards);
 * - dm_trim gives them back now, exactly what `cached` said (also the empty slab the thread
 *   allocates from): `cached` drops to 0, the pages leave memory (mincore);
 * - slabs that threads ended with, emptied later by another thread's frees, are `cached` too, and
 *   given back by dm_trim; so are a live thread's slabs that another thread's frees emptied, and
 *   dm_decay takes those back from a thread that stays busy, and the thread itself when it next
 *   needs a slab (at most once a second), with nothing else called;
 * - dm_decay gives back what a busy thread keeps for itself and stopped using;
 * - freed big blocks' mappings and the pool's empty slabs go back once past their time while the
 *   program allocates small blocks only, with nothing else called;
 * - dm_decay gives back only what is past its 100 ms, and does so with nothing else called;
 * - dm_set_background_decay does the same from a thread of its own while the program sleeps, and
 *   the thread ends when asked to; so does DM_BACKGROUND_DECAY_MS (the program runs itself again
 *   with it set, and prints OK from there). */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "check.h"

static dm_memory_stats memory_now(void) {
    dm_memory_stats m;
    CHECK(dm_get_memory_stats(&m));
    return m;
}

#define BATCH 1000
#define SIZE 4096
/* What a thread keeps for itself once the library's own slabs went back: up to 1 MiB of empty
 * slabs, and the slab of SIZE blocks it allocates from. */
#define THREAD_KEEPS ((1u << 20) + 65536)

static int resident(void *p) {
    long page = sysconf(_SC_PAGESIZE);
    unsigned char in_core = 0;
    ASSERT(mincore((void *)((uintptr_t)p & ~(uintptr_t)(page - 1)), (size_t)page, &in_core) == 0);
    return in_core & 1;
}

/* How many threads named directmem-decay this process runs. */
static int decay_thread_runs(void) {
    DIR *tasks = opendir("/proc/self/task");
    ASSERT(tasks != NULL);
    int found = 0;
    for (struct dirent *t; (t = readdir(tasks)) != NULL;) {
        char path[300], name[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", t->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL) continue; /* "." and "..", or a thread that just ended */
        if (fgets(name, sizeof name, f) != NULL && strncmp(name, "directmem-decay", 15) == 0) found++;
        fclose(f);
    }
    closedir(tasks);
    return found;
}

static void sleep_ms(long ms) {
    struct timespec wait = {ms / 1000, ms % 1000 * 1000 * 1000};
    nanosleep(&wait, NULL);
}

/* With the decay thread asked for: it runs (one), gives a freed batch's slabs back while the
 * program only sleeps and reads the memory stats (which give nothing back), and ends on 0. */
static void background_decay_gives_back(void **blocks) {
    int waited = 0; /* the thread names itself when it starts */
    while (!decay_thread_runs() && waited < 3000) sleep_ms(10), waited += 10;
    ASSERT(decay_thread_runs() == 1);
    for (int i = 0; i < BATCH; i++) CHECK(dm_allocate(SIZE, 0, &blocks[i]));
    void *probe = blocks[BATCH - 20];
    *(volatile char *)probe = 1;
    for (int i = 0; i < BATCH; i++) CHECK(dm_free(blocks[i]));
    ASSERT(memory_now().cached >= 32u * 65536 && resident(probe));
    /* Both, however the visits and the pool's decay interleave: a visit can give the thread's own
     * slabs back while the pool's latest ones (the probe's among them) still wait their 100 ms. */
    waited = 0;
    while ((memory_now().cached > THREAD_KEEPS || resident(probe)) && waited < 5000) sleep_ms(10), waited += 10;
    ASSERT(memory_now().cached <= THREAD_KEEPS && !resident(probe));
    CHECK(dm_set_background_decay(0));
    for (waited = 0; decay_thread_runs() && waited < 3000; waited += 10) sleep_ms(10);
    ASSERT(!decay_thread_runs());
}

/* Threads that end with a few blocks live in their slabs, which another thread frees later: the
 * emptied slabs are `cached` (they held their touched pages unseen until a heap adopted them, and
 * dm_trim gave none of it back: 40 MiB after 2,000 such threads), then given back by dm_trim. */
#define ENDED 8
#define LEFT_EACH 4
static void *left_by[ENDED][LEFT_EACH];
static pthread_barrier_t all_allocated;

static void *allocate_and_end(void *arg) {
    void **mine = arg;
    for (int i = 0; i < LEFT_EACH; i++) {
        size_t size = i % 2 ? 64 : 1000; /* two classes, one slab of each */
        CHECK(dm_allocate(size, 0, &mine[i]));
        memset(mine[i], 0x5A, size);
    }
    pthread_barrier_wait(&all_allocated); /* all alive at once: a slab of each class each */
    return NULL;
}

static void slabs_of_ended_threads_emptied_later(void) {
    CHECK(dm_trim(NULL));
    ASSERT(memory_now().cached == 0);
    pthread_t threads[ENDED];
    ASSERT(pthread_barrier_init(&all_allocated, NULL, ENDED) == 0);
    for (int t = 0; t < ENDED; t++) ASSERT(pthread_create(&threads[t], NULL, allocate_and_end, left_by[t]) == 0);
    for (int t = 0; t < ENDED; t++) ASSERT(pthread_join(threads[t], NULL) == 0);
    ASSERT(pthread_barrier_destroy(&all_allocated) == 0);
    ASSERT(memory_now().cached == 0);
    for (int t = 0; t < ENDED; t++)
        for (int i = 0; i < LEFT_EACH; i++) CHECK(dm_free(left_by[t][i]));
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), cached = memory_now().cached, given_back = 0;
    ASSERT(cached >= ENDED * 2 * page); /* a touched page in each thread's two slabs at least */
    ASSERT(resident(left_by[0][0]) && resident(left_by[ENDED - 1][1]));
    CHECK(dm_trim(&given_back));
    ASSERT(given_back == cached && memory_now().cached == 0);
    for (int t = 0; t < ENDED; t++)
        for (int i = 0; i < LEFT_EACH; i++) ASSERT(!resident(left_by[t][i]));
}

/* A thread that lives on, whose blocks another thread freed: the slabs those frees emptied (but
 * the one it allocates from) wait on its lists, which only it looked at (when it next needed a
 * slab of their size): 64 MiB of such blocks written whole stayed in memory, neither `cached` nor
 * `occupied`, and dm_trim gave none of it back. dm_trim takes them back now, all their pages. */
#define HANDED 48 /* 64 KiB blocks: three 1 MiB slabs */
static void *handed[HANDED];

static void *free_handed(void *arg) {
    (void)arg;
    for (int i = 0; i < HANDED; i++) CHECK(dm_free(handed[i]));
    return NULL;
}

static void slabs_emptied_by_another_thread(void) {
    CHECK(dm_trim(NULL));
    for (int i = 0; i < HANDED; i++) {
        CHECK(dm_allocate(65536, 0, &handed[i]));
        memset(handed[i], 0xA5, 65536);
    }
    pthread_t freer;
    ASSERT(pthread_create(&freer, NULL, free_handed, NULL) == 0);
    ASSERT(pthread_join(freer, NULL) == 0);
    ASSERT(memory_now().occupied == 0 && resident(handed[0]) && resident(handed[HANDED - 1]));
    uint64_t given_back = 0;
    CHECK(dm_trim(&given_back));
    ASSERT(given_back == HANDED * 65536u && memory_now().cached == 0);
    for (int i = 0; i < HANDED; i++) ASSERT(!resident(handed[i]));
}

/* The same in a thread that stays busy with other sizes: dm_decay never finds it idle, and it
 * kept 64 MiB of such slabs with decay running every 100 ms. dm_decay now takes them back (at most
 * once a second per busy thread) as the thread's own frees would have: it keeps 1 MiB of empty
 * slabs and the slab it allocates from, shown as `cached`; the rest goes back. A thread that
 * needs new slabs (batches) does the same itself, with no dm_ call from anyone else. */
#define BUSY_HANDED 128 /* 64 KiB blocks: eight 1 MiB slabs */
static void *busy_handed[BUSY_HANDED];
static pthread_barrier_t handed_over;
static volatile int stop_busy;

/* Busy with 64 B blocks: one at a time (`batches` NULL: it never needs a new slab), or in batches
 * of 2000 (it does, again and again). */
static void *allocate_then_stay_busy(void *batches) {
    for (int i = 0; i < BUSY_HANDED; i++) {
        CHECK(dm_allocate(65536, 0, &busy_handed[i]));
        memset(busy_handed[i], 0x5A, 65536);
    }
    pthread_barrier_wait(&handed_over);
    pthread_barrier_wait(&handed_over); /* all freed by the main thread */
    static void *batch[2000];
    int n = batches != NULL ? 2000 : 1;
    while (!__atomic_load_n(&stop_busy, __ATOMIC_SEQ_CST)) {
        for (int i = 0; i < n; i++) CHECK(dm_allocate(64, 0, &batch[i]));
        for (int i = 0; i < n; i++) CHECK(dm_free(batch[i]));
    }
    return NULL;
}

static int resident_blocks(void **blocks, int n) {
    int found = 0;
    for (int i = 0; i < n; i++) found += resident(blocks[i]);
    return found;
}

static void slabs_emptied_in_a_busy_thread(int batches) {
    CHECK(dm_trim(NULL));
    uint64_t limit = stats_now().limit;
    CHECK(dm_set_limit(UINT64_MAX)); /* 8 MiB are more than the batches' limit */
    pthread_t owner;
    ASSERT(pthread_barrier_init(&handed_over, NULL, 2) == 0);
    ASSERT(pthread_create(&owner, NULL, allocate_then_stay_busy, batches ? (void *)busy_handed : NULL) == 0);
    pthread_barrier_wait(&handed_over);
    for (int i = 0; i < BUSY_HANDED; i++) CHECK(dm_free(busy_handed[i]));
    /* Before the thread goes on: in batches, it may take them back at once. */
    ASSERT(resident_blocks(busy_handed, BUSY_HANDED) == BUSY_HANDED);
    pthread_barrier_wait(&handed_over);
    for (int waited = 0; resident_blocks(busy_handed, BUSY_HANDED) > 32 && waited < 5000; waited += 20) {
        if (!batches) CHECK(dm_decay(NULL)); /* in batches, the thread itself takes them back */
        sleep_ms(20);
    }
    /* One at a time, the thread never takes them back itself: dm_decay does, into the pool,
     * whose pages go back 100 ms later, at a later dm_decay or at an allocation of the thread's
     * off the fast path, whichever comes first (so not all in what dm_decay reports). */
    int left = resident_blocks(busy_handed, BUSY_HANDED);
    ASSERT(left <= 32);
    ASSERT(memory_now().cached >= (uint64_t)left * 65536);
    __atomic_store_n(&stop_busy, 1, __ATOMIC_SEQ_CST);
    ASSERT(pthread_join(owner, NULL) == 0);
    stop_busy = 0;
    ASSERT(pthread_barrier_destroy(&handed_over) == 0);
    CHECK(dm_set_limit(limit));
}

/* Whether the page at `p` is in memory; 0 also when it is no longer mapped. */
static int mapped_and_resident(void *p) {
    long page = sysconf(_SC_PAGESIZE);
    unsigned char in_core = 0;
    return mincore((void *)((uintptr_t)p & ~(uintptr_t)(page - 1)), (size_t)page, &in_core) == 0 && (in_core & 1);
}

/* Freed big blocks (written whole: their mappings keep their pages for the next block) and the
 * empty slabs of a freed batch go back ~100 ms later while the program goes on with small blocks
 * only, with no dm_decay and no big block: any allocation off the fast path gives back what is
 * past its time. Both stayed in memory for good before. */
#define BIG_KEPT 8
#define BIG_SIZE (600u * 1024) /* mappings of a length no block here had before: judged written */
static void kept_memory_decays_with_small_traffic(void) {
    CHECK(dm_trim(NULL));
    uint64_t limit = stats_now().limit;
    CHECK(dm_set_limit(UINT64_MAX));
    void *big[BIG_KEPT], *probe[BIG_KEPT + 1];
    for (int i = 0; i < BIG_KEPT; i++) {
        CHECK(dm_allocate(BIG_SIZE, 0, &big[i]));
        memset(big[i], 0x5A, BIG_SIZE);
        probe[i] = (char *)big[i] + BIG_SIZE - 1;
    }
    static void *batch[BATCH];
    for (int i = 0; i < BATCH; i++) {
        CHECK(dm_allocate(SIZE, 0, &batch[i]));
        *(volatile char *)batch[i] = 1;
    }
    probe[BIG_KEPT] = batch[BATCH - 20]; /* in a slab beyond those its thread keeps back */
    for (int i = 0; i < BIG_KEPT; i++) CHECK(dm_free(big[i]));
    for (int i = 0; i < BATCH; i++) CHECK(dm_free(batch[i]));
    int kept = 0;
    for (int i = 0; i <= BIG_KEPT; i++) kept += mapped_and_resident(probe[i]);
    ASSERT(kept == BIG_KEPT + 1);
    for (int waited = 0; kept > 0 && waited < 5000; waited += 20) {
        for (int i = 0; i < BATCH; i++) CHECK(dm_allocate(100, 0, &batch[i])); /* 100 KB: past the credit */
        for (int i = 0; i < BATCH; i++) CHECK(dm_free(batch[i]));
        sleep_ms(20);
        kept = 0;
        for (int i = 0; i <= BIG_KEPT; i++) kept += mapped_and_resident(probe[i]);
    }
    ASSERT(kept == 0);
    CHECK(dm_set_limit(limit));
}

/* A thread frees its own blocks of six sizes (3 KiB to 128 KiB, written whole), then only
 * allocates and frees 64 B blocks: never idle. What it kept for those sizes (the empty slabs it
 * allocated from, and those kept back) must go back at dm_decay all the same, within seconds; it
 * stayed for good before. */
static const size_t kept_sizes[] = {3000, 5000, 9000, 24000, 65536, 131072};
#define KINDS (sizeof kept_sizes / sizeof *kept_sizes)
#define KEPT_EACH 8
static void *kept[KINDS * KEPT_EACH];

static void *free_own_then_stay_busy(void *arg) {
    (void)arg;
    for (size_t i = 0; i < KINDS * KEPT_EACH; i++) {
        size_t size = kept_sizes[i / KEPT_EACH];
        CHECK(dm_allocate(size, 0, &kept[i]));
        memset(kept[i], 0x5A, size);
    }
    for (size_t i = 0; i < KINDS * KEPT_EACH; i++) CHECK(dm_free(kept[i]));
    pthread_barrier_wait(&handed_over);
    while (!__atomic_load_n(&stop_busy, __ATOMIC_SEQ_CST)) {
        void *p;
        CHECK(dm_allocate(64, 0, &p));
        CHECK(dm_free(p));
    }
    return NULL;
}

static void kept_by_a_busy_thread(void) {
    CHECK(dm_trim(NULL));
    pthread_t owner;
    ASSERT(pthread_barrier_init(&handed_over, NULL, 2) == 0);
    ASSERT(pthread_create(&owner, NULL, free_own_then_stay_busy, NULL) == 0);
    pthread_barrier_wait(&handed_over);
    ASSERT(resident_blocks(kept, KINDS * KEPT_EACH) == KINDS * KEPT_EACH);
    uint64_t cached = memory_now().cached;
    ASSERT(cached >= KEPT_EACH * (3000 + 5000 + 9000 + 24000 + 65536 + 131072));
    for (int waited = 0; resident_blocks(kept, KINDS * KEPT_EACH) > 0 && waited < 5000; waited += 20) {
        CHECK(dm_decay(NULL));
        sleep_ms(20);
    }
    ASSERT(resident_blocks(kept, KINDS * KEPT_EACH) == 0);
    ASSERT(memory_now().cached < cached / 8);
    __atomic_store_n(&stop_busy, 1, __ATOMIC_SEQ_CST);
    ASSERT(pthread_join(owner, NULL) == 0);
    stop_busy = 0;
    ASSERT(pthread_barrier_destroy(&handed_over) == 0);
}

int main(int argc, char **argv) {
    (void)argc;
    static void *blocks[BATCH];
    if (getenv("DM_BACKGROUND_DECAY_MS") != NULL) {
        ASSERT(!decay_thread_runs());
        CHECK(dm_decay(NULL)); /* the library's first use starts the thread */
        background_decay_gives_back(blocks);
        printf("memory_reuse: OK\n");
        return 0;
    }

    /* What live blocks occupy: at most 1.25 x their bytes + 16 B each, at every size (slots of
     * four classes per doubling, heap chunks, page-rounded mappings). */
    static const size_t sizes[] = {1, 16, 17, 64, 100, 200, 1000, 4097, 5000, 8192, 20000, 200000, 1 << 20};
    void *p;
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        enum { N = 50 };
        static void *some[N];
        for (int i = 0; i < N; i++) CHECK(dm_allocate(sizes[k], 0, &some[i]));
        dm_stats s = stats_now();
        dm_memory_stats m = memory_now();
        ASSERT(s.capacity == N * sizes[k] && m.occupied >= s.capacity);
        if (m.occupied * 4 > s.capacity * 5 + N * 64) {
            fprintf(stderr, "%zu B blocks occupy %llu bytes for %llu\n", sizes[k], (unsigned long long)m.occupied,
                    (unsigned long long)s.capacity);
            return 1;
        }
        for (int i = 0; i < N; i++) CHECK(dm_free(some[i]));
        ASSERT(memory_now().occupied == 0);
    }
    dm_stats s;
    CHECK(dm_set_limit((uint64_t)BATCH * SIZE));

    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < BATCH; i++) {
            CHECK(dm_allocate(SIZE, 0, &blocks[i]));
            *(volatile char *)blocks[i] = 1;
        }
        s = stats_now();
        ASSERT(s.reserved == (uint64_t)BATCH * SIZE && memory_now().occupied >= s.capacity);
        /* The whole limit is in use: one byte more does not fit. */
        EXPECT(dm_allocate(1, 0, &p), DM_ERR_LIMIT);
        /* A slab that empties late (the thread keeps the first 16 back) and is not the one the
         * thread allocates from (that holds the last few blocks and stays its own). */
        void *probe = blocks[BATCH - 20];
        for (int i = 0; i < BATCH; i++) CHECK(dm_free(blocks[i]));
        s = stats_now();
        dm_memory_stats m = memory_now();
        ASSERT(s.count == 0 && s.capacity == 0 && m.occupied == 0 && s.reserved == 0);
        /* The batch's 63 slabs are empty; beyond the 16 its thread keeps, they are kept with their pages. */
        ASSERT(m.cached >= 32u * 65536);
        if (round == 0) {
            ASSERT(resident(probe));
            continue; /* the next batch reuses them, with the quota all its own */
        }
        uint64_t given_back = 0;
        CHECK(dm_trim(&given_back));
        /* All of `cached`, which counts the empty slabs the thread allocates from (one per size
         * class used so far), and nothing else. */
        ASSERT(given_back == m.cached);
        ASSERT(memory_now().cached == 0);
        ASSERT(!resident(probe));
    }
    /* The slab a thread allocates from keeps the pages of its freed blocks: `cached` shows them
     * (the slots it handed out, not the whole 1 MiB slab), and dm_trim gives them back. */
    void *medium;
    CHECK(dm_allocate(20000, 0, &medium));
    memset(medium, 0xFF, 20000);
    ASSERT(memory_now().cached == 0);
    CHECK(dm_free(medium));
    uint64_t shown = memory_now().cached, current_back = 0;
    ASSERT(resident(medium) && shown >= 20000 && shown < (1u << 20));
    CHECK(dm_trim(&current_back));
    ASSERT(!resident(medium) && current_back == shown && memory_now().cached == 0);
    slabs_of_ended_threads_emptied_later();
    slabs_emptied_by_another_thread();
    slabs_emptied_in_a_busy_thread(0);
    slabs_emptied_in_a_busy_thread(1);
    kept_memory_decays_with_small_traffic();
    kept_by_a_busy_thread();
    /* dm_decay: nothing is due right after the frees; 100 ms later the pool's empty slabs are
     * (the thread's own stay), with no other call into the library in between. */
    for (int i = 0; i < BATCH; i++) CHECK(dm_allocate(SIZE, 0, &blocks[i]));
    void *probe = blocks[BATCH - 20];
    *(volatile char *)probe = 1;
    for (int i = 0; i < BATCH; i++) CHECK(dm_free(blocks[i]));
    uint64_t kept = memory_now().cached, decayed = 1;
    ASSERT(kept >= 32u * 65536 && resident(probe));
    CHECK(dm_decay(&decayed));
    ASSERT(decayed == 0 && memory_now().cached == kept);
    struct timespec wait = {0, 150 * 1000 * 1000};
    nanosleep(&wait, NULL);
    CHECK(dm_decay(&decayed));
    ASSERT(decayed > 0 && memory_now().cached == kept - decayed && memory_now().cached <= THREAD_KEEPS);
    ASSERT(!resident(probe));
    CHECK(dm_decay(NULL));
    CHECK(dm_trim(NULL));

    /* dm_set_background_decay: the same with no call into the library at all. */
    ASSERT(!decay_thread_runs());
    CHECK(dm_set_background_decay(20));
    CHECK(dm_set_background_decay(25)); /* a new interval: still one thread */
    background_decay_gives_back(blocks);
    /* And from the environment, in a process of its own, which prints OK. */
    fflush(stdout);
    ASSERT(setenv("DM_BACKGROUND_DECAY_MS", "20", 1) == 0);
    execv(argv[0], argv); /* not /proc/self/exe: under valgrind that is valgrind's own */
    perror("execv");
    return 1;
}
