// The threads rule of every kernel: a batch is cut into n_threads contiguous chunks, one per thread, each with
// its own scratch. One thread runs in the caller's thread (no thread is started: an online query pays nothing).
#pragma once

#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace xrmeta {

// Calls fn(chunk, lo, hi) for chunk in [0, n_chunks), chunk c covering items [c*n/n_chunks, (c+1)*n/n_chunks);
// n_chunks = min(n, n_threads) (at least 1). Chunks run on their own threads, the first on the caller's.
// An exception in a chunk is rethrown in the caller once every chunk has finished.
template <class Fn>
void parallel_chunks(int64_t n, int64_t n_threads, Fn&& fn) {
    int64_t n_chunks = n < n_threads ? n : n_threads;
    if (n_chunks < 1) n_chunks = 1;
    if (n_chunks == 1) {
        fn(int64_t(0), int64_t(0), n);
        return;
    }
    std::vector<std::exception_ptr> errors(n_chunks);
    auto run = [&](int64_t c) {
        try {
            fn(c, c * n / n_chunks, (c + 1) * n / n_chunks);
        } catch (...) {
            errors[c] = std::current_exception();
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(n_chunks - 1);
    for (int64_t c = 1; c < n_chunks; ++c) pool.emplace_back(run, c);
    run(0);
    for (auto& t : pool) t.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

}  // namespace xrmeta
