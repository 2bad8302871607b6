// OpenAI Responses API (/v1/responses; docs/server.md), the protocol of Codex CLI:
// request JSON (input items) -> GenerationSpec, GenEvents -> response JSON and the
// sequence-numbered streaming lifecycle. Stateless: previous_response_id is rejected.
#pragma once

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/job.h"
#include "server/openai.h"

namespace ds4::server {

// What the formatter needs to know about the request.
struct ResponsesRequest {
  std::string id;     // resp_...
  std::string model;  // echoed
  bool summary = false;  // reasoning.summary opted in: reasoning surfaces as summary text
  std::set<std::string> custom_tools;  // freeform tools: calls are custom_tool_call items
  // Flattened namespace tool name -> (namespace, name) for the output items.
  std::map<std::string, std::pair<std::string, std::string>> namespaced;
};

GenerationSpec build_responses_spec(const nlohmann::ordered_json& body, const ServerContext& ctx,
                                    RequestInfo& info, ResponsesRequest& request);

nlohmann::ordered_json responses_usage_json(const Usage& u);

class ResponsesFormatter {
 public:
  ResponsesFormatter(ResponsesRequest request, int64_t created_at);

  // Streaming: event payloads (each has "type" and "sequence_number").
  void stream_event(const GenEvent& ev, std::vector<nlohmann::ordered_json>& out);
  // A failure after the stream started: response.failed.
  void stream_failure(const ApiError& e, std::vector<nlohmann::ordered_json>& out);
  void collect(const GenEvent& ev);
  nlohmann::ordered_json final_response() const;

 private:
  struct Call {
    std::string item_id, call_id, name, arguments;
  };
  nlohmann::ordered_json response_object(const std::string& status,
                                         const nlohmann::ordered_json& output,
                                         const Usage* usage) const;
  nlohmann::ordered_json reasoning_item(const std::string& status) const;
  nlohmann::ordered_json message_item(const std::string& status) const;
  nlohmann::ordered_json call_item(const Call& c, const std::string& status) const;
  void emit(std::vector<nlohmann::ordered_json>& out, nlohmann::ordered_json ev);
  void close_reasoning(std::vector<nlohmann::ordered_json>& out, const std::string& status);
  void close_message(std::vector<nlohmann::ordered_json>& out, const std::string& status);
  void close_call(std::vector<nlohmann::ordered_json>& out, const std::string& status);
  void start_call(std::vector<nlohmann::ordered_json>& out, const std::string& call_id,
                  const std::string& name);
  void finish_output(const GenEvent& done, nlohmann::ordered_json& output) const;

  ResponsesRequest req_;
  int64_t created_at_;
  int64_t seq_ = 0;
  bool created_ = false;
  // Items in output order as they are streamed.
  nlohmann::ordered_json done_items_ = nlohmann::ordered_json::array();
  size_t next_output_ = 0;
  enum class Open { None, Reasoning, Message, Call };
  Open open_ = Open::None;
  size_t open_index_ = 0;
  std::string reasoning_id_, message_id_;
  std::string reasoning_, text_;
  Call call_;
  size_t streamed_calls_ = 0;
  bool reasoning_closed_ = false;
  // Non-streaming.
  GenEvent done_{GenEvent::Kind::Done};
};

}  // namespace ds4::server
