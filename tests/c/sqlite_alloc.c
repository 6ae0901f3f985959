/* SQLite running on directmem as its allocator (SQLITE_CONFIG_MALLOC: xMalloc, xFree, xRealloc,
 * xSize), the way a real C library takes a custom allocator: every byte SQLite allocates is a
 * directmem block, counted in dm_get_stats and bounded by the limit. Builds a table with an index,
 * queries it, hits a tight limit (SQLITE_NOMEM, then recovery), and ends with no block left.
 * Then one connection shared by threads that come and go (SQLite's serialized mode): what one
 * thread's statement allocates, another's frees (page cache, statements, result rows), and threads
 * end while blocks they allocated live on in SQLite's caches. */
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>

#include "check.h"

static void *x_malloc(int n) {
    void *p;
    return dm_allocate((size_t)n, 0, &p) == DM_OK ? p : NULL;
}
static void x_free(void *p) { CHECK(dm_free(p)); }
static void *x_realloc(void *p, int n) {
    void *q;
    return dm_reallocate(p, (size_t)n, &q) == DM_OK ? q : NULL;
}
static int x_size(void *p) {
    size_t size;
    CHECK(dm_block_size(p, &size));
    return (int)size;
}
static int x_roundup(int n) { return (n + 7) & ~7; }
static int x_init(void *ctx) { (void)ctx; return SQLITE_OK; }
static void x_shutdown(void *ctx) { (void)ctx; }

static void exec(sqlite3 *db, const char *sql) {
    char *error = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &error) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", sql, error);
        exit(1);
    }
}

static long long one_number(sqlite3 *db, const char *sql) {
    sqlite3_stmt *q;
    ASSERT(sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK);
    ASSERT(sqlite3_step(q) == SQLITE_ROW);
    long long v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return v;
}

/* One connection, used in turn by short threads: each inserts rows through a statement it
 * prepares, reads back a sum, and ends. */
enum { WORKERS = 4, GENERATIONS = 8, ROWS_PER_THREAD = 300 };

static void *shared_connection_worker(void *arg) {
    sqlite3 *db = arg;
    sqlite3_stmt *insert;
    ASSERT(sqlite3_prepare_v2(db, "INSERT INTO s (v, payload) VALUES (?1, randomblob(?2))", -1, &insert, NULL) == SQLITE_OK);
    for (int i = 0; i < ROWS_PER_THREAD; i++) {
        sqlite3_bind_int(insert, 1, i);
        sqlite3_bind_int(insert, 2, 16 + (i * 37) % 3000);
        ASSERT(sqlite3_step(insert) == SQLITE_DONE);
        sqlite3_reset(insert);
        if (i % 50 == 0) ASSERT(one_number(db, "SELECT count(*) FROM s WHERE v = 0") > 0);
    }
    sqlite3_finalize(insert);
    return NULL;
}

static void threads_sharing_one_connection(void) {
    sqlite3 *db;
    ASSERT(sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) == SQLITE_OK);
    exec(db, "CREATE TABLE s (id INTEGER PRIMARY KEY, v INTEGER, payload BLOB)");
    exec(db, "CREATE INDEX s_v ON s (v)");
    for (int g = 0; g < GENERATIONS; g++) {
        pthread_t t[WORKERS];
        for (int w = 0; w < WORKERS; w++) ASSERT(pthread_create(&t[w], NULL, shared_connection_worker, db) == 0);
        for (int w = 0; w < WORKERS; w++) ASSERT(pthread_join(t[w], NULL) == 0);
        if (g % 2 == 1) exec(db, "DELETE FROM s WHERE id % 3 = 0"); /* frees pages other threads filled */
    }
    long long rows = one_number(db, "SELECT count(*) FROM s");
    ASSERT(rows > 0 && rows < (long long)GENERATIONS * WORKERS * ROWS_PER_THREAD);
    ASSERT(one_number(db, "SELECT count(*) FROM s WHERE length(payload) != 16 + (v * 37) % 3000") == 0);
    dm_stats during = stats_now();
    printf("sqlite: %d threads in %d generations shared one connection: %lld rows, %llu blocks live\n",
           WORKERS, GENERATIONS, rows, (unsigned long long)during.count);
    ASSERT(sqlite3_close(db) == SQLITE_OK);
}

int main(void) {
    static const sqlite3_mem_methods methods = {x_malloc, x_free, x_realloc, x_size, x_roundup, x_init, x_shutdown, NULL};
    ASSERT(sqlite3_config(SQLITE_CONFIG_MALLOC, &methods) == SQLITE_OK);
    ASSERT(sqlite3_initialize() == SQLITE_OK);

    sqlite3 *db;
    ASSERT(sqlite3_open(":memory:", &db) == SQLITE_OK);
    exec(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, payload BLOB)");
    exec(db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) "
             "INSERT INTO t SELECT i, 'name-' || (i % 97), randomblob(100 + i % 400) FROM n");
    exec(db, "CREATE INDEX t_name ON t (name)");
    ASSERT(one_number(db, "SELECT count(*) FROM t") == 5000);
    ASSERT(one_number(db, "SELECT count(DISTINCT name) FROM t") == 97);
    ASSERT(one_number(db, "SELECT sum(length(payload)) FROM t") > 5000 * 100);
    dm_stats during = stats_now();
    ASSERT(during.count > 100 && during.reserved > 1000000);
    printf("sqlite: 5000 rows and an index in %llu directmem blocks, %llu bytes\n",
           (unsigned long long)during.count, (unsigned long long)during.reserved);

    /* A limit just above what is held: a big insert fails with SQLITE_NOMEM, and SQLite carries on. */
    CHECK(dm_set_limit(during.reserved + 64 * 1024));
    int rc = sqlite3_exec(db, "INSERT INTO t SELECT id + 5000, name, randomblob(2000) FROM t", NULL, NULL, NULL);
    ASSERT(rc == SQLITE_NOMEM || rc == SQLITE_FULL);
    CHECK(dm_set_limit(UINT64_MAX));
    exec(db, "INSERT INTO t SELECT id + 5000, name, payload FROM t");
    ASSERT(one_number(db, "SELECT count(*) FROM t") == 10000);
    printf("sqlite: a tight limit gave %s, and after raising it the insert went through\n", sqlite3_errstr(rc));

    ASSERT(sqlite3_close(db) == SQLITE_OK);
    threads_sharing_one_connection();
    ASSERT(sqlite3_shutdown() == SQLITE_OK);
    dm_stats after = stats_now();
    ASSERT(after.count == 0 && after.reserved == 0);
    printf("sqlite_alloc: OK\n");
    return 0;
}
