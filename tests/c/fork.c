/* fork() while other threads allocate, then the library in the child (issue 13): every child must
 * finish. Before the atfork handlers, 5-12% of children hung in a lock a parent thread held at the
 * fork. 3 threads allocate and free blocks of every kind (small slots, heap blocks, mappings; a
 * third of them resized first) while the main thread forks 40 times, and a fourth starts short
 * threads that allocate and end (a thread's heap is made, or reused, and retired around the
 * fork); each child allocates, frees,
 * runs such a thread of its own and reads the stats, with an alarm that kills it if it hangs. The
 * background decay thread runs every 2 ms throughout; a child starts its own and stops it. A fifth
 * thread trims and decays over and over (visits to the other threads' heaps, which may be half
 * done at a fork), and each child trims, decays and sets the limit (which collects every thread's
 * quota credit: the parent's other threads, absent in the child, may have been inside their
 * brackets at the fork). The program's own atfork handlers, registered before its first dm_ call,
 * use the library at every fork.
 *
 * Before that, forks in the middle of the reclaim protocol: a child forked while a parent thread
 * runs a slow reclaim hook and another waits behind it, and a child forked from inside the hook.
 * The waiters of the parent are not in the child: before the child forgot them, every reservation
 * there that a thread's credit did not cover (a 16 B block included) queued behind them and took
 * the whole reclaim timeout, and no reclaim hook was ever called again in the child. */
#include <time.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>
#include "check.h"

#define FORKS 40
#define KIB 1024u
static atomic_int stop;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, ms % 1000 * 1000000};
    nanosleep(&t, NULL);
}

/* The reclaim hook of the round cases. In the parent, it holds its round until told to end it
 * (the parent forks meanwhile), unless it is to fork itself. In a child, it releases `held`. */
static void *held;
static atomic_int rounds_entered, end_round, fork_in_hook;
static pid_t forked_in_hook = -1;
static int is_child;

static void slow_hook(void *ctx, size_t wanted) {
    (void)ctx, (void)wanted;
    if (is_child) {
        if (held) CHECK(dm_free(held));
        held = NULL; /* its address may be a new block's soon */
        return;
    }
    atomic_fetch_add(&rounds_entered, 1);
    if (atomic_exchange(&fork_in_hook, 0)) { /* once */
        forked_in_hook = fork();
        ASSERT(forked_in_hook >= 0);
        if (forked_in_hook == 0) is_child = 1; /* the child's only thread goes on in this hook */
        return;
    }
    while (!atomic_load(&end_round)) pause_ms(1);
}

/* What a child checks: a reservation that fits is served at once, small or big (not after
 * the reclaim timeout), and one that does not fit calls the hook, which frees `held` (if the
 * child still has it). */
static int reservations_in_child(void) {
    alarm(30);
    dm_stats before = stats_now();
    double start = now_s();
    void *small, *big, *bigger;
    if (dm_allocate(16, 0, &small) != DM_OK || dm_free(small) != DM_OK) return 10;
    if (dm_allocate(200 * KIB, 0, &big) != DM_OK) return 11;
    if (now_s() - start > 1.0) return 12; /* the reclaim timeout, 10 s, when it queued */
    if (held) {
        if (dm_allocate(500 * KIB, 0, &bigger) != DM_OK) return 13; /* only once `held` is freed */
        if (stats_now().reclaim_requests != before.reclaim_requests + 1) return 14;
        if (dm_free(bigger) != DM_OK) return 15;
    }
    if (dm_free(big) != DM_OK) return 15;
    if (now_s() - start > 1.0) return 16;
    return 0;
}

/* Wants `bytes`; returns the status (the parent's waiters must not fail: checked after the child). */
static void *wanting(void *bytes) {
    void *p;
    dm_status status = dm_allocate((size_t)bytes, 0, &p);
    if (is_child) { /* forked inside the hook: this is the child's only thread */
        /* Served once the hook, called again in the child, freed `held`. */
        int code = status != DM_OK || held ? 17 : reservations_in_child();
        if (code == 0 && dm_free(p) != DM_OK) code = 18;
        fflush(stdout);
        _exit(code);
    }
    if (status == DM_OK) CHECK(dm_free(p));
    return (void *)(size_t)status;
}

static void joined_ok(pthread_t t) {
    void *status;
    ASSERT(pthread_join(t, &status) == 0);
    EXPECT((dm_status)(size_t)status, DM_OK);
}

/* pthread_atfork handlers of the program's own, registered before its first dm_ call, that use
 * the library in each step (a cleaner's record, the stats: both take locks). fork() runs prepare
 * handlers in the reverse order of their registration: when the library registered its own at
 * its first use, after these, this prepare ran while the library's held every lock, and waited
 * for them for good. */
static atomic_int atfork_steps;

static void uses_the_library(void) {
    void *p;
    dm_cleaner c;
    dm_stats s;
    if (dm_allocate(64, 0, &p) != DM_OK || dm_cleaner_register(p, NULL, NULL, &c) != DM_OK || dm_free(p) != DM_OK ||
        dm_get_stats(&s) != DM_OK)
        _exit(30);
    atomic_fetch_add(&atfork_steps, 1);
}

static int exit_code(pid_t pid) {
    int status;
    ASSERT(waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

/* Limit 1 MiB, 800 KiB held: a thread wants 600 KiB and its hook call is slow, another wants
 * 400 KiB behind it; the parent forks during that round. Then a thread's hook forks. */
static void forks_during_a_reclaim_round(void) {
    CHECK(dm_set_limit(1024 * KIB));
    CHECK(dm_set_reclaim_timeout_ms(10000));
    CHECK(dm_allocate(800 * KIB, 0, &held));
    CHECK(dm_set_reclaim_hook(slow_hook, NULL));
    pthread_t first, second;
    ASSERT(pthread_create(&first, NULL, wanting, (void *)(600 * KIB)) == 0);
    while (atomic_load(&rounds_entered) == 0) pause_ms(1);
    ASSERT(pthread_create(&second, NULL, wanting, (void *)(400 * KIB)) == 0);
    pause_ms(50); /* the second joins the queue behind the round */
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        is_child = 1;
        _exit(reservations_in_child());
    }
    int code = exit_code(pid);
    printf("fork: child forked during a round: exit %d\n", code);
    fflush(stdout); /* not printed again by the next child */
    ASSERT(code == 0);
    CHECK(dm_free(held));
    atomic_store(&end_round, 1);
    joined_ok(first);
    joined_ok(second);

    /* The hook forks: in the child its thread goes on in the round, then in the reservation. */
    CHECK(dm_allocate(800 * KIB, 0, &held));
    atomic_store(&fork_in_hook, 1);
    ASSERT(pthread_create(&first, NULL, wanting, (void *)(600 * KIB)) == 0);
    while (forked_in_hook < 0) pause_ms(1);
    code = exit_code(forked_in_hook);
    printf("fork: child forked inside the hook: exit %d\n", code);
    ASSERT(code == 0);
    CHECK(dm_free(held));
    joined_ok(first);
    CHECK(dm_set_reclaim_hook(NULL, NULL));
    CHECK(dm_set_reclaim_timeout_ms(1000));
}

static void *churn(void *arg) {
    size_t sizes[] = {16, 64, 1000, 8192, 20000, 100000, 300000};
    unsigned i = (unsigned)(size_t)arg;
    while (!atomic_load(&stop)) {
        void *p;
        size_t size = sizes[i++ % 7];
        CHECK(dm_allocate(size, 0, &p));
        dm_cleaner c;
        if (i % 5 == 0) CHECK(dm_cleaner_register(p, NULL, NULL, &c));
        if (i % 3 == 0) CHECK(dm_reallocate(p, size * 3 / 2 + 1, &p)); /* a move, or in place */
        CHECK(dm_free(p));
    }
    return NULL;
}

static void *allocate_and_end(void *arg) {
    void *p;
    if (dm_allocate((size_t)arg, 0, &p) != DM_OK || dm_free(p) != DM_OK) return (void *)1;
    return NULL;
}

/* dm_trim and dm_decay over and over, a little apart, until told to stop. */
static void *trim_and_decay(void *arg) {
    (void)arg;
    struct timespec pause = {0, 100 * 1000};
    for (unsigned long i = 0; !atomic_load(&stop); i++) {
        CHECK(i % 2 ? dm_trim(NULL) : dm_decay(NULL));
        nanosleep(&pause, NULL);
    }
    return NULL;
}

/* Short threads, one after another, until told to stop. */
static void *start_threads(void *arg) {
    (void)arg;
    for (size_t i = 0; !atomic_load(&stop); i++) {
        pthread_t t;
        void *failed;
        ASSERT(pthread_create(&t, NULL, allocate_and_end, (void *)(16 + i % 5000)) == 0);
        ASSERT(pthread_join(t, &failed) == 0 && failed == NULL);
    }
    return NULL;
}

static int in_child(void) {
    alarm(20); /* a hang ends as SIGALRM, which the parent counts */
    size_t sizes[] = {16, 64, 1000, 8192, 20000, 100000, 300000};
    for (int r = 0; r < 20; r++) {
        for (int k = 0; k < 7; k++) {
            void *p;
            if (dm_allocate(sizes[k], 0, &p) != DM_OK) return 2;
            if (dm_free(p) != DM_OK) return 3;
        }
    }
    if (dm_set_background_decay(2) != DM_OK || dm_set_background_decay(0) != DM_OK) return 7;
    if (dm_trim(NULL) != DM_OK || dm_decay(NULL) != DM_OK) return 8;
    if (dm_set_limit(1u << 30) != DM_OK) return 9;
    pthread_t t;
    void *thread_failed;
    if (pthread_create(&t, NULL, allocate_and_end, (void *)64) != 0) return 5;
    if (pthread_join(t, &thread_failed) != 0 || thread_failed != NULL) return 6;
    dm_stats s;
    if (dm_get_stats(&s) != DM_OK) return 4;
    return 0;
}

int main(void) {
    /* A deadlock in the parent (the fork handlers against another thread) ends as a failure, not
     * a hang of the test run; children do not inherit it. */
    alarm(180);
    ASSERT(pthread_atfork(uses_the_library, uses_the_library, uses_the_library) == 0);
    forks_during_a_reclaim_round();
    CHECK(dm_set_limit(1u << 30));
    CHECK(dm_set_background_decay(2));
    pthread_t t[5];
    for (size_t i = 0; i < 3; i++) ASSERT(pthread_create(&t[i], NULL, churn, (void *)i) == 0);
    ASSERT(pthread_create(&t[3], NULL, start_threads, NULL) == 0);
    ASSERT(pthread_create(&t[4], NULL, trim_and_decay, NULL) == 0);
    int hung = 0, failed = 0;
    for (int f = 0; f < FORKS; f++) {
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) _exit(in_child());
        int status;
        ASSERT(waitpid(pid, &status, 0) == pid);
        if (WIFSIGNALED(status)) hung++;
        else if (WEXITSTATUS(status) != 0) failed++;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 5; i++) ASSERT(pthread_join(t[i], NULL) == 0);
    CHECK(dm_set_background_decay(0));
    printf("fork: %d children, %d hung, %d failed; the program's own atfork handlers used the library %d times\n",
           FORKS, hung, failed, atomic_load(&atfork_steps));
    ASSERT(atomic_load(&atfork_steps) >= 2 * FORKS); /* prepare and parent, in this process */
    ASSERT(hung == 0 && failed == 0);
    dm_stats s = stats_now();
    ASSERT(s.count == 0 && s.reserved == 0);
    printf("fork: OK\n");
    return 0;
}
