// A persistent thread pool for the forward pass. Workers live as long as the pool, spin
// briefly between jobs (decode issues a few dozen jobs per layer, microseconds apart) and then
// sleep on a futex, so an idle engine costs no CPU. Workers can be pinned one per core.
//
// Two ways to split work, both deterministic in their results: parallel_for hands each
// thread one contiguous slice; run_tasks lets threads claim task indices in order until
// none are left (load-balancing when the machine is shared or tasks are uneven). Either way
// every index is processed by exactly one call, so as long as tasks write disjoint outputs
// the results never depend on the thread count or on scheduling.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ds4::cpu {

struct PoolOptions {
  int threads = 0;   // <= 0: the CPUs this process may run on
  bool pin = true;   // pin worker i to the i-th allowed CPU (DS4_PIN=0 in the environment turns it off)
};

class ThreadPool {
 public:
  explicit ThreadPool(int threads) : ThreadPool(PoolOptions{threads, true}) {}
  explicit ThreadPool(const PoolOptions& opt);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  bool pinned() const { return pinned_; }

  // Calls fn(begin, end) on disjoint contiguous slices covering [0, n), one per thread.
  // Ranges shorter than min_per_thread * 2 run on the calling thread only. Not reentrant
  // (a nested call runs serially on the calling thread).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                    int64_t min_per_thread = 1);

  // Calls fn(task, thread) once for every task in [0, n_tasks); threads (the caller is
  // thread 0) claim tasks in increasing order. thread < size() indexes per-thread scratch.
  // An exception thrown by a task (on any thread) skips the unclaimed tasks and is rethrown
  // here once every thread has stopped; parallel_for does the same.
  void run_tasks(int64_t n_tasks, const std::function<void(int64_t task, int thread)>& fn);

 private:
  struct Job {
    const std::function<void(int64_t, int64_t)>* slices = nullptr;
    const std::function<void(int64_t, int)>* tasks = nullptr;
    int64_t n = 0;
    int parts = 0;  // slices: number of slices
  };
  void worker(int index);
  void dispatch(const Job& job);   // publish, run the caller's share, wait for the rest
  void run_share(const Job& job, int index);
  void publish();                  // next generation, waking sleeping workers
  void record_error();             // first exception of a job, rethrown by the caller

  int n_threads_ = 1;
  bool pinned_ = false;
  std::vector<std::thread> workers_;
  Job job_;
  std::atomic<int64_t> next_task_{0};
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> busy_{false};  // a job is in flight (nested calls run serially)
  // Sleeping workers wait here (the spin phase needs no lock).
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
  std::atomic<int> sleepers_{0};
  std::mutex error_mu_;
  std::exception_ptr error_;
};

}  // namespace ds4::cpu
