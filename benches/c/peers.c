/* directmem beside glibc, jemalloc and mimalloc on the patterns real programs make.
 *
 * One process measures one allocator on one pattern and prints one line:
 *   <allocator> <pattern> <threads> <ns per operation> <peak RSS in KiB>
 * scripts/bench-peers.sh runs every (allocator, pattern, threads) in alternating rounds and
 * prints the table. The allocators:
 *   directmem  dm_allocate + dm_free (the limit set to UINT64_MAX);
 *   glibc      calloc + free;
 *   jemalloc   calloc + free with libjemalloc preloaded (the script sets LD_PRELOAD);
 *   mimalloc   calloc + free with libmimalloc preloaded (its calloc is mi_calloc).
 * Every allocation is zeroed (calloc), as dm_allocate's always is.
 *
 * Patterns (an "operation" is one allocation and its free):
 *   pair-N      allocate N bytes, free it, again;
 *   batch-N     allocate 1000 blocks of N bytes, write one byte in each, free them all, again;
 *   mixed       1000 slots; each step frees a random slot's block and puts a new one there, of a
 *               size drawn log-uniformly from 16 B to 4 MiB; its first byte is written;
 *   churn       create a thread, allocate and free 64 B in it, join it;
 *   churn-1M    churn, after a thread that ended left 1,000,000 live 64 B blocks;
 *   handoff-N   a producer thread allocates N bytes, writes one byte, hands the block over through
 *               a queue of 1000 to a consumer thread, which frees it (a pipeline's buffers);
 *   grow-N      a block grown from N bytes to 64 MiB in steps of N (realloc; dm_reallocate, which
 *               also zeroes what it adds), its last byte written after each step, then freed, three
 *               times: an operation is one resize (a growing buffer, as a log or a vector);
 *   deflate     zlib (its zalloc/zfree hooks on the allocator) compresses 1 KiB at level 6: an
 *               operation is a whole stream, deflateInit to deflateEnd (five blocks, four of them
 *               64 KiB, each written in part), as a program compressing many small messages does.
 *   Both churn patterns start timing after a thread kept busy for 300 ms (see main).
 * With 2 threads, each thread runs the pattern at once; the time is per operation as one thread
 * sees it (churn is single-threaded; handoff is always the two threads of one pipeline). */
#define _GNU_SOURCE
#include "directmem.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <zlib.h>

static int use_dm;

static void *get(size_t size) {
    void *p;
    if (use_dm) {
        if (dm_allocate(size, 0, &p) != DM_OK) p = NULL;
    } else {
        p = calloc(1, size);
    }
    if (p == NULL) {
        fprintf(stderr, "allocation of %zu bytes failed\n", size);
        exit(1);
    }
    return p;
}

static void put(void *p) {
    if (use_dm) dm_free(p); else free(p);
}

static void *resize(void *p, size_t size) {
    void *q;
    if (use_dm) {
        if (dm_reallocate(p, size, &q) != DM_OK) q = NULL;
    } else {
        q = realloc(p, size);
    }
    if (q == NULL) {
        fprintf(stderr, "resize to %zu bytes failed\n", size);
        exit(1);
    }
    return q;
}

#define GROWN (64u << 20)

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

typedef struct {
    const char *pattern;
    size_t size;
    long ops;
    uint64_t seed;
} job;

static uint64_t next_random(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 11;
}

/* log-uniform in [16 B, 4 MiB]: as many blocks of 16-32 B as of 2-4 MiB. */
static size_t mixed_size(uint64_t *s) {
    int shift = 4 + (int)(next_random(s) % 18); /* 2^4 .. 2^21 */
    size_t low = (size_t)1 << shift;
    return low + next_random(s) % low;
}

static voidpf zlib_get(voidpf opaque, uInt items, uInt size) {
    (void)opaque;
    return get((size_t)items * size);
}

static void zlib_put(voidpf opaque, voidpf p) {
    (void)opaque;
    put(p);
}

static void *run(void *arg) {
    job *j = arg;
    if (strcmp(j->pattern, "pair") == 0) {
        for (long i = 0; i < j->ops; i++) {
            void *p = get(j->size);
            __asm__ volatile("" : : "r"(p) : "memory"); /* the block is used: no elision */
            put(p);
        }
    } else if (strcmp(j->pattern, "batch") == 0) {
        static __thread void *blocks[1000];
        for (long done = 0; done < j->ops; done += 1000) {
            for (int i = 0; i < 1000; i++) {
                blocks[i] = get(j->size);
                *(volatile char *)blocks[i] = 1;
            }
            for (int i = 0; i < 1000; i++) put(blocks[i]);
        }
    } else if (strcmp(j->pattern, "grow") == 0) {
        for (long done = 0; done < j->ops;) {
            void *p = NULL;
            for (size_t size = j->size; size <= GROWN && done < j->ops; size += j->size, done++) {
                p = resize(p, size);
                ((volatile char *)p)[size - 1] = 1;
            }
            put(p);
        }
    } else if (strcmp(j->pattern, "deflate") == 0) {
        enum { INPUT = 1024 };
        static __thread unsigned char in[INPUT], out[INPUT + 1024];
        uint64_t s = j->seed;
        for (long i = 0; i < j->ops; i++) {
            for (int k = 0; k < INPUT; k++) in[k] = (unsigned char)('a' + next_random(&s) % 8);
            z_stream z = {.zalloc = zlib_get, .zfree = zlib_put};
            if (deflateInit(&z, 6) != Z_OK) exit(1);
            z.next_in = in, z.avail_in = INPUT, z.next_out = out, z.avail_out = sizeof out;
            if (deflate(&z, Z_FINISH) != Z_STREAM_END) exit(1);
            deflateEnd(&z);
        }
    } else { /* mixed */
        enum { SLOTS = 1000 };
        void **slots = calloc(SLOTS, sizeof *slots);
        uint64_t s = j->seed;
        for (long i = 0; i < j->ops; i++) {
            size_t k = next_random(&s) % SLOTS;
            if (slots[k]) put(slots[k]);
            slots[k] = get(mixed_size(&s));
            *(volatile char *)slots[k] = 1;
        }
        for (int k = 0; k < SLOTS; k++)
            if (slots[k]) put(slots[k]);
        free(slots);
    }
    return NULL;
}

/* handoff: one producer, one consumer, a ring of blocks between them (single producer, single
 * consumer: each index is written by one thread only). */
enum { QUEUE = 1000 };
static void *queue[QUEUE];
static atomic_long produced, consumed;

static void *produce(void *arg) {
    job *j = arg;
    for (long i = 0; i < j->ops; i++) {
        void *p = get(j->size);
        *(volatile char *)p = 1;
        while (i - atomic_load_explicit(&consumed, memory_order_acquire) >= QUEUE) {}
        queue[i % QUEUE] = p;
        atomic_store_explicit(&produced, i + 1, memory_order_release);
    }
    return NULL;
}

static void *consume(void *arg) {
    job *j = arg;
    for (long i = 0; i < j->ops; i++) {
        while (atomic_load_explicit(&produced, memory_order_acquire) == i) {}
        void *p = queue[i % QUEUE];
        atomic_store_explicit(&consumed, i + 1, memory_order_release);
        put(p);
    }
    return NULL;
}

static void *one_pair(void *arg) {
    (void)arg;
    void *p = get(64);
    __asm__ volatile("" : : "r"(p) : "memory");
    put(p);
    return NULL;
}

/* Busy for 300 ms without allocating: the lead-in of every churn run (see main). */
static void *busy(void *arg) {
    double start = now_ns();
    volatile long spins = 0;
    while (now_ns() - start < 300e6) spins++;
    return arg;
}

static void *leave_live_blocks(void *arg) {
    void **blocks = arg;
    for (long i = 0; i < 1000000; i++) blocks[i] = get(64);
    return NULL;
}

/* Whether calloc and free are the named allocator's: jemalloc and mimalloc only when preloaded,
 * glibc only when neither is, and directmem's runs likewise (a preloaded allocator would serve
 * the harness's own calls there). Without this, running `peers jemalloc ...` by hand without
 * LD_PRELOAD measured glibc under jemalloc's name. */
static int serving(const char *allocator) {
    int jemalloc = dlsym(RTLD_DEFAULT, "mallctl") != NULL, mimalloc = dlsym(RTLD_DEFAULT, "mi_version") != NULL;
    int known = strcmp(allocator, "directmem") == 0 || strcmp(allocator, "glibc") == 0;
    int want_je = strcmp(allocator, "jemalloc") == 0, want_mi = strcmp(allocator, "mimalloc") == 0;
    if (!known && !want_je && !want_mi) {
        fprintf(stderr, "peers: unknown allocator %s (directmem, glibc, jemalloc, mimalloc)\n", allocator);
        return 0;
    }
    if (jemalloc != want_je || mimalloc != want_mi) {
        const char *actual = jemalloc ? "jemalloc" : mimalloc ? "mimalloc" : "glibc";
        if (want_je || want_mi)
            fprintf(stderr, "peers: %s asked, but calloc is %s's: run with "
                            "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/lib%s.so.2 (scripts/bench-peers.sh does)\n",
                    allocator, actual, allocator);
        else
            fprintf(stderr, "peers: %s asked, but calloc is %s's: run without LD_PRELOAD\n", allocator, actual);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: peers directmem|glibc|jemalloc|mimalloc PATTERN THREADS [scale]\n");
        return 2;
    }
    const char *allocator = argv[1], *pattern = argv[2];
    int threads = atoi(argv[3]);
    double scale = argc > 4 ? atof(argv[4]) : 1.0;
    if (!serving(allocator)) return 2;
    use_dm = strcmp(allocator, "directmem") == 0;
    if (use_dm) dm_set_limit(UINT64_MAX);

    double ns;
    if (strncmp(pattern, "churn", 5) == 0) {
        long rounds = (long)(20000 * scale);
        void **kept = NULL;
        if (strcmp(pattern, "churn-1M") == 0) {
            rounds = (long)(2000 * scale);
            kept = malloc(1000000 * sizeof *kept);
            pthread_t t;
            pthread_create(&t, NULL, leave_live_blocks, kept);
            pthread_join(t, NULL);
        }
        /* On this VM a thread creation is 1.5-2x faster for a while after the process kept a
         * thread busy (a thread that only spins, no allocation, for 100 ms: 37-52 -> 22-35 us),
         * so the live blocks' set-up, longer for one allocator than another, would time the
         * machine, not the allocator. Every churn run starts from the same busy lead-in. */
        pthread_t lead_in;
        pthread_create(&lead_in, NULL, busy, NULL);
        pthread_join(lead_in, NULL);
        double start = now_ns();
        for (long i = 0; i < rounds; i++) {
            pthread_t t;
            pthread_create(&t, NULL, one_pair, NULL);
            pthread_join(t, NULL);
        }
        ns = (now_ns() - start) / rounds;
        if (kept) {
            for (long i = 0; i < 1000000; i++) put(kept[i]);
            free(kept);
        }
    } else {
        job base = {0};
        if (strncmp(pattern, "pair-", 5) == 0) base.pattern = "pair", base.size = strtoul(pattern + 5, NULL, 10);
        else if (strncmp(pattern, "batch-", 6) == 0) base.pattern = "batch", base.size = strtoul(pattern + 6, NULL, 10);
        else if (strcmp(pattern, "mixed") == 0) base.pattern = "mixed";
        else if (strncmp(pattern, "handoff-", 8) == 0) base.pattern = "handoff", base.size = strtoul(pattern + 8, NULL, 10);
        else if (strcmp(pattern, "deflate") == 0) base.pattern = "deflate";
        else if (strncmp(pattern, "grow-", 5) == 0) base.pattern = "grow", base.size = strtoul(pattern + 5, NULL, 10);
        else { fprintf(stderr, "unknown pattern %s\n", pattern); return 2; }
        /* About a third of a second per process on this machine. */
        double budget = base.size == 0 ? 50000 : base.size <= 4096 ? 2e6 : base.size <= 65536 ? 2e5 : 5e4;
        if (strcmp(base.pattern, "batch") == 0) budget /= 2;
        if (strcmp(base.pattern, "deflate") == 0) budget = 20000;
        if (strcmp(base.pattern, "grow") == 0) {
            if (base.size == 0 || base.size > GROWN) { fprintf(stderr, "grow-N: N from 1 to 64 MiB\n"); return 2; }
            budget = 3.0 * (GROWN / base.size) / scale; /* three whole growths, whatever the scale */
        }
        base.ops = (long)(budget * scale);
        if (strcmp(base.pattern, "batch") == 0) base.ops = (base.ops + 999) / 1000 * 1000;
        job jobs[2] = {base, base};
        jobs[0].seed = 1, jobs[1].seed = 2;
        pthread_t t[2];
        double start = now_ns();
        if (strcmp(base.pattern, "handoff") == 0) {
            pthread_create(&t[0], NULL, produce, &jobs[0]);
            pthread_create(&t[1], NULL, consume, &jobs[0]);
            for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
        } else if (threads == 1) run(&jobs[0]);
        else {
            for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, run, &jobs[i]);
            for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
        }
        ns = (now_ns() - start) / base.ops;
    }
    if (use_dm) {
        struct dm_stats st;
        if (dm_get_stats(&st) != DM_OK || st.count != 0 || st.reserved != 0) {
            fprintf(stderr, "blocks left: %llu\n", (unsigned long long)st.count);
            return 1;
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%s %s %d %.1f %ld\n", allocator, pattern, threads, ns, ru.ru_maxrss);
    return 0;
}
