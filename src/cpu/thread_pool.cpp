#include "cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace ds4::cpu {

namespace {

// Index of the pool thread running the current code (0: a caller thread), so a nested,
// serialised run_tasks still hands out the right per-thread scratch slot.
thread_local int tl_thread_index = 0;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// How long a worker spins for the next job before sleeping. Decode issues jobs a few
// microseconds apart; a sleeping worker takes tens of microseconds to wake.
constexpr auto kSpin = std::chrono::microseconds(300);

std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
#endif
  return cpus;
}

bool pin_disabled_by_env() {
  const char* v = std::getenv("DS4_PIN");
  return v && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0 || std::strcmp(v, "no") == 0);
}

bool pin_to(std::thread& t, int cpu) {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(t.native_handle(), sizeof(set), &set) == 0;
#else
  (void)t;
  (void)cpu;
  return false;
#endif
}

inline void slice(int64_t n, int parts, int index, int64_t& b, int64_t& e) {
  b = n * index / parts;
  e = n * (index + 1) / parts;
}

}  // namespace

ThreadPool::ThreadPool(const PoolOptions& opt) {
  const std::vector<int> cpus = allowed_cpus();
  int threads = opt.threads;
  if (threads <= 0) {
    threads = !cpus.empty() ? static_cast<int>(cpus.size())
                            : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  n_threads_ = threads;
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
  // One worker per allowed CPU; the caller keeps its own affinity (it may be a server
  // thread) and normally lands on the CPU left over, allowed[0].
  if (opt.pin && !pin_disabled_by_env() && n_threads_ > 1 && static_cast<int>(cpus.size()) >= n_threads_) {
    bool all = true;
    for (int i = 1; i < n_threads_; ++i) all = pin_to(workers_[i - 1], cpus[i]) && all;
    pinned_ = all;
  }
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  publish();
  for (auto& t : workers_) t.join();
}

void ThreadPool::publish() {
  // seq_cst on both sides: either a worker about to sleep sees the new generation, or we
  // see it counted in sleepers_ and wake it (taking the lock orders us after its check).
  generation_.fetch_add(1);
  if (sleepers_.load() > 0) {
    { std::lock_guard<std::mutex> lk(sleep_mu_); }
    sleep_cv_.notify_all();
  }
}

void ThreadPool::run_share(const Job& job, int index) {
  if (job.slices) {
    if (index < job.parts) {
      int64_t b, e;
      slice(job.n, job.parts, index, b, e);
      (*job.slices)(b, e);
    }
    return;
  }
  for (;;) {
    const int64_t t = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (t >= job.n) break;
    (*job.tasks)(t, index);
  }
}

void ThreadPool::dispatch(const Job& job) {
  job_ = job;
  next_task_.store(0, std::memory_order_relaxed);
  pending_.store(n_threads_ - 1);
  publish();
  try {
    run_share(job, 0);
  } catch (...) {
    record_error();
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    // A worker descheduled on a busy machine: stop burning the CPU it may need.
    if ((spins & 255) == 255 && std::chrono::steady_clock::now() - t0 > kSpin)
      std::this_thread::yield();
    else
      cpu_relax();
  }
  if (error_) {
    std::exception_ptr e = std::exchange(error_, nullptr);
    busy_.store(false);
    std::rethrow_exception(e);
  }
}

void ThreadPool::record_error() {
  std::lock_guard<std::mutex> lk(error_mu_);
  if (!error_) error_ = std::current_exception();
  // The remaining tasks are skipped: claim them all.
  next_task_.store(INT64_MAX / 2);
}

void ThreadPool::worker(int index) {
  tl_thread_index = index;
  // Generation 0 is the pool's state before any job: a job published before this thread
  // got to run is still seen as new.
  uint32_t seen = 0;
  for (;;) {
    // Spin a little for the next job, then sleep until the generation moves.
    const auto t0 = std::chrono::steady_clock::now();
    for (int spins = 0; generation_.load(std::memory_order_acquire) == seen; ++spins) {
      if ((spins & 255) == 255 && std::chrono::steady_clock::now() - t0 > kSpin) {
        std::unique_lock<std::mutex> lk(sleep_mu_);
        sleepers_.fetch_add(1);
        while (generation_.load() == seen) sleep_cv_.wait(lk);
        sleepers_.fetch_sub(1);
        break;
      }
      cpu_relax();
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    try {
      run_share(job_, index);
    } catch (...) {
      record_error();
    }
    pending_.fetch_sub(1, std::memory_order_release);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                              int64_t min_per_thread) {
  if (n <= 0) return;
  int parts = n_threads_;
  if (min_per_thread > 1) parts = static_cast<int>(std::min<int64_t>(parts, n / min_per_thread));
  parts = static_cast<int>(std::min<int64_t>(parts, n));
  if (parts <= 1 || busy_.exchange(true)) {
    fn(0, n);
    return;
  }
  Job job;
  job.slices = &fn;
  job.n = n;
  job.parts = parts;
  dispatch(job);
  busy_.store(false);
}

void ThreadPool::run_tasks(int64_t n_tasks, const std::function<void(int64_t, int)>& fn) {
  if (n_tasks <= 0) return;
  if (n_threads_ <= 1 || n_tasks == 1 || busy_.exchange(true)) {
    const int index = tl_thread_index;
    for (int64_t t = 0; t < n_tasks; ++t) fn(t, index);
    return;
  }
  Job job;
  job.tasks = &fn;
  job.n = n_tasks;
  dispatch(job);
  busy_.store(false);
}

}  // namespace ds4::cpu
