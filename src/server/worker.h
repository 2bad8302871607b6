// The inference scheduler: one thread owns every slot (live session) and serves the jobs.
// Each step of its loop admits waiting jobs to idle slots, then evaluates the next token of
// every generating slot together with one prefill chunk of the oldest admitted request, in
// one forward pass, so a running stream never waits longer than one prefill chunk. Jobs
// wait in a bounded FIFO queue while every slot is busy.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "ds4/engine.h"
#include "kvcache/store.h"
#include "server/job.h"
#include "server/metrics.h"
#include "server/slot.h"
#include "server/tool_replay.h"
#include "text/tokenizer.h"

namespace ds4::server {

struct WorkerOptions {
  bool log = false;
  int max_queue = 64;       // jobs waiting for a slot; one more is answered 429
  int retry_after_s = 1;    // Retry-After of a 429 (queue full) and a 503 (shutdown)
  int prefill_chunk = 256;  // tokens per prefill step (the engine's chunk)
  // Speculative decoding (src/spec): the sessions' engine and the most drafts per verify.
  Engine* engine = nullptr;
  int mtp_draft = 0;
  bool mtp_adaptive = true;
  // Evaluates entries of several sessions in one forward pass (the engine's eval_batch):
  // a decode step's one token per generating slot, plus the next chunk of a prefill.
  // Unset: one Session::eval after another, prefill chunks on their own.
  std::function<void(std::span<const BatchEntry>)> eval_batch;
};

// What /slots shows of one slot.
struct SlotInfo {
  int id = 0;
  std::string state;  // "idle", "prefill", "decode"
  int n_ctx = 0;
  int64_t tokens = 0;  // live tokens of its session
  std::string prefix_hash;  // of the live tokens when the state last changed
  double last_used = 0;     // unix seconds of the last request's end (0: never used)
  uint64_t task = 0;        // serial of the running (or last) request
  Slot::Totals totals;
};

class Worker {
 public:
  // One slot per session (all of one context size). `disk` (optional) is the disk KV cache:
  // the spill tier shared by every slot (src/kvcache/README.md).
  Worker(std::vector<std::unique_ptr<Session>> sessions, const text::Tokenizer& tok,
         Metrics& metrics, WorkerOptions options,
         std::unique_ptr<kvcache::DiskCache> disk = nullptr);
  // A single slot.
  Worker(std::unique_ptr<Session> session, const text::Tokenizer& tok, Metrics& metrics, bool log,
         std::unique_ptr<kvcache::DiskCache> disk = nullptr);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Queues a job (FIFO). Throws ApiError 429 when the queue is full, 503 after stop().
  std::shared_ptr<Job> submit(GenerationSpec spec);
  // Stops taking jobs: queued ones are answered 503, running ones cancelled; joins the
  // thread, then saves every slot's live state to the disk cache (reason shutdown).
  void stop();
  int context_size() const { return ctx_; }
  int parallel() const { return static_cast<int>(slots_.size()); }
  std::vector<SlotInfo> slot_infos() const;
  // Per-slot Prometheus series (appended to /metrics).
  std::string render_slot_metrics() const;
  // Exact DSML replay memory (not owned; may be null): every parsed call's id and sampled
  // block bytes are stored there before the answer's final event. Disk checkpoints carry
  // the entries whose blocks occur in their text (KTM) and restore them when loaded.
  // Set before the first job.
  void set_tool_replay(ToolReplay* replay) { shared_.tool_replay = replay; }
  ToolReplay* tool_replay() const { return shared_.tool_replay; }

 private:
  void loop();
  // Scheduler stages. A round of loop(): admit(), then step(): gather_decode() runs each
  // generating slot's output pipeline (sample, detokenize, stop strings, DSML events; see
  // OutputPipeline) to get its next token, oldest_prefill() picks the prefill whose next
  // chunk goes now, evaluate() runs the decode rows and that chunk in one forward pass,
  // after_decode() / after_prefill() finish the rows (checkpoints, the switch to decode).
  struct Step {
    std::vector<Slot*> rows;        // generating slots, each with its next token
    std::vector<int32_t> tokens;
    std::vector<int> before;        // each row's session length before the pass
    Slot* prefill = nullptr;        // the prefill whose piece rides in the pass
    Slot::Piece piece;
    bool any = false;               // a generating slot was served (or finished)
  };
  bool admit();          // queued jobs -> idle slots (routing); true if any was taken
  bool step();           // one decode step of every generating slot + one prefill chunk
  void gather_decode(Step& st);
  Slot* oldest_prefill();  // (cancelled prefills are freed here)
  void evaluate(Step& st);
  void after_decode(Step& st);
  void after_prefill(Step& st);
  void job_ended(Job& job);  // the job is over (its gauge share goes, if not already)
  void release(Slot& s); // a job left its slot
  void publish(bool rehash);  // slot states for /slots and /metrics
  bool stopping() const;
  std::chrono::steady_clock::time_point next_ready() const;

  Metrics& metrics_;
  WorkerOptions opt_;
  int ctx_;
  std::unique_ptr<kvcache::DiskCache> disk_;
  SlotShared shared_;
  std::vector<std::unique_ptr<Slot>> slots_;  // touched by the scheduler thread only
  bool shutdown_saved_ = false;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::shared_ptr<Job>> running_;  // one entry per slot (null: idle)
  std::vector<SlotInfo> infos_;
  int idle_slots_ = 0;
  bool stopping_ = false;
  uint64_t next_serial_ = 1;
  std::thread thread_;
};

}  // namespace ds4::server
