// Anthropic Messages API (/v1/messages, /v1/messages/count_tokens; docs/server.md):
// request JSON -> GenerationSpec, GenEvents -> message JSON and named SSE events.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/job.h"
#include "server/openai.h"

namespace ds4::server {

// Parses and validates a Messages request, renders and tokenizes its prompt. Tool call ids
// of the answer start with "toolu_". Throws ApiError (400) on malformed input.
GenerationSpec build_messages_spec(const nlohmann::ordered_json& body, const ServerContext& ctx,
                                   RequestInfo& info);
// The prompt tokens the same request would use (count_tokens; max_tokens not required).
size_t count_message_tokens(const nlohmann::ordered_json& body, const ServerContext& ctx);

// {"type":"error","error":{"type","message",...}} with Anthropic's error type names.
nlohmann::ordered_json anthropic_error_json(const ApiError& e);

// Maps a worker finish reason to Anthropic's stop_reason.
std::string anthropic_stop_reason(const GenEvent& done);

nlohmann::ordered_json anthropic_usage_json(const Usage& u);

// One SSE event: its name and data.
using NamedEvent = std::pair<std::string, nlohmann::ordered_json>;

// Accumulates one answer and formats it as Anthropic content blocks.
class AnthropicFormatter {
 public:
  AnthropicFormatter(std::string id, std::string model) : id_(std::move(id)), model_(std::move(model)) {}

  void stream_event(const GenEvent& ev, std::vector<NamedEvent>& out);
  void collect(const GenEvent& ev);
  nlohmann::ordered_json final_response() const;

 private:
  enum class Open { None, Thinking, Text, Tool };
  void close_block(std::vector<NamedEvent>& out);
  void start_block(std::vector<NamedEvent>& out, Open kind, nlohmann::ordered_json block);
  nlohmann::ordered_json message_object(const nlohmann::ordered_json& content,
                                        const nlohmann::ordered_json& stop_reason,
                                        const nlohmann::ordered_json& stop_sequence,
                                        const Usage& usage) const;

  std::string id_, model_;
  // Streaming state.
  Open open_ = Open::None;
  size_t next_index_ = 0;
  size_t streamed_calls_ = 0;
  bool text_block_sent_ = false;
  bool started_ = false;
  Usage usage_;
  // Non-streaming state.
  std::string reasoning_, content_;
  GenEvent done_{GenEvent::Kind::Done};
};

}  // namespace ds4::server
