// C++ with directmem (include/directmem.hpp): a std::pmr container whose memory counts against the
// process's direct-memory limit, an owning block with a cleaner, and what a full limit looks like.
#include <cstdio>
#include <memory_resource>
#include <string>
#include <vector>

#include "directmem.hpp"

int main() {
    dm_set_limit(1 << 20);
    std::pmr::vector<std::pmr::string> names(directmem::resource());
    for (int i = 0; i < 100; i++) names.emplace_back("a name long enough to leave the small-string buffer");
    dm_stats s;
    dm_get_stats(&s);
    std::printf("100 pmr strings: %llu live blocks, %llu bytes under the %llu-byte limit\n",
                (unsigned long long)s.count, (unsigned long long)s.reserved, (unsigned long long)s.limit);

    directmem::block frame(64 * 1024);
    frame.on_release([] { std::printf("the frame's cleaner ran once\n"); });

    try {
        std::pmr::vector<char> too_big(2 << 20, 'x', directmem::resource());
    } catch (const directmem::error &e) {
        std::printf("2 MiB under a 1 MiB limit: directmem::error: %s\n", e.what());
    }
    frame.reset();
    names.clear();
    names.shrink_to_fit();
    dm_get_stats(&s);
    std::printf("%s\n", s.count == 0 && s.reserved == 0 ? "cpp_containers: OK" : "cpp_containers: blocks left!");
    return s.count == 0 ? 0 : 1;
}
