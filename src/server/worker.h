// The one inference worker: owns the live session, serves jobs in arrival order.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "ds4/engine.h"
#include "kvcache/store.h"
#include "server/job.h"
#include "server/metrics.h"
#include "server/tool_replay.h"
#include "text/tokenizer.h"

namespace ds4::server {

// Tokens of a segment list: control segments map to their ids, text is BPE-encoded with
// special-token strings treated as plain text.
std::vector<int32_t> tokenize_segments(const text::Tokenizer& tok,
                                       const text::PromptSegments& segments);
// The segments after byte offset `offset` of their concatenation, or nullopt if the offset
// falls inside a control segment.
std::optional<text::PromptSegments> segments_after(const text::PromptSegments& segments,
                                                   size_t offset);

class Worker {
 public:
  // `disk` (optional) is the disk KV cache: checkpoints are looked up on a live miss and
  // saved cold / continued / on eviction / at shutdown (spec server.md §11-12).
  Worker(std::unique_ptr<Session> session, const text::Tokenizer& tok, Metrics& metrics,
         bool log, std::unique_ptr<kvcache::DiskCache> disk = nullptr);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Queues a job (FIFO). Throws ApiError 503 after stop().
  std::shared_ptr<Job> submit(GenerationSpec spec);
  // Stops taking jobs, cancels the running and queued ones, joins the thread, then saves the
  // live state to the disk cache (reason shutdown) when there is one.
  void stop();
  int context_size() const { return ctx_; }
  // Exact DSML replay memory (not owned; may be null): every parsed call's id and sampled
  // block bytes are stored there before the answer's final event. Disk checkpoints carry
  // the entries whose blocks occur in their text (KTM) and restore them when loaded.
  void set_tool_replay(ToolReplay* replay) { tool_replay_ = replay; }
  ToolReplay* tool_replay() const { return tool_replay_; }

 private:
  void loop();
  void run(Job& job);
  // Chooses the tokens to sync: the spec's own, or live tokens + the tokenized suffix when
  // the live text is a byte prefix of the rendered prompt. Returns a tag for the log.
  const char* choose_tokens(const GenerationSpec& spec, std::vector<int32_t>& tokens);
  // Disk KV cache steps (no-ops without a cache). On a live miss: saves the live state
  // (evict), then loads the longest stored prefix of the prompt; sets `cold` when nothing
  // will be reused.
  const char* consult_disk(const GenerationSpec& spec, std::vector<int32_t>& tokens,
                           const char* source, bool& cold);
  // Syncs to `tokens`, pausing at the cold and continued checkpoints to save them.
  int sync_with_checkpoints(const std::vector<int32_t>& tokens, bool cold, const SyncOptions& so);
  void save_live(kvcache::Reason reason);
  std::vector<kvcache::ToolReplayEntry> tool_entries() const;
  std::string live_text(size_t n) const;
  void log_kv(const std::string& line) const;

  // What a client's next prompt starts with when it hides part of the live state: the
  // reasoning the renderer's drop rule removes from earlier turns, or reasoning a Responses
  // client never saw. Recorded after an answer with the live length it stands for; a prompt
  // that extends one of them keeps every live token (spec server.md §11 "visible" reuse).
  struct VisibleTranscript {
    std::string text;
    size_t live_tokens = 0;
    uint8_t kv_flag = 0;  // the disk cache's ext flag for a checkpoint keyed by this text
  };
  void remember_visible(const GenerationSpec& spec, const std::string& content,
                        const std::string& block, bool ended_with_eos);
  std::vector<VisibleTranscript> visible_;

  std::unique_ptr<Session> session_;
  const text::Tokenizer& tok_;
  Metrics& metrics_;
  bool log_;
  int ctx_;
  ToolReplay* tool_replay_ = nullptr;
  std::unique_ptr<kvcache::DiskCache> disk_;
  int last_frontier_ = 0;  // continued saves go to the next step above this length
  int32_t user_id_ = -1, assistant_id_ = -1;
  bool shutdown_saved_ = false;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::shared_ptr<Job> running_;
  bool stopping_ = false;
  uint64_t next_serial_ = 1;
  std::thread thread_;
};

}  // namespace ds4::server
