/* A whole program on directmem: preloaded (LD_PRELOAD=libdm_malloc.so), this library makes
 * directmem the program's malloc, calloc, realloc, free and aligned allocations, so that real
 * programs (Python with PYTHONMALLOC=malloc, sort, gcc) put the library through what they do:
 * threads that come and go, fork() with threads running, fork and exec, blocks of every size,
 * realloc growth, zlib's and SQLite's allocation patterns. A test harness, not a product.
 *
 * What cannot go to directmem goes to glibc (its __libc_ functions):
 * - calls made while this thread is inside a dm_ call: the C library's allocations on the
 *   library's behalf, and the library's blocks from the C heap (its own bookkeeping never comes
 *   here: it takes it from glibc's __libc_ names, src/own_heap.rs, which is what lets the
 *   library's background decay thread and a JVM's calls through the JNI binding, which this file
 *   does not see, run under it);
 * - blocks glibc handed out (before this library was in place, or in the case above): free and
 *   realloc ask directmem first, which answers DM_ERR_NOT_LIVE for a pointer that is not one of
 *   its live blocks, and then give them to glibc.
 * With DM_MALLOC_REPORT set to a file's path, each process appends a line to that file at its end
 * saying how many blocks directmem served it, so that a test can tell that the library was used
 * (a file: programs such as sort close their stderr before they end). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "directmem.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

/* Set while this thread is in a dm_ call. Initial-exec: reaching it must not allocate. */
static __thread int inside __attribute__((tls_model("initial-exec")));

static void *allocate(size_t size, size_t alignment) {
    if (inside) return alignment ? __libc_memalign(alignment, size) : __libc_malloc(size);
    void *p = NULL;
    inside = 1;
    enum dm_status status = dm_allocate(size, alignment, &p);
    inside = 0;
    if (status != DM_OK) {
        errno = ENOMEM;
        return NULL;
    }
    return p;
}

/* The smallest power of two >= `alignment` and >= a pointer's size (what glibc does with a
 * memalign alignment that is not a power of two). */
static size_t power_of_two(size_t alignment) {
    size_t a = sizeof(void *);
    while (a < alignment && a != 0) a <<= 1;
    return a;
}

void *malloc(size_t size) { return allocate(size, 0); }

void *calloc(size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    if (inside) return __libc_calloc(n, size);
    return allocate(total, 0); /* dm_allocate's blocks are zeroed */
}

void free(void *p) {
    if (p == NULL) return;
    if (inside) {
        __libc_free(p);
        return;
    }
    inside = 1;
    enum dm_status status = dm_free(p);
    inside = 0;
    if (status == DM_ERR_NOT_LIVE) __libc_free(p);
}

void *realloc(void *p, size_t size) {
    if (p == NULL) return malloc(size);
    if (inside) return __libc_realloc(p, size);
    size_t old;
    void *q = NULL;
    inside = 1;
    int glibcs = dm_block_size(p, &old) == DM_ERR_NOT_LIVE;
    enum dm_status status = glibcs ? DM_OK : dm_reallocate(p, size, &q);
    inside = 0;
    if (glibcs) return __libc_realloc(p, size);
    if (status != DM_OK) {
        errno = ENOMEM;
        return NULL;
    }
    return q;
}

int posix_memalign(void **out, size_t alignment, size_t size) {
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) return EINVAL;
    void *p = allocate(size, alignment);
    if (p == NULL) return ENOMEM;
    *out = p;
    return 0;
}

void *aligned_alloc(size_t alignment, size_t size) { return allocate(size, power_of_two(alignment)); }
void *memalign(size_t alignment, size_t size) { return allocate(size, power_of_two(alignment)); }
void *valloc(size_t size) { return allocate(size, (size_t)dm_page_size()); }

void *pvalloc(size_t size) {
    size_t page = dm_page_size();
    return allocate((size + page - 1) / page * page, page);
}

/* For directmem's blocks, their size (what was asked for: all of it usable). glibc's blocks do
 * not come here in the programs this runs (none asks for their usable size). */
size_t malloc_usable_size(void *p) {
    size_t size = 0;
    if (p == NULL || inside) return 0;
    inside = 1;
    if (dm_block_size(p, &size) != DM_OK) size = 0;
    inside = 0;
    return size;
}

__attribute__((destructor)) static void report(void) {
    const char *path = getenv("DM_MALLOC_REPORT");
    if (path == NULL) return;
    /* Inside, like every dm_ call here: in a program that never allocated, this call is the
     * library's first, and making it takes memory from the C heap. */
    struct dm_stats stats;
    inside = 1;
    enum dm_status status = dm_get_stats(&stats);
    inside = 0;
    if (status != DM_OK) return;
    char line[128];
    int n = snprintf(line, sizeof line, "dm_malloc: %" PRIu64 " blocks served, %" PRIu64 " live at the end\n",
                     stats.total_allocations, stats.count);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644); /* one write: lines of processes do not mix */
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) != n) perror("dm_malloc report");
        close(fd);
    }
}
