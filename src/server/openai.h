// OpenAI-compatible endpoints: request JSON -> GenerationSpec, GenEvents -> response JSON.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/job.h"
#include "server/options.h"
#include "server/tool_replay.h"
#include "text/tokenizer.h"

namespace ds4::server {

inline constexpr const char* kModelId = "deepseek-v4-flash";
// Served ids: the model and its aliases (deepseek-chat = non-thinking, deepseek-reasoner =
// thinking unless the request says otherwise).
const std::vector<std::string>& model_ids();
nlohmann::ordered_json model_object(const std::string& id, int ctx, int64_t default_max_tokens);

struct ServerContext {
  const ServerOptions& options;
  const text::Tokenizer& tok;
  int ctx;
  ToolReplay* tool_replay = nullptr;  // exact DSML replay lookups; null = canonical only
  // The most bytes one token stands for; 0 = no early bound. Generation requests set it: a
  // prompt with more than ctx * max_token_bytes bytes of text cannot fit and is refused
  // before it is tokenized (counting endpoints leave it 0 and count exactly).
  size_t max_token_bytes = 0;
};

// What a request asks for beyond the generation itself (response shape).
struct RequestInfo {
  std::string model;  // echoed back verbatim
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;
};

// Parses and validates a chat completion request, renders and tokenizes its prompt.
// Throws ApiError (400) on malformed input or context overflow.
GenerationSpec build_chat_spec(const nlohmann::ordered_json& body, const ServerContext& ctx,
                               RequestInfo& info);
// Legacy completions: the prompt is used raw (special-token strings are control tokens;
// BOS is prepended when missing), output is plain text.
GenerationSpec build_completion_spec(const nlohmann::ordered_json& body,
                                     const ServerContext& ctx, RequestInfo& info);

// Renders an OpenAI message list exactly as a chat request would (for /apply-template).
GenerationSpec build_template_spec(const nlohmann::ordered_json& body, const ServerContext& ctx);

// Body depth check before parsing (nesting deeper than max_depth => false).
bool json_depth_ok(std::string_view body, int max_depth);

nlohmann::ordered_json usage_json(const Usage& u);

// Accumulates events of one chat completion and formats the answer.
class ChatFormatter {
 public:
  ChatFormatter(std::string id, std::string model, int64_t created, const RequestInfo& info)
      : id_(std::move(id)), model_(std::move(model)), created_(created), info_(info) {}

  // Streaming: the SSE data payloads one event produces (possibly none).
  void stream_event(const GenEvent& ev, std::vector<nlohmann::ordered_json>& out);
  // Non-streaming: the whole response, after the Done event.
  void collect(const GenEvent& ev);
  nlohmann::ordered_json final_response() const;

 private:
  nlohmann::ordered_json chunk(nlohmann::ordered_json delta, const nlohmann::ordered_json& finish = nullptr) const;
  nlohmann::ordered_json logprob_json(const TokenLogprob& lp) const;
  std::string id_, model_;
  int64_t created_;
  RequestInfo info_;
  bool role_sent_ = false;
  size_t streamed_calls_ = 0;
  nlohmann::ordered_json pending_logprobs_ = nlohmann::ordered_json::array();
  // Non-streaming state.
  std::string content_, reasoning_;
  nlohmann::ordered_json all_logprobs_ = nlohmann::ordered_json::array();
  GenEvent done_{GenEvent::Kind::Done};
};

class CompletionFormatter {
 public:
  CompletionFormatter(std::string id, std::string model, int64_t created, const RequestInfo& info)
      : id_(std::move(id)), model_(std::move(model)), created_(created), info_(info) {}
  void stream_event(const GenEvent& ev, std::vector<nlohmann::ordered_json>& out);
  void collect(const GenEvent& ev);
  nlohmann::ordered_json final_response() const;

 private:
  nlohmann::ordered_json chunk(const std::string& text, const nlohmann::ordered_json& finish) const;
  std::string id_, model_;
  int64_t created_;
  RequestInfo info_;
  std::string text_;
  std::vector<TokenLogprob> pending_, all_;
  GenEvent done_{GenEvent::Kind::Done};
  nlohmann::ordered_json logprobs_json(const std::vector<TokenLogprob>& lps, size_t offset) const;
  size_t text_offset_ = 0;
};

}  // namespace ds4::server
