// Anthropic messages and count_tokens.
#include "server/anthropic.h"
#include "server/routes.h"
#include "server/tool_replay.h"

namespace ds4::server {

using json = nlohmann::ordered_json;
using OJ = nlohmann::ordered_json;

namespace {

std::string named_frame(const NamedEvent& e) { return named_sse(e.first, e.second); }

struct AnthropicWire final : FormatterWire<AnthropicFormatter, NamedEvent, named_frame> {
  using FormatterWire::FormatterWire;
  // Claude Code's stream watchdog counts events, not SSE comments.
  std::string keepalive(bool) const override { return named_sse("ping", {{"type", "ping"}}); }
  std::string stream_error(const ApiError& e) override {
    return named_sse("error", anthropic_error_json(e));
  }
  json error_body(const ApiError& e) const override { return anthropic_error_json(e); }
};

}  // namespace

void install_anthropic_routes(httplib::Server& svr, Routes& r) {
  Prepare messages = [](const OJ& body, const ServerContext& ctx, RequestInfo& info) {
    GenerationSpec spec = build_messages_spec(body, ctx, info);
    return std::make_pair(std::move(spec), std::unique_ptr<WireFormatter>(new AnthropicWire(
                                               ToolReplay::random_id("msg_").substr(0, 28), info.model)));
  };
  svr.Post("/v1/messages", generation_handler(r, messages, true));
  svr.Post("/messages", generation_handler(r, messages, true));
  auto count_tokens = [&r](const httplib::Request& req, httplib::Response& res) {
    try {
      OJ body = parse_body(req, r.options);
      send_json(res, 200, {{"input_tokens", count_message_tokens(body, r.context(false))}});
    } catch (const ApiError& e) {
      send_json(res, e.status, anthropic_error_json(e));
    } catch (const nlohmann::ordered_json::exception& e) {
      send_json(res, 400, anthropic_error_json(bad_request(std::string("invalid request: ") + e.what())));
    }
  };
  svr.Post("/v1/messages/count_tokens", count_tokens);
  svr.Post("/messages/count_tokens", count_tokens);
}

}  // namespace ds4::server
