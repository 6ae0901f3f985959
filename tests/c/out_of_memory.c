/* The library's own bookkeeping when the C heap refuses (RLIMIT_AS, strict overcommit): each
 * time, exactly one of the library's malloc-family calls fails, the first, the second, ... until
 * a run's calls all succeed; then every call from the n-th on. This program defines malloc,
 * calloc, realloc and the aligned ones, and glibc's `__libc_` names of them, which the library's
 * own memory comes from (src/own_heap.rs), over glibc's own, so the library's calls come here.
 * Each run is a child of fork() (the same start every time) that starts the background decay
 * thread, allocates blocks of every kind, attaches cleaners, resizes, starts a
 * thread, installs a reclaim hook and waits for it under a limit, frees everything, trims and
 * forks. What must hold: no abort; an allocation, registration, resize or hook installation
 * either succeeds or returns DM_ERR_NO_MEMORY and changes nothing (a resized block keeps its
 * bytes); every free succeeds; nothing is left counted. Then threads at once, each freeing what
 * another allocated, with one call in 3, 12 or 48 refused. Before: "memory allocation of N bytes
 * failed" and an abort, in allocations (the big blocks' table, a cleaner's entry, a new slab, a
 * thread's heap) and in frees (the lists of memory kept for reuse). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "check.h"

/* Armed: the call that brings it to 0 fails; once, or (`for_good`) every call from then on, as
 * when the address space stays exhausted. Or (`every`) one call in so many, from any thread. */
static atomic_long countdown = -1, calls;
static atomic_int failed_one, for_good, every;

static int refuse(void) {
    int n = atomic_load(&every);
    if (n > 0 && atomic_fetch_add(&calls, 1) % n == n - 1) return 1;
    if (atomic_load(&for_good) && atomic_load(&failed_one)) return 1;
    if (atomic_load(&countdown) > 0 && atomic_fetch_sub(&countdown, 1) == 1) {
        atomic_store(&failed_one, 1);
        return 1;
    }
    return 0;
}

/* glibc's own functions, found past this program's (dlsym does not allocate when it finds one). */
#define GLIBC(name, type)                                                   \
    static type glibc_##name(void) {                                        \
        static _Atomic(type) found;                                         \
        type f = atomic_load(&found);                                       \
        if (f == NULL) {                                                    \
            *(void **)&f = dlsym(RTLD_NEXT, "__libc_" #name);               \
            if (f == NULL) abort();                                         \
            atomic_store(&found, f);                                        \
        }                                                                   \
        return f;                                                           \
    }
typedef void *(*malloc_fn)(size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void *(*memalign_fn)(size_t, size_t);
GLIBC(malloc, malloc_fn)
GLIBC(calloc, calloc_fn)
GLIBC(realloc, realloc_fn)
GLIBC(memalign, memalign_fn)

void *malloc(size_t n) { return refuse() ? (errno = ENOMEM, NULL) : glibc_malloc()(n); }
void *calloc(size_t n, size_t m) { return refuse() ? (errno = ENOMEM, NULL) : glibc_calloc()(n, m); }
void *realloc(void *p, size_t n) { return refuse() ? (errno = ENOMEM, NULL) : glibc_realloc()(p, n); }
void *memalign(size_t a, size_t n) { return refuse() ? (errno = ENOMEM, NULL) : glibc_memalign()(a, n); }
void *__libc_malloc(size_t n) { return malloc(n); }
void *__libc_calloc(size_t n, size_t m) { return calloc(n, m); }
void *__libc_realloc(void *p, size_t n) { return realloc(p, n); }
void *__libc_memalign(size_t a, size_t n) { return memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { return memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    void *p = memalign(a, n);
    if (p == NULL) return ENOMEM;
    *out = p;
    return 0;
}

#define BLOCKS 600
static void *blocks[BLOCKS];
static size_t sizes[BLOCKS];
static atomic_int refusals;

/* A status that may be a refusal: counted; anything else but DM_OK fails the run. */
static int allowed(dm_status s, int line) {
    if (s == DM_OK) return 1;
    if (s == DM_ERR_NO_MEMORY) {
        refusals++;
        return 0;
    }
    fprintf(stderr, "line %d: status %d (%s)\n", line, (int)s, dm_status_message((int)s));
    _exit(20);
}
#define ALLOWED(call) allowed((call), __LINE__)

static void noop(void *ctx) { (void)ctx; }

/* The reclaim hook (installed in each run): frees `held`. */
static void *held;

static void free_held(void *ctx, size_t wanted) {
    (void)ctx, (void)wanted;
    if (held) CHECK(dm_free(held));
    held = NULL;
}

/* A reservation that waits for the reclaim hook under a limit: its place in the quota's queue
 * takes memory. */
static void reservation_that_waits(void) {
    if (!ALLOWED(dm_set_reclaim_hook(free_held, NULL))) return; /* the hook's record takes memory */
    if (!ALLOWED(dm_allocate(200 * 1024, 0, &held))) return;
    CHECK(dm_set_limit(stats_now().reserved + 100 * 1024));
    void *p;
    if (ALLOWED(dm_allocate(200 * 1024, 0, &p))) CHECK(dm_free(p)); /* fits once the hook freed `held` */
    CHECK(dm_set_limit(UINT64_MAX));
    free_held(NULL, 0);
}

static void *thread_allocating(void *arg) {
    (void)arg;
    void *p;
    if (ALLOWED(dm_allocate(64, 0, &p))) CHECK(dm_free(p));
    return NULL;
}

static void filled_with(void *p, size_t n, unsigned char byte) {
    for (size_t i = 0; i < n; i++)
        if (((unsigned char *)p)[i] != byte) _exit(21);
}

static int run(long fail_at) {
    static const size_t kinds[] = {16, 64, 1000, 8192, 20000, 100000, 200000, 3 << 20};
    atomic_store(&countdown, fail_at);
    ALLOWED(dm_set_background_decay(1)); /* a thread of the library's: refused, or decaying throughout */
    for (int i = 0; i < BLOCKS; i++) {
        size_t size = kinds[i % 8];
        if (i % 8 == 7 && i > 8 * 8) size = 1000; /* a few 3 MiB blocks are enough */
        blocks[i] = NULL;
        if (!ALLOWED(dm_allocate(size, 0, &blocks[i]))) continue;
        sizes[i] = size;
        memset(blocks[i], i & 0xff, size < 64 ? size : 64);
        dm_cleaner c;
        if (i % 3 == 0) ALLOWED(dm_cleaner_register(blocks[i], noop, NULL, &c));
        if (i % 4 == 0) {
            void *moved;
            if (ALLOWED(dm_reallocate(blocks[i], sizes[i] * 2 + 1, &moved))) {
                blocks[i] = moved;
                sizes[i] = sizes[i] * 2 + 1;
            }
            filled_with(blocks[i], sizes[i] / 2 < 64 ? sizes[i] / 2 : 64, i & 0xff);
        }
    }
    pthread_t t;
    if (pthread_create(&t, NULL, thread_allocating, NULL) == 0) ASSERT(pthread_join(t, NULL) == 0);
    reservation_that_waits();
    for (int i = 0; i < BLOCKS; i++)
        if (blocks[i]) CHECK(dm_free(blocks[i]));
    CHECK(dm_trim(NULL));
    CHECK(dm_decay(NULL));
    CHECK(dm_set_background_decay(0));
    /* A fork: its handlers take every lock of the library, with no list made of them. */
    pid_t child = fork();
    if (child == 0) _exit(dm_trim(NULL) == DM_OK ? 0 : 1);
    if (child > 0) {
        int status;
        ASSERT(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    atomic_store(&countdown, -1);
    atomic_store(&for_good, 0);
    dm_stats s = stats_now();
    if (s.count != 0 || s.reserved != 0 || s.live_cleaners != 0) {
        fprintf(stderr, "left: count %llu reserved %llu cleaners %llu\n", (unsigned long long)s.count,
                (unsigned long long)s.reserved, (unsigned long long)s.live_cleaners);
        return 22;
    }
    return atomic_load(&failed_one) ? 0 : 1; /* 1: no call was refused: every one was reached */
}

/* Threads at once, one of the library's calls in `every` refused: each thread allocates blocks of
 * every kind (a third with a cleaner, a quarter resized), then frees the blocks its neighbour
 * allocated; new threads each round (heaps made and retired). */
enum { THREADS = 4, PER_THREAD = 150, ROUNDS = 10 };
static void *shared_blocks[THREADS][PER_THREAD];
static pthread_barrier_t allocated;

static void *allocate_then_free_the_neighbours(void *arg) {
    static const size_t kinds[] = {16, 64, 1000, 8192, 20000, 100000, 200000, 40};
    size_t me = (size_t)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        void **slot = &shared_blocks[me][i];
        *slot = NULL;
        if (!ALLOWED(dm_allocate(kinds[(i + me) % 8], 0, slot))) continue;
        dm_cleaner c;
        if (i % 3 == 0) ALLOWED(dm_cleaner_register(*slot, noop, NULL, &c));
        void *moved;
        if (i % 4 == 0 && ALLOWED(dm_reallocate(*slot, kinds[(i + me) % 8] * 3, &moved))) *slot = moved;
    }
    pthread_barrier_wait(&allocated);
    for (int i = 0; i < PER_THREAD; i++) {
        void *p = shared_blocks[(me + 1) % THREADS][i];
        if (p) CHECK(dm_free(p));
    }
    if (me == 0) ALLOWED(dm_trim(NULL));
    return NULL;
}

static int threads_refusing_every(int n) {
    atomic_store(&every, n);
    for (int r = 0; r < ROUNDS; r++) {
        pthread_t t[THREADS];
        ASSERT(pthread_barrier_init(&allocated, NULL, THREADS) == 0);
        for (size_t i = 0; i < THREADS; i++) {
            while (pthread_create(&t[i], NULL, allocate_then_free_the_neighbours, (void *)i) != 0) {
            } /* glibc's own allocation for the thread may be the one refused: again */
        }
        for (int i = 0; i < THREADS; i++) ASSERT(pthread_join(t[i], NULL) == 0);
        pthread_barrier_destroy(&allocated);
    }
    atomic_store(&every, 0);
    dm_stats s = stats_now();
    return s.count == 0 && s.reserved == 0 && s.live_cleaners == 0 ? 0 : 23;
}

/* Runs the scenario with the first, second, ... call refused (once, or for good) until a run
 * refuses none; returns the runs and adds up the dm_ calls answered DM_ERR_NO_MEMORY. */
static int runs_refusing(int refuse_for_good, int *total_refusals) {
    int runs = 0;
    for (long fail_at = 1;; fail_at++) {
        int pipefd[2];
        ASSERT(pipe(pipefd) == 0);
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
            atomic_store(&for_good, refuse_for_good);
            int code = run(fail_at);
            ASSERT(write(pipefd[1], &refusals, sizeof refusals) == sizeof refusals);
            _exit(code);
        }
        close(pipefd[1]);
        int status, child_refusals = 0;
        ASSERT(waitpid(pid, &status, 0) == pid);
        if (read(pipefd[0], &child_refusals, sizeof child_refusals) != sizeof child_refusals) child_refusals = 0;
        close(pipefd[0]);
        if (!WIFEXITED(status) || (WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 1)) {
            fprintf(stderr, "out_of_memory: the %ld-th allocation of the run refused%s: %s %d\n", fail_at,
                    refuse_for_good ? " and all after it" : "", WIFEXITED(status) ? "exit" : "signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            exit(1);
        }
        *total_refusals += child_refusals;
        if (WEXITSTATUS(status) == 1) return runs; /* past the run's last allocation */
        runs++;
    }
}

static int exit_code_of(pid_t pid) {
    int status;
    ASSERT(waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

/* The library's first use by threads at once, in a process of its own, one allocation in two
 * refused: the threads that find another making the library's state (or reading a setting once)
 * wait for it. They waited in once_cell's cells, each taking a thread handle from malloc,
 * infallibly: "memory allocation of 48 bytes failed" and an abort (found in this program's
 * threads phase, 1 child in 20 to 150). */
enum { FIRST_THREADS = 8 };
static pthread_barrier_t first_calls;

static void *first_calls_at_once(void *arg) {
    (void)arg;
    pthread_barrier_wait(&first_calls);
    void *small, *big, *moved;
    if (ALLOWED(dm_allocate(64, 0, &small))) CHECK(dm_free(small));
    if (ALLOWED(dm_allocate(300000, 0, &big))) {
        if (ALLOWED(dm_reallocate(big, 600000, &moved))) big = moved; /* reads vm.overcommit_memory */
        CHECK(dm_free(big));
    }
    return NULL;
}

static int first_use_by_threads(void) {
    ASSERT(pthread_barrier_init(&first_calls, NULL, FIRST_THREADS) == 0);
    atomic_store(&every, 2);
    pthread_t t[FIRST_THREADS];
    for (int i = 0; i < FIRST_THREADS; i++) {
        while (pthread_create(&t[i], NULL, first_calls_at_once, NULL) != 0) {
        } /* glibc's own allocation for the thread may be the one refused: again */
    }
    for (int i = 0; i < FIRST_THREADS; i++) ASSERT(pthread_join(t[i], NULL) == 0);
    atomic_store(&every, 0);
    dm_stats st = stats_now();
    ASSERT(st.count == 0 && st.reserved == 0);
    return 0;
}

/* The library's first use, when it makes its process-wide state (its quota, its pool of slabs,
 * this thread's heap), in a process of its own (this program run again with DM_OOM_FIRST_USE set:
 * a fork would not do, the library's fork handler makes that state in the parent): the n-th of
 * the library's calls from the first dm_ call on is refused, once or for good. The calls answer
 * DM_OK or DM_ERR_NO_MEMORY (before: an abort in Arc::new), and once memory is back everything
 * works. Exit 0: a call was refused and all held; 3: the run made fewer than n calls. */
static int first_use(const char *how) {
    if (strcmp(how, "threads") == 0) return first_use_by_threads();
    long n = atol(how);
    atomic_store(&for_good, strchr(how, 'g') != NULL);
    atomic_store(&countdown, n);
    dm_stats st;
    void *small = NULL, *big = NULL;
    ALLOWED(dm_get_stats(&st));
    if (!ALLOWED(dm_allocate(64, 0, &small))) small = NULL;
    if (!ALLOWED(dm_allocate(300000, 0, &big))) big = NULL;
    int refused = atomic_load(&failed_one);
    atomic_store(&countdown, -1);
    atomic_store(&for_good, 0);
    void *again;
    CHECK(dm_allocate(64, 0, &again));
    CHECK(dm_free(again));
    if (small) CHECK(dm_free(small));
    if (big) CHECK(dm_free(big));
    st = stats_now();
    ASSERT(st.count == 0 && st.reserved == 0);
    return refused ? 0 : 3;
}

/* Runs this program again in a fresh process with DM_OOM_FIRST_USE set to `how`; its exit code. */
static int run_again(char **argv, const char *how) {
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        setenv("DM_OOM_FIRST_USE", how, 1);
        execv(argv[0], argv);
        _exit(30);
    }
    return exit_code_of(pid);
}

/* Runs `first_use` for n = 1, 2, ... in fresh processes until one makes fewer calls; the runs. */
static int first_uses_refusing(char **argv, int for_good_mode) {
    for (int n = 1;; n++) {
        char how[32];
        snprintf(how, sizeof how, "%d%s", n, for_good_mode ? "g" : "");
        int code = run_again(argv, how);
        if (code == 3) return n - 1;
        if (code != 0) {
            fprintf(stderr, "out_of_memory: first use, call %d refused%s: %s %d\n", n, for_good_mode ? " for good" : "",
                    code >= 100 ? "signal" : "exit", code >= 100 ? code - 100 : code);
            exit(1);
        }
    }
}

int main(int argc, char **argv) {
    (void)argc;
    alarm(600);
    const char *first = getenv("DM_OOM_FIRST_USE");
    if (first != NULL) return first_use(first);
    int first_runs = first_uses_refusing(argv, 0), first_runs_for_good = first_uses_refusing(argv, 1);
    printf("out_of_memory: the library's first use, the n-th of its allocations refused: %d runs once, %d for good, "
           "no abort\n", first_runs, first_runs_for_good);
    /* Each mode must refuse some of the library's calls (hundreds, below): none would mean that the
     * refusals no longer reach its bookkeeping (as when it stopped calling malloc), and that this
     * program proves nothing. */
    ASSERT(first_runs > 0 && first_runs_for_good > 0);
    for (int run = 0; run < 20; run++) {
        int code = run_again(argv, "threads");
        if (code != 0) {
            fprintf(stderr, "out_of_memory: first use by %d threads at once, one allocation in 2 refused (run %d): "
                    "%s %d\n", FIRST_THREADS, run, code >= 100 ? "signal" : "exit", code >= 100 ? code - 100 : code);
            return 1;
        }
    }
    printf("out_of_memory: the library's first use by %d threads at once, one allocation in 2 refused: "
           "20 runs, no abort\n", FIRST_THREADS);
    CHECK(dm_set_limit(UINT64_MAX));
    int once = 0, for_good_refusals = 0;
    int runs = runs_refusing(0, &once);
    printf("out_of_memory: %d runs, the n-th of the library's allocations refused: %d dm_ calls answered "
           "DM_ERR_NO_MEMORY, no abort, nothing left\n", runs, once);
    ASSERT(runs >= 100 && once > 0);
    runs = runs_refusing(1, &for_good_refusals);
    printf("out_of_memory: %d runs, the n-th and every later allocation refused: %d dm_ calls answered "
           "DM_ERR_NO_MEMORY, every block freed\n", runs, for_good_refusals);
    ASSERT(runs >= 100 && for_good_refusals > 0);
    for (int n = 3; n <= 48; n *= 4) {
        fflush(stdout); /* not printed again by the child */
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
            atomic_store(&refusals, 0);
            int code = threads_refusing_every(n);
            printf("out_of_memory: %d threads at once, one allocation in %d refused: %d dm_ calls answered "
                   "DM_ERR_NO_MEMORY, every block freed by another thread\n", THREADS, n, atomic_load(&refusals));
            fflush(stdout);
            _exit(code != 0 ? code : atomic_load(&refusals) > 0 ? 0 : 4);
        }
        int code = exit_code_of(pid);
        if (code != 0) {
            fprintf(stderr, "out_of_memory: threads with one allocation in %d refused: %s %d\n", n,
                    code >= 100 ? "signal" : "exit", code >= 100 ? code - 100 : code);
            return 1;
        }
    }
    printf("out_of_memory: OK\n");
    return 0;
}
