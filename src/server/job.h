// The pipeline between request threads and the inference worker:
//   request (endpoint JSON) -> GenerationSpec (rendered prompt, tokens, decoding knobs)
//   -> Job queued to the worker -> GenEvents -> endpoint-specific formatting.
// Endpoints only differ in how they build the spec and how they format events, so later
// protocols (Anthropic messages, Responses) plug in at both ends without touching the worker.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "grammar/matcher.h"
#include "sample/sampler.h"
#include "server/api_error.h"
#include "text/chat_segments.h"

namespace ds4::server {

struct GenerationSpec {
  // Prompt: the rendered text as segments (control markers vs client text), its bytes, and
  // its tokenization. The worker may replace the tokens by live tokens + tokenize(suffix)
  // when the live text is a byte prefix of `rendered`.
  text::PromptSegments segments;
  std::string rendered;
  std::vector<int32_t> tokens;

  sample::Params sampling;
  bool thinking = false;     // the prompt ends with "<think>": output starts as reasoning
  bool parse_tools = false;  // tools were offered: recognise DSML tool-call blocks
  bool raw_output = false;   // completions: no reasoning/tool parsing, all bytes are text
  int64_t max_tokens = 0;
  std::vector<std::string> stop;
  int top_logprobs = -1;  // -1: no logprobs; else alternatives per token
  std::string log_tag;    // "chat" / "completion" for log lines
  std::string tool_id_prefix = "call_";  // ids of parsed tool calls: prefix + 32 hex digits
  // Structured output: the answer (after </think> when thinking) must match this grammar.
  std::shared_ptr<grammar::CompiledGrammar> grammar;

  // Test hooks (only set when the server runs with --test-hooks).
  std::optional<std::vector<int32_t>> forced_tokens;
  bool forced_then_sample = false;  // after the forced tokens, sample instead of EOS
  // With --mtp-draft: the draft of the i-th answer token (replaces the MTP block's).
  std::optional<std::vector<int32_t>> drafts;
  int test_delay_ms = 0;
};

struct TokenLogprob {
  int32_t id = 0;
  std::string bytes;
  float logprob = 0.f;
  std::vector<std::pair<std::string, float>> top;  // (bytes, logprob)
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;
  int64_t completion_tokens = 0;
};

struct FinalToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // compact JSON text
};

struct GenEvent {
  enum class Kind {
    Progress,       // prefill progress: done/total in a/b
    Started,        // prefill finished; usage has prompt and cached counts
    Reasoning,      // text
    Content,        // text
    ToolCallStart,  // index, id, name
    ToolCallArgs,   // index, text (JSON fragment)
    Logprob,        // logprob
    Done,           // finish_reason, usage, tool_calls (authoritative)
    Failed,         // error
  };
  explicit GenEvent(Kind k = Kind::Content) : kind(k) {}
  Kind kind;
  std::string text;
  size_t index = 0;
  std::string id;
  std::string name;
  int64_t a = 0, b = 0;
  TokenLogprob logprob;
  std::string finish_reason;
  std::string stop_sequence;  // Done with finish "stop": the stop sequence that matched, if any
  Usage usage;
  std::vector<FinalToolCall> tool_calls;
  std::optional<ApiError> error;
};

// One queued request. The request thread reads events; the worker writes them.
class Job {
 public:
  explicit Job(GenerationSpec spec) : spec(std::move(spec)) {}
  GenerationSpec spec;
  std::atomic<bool> cancelled{false};
  std::chrono::steady_clock::time_point queued_at = std::chrono::steady_clock::now();
  uint64_t serial = 0;

  // Runs once, just before the final event (Done or Failed) is queued, or at finalize() if
  // that comes first: bookkeeping that must be exact by the time the client holds its
  // answer (the queue-depth gauge), not when the worker is done with the job (it evaluates
  // the closing token after the answer). Set and run by the worker's thread only.
  std::function<void()> on_final;
  void finalize() {
    if (!on_final) return;
    auto f = std::move(on_final);
    on_final = nullptr;
    f();
  }

  void push(GenEvent ev) {
    if (ev.kind == GenEvent::Kind::Done || ev.kind == GenEvent::Kind::Failed) finalize();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (ev.kind == GenEvent::Kind::Done || ev.kind == GenEvent::Kind::Failed) finished_ = true;
      events_.push_back(std::move(ev));
    }
    cv_.notify_all();
  }
  // Moves available events into `out`; waits up to `timeout` when there are none.
  // Returns false once the final event has been taken and nothing is left.
  bool wait_events(std::vector<GenEvent>& out, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (events_.empty() && !finished_) cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
    while (!events_.empty()) {
      out.push_back(std::move(events_.front()));
      events_.pop_front();
    }
    return !(finished_ && events_.empty() && out.empty());
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenEvent> events_;
  bool finished_ = false;
};

}  // namespace ds4::server
