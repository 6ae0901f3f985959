/* Shared by the examples: stop with a message and a non-zero exit on any unexpected status. */
#ifndef CHECK_H
#define CHECK_H
#include <stdio.h>
#include <stdlib.h>
#include "directmem.h"

#define EXPECT(call, want)                                                            \
    do {                                                                              \
        dm_status got_ = (call);                                                      \
        if (got_ != (want)) {                                                         \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %s\n", __FILE__,    \
                    __LINE__, #call, (int)got_, dm_status_message((int)got_), #want); \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

#define CHECK(call) EXPECT(call, DM_OK)

#define ASSERT(cond)                                                                  \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

static inline dm_stats stats_now(void) {
    dm_stats s;
    CHECK(dm_get_stats(&s));
    return s;
}

static inline void print_stats(const char *when) {
    dm_stats s = stats_now();
    printf("[%s] reserved=%llu capacity=%llu count=%llu peak=%llu total=%llu live_cleaners=%llu "
           "cleaners_run=%llu reclaim_requests=%llu limit_failures=%llu\n",
           when, (unsigned long long)s.reserved, (unsigned long long)s.capacity,
           (unsigned long long)s.count, (unsigned long long)s.peak_reserved,
           (unsigned long long)s.total_allocations, (unsigned long long)s.live_cleaners,
           (unsigned long long)s.cleaners_run, (unsigned long long)s.reclaim_requests,
           (unsigned long long)s.limit_failures);
}
#endif
