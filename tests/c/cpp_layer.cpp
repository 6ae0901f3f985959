// The C++ layer (include/directmem.hpp) as a C++ user meets it: RAII blocks, the non-throwing
// form, cleaners taking any callable, std::pmr containers and an STL allocator counted in
// dm_get_stats, and a pmr container under a tight limit that gets directmem::error and keeps working.
// Built with -std=c++17 and -std=c++20, -Wall -Wextra -Werror, and run under valgrind.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory_resource>
#include <string>
#include <unordered_map>
#include <vector>

#include "directmem.hpp"

#define ASSERT(cond)                                                                  \
    do {                                                                              \
        if (!(cond)) {                                                                \
            std::fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
            std::exit(1);                                                             \
        }                                                                             \
    } while (0)

static dm_stats stats() {
    dm_stats s;
    ASSERT(dm_get_stats(&s) == DM_OK);
    return s;
}

static void blocks_free_exactly_once() {
    int released = 0;
    {
        directmem::block a(4096);
        ASSERT(a && a.size() == 4096 && static_cast<unsigned char *>(a.get())[4095] == 0);
        a.on_release([&released] { released++; });
        directmem::block b = std::move(a);  // moved: a owns nothing, b frees once
        ASSERT(!a && b.get() != nullptr);
        ASSERT(stats().count == 1);
    }
    ASSERT(released == 1);
    ASSERT(stats().count == 0);

    directmem::block c(100);
    void *raw = c.release();
    ASSERT(!c && dm_free(raw) == DM_OK);

    dm_status status = DM_OK;
    directmem::block bad = directmem::block::try_allocate(10, 3, status);  // alignment not a power of two
    ASSERT(!bad && status == DM_ERR_INVALID_ARGUMENT);
    try {
        directmem::block also_bad(10, 3);
        ASSERT(false);
    } catch (const std::bad_alloc &e) {  // catchable as what C++ code already expects
        ASSERT(dynamic_cast<const directmem::error *>(&e) != nullptr);
    }
    std::printf("block: moves, release, reset, cleaners and the non-throwing form hold\n");
}

static void pmr_and_stl_containers_are_counted() {
    std::uint64_t before = stats().capacity;
    {
        std::pmr::vector<int> v(directmem::resource());
        for (int i = 0; i < 1000; i++) v.push_back(i);
        std::pmr::unordered_map<int, std::pmr::string> m(directmem::resource());
        for (int i = 0; i < 100; i++) m.emplace(i, std::pmr::string(64, 'x', directmem::resource()));
        std::pmr::monotonic_buffer_resource arena(directmem::resource());
        std::pmr::map<int, int> tree(&arena);
        for (int i = 0; i < 500; i++) tree[i] = i;
        std::vector<long, directmem::allocator<long>> w(2000, 7);
        ASSERT(stats().capacity >= before + 1000 * sizeof(int) + 2000 * sizeof(long));
        ASSERT(v[999] == 999 && m.at(42).size() == 64 && tree.at(499) == 499 && w[1999] == 7);
    }
    ASSERT(stats().count == 0 && stats().capacity == before);
    std::printf("pmr: vector, unordered_map of strings, monotonic arena, STL allocator: counted, all freed\n");
}

static void a_tight_limit_throws_and_the_container_keeps_working() {
    ASSERT(dm_set_limit(256 * 1024) == DM_OK);
    std::pmr::vector<char> v(directmem::resource());
    dm_status caught = DM_OK;
    try {
        for (;;) v.push_back('a');
    } catch (const directmem::error &e) {
        caught = e.status();
    }
    ASSERT(caught == DM_ERR_LIMIT);
    std::size_t kept = v.size();
    ASSERT(kept > 0 && v.back() == 'a');  // strong guarantee: the vector is intact
    v.clear();
    v.shrink_to_fit();
    for (int i = 0; i < 1000; i++) v.push_back('b');  // and usable again
    ASSERT(v.size() == 1000);
    ASSERT(stats().limit_failures >= 1);
    ASSERT(dm_set_limit(UINT64_MAX) == DM_OK);
    std::printf("limit: push_back threw directmem::error(DM_ERR_LIMIT) after %zu bytes; the vector kept working\n", kept);
}

static void counters_and_reuse_controls() {
    using namespace std::chrono_literals;
    {
        std::vector<directmem::block> blocks;
        for (int i = 0; i < 1000; i++) blocks.emplace_back(4096);
        ASSERT(directmem::stats().count == 1000 && directmem::memory_stats().occupied >= 1000 * 4096);
    }
    // Freed: their empty slabs are kept for reuse, shown as cached, and trim gives back just that.
    std::uint64_t cached = directmem::memory_stats().cached;
    ASSERT(cached >= 2 << 20);
    directmem::decay();  // only what is past its time: whatever it is, trim takes the rest
    cached = directmem::memory_stats().cached;
    ASSERT(directmem::trim() == cached && directmem::memory_stats().cached == 0);
    directmem::set_background_decay(20ms);
    directmem::set_background_decay(0ms);
    dm_status refused = DM_OK;
    try {
        directmem::set_background_decay(-1ms);
    } catch (const directmem::error &e) {
        refused = e.status();
    }
    ASSERT(refused == DM_ERR_INVALID_ARGUMENT);
    std::printf("stats, memory_stats, decay, trim and set_background_decay: as the C functions say\n");
}

int main() {
    ASSERT(dm_version() == DM_VERSION_NUMBER);
    blocks_free_exactly_once();
    pmr_and_stl_containers_are_counted();
    a_tight_limit_throws_and_the_container_keeps_working();
    counters_and_reuse_controls();
    dm_stats s = stats();
    ASSERT(s.count == 0 && s.reserved == 0);
    std::printf("cpp_layer: OK\n");
    return 0;
}
