// OpenAI chat and text completions.
#include <ctime>

#include "server/routes.h"

namespace ds4::server {

using json = nlohmann::ordered_json;
using OJ = nlohmann::ordered_json;

namespace {

std::string data_frame(const json& payload) { return sse(payload); }

// OpenAI streams end with "data: [DONE]".
template <class F>
struct OpenAIWire final : FormatterWire<F, json, data_frame> {
  using FormatterWire<F, json, data_frame>::FormatterWire;
  std::string stream_end() const override { return "data: [DONE]\n\n"; }
};

}  // namespace

void install_openai_routes(httplib::Server& svr, Routes& r) {
  Prepare chat = [&r](const OJ& body, const ServerContext& ctx, RequestInfo& info) {
    GenerationSpec spec = build_chat_spec(body, ctx, info);
    return std::make_pair(std::move(spec), std::unique_ptr<WireFormatter>(new OpenAIWire<ChatFormatter>(
                                               "chatcmpl-" + std::to_string(r.next_id++), info.model,
                                               static_cast<int64_t>(std::time(nullptr)), info)));
  };
  Prepare completion = [&r](const OJ& body, const ServerContext& ctx, RequestInfo& info) {
    GenerationSpec spec = build_completion_spec(body, ctx, info);
    return std::make_pair(std::move(spec), std::unique_ptr<WireFormatter>(new OpenAIWire<CompletionFormatter>(
                                               "cmpl-" + std::to_string(r.next_id++), info.model,
                                               static_cast<int64_t>(std::time(nullptr)), info)));
  };
  svr.Post("/v1/chat/completions", generation_handler(r, chat, false));
  svr.Post("/chat/completions", generation_handler(r, chat, false));
  svr.Post("/v1/completions", generation_handler(r, completion, false));
  svr.Post("/completions", generation_handler(r, completion, false));
}

}  // namespace ds4::server
