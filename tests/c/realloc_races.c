/* dm_reallocate racing dm_free, another dm_reallocate, a dm_clean of the block's cleaner, or a
 * dm_cleaner_register, of the same block, while a third thread calls dm_trim without pause (it
 * unmaps the freed big blocks' kept mappings). The header says such a race has one winner and the
 * loser gets DM_ERR_NOT_LIVE (a clean may also find the block in neither place). A move used to
 * read the old block before claiming it: a free in between, then a trim, left it copying from an
 * unmapped mapping (SIGSEGV), and its own new block could land on the freed address, which it
 * then freed and returned. Each round checks that exactly one call won (both, when the resize stayed in
 * place: the other then had the same block), that the surviving block holds the old bytes and
 * zeros after them, that a cleaner ran once; at the end the counters are zero. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include "check.h"

enum { SECONDS_PER_CASE = 2 };

static _Atomic(void *) target;
static atomic_int round_no, answered, stop;
static atomic_int cleaner_runs;
static size_t other_to;          /* the racer's new size (0: it frees instead) */
static int other_cleans;         /* the racer cleans `handle` instead */
static int other_registers;      /* the racer attaches a cleaner instead */
static dm_cleaner handle;
static dm_status other_got;
static void *other_out;

static void count(void *ctx) {
    (void)ctx;
    atomic_fetch_add(&cleaner_runs, 1);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The other side of each round: waits for the round to start, then frees or resizes the block. */
static void *racer(void *arg) {
    (void)arg;
    for (int seen = 0;;) {
        int r;
        while ((r = atomic_load(&round_no)) == seen)
            if (atomic_load(&stop)) return NULL;
        seen = r;
        void *p = atomic_load(&target);
        other_out = NULL;
        dm_cleaner h;
        other_got = other_registers ? dm_cleaner_register(p, count, NULL, &h)
                    : other_cleans  ? dm_clean(handle)
                    : other_to      ? dm_reallocate(p, other_to, &other_out)
                                    : dm_free(p);
        atomic_store(&answered, r);
    }
}

static void *trimmer(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) CHECK(dm_trim(NULL));
    return NULL;
}

/* The survivor of a round: `size` bytes, the first `kept` of them 0x5a, the rest zero; freed
 * after when `free_it`. */
static void check_survivor_with(void *q, size_t size, size_t kept, int free_it) {
    size_t got = 0;
    CHECK(dm_block_size(q, &got));
    ASSERT(got == size);
    const unsigned char *b = q;
    for (size_t i = 0; i < size; i++) {
        if (b[i] != (i < kept ? 0x5a : 0)) {
            fprintf(stderr, "the survivor %p of %zu bytes (%zu kept) reads %#x at %zu\n", q, size, kept, b[i], i);
            exit(1);
        }
    }
    if (free_it) CHECK(dm_free(q));
}

static void check_survivor(void *q, size_t size, size_t kept) { check_survivor_with(q, size, kept, 1); }

/* A new block of `from` bytes, all 0x5a; with a cleaner (handle in `*h`) when `h` is not NULL. */
static void *filled(size_t from, dm_cleaner *h) {
    void *p;
    CHECK(dm_allocate(from, 0, &p));
    memset(p, 0x5a, from);
    if (h) CHECK(dm_cleaner_register(p, count, NULL, h));
    return p;
}

/* Sends the racer at `p`; returns the round's number, for `end_round`. */
static int start_round(void *p) {
    atomic_store(&target, p);
    return atomic_fetch_add(&round_no, 1) + 1;
}

/* Waits for the racer's answer in round `r`. */
static void end_round(int r) {
    while (atomic_load(&answered) != r) {
    }
}

/* Rounds of one case for SECONDS_PER_CASE: `from` bytes resized to `to` here, freed (`other` 0)
 * or resized to `other` there, with a cleaner on the block when `cleaner`. */
static void race(size_t from, size_t to, size_t other, int cleaner) {
    long rounds = 0, won_here = 0, won_there = 0;
    other_to = other;
    int runs_before = atomic_load(&cleaner_runs);
    double end = now_s() + SECONDS_PER_CASE;
    while (now_s() < end) {
        dm_cleaner h;
        void *p = filled(from, cleaner ? &h : NULL), *q = NULL;
        int r = start_round(p);
        dm_status got = dm_reallocate(p, to, &q);
        end_round(r);
        size_t kept_here = from < to ? from : to, kept_there = from < other ? from : other;
        if (got == DM_OK && other_got == DM_OK) {
            /* Both may win only when the first stayed in place: the second then had the same block. */
            ASSERT(q == p || other_out == p);
            if (other_to == 0) {
                ASSERT(q == p); /* resized in place, then freed there */
            } else if (q == p && other_out == p) {
                /* Both in place (a growth and a shrink of a mapping): either may have come last. */
                size_t last;
                CHECK(dm_block_size(p, &last));
                ASSERT(last == to || last == other);
                check_survivor(p, last, kept_here < kept_there ? kept_here : kept_there);
            } else {
                check_survivor(q == p ? other_out : q, q == p ? other : to, q == p ? kept_here : kept_there);
            }
        } else if (got == DM_OK) {
            EXPECT(other_got, DM_ERR_NOT_LIVE);
            check_survivor(q, to, kept_here);
            won_here++;
        } else {
            EXPECT(got, DM_ERR_NOT_LIVE);
            ASSERT(q == NULL);
            EXPECT(other_got, DM_OK);
            if (other_to) check_survivor(other_out, other_to, kept_there);
            won_there++;
        }
        rounds++;
    }
    if (cleaner) ASSERT(atomic_load(&cleaner_runs) - runs_before == rounds);
    dm_stats s = stats_now();
    ASSERT(s.count == 0 && s.reserved == 0 && s.live_cleaners == 0);
    char against[64];
    if (other) snprintf(against, sizeof against, "a resize to %zu", other);
    else snprintf(against, sizeof against, "a free");
    printf("%zu -> %zu against %s%s: %ld rounds, the resize won %ld, the other %ld (the rest: in place, then the other)\n",
           from, to, against, cleaner ? ", with a cleaner" : "", rounds, won_here, won_there);
}

/* Rounds of `from` bytes with a cleaner moved to `to` here while the racer cleans that cleaner's
 * handle: the clean releases the block wherever it is, before the move (the move then fails),
 * after it (the new block goes), or, caught in between, finds it in neither place and leaves the
 * cleaner on the new block, where a second clean finds it. Either way the cleaner runs once. */
static void race_clean(size_t from, size_t to) {
    long rounds = 0, before = 0, after = 0, between = 0;
    other_cleans = 1;
    int runs_before = atomic_load(&cleaner_runs);
    double end = now_s() + SECONDS_PER_CASE;
    while (now_s() < end) {
        void *p = filled(from, &handle), *q = NULL;
        int r = start_round(p);
        dm_status got = dm_reallocate(p, to, &q);
        end_round(r);
        if (got != DM_OK) {
            EXPECT(got, DM_ERR_NOT_LIVE);
            EXPECT(other_got, DM_OK);
            before++;
        } else if (other_got == DM_OK) {
            size_t size;
            EXPECT(dm_block_size(q, &size), DM_ERR_NOT_LIVE);
            after++;
        } else {
            EXPECT(other_got, DM_ERR_NOT_LIVE);
            check_survivor_with(q, to, from < to ? from : to, 0);
            CHECK(dm_clean(handle)); /* still on the new block */
            between++;
        }
        rounds++;
    }
    other_cleans = 0;
    ASSERT(atomic_load(&cleaner_runs) - runs_before == rounds);
    dm_stats s = stats_now();
    ASSERT(s.count == 0 && s.reserved == 0 && s.live_cleaners == 0);
    printf("%zu -> %zu with a cleaner, against a clean of it: %ld rounds; the clean came before the move %ld, "
           "after it %ld, in between %ld\n", from, to, rounds, before, after, between);
}

/* Rounds of `from` bytes moved to `to` here while the racer attaches a cleaner to the block: it
 * lands on the old block before the move claims it (and moves along) or finds no block; a
 * cleaner that was attached runs once, when the moved block is freed. */
static void race_register(size_t from, size_t to) {
    long rounds = 0, attached = 0;
    other_registers = 1;
    int runs_before = atomic_load(&cleaner_runs);
    double end = now_s() + SECONDS_PER_CASE;
    while (now_s() < end) {
        void *p = filled(from, NULL), *q = NULL;
        int r = start_round(p);
        CHECK(dm_reallocate(p, to, &q));
        end_round(r);
        if (other_got == DM_OK) attached++;
        else EXPECT(other_got, DM_ERR_NOT_LIVE);
        check_survivor(q, to, from < to ? from : to);
        rounds++;
    }
    other_registers = 0;
    ASSERT(atomic_load(&cleaner_runs) - runs_before == attached);
    dm_stats s = stats_now();
    ASSERT(s.count == 0 && s.reserved == 0 && s.live_cleaners == 0);
    printf("%zu -> %zu against a cleaner attached to it: %ld rounds, %ld attached (each ran once)\n", from, to,
           rounds, attached);
}

int main(void) {
    CHECK(dm_set_limit(256u << 20));
    pthread_t other, trims;
    ASSERT(pthread_create(&other, NULL, racer, NULL) == 0);
    ASSERT(pthread_create(&trims, NULL, trimmer, NULL) == 0);
    race(200 << 10, 300 << 10, 0, 0); /* a mapping: its kept address is reused by the new block */
    race(200 << 10, 300 << 10, 0, 1);
    /* A slot with cleaners always moves, even within its class: a free that comes first puts
     * the slot back, and the move's new block may be that same slot. */
    race(64, 64, 0, 1);
    race(20000, 100000, 0, 0); /* medium slots */
    race(64, 1000, 0, 0);      /* small slots */
    race(64, 1000, 0, 1);
    race(64, 1000, 5000, 0); /* two moves of one block */
    race(20000, 200 << 10, 64, 1);
    /* Mappings grown by less than their size where the addresses after them are taken (the
     * usual case: new mappings go below older ones) move by their pages (mremap), and their old
     * addresses are free from then on; shrunk, they stay and give their tail back. */
    race(1 << 20, 3 << 19, 0, 0);
    race(600 << 10, 1 << 20, 0, 1);
    race(1 << 20, 200 << 10, 0, 1);
    race(1 << 20, 3 << 19, 200 << 10, 0); /* a growth against a shrink */
    race_clean(64, 1000);
    race_clean(200 << 10, 100);
    race_clean(1 << 20, 3 << 19);
    race_register(64, 1000);
    race_register(100, 200 << 10);
    race_register(1 << 20, 3 << 19);
    atomic_store(&stop, 1);
    ASSERT(pthread_join(other, NULL) == 0);
    ASSERT(pthread_join(trims, NULL) == 0);
    printf("realloc_races: OK\n");
    return 0;
}
