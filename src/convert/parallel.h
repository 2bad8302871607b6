// The converter's loops over independent items (experts, row ranges) run on the engine's
// thread pool (cpu::ThreadPool), not on threads of their own.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu/thread_pool.h"

namespace ds4::convert {

// A pool for one conversion: `threads` workers (<= 0: every CPU this process may run on), not
// pinned (conversion is not latency-bound and shares the machine with its file I/O).
inline cpu::PoolOptions converter_pool(int threads) { return cpu::PoolOptions{threads, false}; }

// Calls fn(i) for every i in [0, n), items claimed in order by the pool's threads. The first
// exception is rethrown once every thread has stopped.
template <typename Fn>
void parallel_for(cpu::ThreadPool& pool, size_t n, Fn&& fn) {
  pool.run_tasks(static_cast<int64_t>(n), [&](int64_t i, int) { fn(static_cast<size_t>(i)); });
}

}  // namespace ds4::convert
