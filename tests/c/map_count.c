/* The limits on a process's mappings: their number and their size (RLIMIT_AS, at the end).
 *
 * A process at vm.max_map_count (65,530 mappings by default: many threads, mapped files or
 * blocks; Elasticsearch asks for four times that). The system merges adjacent mappings of the
 * same kind into one of its own, and cutting a part out of the middle of one makes one more,
 * which it refuses there: munmap fails with ENOMEM. The library forgot a kept mapping whose
 * munmap failed (found by trying at 6383430): 40 written 500 KB blocks, freed, then trimmed at
 * the limit, stayed resident for good (20 MB, still there after the limit was lifted), while
 * dm_trim said it gave them back and the stats showed nothing cached; the oldest written
 * mappings evicted when more than 1,024 are kept went the same way.
 *
 * Here the program takes every mapping the system will give it (single pages, read-only and
 * writable in turn, so that none merge), then checks at the limit: dm_trim gives the pages back
 * for real; every allocation, resize and free answers DM_OK or DM_ERR_NO_MEMORY and keeps the
 * library's promises (zeroed blocks, data kept across a resize, exact counts); and, the limit
 * lifted, nothing was lost: the process's resident memory is back where it started. */
#define _DEFAULT_SOURCE
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include "check.h"

enum { MOST = 70000, HELD = 1100 };
static void *ours[MOST]; /* static: at the limit, malloc may have no room either */
static size_t taken;
static void *held[HELD];

/* The process's size in pages: its mappings' addresses, and those of them in memory. */
static void statm(long *size, long *resident) {
    FILE *f = fopen("/proc/self/statm", "r");
    ASSERT(f && fscanf(f, "%ld %ld", size, resident) == 2);
    fclose(f);
}

static long resident_kib(void) {
    long size, resident;
    statm(&size, &resident);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static size_t address_space(void) {
    long size, resident;
    statm(&size, &resident);
    return (size_t)size * (size_t)sysconf(_SC_PAGESIZE);
}

static void take_every_mapping(void) {
    for (taken = 0; taken < MOST; taken++) {
        int prot = taken % 2 ? PROT_READ : PROT_READ | PROT_WRITE;
        ours[taken] = mmap(NULL, 4096, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (ours[taken] == MAP_FAILED) return;
    }
    printf("map_count: the system gave %d mappings without refusing: no limit to test\n", MOST);
    exit(1);
}

static void give_them_back(void) {
    for (size_t i = 0; i < taken; i++) ASSERT(munmap(ours[i], 4096) == 0);
}

static uint64_t cached(void) {
    dm_memory_stats m;
    CHECK(dm_get_memory_stats(&m));
    return m.cached;
}

static int all_zero(const unsigned char *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (b[i]) return 0;
    return 1;
}

/* At the limit: blocks of every kind, each DM_OK (zeroed, then written) or DM_ERR_NO_MEMORY. */
static void allocations_answer_cleanly(void) {
    static const size_t sizes[] = {16, 100, 4096, 20000, 65536, 100000, 200000, 1 << 20, 3 << 20};
    static void *small[20000];
    int refused = 0, served = 0;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        void *p = NULL;
        dm_status s = dm_allocate(sizes[k], 0, &p);
        ASSERT(s == DM_OK || s == DM_ERR_NO_MEMORY);
        if (s == DM_OK) {
            ASSERT(all_zero(p, sizes[k]));
            memset(p, 0x5a, sizes[k]);
            /* A resize moves or grows it, or is refused with the block as it was. */
            void *q = NULL;
            s = dm_reallocate(p, sizes[k] * 3, &q);
            ASSERT(s == DM_OK || s == DM_ERR_NO_MEMORY);
            if (s == DM_OK) {
                ASSERT(((unsigned char *)q)[sizes[k] - 1] == 0x5a && all_zero((unsigned char *)q + sizes[k], sizes[k] * 2));
                p = q;
            } else {
                ASSERT(((unsigned char *)p)[sizes[k] - 1] == 0x5a);
            }
            CHECK(dm_free(p));
            served++;
        } else {
            refused++;
        }
    }
    size_t n = 0;
    dm_status s = DM_OK;
    while (n < sizeof small / sizeof small[0] && (s = dm_allocate(100, 0, &small[n])) == DM_OK) n++;
    ASSERT(s == DM_OK || s == DM_ERR_NO_MEMORY);
    for (size_t i = 0; i < n; i++) CHECK(dm_free(small[i]));
    printf("map_count: at the limit %d sizes served, %d refused; %zu blocks of 100 B in a row\n", served, refused, n);
    ASSERT(stats_now().count == 0 && stats_now().reserved == 0);
}

int main(void) {
    /* Before the limit: the library's state, this program's stdio. */
    void *p;
    CHECK(dm_allocate(64, 0, &p));
    CHECK(dm_free(p));
    long start = resident_kib();
    printf("map_count: %ld KiB resident at the start\n", start);
    fflush(stdout);

    /* 1. Written blocks freed (kept with their pages), then trimmed at the limit. What the
     * slabs cache is left out of the checks: trimming them takes a little of the C heap, which
     * glibc may have no room for at the limit (seen: its 1 MiB mmap refused, 4 KiB kept). */
    for (int i = 0; i < 40; i++) {
        CHECK(dm_allocate(500000, 0, &held[i]));
        memset(held[i], 0x11, 500000);
    }
    uint64_t slabs = cached();
    for (int i = 0; i < 40; i++) CHECK(dm_free(held[i]));
    uint64_t kept = cached() - slabs;
    ASSERT(kept >= 15u << 20);
    take_every_mapping();
    long before_trim = resident_kib();
    uint64_t given = 0;
    CHECK(dm_trim(&given));
    long after_trim = resident_kib();
    printf("map_count: %zu mappings taken; %llu KiB cached, dm_trim gave back %llu KiB, resident %ld -> %ld KiB\n",
           taken, (unsigned long long)kept >> 10, (unsigned long long)given >> 10, before_trim, after_trim);
    ASSERT(given >= kept);
    ASSERT(before_trim - after_trim >= (long)(kept >> 10) * 3 / 4); /* really gone */
    ASSERT(cached() <= slabs);

    allocations_answer_cleanly();
    give_them_back();

    /* 2. More than the 1,024 mappings kept at most, freed at the limit: the oldest, written, are
     * evicted. Half the pages of each written: enough to be kept with them. */
    for (int i = 0; i < HELD; i++) {
        CHECK(dm_allocate(135000, 0, &held[i]));
        memset(held[i], 0x22, 70000);
    }
    take_every_mapping();
    for (int i = 0; i < HELD; i++) CHECK(dm_free(held[i]));
    allocations_answer_cleanly();
    CHECK(dm_trim(NULL));
    give_them_back();

    /* 3. RLIMIT_AS, the other limit on mappings: 40 MiB of freed big blocks' addresses kept,
     * 8 MiB of address space left. Small blocks must get the kept addresses: with the library of
     * 6383430 they were refused after 8.5 MB (no new slab could be mapped, and the C heap it
     * fell back on could not grow), with 40 MiB kept. */
    for (int i = 0; i < 40; i++) CHECK(dm_allocate(1 << 20, 0, &held[i]));
    for (int i = 0; i < 40; i++) CHECK(dm_free(held[i]));
    struct rlimit as;
    ASSERT(getrlimit(RLIMIT_AS, &as) == 0);
    struct rlimit tight = {(rlim_t)address_space() + (8u << 20), as.rlim_max};
    ASSERT(setrlimit(RLIMIT_AS, &tight) == 0);
    size_t n = 0, bytes = 0;
    dm_status s = DM_OK;
    while (n < HELD && bytes < (32u << 20) && (s = dm_allocate(n % 2 ? 3000 : 60000, 0, &held[n])) == DM_OK)
        bytes += n++ % 2 ? 3000 : 60000;
    ASSERT(s == DM_OK || s == DM_ERR_NO_MEMORY);
    ASSERT(setrlimit(RLIMIT_AS, &as) == 0);
    printf("map_count: under RLIMIT_AS, 8 MiB of address space free and 40 MiB kept: %zu KiB of small blocks served (%s)\n",
           bytes >> 10, dm_status_message(s));
    ASSERT(bytes >= 24u << 20);
    for (size_t i = 0; i < n; i++) CHECK(dm_free(held[i]));

    /* The limits lifted: everything works, and nothing stayed in memory. */
    allocations_answer_cleanly();
    CHECK(dm_trim(NULL));
    long end = resident_kib();
    printf("map_count: %ld KiB resident at the end\n", end);
    ASSERT(end - start < 8 * 1024);
    printf("map_count: OK\n");
    return 0;
}
