/* dm_allocate + dm_free against calloc + free, as a C program sees them: through
 * libdirectmem.so (PLT calls, dynamic thread-locals), side by side in one run.
 *
 * For each size and thread count, rounds alternate between the two (the order flips each
 * round) and the median, min and max of the per-pair times are printed as a Markdown table.
 * With 2 threads both run the loop at once; the time is per pair as one thread sees it.
 * Run: scripts/bench-c.sh (or `pairs quick` for a smoke run). */
#include "directmem.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_ROUNDS 31

typedef struct {
    int use_dm;
    size_t size;
    long pairs;
    int failed;
} job;

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void *run(void *arg) {
    job *j = arg;
    for (long i = 0; i < j->pairs; i++) {
        void *p;
        if (j->use_dm) {
            if (dm_allocate(j->size, 0, &p) != DM_OK) { j->failed = 1; return NULL; }
        } else if ((p = calloc(1, j->size)) == NULL) {
            j->failed = 1;
            return NULL;
        }
        __asm__ volatile("" : : "r"(p) : "memory"); /* the block is used: no elision */
        if (j->use_dm) dm_free(p); else free(p);
    }
    return NULL;
}

/* Nanoseconds per pair for one round of `threads` threads. */
static double round_ns(int use_dm, size_t size, int threads, long pairs) {
    pthread_t t[2];
    job jobs[2];
    double start = now_ns();
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job){use_dm, size, pairs, 0};
        /* One thread: the main thread itself (glibc serves it from its main arena, the fastest). */
        if (threads > 1) pthread_create(&t[i], NULL, run, &jobs[i]); else run(&jobs[i]);
    }
    for (int i = 0; i < threads; i++) {
        if (threads > 1) pthread_join(t[i], NULL);
        if (jobs[i].failed) {
            fprintf(stderr, "allocation of %zu bytes failed\n", size);
            exit(1);
        }
    }
    return (now_ns() - start) / pairs;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void describe(char *out, size_t n, double *v, int rounds) {
    qsort(v, rounds, sizeof *v, by_value);
    snprintf(out, n, "%.1f ns [%.1f-%.1f]", v[rounds / 2], v[0], v[rounds - 1]);
}

int main(int argc, char **argv) {
    int quick = argc > 1 && strcmp(argv[1], "quick") == 0;
    int rounds = quick ? 3 : 21;
    const size_t sizes[] = {64, 4096, 65536};
    dm_set_limit(UINT64_MAX);
    printf("| threads | size | directmem | calloc + free | ratio |\n|---|---|---|---|---|\n");
    for (int threads = 1; threads <= 2; threads++) {
        for (int s = 0; s < 3; s++) {
            size_t size = sizes[s];
            long pairs = quick ? 1000 : (size <= 4096 ? 1000000 : 50000);
            double dm[MAX_ROUNDS], libc[MAX_ROUNDS];
            round_ns(1, size, threads, pairs / 10); /* warm-up: slabs, credit, heaps */
            round_ns(0, size, threads, pairs / 10);
            for (int r = 0; r < rounds; r++) {
                if (r % 2) {
                    dm[r] = round_ns(1, size, threads, pairs);
                    libc[r] = round_ns(0, size, threads, pairs);
                } else {
                    libc[r] = round_ns(0, size, threads, pairs);
                    dm[r] = round_ns(1, size, threads, pairs);
                }
            }
            char a[64], b[64];
            describe(a, sizeof a, dm, rounds);
            describe(b, sizeof b, libc, rounds);
            printf("| %d | %zu B | %s | %s | %.2f |\n", threads, size, a, b, dm[rounds / 2] / libc[rounds / 2]);
        }
    }
    struct dm_stats st;
    if (dm_get_stats(&st) != DM_OK || st.count != 0 || st.reserved != 0) {
        fprintf(stderr, "blocks left: %llu\n", (unsigned long long)st.count);
        return 1;
    }
    return 0;
}
