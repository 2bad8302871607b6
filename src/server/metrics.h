// Counters exported at GET /metrics in the Prometheus text format.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

namespace ds4::server {

class Metrics {
 public:
  std::atomic<uint64_t> requests_total{0};       // every HTTP request
  std::atomic<uint64_t> generation_requests{0};  // jobs that reached the worker
  std::atomic<uint64_t> request_errors{0};       // 4xx/5xx answers
  std::atomic<uint64_t> cancelled_jobs{0};
  std::atomic<uint64_t> prompt_tokens{0};
  std::atomic<uint64_t> cached_prompt_tokens{0};
  std::atomic<uint64_t> completion_tokens{0};
  std::atomic<uint64_t> mtp_drafted{0};   // speculative drafts verified
  std::atomic<uint64_t> mtp_accepted{0};  // ... and committed
  std::atomic<uint64_t> cache_hits{0};  // jobs that reused at least one live token
  std::atomic<int64_t> queue_depth{0};  // queued or running jobs
  std::atomic<int64_t> busy{0};         // slots running a job
  std::atomic<uint64_t> queue_rejected{0};  // 429: every slot busy and the queue full
  std::atomic<int64_t> open_connections{0};     // HTTP connections open now
  std::atomic<uint64_t> refused_connections{0};  // over a connection cap
  std::atomic<uint64_t> decode_steps{0};     // scheduler decode steps (one pass each when batched)
  std::atomic<uint64_t> decode_step_rows{0}; // tokens evaluated by them
  std::atomic<uint64_t> batched_prefill_rows{0};  // prompt tokens evaluated in a decode step's pass

  void add_prefill(uint64_t tokens, double seconds);
  void add_decode(uint64_t tokens, double seconds);
  std::string render_prometheus() const;

 private:
  mutable std::mutex mu_;
  uint64_t prefill_tokens_ = 0, decode_tokens_ = 0;
  double prefill_seconds_ = 0, decode_seconds_ = 0;
  double last_prefill_tps_ = 0, last_decode_tps_ = 0;
};

}  // namespace ds4::server
