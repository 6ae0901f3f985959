/* Every block reads zero when handed out, whatever happened to its memory before, and keeps what
 * was written to it while it is live (issue 13): threads allocate blocks of mixed sizes (mostly
 * 8-128 KiB, the medium slots whose reuse is zeroed either in place or by giving pages back, as the
 * program was found to write its blocks), write a byte at each end or the whole block with a tag of
 * their own, resize some (dm_reallocate: in place or moved), and free them in random order, a third
 * through another thread (remote frees). Each thread's blocks of one size class are written alike
 * for a while, so the library finds some classes barely touched and others written, and changes its
 * mind as the pattern flips. Every byte of every new block (and of a block's growth) is checked in
 * the stretches that write whole blocks (the first 4 KiB and the last byte in the others: reading a
 * page brings it into memory, which would make the blocks look written). Before every free and
 * resize the block must still hold its tag and size: a slot handed out twice, or a block zeroed
 * while live, shows as another tag or zero. Meanwhile another thread calls dm_trim and dm_decay
 * over and over, which visit the workers' heaps to give back their empty slabs' pages: a page
 * given back under a live block would show as zero. The counters end at zero. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include "check.h"

enum { THREADS = 4, ROUNDS = 300, LIVE = 48, EXCHANGE = 64 };

static uint64_t next_random(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 11;
}

static size_t pick_size(uint64_t *s) {
    switch (next_random(s) % 8) {
    case 0: return 1 + next_random(s) % 8192;            /* small slots */
    case 1: return (128 << 10) + next_random(s) % (256 << 10); /* mappings of their own */
    default: return 8192 + next_random(s) % (120 << 10); /* medium slots */
    }
}

static void all_zero(const unsigned char *p, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            fprintf(stderr, "%s reads 0x%02x at offset %zu\n", what, p[i], i);
            exit(1);
        }
    }
}

/* A live block as its holder wrote it. */
typedef struct {
    unsigned char *p;
    size_t n;
    unsigned char tag; /* never 0, so that a block zeroed while live shows */
    int whole;         /* every byte holds the tag, else its first and last */
} block;

static _Atomic(block *) exchange[EXCHANGE]; /* blocks handed to whichever thread frees them */
static atomic_ulong steps;                    /* the workers' steps so far */

static void write_tag(block *b) {
    if (b->whole) {
        memset(b->p, b->tag, b->n);
    } else {
        b->p[0] = b->tag;
        b->p[b->n - 1] = b->tag;
    }
}

static void expect_tag(const block *b, size_t at, size_t n) {
    for (size_t i = at; i < at + n; i++) {
        if (b->p[i] != b->tag) {
            fprintf(stderr, "a live block of %zu bytes reads 0x%02x at offset %zu, written 0x%02x: "
                            "its memory was handed out again, or given back\n", b->n, b->p[i], i, b->tag);
            exit(1);
        }
    }
}

/* The block still holds what its holder wrote, at its size. */
static void intact(const block *b) {
    size_t size = 0;
    CHECK(dm_block_size(b->p, &size));
    ASSERT(size == b->n);
    if (b->whole) {
        expect_tag(b, 0, b->n);
    } else {
        expect_tag(b, 0, 1);
        expect_tag(b, b->n - 1, 1);
    }
}

static void release(block *b) {
    intact(b);
    CHECK(dm_free(b->p));
    b->p = NULL;
}

/* Resizes `b` to `n` bytes: what it held stays, what it gains reads zero. */
static void resize(block *b, size_t n, int whole) {
    intact(b);
    void *q;
    CHECK(dm_reallocate(b->p, n, &q));
    size_t old = b->n;
    b->p = q;
    b->n = n;
    if (b->whole) {
        expect_tag(b, 0, old < n ? old : n);
    } else {
        expect_tag(b, 0, 1);
        if (n >= old) expect_tag(b, old - 1, 1);
    }
    if (n > old) {
        size_t grown = n - old;
        all_zero(b->p + old, whole || grown < 4096 ? grown : 4096, "a resized block's growth");
        all_zero(b->p + n - 1, 1, "a resized block's growth");
    }
    b->whole = whole;
    write_tag(b);
}

static void *worker(void *arg) {
    size_t id = (size_t)arg;
    uint64_t s = 0x9e3779b97f4a7c15ULL * (id + 1);
    block live[LIVE] = {0};
    for (size_t r = 0; r < ROUNDS; r++) {
        /* Written whole in some stretches, a byte at each end in others. */
        int whole = (r / 50 + id) % 2;
        for (size_t k = 0; k < LIVE / 4; k++) {
            atomic_fetch_add(&steps, 1);
            block *b = &live[next_random(&s) % LIVE];
            if (b->p) {
                uint64_t what = next_random(&s) % 6;
                if (what == 0) {
                    resize(b, pick_size(&s), whole);
                    continue;
                }
                if (what <= 2) {
                    /* Hand it to another thread; free what was there. */
                    block *mine = malloc(sizeof *mine);
                    ASSERT(mine);
                    *mine = *b;
                    block *old = atomic_exchange(&exchange[next_random(&s) % EXCHANGE], mine);
                    if (old) {
                        release(old);
                        free(old);
                    }
                    b->p = NULL;
                } else {
                    release(b);
                }
            }
            size_t n = pick_size(&s);
            void *p;
            CHECK(dm_allocate(n, 0, &p));
            b->p = p;
            b->n = n;
            if (whole) {
                all_zero(p, n, "a new block");
            } else {
                all_zero(p, n < 4096 ? n : 4096, "a new block");
                all_zero(b->p + n - 1, 1, "a new block");
            }
            b->tag = (unsigned char)(1 + next_random(&s) % 255);
            b->whole = whole;
            write_tag(b);
        }
    }
    for (size_t i = 0; i < LIVE; i++)
        if (live[i].p) release(&live[i]);
    return NULL;
}

static atomic_int working = THREADS;

/* Gives back what the working threads keep, for as long as they work: once per step of theirs
 * at most (back to back, they took the run under valgrind from 10 s to 7 minutes). */
static void *trimmer(void *arg) {
    unsigned long *visits = arg, seen = 0;
    while (atomic_load(&working) > 0) {
        if (atomic_load(&steps) < seen + 1) {
            sched_yield();
            continue;
        }
        seen = atomic_load(&steps);
        uint64_t given_back;
        CHECK(*visits % 2 ? dm_decay(&given_back) : dm_trim(&given_back));
        ++*visits;
    }
    return NULL;
}

int main(void) {
    pthread_t t[THREADS], trim;
    unsigned long visits = 0;
    for (size_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    pthread_create(&trim, NULL, trimmer, &visits);
    for (size_t i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        atomic_fetch_sub(&working, 1);
    }
    pthread_join(trim, NULL);
    for (size_t i = 0; i < EXCHANGE; i++) {
        block *b = atomic_exchange(&exchange[i], NULL);
        if (b) {
            release(b);
            free(b);
        }
    }
    dm_stats st = stats_now();
    ASSERT(st.count == 0 && st.capacity == 0 && st.reserved == 0);
    printf("zeroing: OK (%d threads, %d steps each, every new block zero, every live block intact; "
           "%lu trims and decays meanwhile)\n", THREADS, ROUNDS * LIVE / 4, visits);
    return 0;
}
