/* Lua 5.4 running on directmem (dm_reallocate, dm_free as its lua_Alloc) beside Lua on glibc
 * (realloc, free: Lua's own default), on the growth patterns that made dm_reallocate worth having:
 * tables grown one element at a time, strings built by concatenation, many small tables.
 * Rounds alternate between the two allocators (the order flips each round); prints the median
 * [min-max] ms per script and the ratio. Run: scripts/bench-lua.sh. */
#include "directmem.h"
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUNDS 9

static void *on_glibc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud, (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

static void *on_directmem(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud, (void)osize;
    if (nsize == 0) {
        if (ptr) dm_free(ptr);
        return NULL;
    }
    void *out;
    return dm_reallocate(ptr, nsize, &out) == DM_OK ? out : NULL;
}

static const char *SCRIPTS[][2] = {
    {"grow a table to 1M", "local t = {} for i = 1, 1000000 do t[#t + 1] = i end"},
    {"1000 tables of 1000", "local all = {} for j = 1, 1000 do local t = {} for i = 1, 1000 do t[i] = i end all[j] = t end"},
    {"concatenate strings", "local s = '' for i = 1, 20000 do s = s .. 'x' end local p = {} for i = 1, 200000 do p[i] = tostring(i) end"},
    {"hash table of 200k keys", "local t = {} for i = 1, 200000 do t['k' .. i] = i end for i = 1, 200000, 2 do t['k' .. i] = nil end"},
};

static double run_ms(lua_Alloc alloc, const char *script) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    lua_State *L = lua_newstate(alloc, NULL);
    if (!L) {
        fprintf(stderr, "lua_newstate failed\n");
        exit(1);
    }
    luaL_openlibs(L);
    if (luaL_dostring(L, script) != LUA_OK) {
        fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    lua_close(L);
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
}

static int by_value(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(void) {
    dm_set_limit(UINT64_MAX);
    printf("| script | glibc realloc | directmem dm_reallocate | ratio |\n|---|---|---|---|\n");
    for (size_t s = 0; s < sizeof SCRIPTS / sizeof *SCRIPTS; s++) {
        double g[ROUNDS], d[ROUNDS];
        run_ms(on_glibc, SCRIPTS[s][1]);
        run_ms(on_directmem, SCRIPTS[s][1]);
        for (int r = 0; r < ROUNDS; r++) {
            if (r % 2) {
                d[r] = run_ms(on_directmem, SCRIPTS[s][1]);
                g[r] = run_ms(on_glibc, SCRIPTS[s][1]);
            } else {
                g[r] = run_ms(on_glibc, SCRIPTS[s][1]);
                d[r] = run_ms(on_directmem, SCRIPTS[s][1]);
            }
        }
        qsort(g, ROUNDS, sizeof *g, by_value);
        qsort(d, ROUNDS, sizeof *d, by_value);
        printf("| %s | %.1f ms [%.1f-%.1f] | %.1f ms [%.1f-%.1f] | %.2f |\n", SCRIPTS[s][0], g[ROUNDS / 2], g[0],
               g[ROUNDS - 1], d[ROUNDS / 2], d[0], d[ROUNDS - 1], d[ROUNDS / 2] / g[ROUNDS / 2]);
    }
    dm_stats st;
    if (dm_get_stats(&st) != DM_OK || st.count != 0) {
        fprintf(stderr, "blocks left: %llu\n", (unsigned long long)st.count);
        return 1;
    }
    return 0;
}
