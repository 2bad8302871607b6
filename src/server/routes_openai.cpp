// OpenAI chat and text completions.
#include <ctime>

#include "server/routes.h"

namespace ds4::server {

using json = nlohmann::ordered_json;
using OJ = nlohmann::ordered_json;

namespace {

template <class F>
struct OpenAIWire final : WireFormatter {
  explicit OpenAIWire(std::unique_ptr<F> f) : f(std::move(f)) {}
  std::unique_ptr<F> f;
  std::vector<json> payloads;
  void stream_event(const GenEvent& ev, std::string& out) override {
    payloads.clear();
    f->stream_event(ev, payloads);
    for (const auto& p : payloads) out += sse(p);
  }
  void collect(const GenEvent& ev) override { f->collect(ev); }
  json final_response() override { return f->final_response(); }
  std::string stream_end() const override { return "data: [DONE]\n\n"; }
};

}  // namespace

void install_openai_routes(httplib::Server& svr, Routes& r) {
  Prepare chat = [&r](const OJ& body, const ServerContext& ctx, RequestInfo& info) {
    GenerationSpec spec = build_chat_spec(body, ctx, info);
    auto f = std::make_unique<ChatFormatter>("chatcmpl-" + std::to_string(r.next_id++), info.model,
                                             static_cast<int64_t>(std::time(nullptr)), info);
    return std::make_pair(std::move(spec), std::unique_ptr<WireFormatter>(
                                               new OpenAIWire<ChatFormatter>(std::move(f))));
  };
  Prepare completion = [&r](const OJ& body, const ServerContext& ctx, RequestInfo& info) {
    GenerationSpec spec = build_completion_spec(body, ctx, info);
    auto f = std::make_unique<CompletionFormatter>("cmpl-" + std::to_string(r.next_id++), info.model,
                                                   static_cast<int64_t>(std::time(nullptr)), info);
    return std::make_pair(std::move(spec), std::unique_ptr<WireFormatter>(
                                               new OpenAIWire<CompletionFormatter>(std::move(f))));
  };
  svr.Post("/v1/chat/completions", generation_handler(r, chat, false));
  svr.Post("/chat/completions", generation_handler(r, chat, false));
  svr.Post("/v1/completions", generation_handler(r, completion, false));
  svr.Post("/completions", generation_handler(r, completion, false));
}

}  // namespace ds4::server
