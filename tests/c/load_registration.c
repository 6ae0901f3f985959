/* The library registers the process for expedited membarrier (the collector's side of the quota
 * credit, src/quota/credit.rs) when it is loaded, before main runs and while the process has one
 * thread. Registered later, with threads running, the kernel makes the registration wait for an
 * RCU grace period (13-20 ms measured here), which the first allocation used to pay. Checked
 * without any dm_ call: a private expedited barrier succeeds only in a registered process. */
#define _GNU_SOURCE
#include "check.h"
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

static long membarrier(int cmd) { return syscall(SYS_membarrier, cmd, 0, 0); }

int main(void) {
    long supported = membarrier(MEMBARRIER_CMD_QUERY);
    if (supported < 0 || !(supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) {
        /* The library then keeps every credit update atomic: there is nothing to register. */
        printf("load_registration: OK (this kernel has no private expedited membarrier)\n");
        return 0;
    }
    ASSERT(membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0); /* registered before main */
    void *p;
    CHECK(dm_allocate(64, 0, &p));
    CHECK(dm_free(p));
    printf("load_registration: OK (registered when the library was loaded)\n");
    return 0;
}
