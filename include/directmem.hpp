/*
 * directmem for C++: header-only, on top of directmem.h; nothing to link beyond -ldirectmem.
 * C++17 or later.
 *
 * - directmem::block: an owning, move-only block (frees exactly once; get(), size(), release(),
 *   reset()); directmem::block::try_allocate is the form that does not throw.
 * - directmem::error: what allocation failures throw; a std::bad_alloc carrying the dm_status and
 *   the library's message, so code that catches std::bad_alloc keeps working.
 * - directmem::resource(): a std::pmr::memory_resource backed by directmem, so any std::pmr
 *   container is counted against the process's direct-memory limit and shows up in dm_get_stats.
 * - directmem::allocator<T>: the same for containers that take an allocator type.
 * - directmem::on_release(ptr, callable): a cleaner that runs any callable once, when the block is
 *   released (dm_free, dm_clean, or the owning block going away). The callable runs on the releasing
 *   thread with no library lock held and must not throw (as a destructor; a throw terminates).
 * - directmem::stats(), memory_stats(), trim(), decay(), set_background_decay(interval): the
 *   counters and the controls of memory kept for reuse, as values and std::chrono.
 *
 * Everything here is thread-safe, as the C API is. Like malloc, nothing is async-signal-safe.
 */
#ifndef DIRECTMEM_HPP
#define DIRECTMEM_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <new>
#include <type_traits>
#include <utility>

#include "directmem.h"

namespace directmem {

/** An allocation that failed: DM_ERR_LIMIT, DM_ERR_NO_MEMORY, DM_ERR_INVALID_ARGUMENT, ... */
class error : public std::bad_alloc {
public:
    explicit error(dm_status status) noexcept : status_(status) {}
    dm_status status() const noexcept { return status_; }
    const char *what() const noexcept override { return dm_status_message(static_cast<int>(status_)); }

private:
    dm_status status_;
};

/** Throws directmem::error unless status is DM_OK. */
inline void check(dm_status status) {
    if (status != DM_OK) throw error(status);
}

namespace detail {
template <class F>
void run_and_delete(void *ctx) noexcept {  // noexcept: a throwing callable terminates, never unwinds into C
    F *callable = static_cast<F *>(ctx);
    (*callable)();
    delete callable;
}
}  // namespace detail

/**
 * Runs `callable` once when the block starting at `ptr` is released. Returns the cleaner's handle
 * (dm_clean(handle) releases the block now). Throws directmem::error (DM_ERR_NOT_LIVE if `ptr` is
 * not the start of a live block); then `callable` is not kept.
 */
template <class F>
dm_cleaner on_release(void *ptr, F &&callable) {
    using Held = std::decay_t<F>;
    Held *held = new Held(std::forward<F>(callable));
    dm_cleaner handle = 0;
    dm_status status = dm_cleaner_register(ptr, &detail::run_and_delete<Held>, held, &handle);
    if (status != DM_OK) {
        delete held;
        throw error(status);
    }
    return handle;
}

/** An owning block of direct memory: zeroed when allocated, freed exactly once. Move-only. */
class block {
public:
    block() noexcept = default;

    /** `size` zeroed bytes aligned to `alignment` (0: max_align_t). Throws directmem::error. */
    explicit block(std::size_t size, std::size_t alignment = 0) {
        check(dm_allocate(size, alignment, &ptr_));
        size_ = size;
    }

    /** The non-throwing form: an empty block and `status` set on failure. */
    static block try_allocate(std::size_t size, std::size_t alignment, dm_status &status) noexcept {
        block b;
        status = dm_allocate(size, alignment, &b.ptr_);
        if (status == DM_OK) b.size_ = size;
        return b;
    }

    block(block &&other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)), size_(std::exchange(other.size_, 0)) {}

    block &operator=(block &&other) noexcept {
        if (this != &other) {
            reset();
            ptr_ = std::exchange(other.ptr_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }

    block(const block &) = delete;
    block &operator=(const block &) = delete;

    ~block() { reset(); }

    void *get() const noexcept { return ptr_; }
    std::size_t size() const noexcept { return size_; }
    explicit operator bool() const noexcept { return ptr_ != nullptr; }

    /** Gives up ownership: the caller frees the pointer with dm_free. */
    void *release() noexcept {
        size_ = 0;
        return std::exchange(ptr_, nullptr);
    }

    /** Frees the block now (its cleaners run); the block becomes empty. */
    void reset() noexcept {
        if (ptr_ != nullptr) {
            dm_free(ptr_);  // cannot fail for a block this object owns
            ptr_ = nullptr;
            size_ = 0;
        }
    }

    /** A cleaner on this block; see directmem::on_release. */
    template <class F>
    dm_cleaner on_release(F &&callable) {
        return directmem::on_release(ptr_, std::forward<F>(callable));
    }

private:
    void *ptr_ = nullptr;
    std::size_t size_ = 0;
};

/** A std::pmr::memory_resource that allocates from directmem; failures throw directmem::error. */
class memory_resource final : public std::pmr::memory_resource {
private:
    void *do_allocate(std::size_t bytes, std::size_t alignment) override {
        void *p = nullptr;
        check(dm_allocate(bytes, alignment, &p));
        return p;
    }

    void do_deallocate(void *p, std::size_t, std::size_t) override { dm_free(p); }

    bool do_is_equal(const std::pmr::memory_resource &other) const noexcept override {
        return dynamic_cast<const memory_resource *>(&other) != nullptr;  // one library, one pool
    }
};

/** The process's directmem memory resource. */
inline memory_resource *resource() noexcept {
    static memory_resource instance;
    return &instance;
}

/** An allocator for containers that take one by type: std::vector<int, directmem::allocator<int>>. */
template <class T>
struct allocator {
    using value_type = T;

    allocator() noexcept = default;
    template <class U>
    allocator(const allocator<U> &) noexcept {}

    T *allocate(std::size_t n) {
        if (n > SIZE_MAX / sizeof(T)) throw std::bad_array_new_length();
        void *p = nullptr;
        check(dm_allocate(n * sizeof(T), alignof(T), &p));
        return static_cast<T *>(p);
    }

    void deallocate(T *p, std::size_t) noexcept { dm_free(p); }

    template <class U>
    bool operator==(const allocator<U> &) const noexcept {
        return true;
    }
    template <class U>
    bool operator!=(const allocator<U> &) const noexcept {
        return false;
    }
};

/** The library's counters (dm_get_stats). */
inline dm_stats stats() {
    dm_stats s{};
    check(dm_get_stats(&s));
    return s;
}

/** What the live blocks occupy and what is cached for reuse (dm_get_memory_stats). */
inline dm_memory_stats memory_stats() {
    dm_memory_stats m{};
    check(dm_get_memory_stats(&m));
    return m;
}

/** Gives the memory kept for reuse back to the system now (dm_trim); returns the bytes. */
inline std::uint64_t trim() {
    std::uint64_t given_back = 0;
    check(dm_trim(&given_back));
    return given_back;
}

/** Gives back the memory kept for reuse whose time is up (dm_decay); returns the bytes. */
inline std::uint64_t decay() {
    std::uint64_t given_back = 0;
    check(dm_decay(&given_back));
    return given_back;
}

/**
 * A library thread that decays every `interval` (dm_set_background_decay); zero stops it. Throws
 * directmem::error: DM_ERR_INVALID_ARGUMENT for a negative interval or one beyond 2^32 - 1 ms
 * (nothing changes), DM_ERR_NO_MEMORY when the thread could not start.
 */
inline void set_background_decay(std::chrono::milliseconds interval) {
    if (interval.count() < 0 || static_cast<std::uint64_t>(interval.count()) > UINT32_MAX) {
        throw error(DM_ERR_INVALID_ARGUMENT);
    }
    check(dm_set_background_decay(static_cast<std::uint32_t>(interval.count())));
}

}  // namespace directmem

#endif  // DIRECTMEM_HPP
