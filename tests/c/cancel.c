/* pthread_cancel of a thread while it runs one of the library's callbacks: a reclaim hook that
 * waits (here `nanosleep`, a cancellation point, as a condition wait or a `read` would be) and a
 * cleaner action that does (here too; a `close` is one). Acted on there, the cancellation unwound
 * through the library's frames, which cannot take part: the process aborted ("FATAL: exception not
 * rethrown"). The library now runs its callbacks with cancellation disabled, so the request waits
 * for the thread's next cancellation point after the dm_ call: the call finishes (the hook round
 * ends, the block is freed and its cleaner counted), then the thread is cancelled. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include "check.h"

#define KIB 1024u

static atomic_int in_callback, callback_done;

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, ms % 1000 * 1000000};
    nanosleep(&t, NULL);
}

/* Stands for a callback that waits: it is inside a cancellation point when the cancel comes. */
static void waiting_callback(void) {
    atomic_store(&in_callback, 1);
    pause_ms(200);
    atomic_store(&callback_done, 1);
}

static void waiting_hook(void *ctx, size_t wanted) {
    (void)ctx, (void)wanted;
    waiting_callback();
}

static void waiting_action(void *ctx) {
    (void)ctx;
    waiting_callback();
}

/* The cancelled thread: one dm_ call that runs a callback, then a cancellation point. */
struct call {
    void (*run)(void);
};

static void *call_then_cancellation_point(void *call) {
    ((struct call *)call)->run();
    pthread_testcancel();
    return NULL; /* not reached: cancelled */
}

static void reservation_running_the_hook(void) {
    void *p;
    EXPECT(dm_allocate(600 * KIB, 0, &p), DM_ERR_LIMIT); /* nothing is freed: refused */
}

static void free_running_a_cleaner(void) {
    void *p;
    dm_cleaner c;
    CHECK(dm_allocate(100, 0, &p));
    CHECK(dm_cleaner_register(p, waiting_action, NULL, &c));
    CHECK(dm_free(p));
}

/* Starts `call` on a thread, cancels the thread inside its callback, checks it ended cancelled
 * after the callback ran to its end. */
static void cancel_inside_callback(void (*call)(void)) {
    atomic_store(&in_callback, 0);
    atomic_store(&callback_done, 0);
    pthread_t t;
    struct call c = {call};
    ASSERT(pthread_create(&t, NULL, call_then_cancellation_point, &c) == 0);
    while (!atomic_load(&in_callback)) pause_ms(1);
    ASSERT(pthread_cancel(t) == 0);
    void *result;
    ASSERT(pthread_join(t, &result) == 0);
    ASSERT(result == PTHREAD_CANCELED);
    ASSERT(atomic_load(&callback_done));
}

int main(void) {
    CHECK(dm_set_limit(1024 * KIB));
    CHECK(dm_set_reclaim_timeout_ms(50));
    void *held;
    CHECK(dm_allocate(800 * KIB, 0, &held));
    CHECK(dm_set_reclaim_hook(waiting_hook, NULL));
    cancel_inside_callback(reservation_running_the_hook);
    CHECK(dm_set_reclaim_hook(NULL, NULL)); /* the round has ended: this does not wait for good */
    CHECK(dm_free(held));
    void *p;
    CHECK(dm_allocate(900 * KIB, 0, &p)); /* the quota took nothing for the refused call */
    CHECK(dm_free(p));
    printf("cancel: a thread cancelled inside the reclaim hook ended after the hook call\n");

    cancel_inside_callback(free_running_a_cleaner);
    dm_stats s = stats_now();
    ASSERT(s.count == 0 && s.reserved == 0 && s.live_cleaners == 0 && s.cleaners_run == 1);
    printf("cancel: a thread cancelled inside a cleaner action ended after its block was freed\n");
    printf("cancel: OK\n");
    return 0;
}
