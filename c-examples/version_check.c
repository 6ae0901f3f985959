/* The smallest program against an installed directmem: checks at run time that the library it got
 * is the one its header belongs to, then allocates, frees and prints the stats. */
#include <stdio.h>
#include "directmem.h"

int main(void) {
    unsigned loaded = dm_version();
    if (loaded / 10000 != DM_VERSION_MAJOR || loaded < DM_VERSION_NUMBER) {
        fprintf(stderr, "compiled for directmem %d, running with %u\n", DM_VERSION_NUMBER, loaded);
        return 1;
    }
    void *p;
    if (dm_allocate(1 << 20, 0, &p) != DM_OK || dm_free(p) != DM_OK) return 1;
    dm_stats s;
    if (dm_get_stats(&s) != DM_OK || s.count != 0 || s.total_allocations != 1) return 1;
    printf("version_check: directmem %u, header %d: OK\n", loaded, DM_VERSION_NUMBER);
    return 0;
}
