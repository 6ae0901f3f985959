/* The library loaded with dlopen() into a process whose threads already run, as a JVM's
 * System.load does. Its per-thread state is static TLS (initial-exec model, see README): glibc
 * must give it to the threads that existed before the dlopen, zeroed, and each of them must then
 * allocate and free through its own heap. Run natively and under valgrind. */
#define _GNU_SOURCE
#include "directmem.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef LIBRARY
#error "LIBRARY: the path of libdirectmem.so"
#endif

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); exit(1); } while (0)

static dm_status (*allocate)(size_t, size_t, void **);
static dm_status (*release)(void *);
static dm_status (*get_stats)(dm_stats *);
static pthread_barrier_t loaded;

static void exercise(const char *who) {
    static const size_t sizes[] = {16, 64, 4096, 50000, 131072, 300000};
    enum { N = 300 };
    void *blocks[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            size_t size = sizes[i % 6];
            if (allocate(size, 0, &blocks[i]) != DM_OK) FAIL("%s: allocation of %zu failed\n", who, size);
            const unsigned char *b = blocks[i];
            for (size_t k = 0; k < size; k += 511)
                if (b[k] != 0) FAIL("%s: a %zu B block not zeroed at %zu\n", who, size, k);
            memset(blocks[i], 0xA5, size);
        }
        for (int i = 0; i < N; i++)
            if (release(blocks[i]) != DM_OK) FAIL("%s: free failed\n", who);
        if (release(blocks[0]) != DM_ERR_NOT_LIVE) FAIL("%s: a double free was not refused\n", who);
    }
}

static void *thread_main(void *arg) {
    pthread_barrier_wait(&loaded); /* started before the library is loaded, used after */
    exercise(arg);
    return NULL;
}

int main(void) {
    enum { THREADS = 3 };
    pthread_t threads[THREADS];
    pthread_barrier_init(&loaded, NULL, THREADS + 1);
    for (int i = 0; i < THREADS; i++) pthread_create(&threads[i], NULL, thread_main, "a thread older than the library");
    void *lib = dlopen(LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) FAIL("dlopen: %s\n", dlerror());
    *(void **)&allocate = dlsym(lib, "dm_allocate");
    *(void **)&release = dlsym(lib, "dm_free");
    *(void **)&get_stats = dlsym(lib, "dm_get_stats");
    if (!allocate || !release || !get_stats) FAIL("dlsym: %s\n", dlerror());
    pthread_barrier_wait(&loaded);
    exercise("the main thread");
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    dm_stats s;
    if (get_stats(&s) != DM_OK || s.count != 0 || s.capacity != 0 || s.reserved != 0)
        FAIL("blocks left: %llu\n", (unsigned long long)s.count);
    printf("dlopen_threads: OK (4 threads, %llu allocations)\n", (unsigned long long)s.total_allocations);
    return 0;
}
