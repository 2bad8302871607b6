// A slot: one live session of the server (--parallel N of them) with what it knows about
// its own state — the prompt-to-tokens decision (live token / text / visible prefix), the
// disk KV cache steps for its session (evict, load, cold / continued / shutdown saves), and
// the chunked prefill of one request. Routing picks a slot for a request (route_request).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ds4/engine.h"
#include "kvcache/store.h"
#include "server/job.h"
#include "server/metrics.h"
#include "server/output.h"
#include "server/tool_replay.h"
#include "spec/speculative.h"
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

// What routing sees of a slot.
struct SlotCandidate {
  bool idle = false;
  size_t live_tokens = 0;  // tokens the slot's session holds
  size_t reusable = 0;     // of them, how many the request would keep
  std::chrono::steady_clock::time_point last_used{};
};

// The slot a request goes to, or -1 when no slot is idle (the request waits).
// Among idle slots: the longest reusable prefix wins when it is a "long" match; a match is
// short when it would discard more of the slot's live tokens than it keeps (reusable * 2 <
// live_tokens: e.g. only a shared system prompt of a longer conversation), and then an idle
// empty slot is preferred, so a warm conversation keeps its slot. Without an empty slot the
// longest reusable prefix wins anyway. Ties go to the least recently used slot.
int route_request(const std::vector<SlotCandidate>& slots);

// Bytes of RAM the process may still take (MemAvailable of /proc/meminfo; 0 if unknown).
uint64_t available_memory_bytes();
// Empty when `parallel` sessions of `per_slot` bytes fit in `available` (0: unknown, no
// check); else the refusal with the numbers.
std::string check_slot_memory(int parallel, int ctx, uint64_t per_slot, uint64_t available);

// A short, stable name of a token prefix (16 hex digits of SHA-1 over the ids).
std::string prefix_hash(const std::vector<int32_t>& tokens);

struct SlotShared {
  const text::Tokenizer& tok;
  Metrics& metrics;
  kvcache::DiskCache* disk = nullptr;  // shared by every slot (one directory)
  ToolReplay* tool_replay = nullptr;
  bool log = false;
  int prefill_chunk = 256;
  int32_t user_id = -1, assistant_id = -1;
  Engine* engine = nullptr;  // for speculative verify batches
  int mtp_draft = 0;         // 0: plain decode
  bool mtp_adaptive = true;  // false: always mtp_draft drafts (--mtp-fixed)
};

class Slot {
 public:
  enum class State { Idle, Prefill, Decode };

  Slot(int id, std::unique_ptr<Session> session, const SlotShared& shared);

  int id() const { return id_; }
  State state() const { return state_; }
  Session& session() { return *session_; }
  const Session& session() const { return *session_; }
  const std::shared_ptr<Job>& job() const { return job_; }
  std::chrono::steady_clock::time_point last_used() const { return last_used_; }
  uint64_t requests() const { return requests_; }

  // How many of this slot's live tokens a request with `spec` would keep.
  size_t reusable_for(const GenerationSpec& spec) const;

  // Admission: decides the tokens (live / disk reuse), plans the prefill. Errors (context
  // overflow, disk trouble) are sent to the job as Failed and leave the slot idle.
  void begin(std::shared_ptr<Job> job);
  // Evaluates the next prefill chunk (or checkpoint piece) on its own: next_piece(), the
  // session synced to its end, piece_done(). Failures end the job.
  void prefill_chunk();
  // The prompt tokens [from, to) that the next prefill step evaluates, at positions from..to-1
  // (from = the session's length; from == to when nothing is left to evaluate), so the
  // scheduler can put them in a batch with other slots' rows. A cancelled job ends here
  // (nullopt; the slot is idle).
  struct Piece {
    int from = 0, to = 0;
    bool at_stop = false;  // ends at a disk checkpoint
  };
  std::optional<Piece> next_piece();
  const std::vector<int32_t>& prompt_tokens() const { return tokens_; }
  // After the piece was evaluated (the session holds tokens [0, to)): its disk checkpoint,
  // progress; at the prompt's end the Started event and the switch to Decode.
  void piece_done(const Piece& p);
  // The piece was not evaluated: the job fails (499 when cancelled), the slot is idle.
  void prefill_failed(const std::exception& e);
  // Decode, first half: the next token to evaluate, or nullopt when the answer is over
  // (then call finish()). Cancellation is checked here.
  std::optional<int32_t> next_token();
  // Evaluates the token next_token() returned (with --mtp-draft: commits it, verifying the
  // next drafts in the same pass).
  void eval_next(int32_t token);
  // --mtp-draft is on for the running request (its tokens go through eval_next, not a
  // shared decode batch).
  bool speculating() const { return spec_ != nullptr; }
  // Decode, second half, after the token was evaluated: continued checkpoints.
  void after_eval();
  // The answer is over (or cancelled): Done event, log line, the closing token evaluated,
  // the visible transcripts remembered; the slot becomes idle.
  void finish(bool shutting_down);
  // A failure during decode (the engine threw): Failed event, the slot reset and idle.
  void fail(const std::exception& e);
  // Saves the live state to the disk cache (no-op without one or when too short).
  void save_live(kvcache::Reason reason);
  // Earliest time the next decode step may run (test hook ds4_test_delay_ms).
  std::chrono::steady_clock::time_point ready_at() const { return ready_at_; }

  // Totals for /slots and /metrics.
  struct Totals {
    uint64_t requests = 0, reused = 0, evaluated = 0, generated = 0, cancelled = 0;
  };
  const Totals& totals() const { return totals_; }
  // The last request's serial (0: none yet).
  uint64_t last_serial() const { return last_serial_; }

 private:
  const char* choose_tokens(const GenerationSpec& spec, std::vector<int32_t>& tokens) const;
  const char* consult_disk(const GenerationSpec& spec, std::vector<int32_t>& tokens,
                           const char* source, bool& cold);
  void plan_checkpoints(bool cold);
  std::vector<kvcache::ToolReplayEntry> tool_entries() const;
  std::string live_text(size_t n) const;
  void log_kv(const std::string& line) const;
  void fail_job(const ApiError& e);
  Metrics& metrics() const { return shared_.metrics; }
  void reset_request();

  // What a client's next prompt starts with when it hides part of the live state: the
  // reasoning the renderer's drop rule removes from earlier turns, or reasoning a Responses
  // client never saw. Recorded after an answer with the live length it stands for; a prompt
  // that extends one of them keeps every live token ("visible" reuse, src/server/README.md).
  struct VisibleTranscript {
    std::string text;
    size_t live_tokens = 0;
    uint8_t kv_flag = 0;  // the disk cache's ext flag for a checkpoint keyed by this text
  };
  void remember_visible(const GenerationSpec& spec, const std::string& content,
                        const std::string& block, bool ended_with_eos);
  std::vector<VisibleTranscript> visible_;

  int id_;
  std::unique_ptr<Session> session_;
  const SlotShared& shared_;
  int ctx_;
  State state_ = State::Idle;
  int last_frontier_ = 0;  // continued saves go to the next step above this length
  std::chrono::steady_clock::time_point last_used_{};
  std::chrono::steady_clock::time_point ready_at_{};
  Totals totals_;
  uint64_t requests_ = 0;
  uint64_t last_serial_ = 0;

  // The running request.
  std::shared_ptr<Job> job_;
  std::vector<int32_t> tokens_;  // the prompt's tokens as synced
  const char* source_ = "cold";
  int reused_ = 0;
  int prefill_start_ = 0;                                     // first evaluated position
  std::vector<std::pair<int, kvcache::Reason>> stops_;        // checkpoint pauses, ascending
  size_t next_stop_ = 0;
  int piece_start_ = 0;  // chunks count from here (the reuse point or the last pause)
  int continued_at_ = 0;
  std::chrono::steady_clock::time_point t0_{}, t1_{};
  std::unique_ptr<OutputPipeline> out_;
  std::unique_ptr<spec::Decoder> spec_;
  int64_t max_new_ = 0;  // --mtp-draft: speculative decoding of this request
  void end_speculation();
};

}  // namespace ds4::server
