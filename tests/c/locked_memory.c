/* A program that locks its memory (mlockall, as real-time programs and key stores do): the
 * system then refuses to drop a mapping's pages (madvise(MADV_DONTNEED) fails with EINVAL), and a
 * freed big block's mapping that the library kept for reuse as if its pages read zero again gave
 * the next block the old block's bytes: 3 MiB and 5 MB blocks read 0xab at their first byte
 * (found by trying at 0156149). Each size is allocated, written, freed and allocated again, the
 * new block checked zero: at once, and after the kept mappings' time is up (dm_decay gives
 * their pages back then). */
#define _DEFAULT_SOURCE
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include "check.h"

static const size_t SIZES[] = {64, 4096, 40000, 100000, 200000, 1 << 20, 3 << 20, 5000000};
enum { KINDS = sizeof SIZES / sizeof SIZES[0] };

/* The first byte that is not zero in a block of `n`, or `n`. */
static size_t first_not_zero(const unsigned char *b, size_t n) {
    size_t i = 0;
    while (i < n && b[i] == 0) i++;
    return i;
}

static int reused_blocks_read_zero(const char *when, int wait_for_decay) {
    int bad = 0;
    for (size_t k = 0; k < KINDS; k++) {
        size_t n = SIZES[k];
        void *p, *q;
        CHECK(dm_allocate(n, 0, &p));
        memset(p, 0xab, n);
        CHECK(dm_free(p));
        if (wait_for_decay) {
            nanosleep(&(struct timespec){.tv_nsec = 150 * 1000 * 1000}, NULL); /* past the kept time */
            CHECK(dm_decay(NULL));
        }
        CHECK(dm_allocate(n, 0, &q));
        size_t at = first_not_zero(q, n);
        if (at < n) {
            printf("locked_memory: %s: a new %zu-byte block reads 0x%02x at %zu\n", when, n, ((unsigned char *)q)[at], at);
            bad++;
        }
        CHECK(dm_free(q));
    }
    return bad;
}

int main(void) {
    /* Locking takes privilege (CAP_IPC_LOCK, as root) or a high enough RLIMIT_MEMLOCK: where
     * neither is had, the program says so and fails (it cannot check anything). Pages are locked
     * as they are touched (MCL_ONFAULT), which is enough for the system to refuse dropping them. */
    struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
    setrlimit(RLIMIT_MEMLOCK, &unlimited); /* where allowed */
    if (mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0) {
        perror("locked_memory: mlockall");
        return 1;
    }
    size_t room = 32u << 20; /* more than the blocks below take at once */
    void *probe = mmap(NULL, room, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (probe == MAP_FAILED) {
        fprintf(stderr, "locked_memory: the system will not lock %zu bytes more (RLIMIT_MEMLOCK without "
                        "CAP_IPC_LOCK): run as root or with ulimit -l unlimited\n", room);
        return 1;
    }
    munmap(probe, room);
    int bad = 0;
    for (int round = 0; round < 3; round++) {
        bad += reused_blocks_read_zero("at once", 0);
        bad += reused_blocks_read_zero("after decay", 1);
        CHECK(dm_trim(NULL));
    }
    ASSERT(bad == 0);
    dm_stats s = stats_now();
    ASSERT(s.count == 0 && s.reserved == 0);
    printf("locked_memory: OK\n");
    return 0;
}
