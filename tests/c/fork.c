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
 * brackets at the fork). */
#include <time.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>
#include "check.h"

#define FORKS 40
static atomic_int stop;

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
    alarm(120);
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
    printf("fork: %d children, %d hung, %d failed\n", FORKS, hung, failed);
    ASSERT(hung == 0 && failed == 0);
    dm_stats s = stats_now();
    ASSERT(s.count == 0 && s.reserved == 0);
    printf("fork: OK\n");
    return 0;
}
