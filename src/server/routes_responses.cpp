// OpenAI Responses.
#include <ctime>

#include "server/responses.h"
#include "server/routes.h"

namespace ds4::server {

using json = nlohmann::ordered_json;
using OJ = nlohmann::ordered_json;

namespace {

struct ResponsesWire final : WireFormatter {
  explicit ResponsesWire(ResponsesFormatter f) : f(std::move(f)) {}
  ResponsesFormatter f;
  std::vector<json> events;
  void stream_event(const GenEvent& ev, std::string& out) override {
    events.clear();
    f.stream_event(ev, events);
    for (const auto& e : events) out += named_sse(e.value("type", std::string()), e);
  }
  void collect(const GenEvent& ev) override { f.collect(ev); }
  json final_response() override { return f.final_response(); }
  std::string stream_error(const ApiError& e) override {
    events.clear();
    f.stream_failure(e, events);
    std::string out;
    for (const auto& ev : events) out += named_sse(ev.value("type", std::string()), ev);
    return out;
  }
};

}  // namespace

void install_responses_routes(httplib::Server& svr, Routes& r) {
  Prepare responses = [](const OJ& body, const ServerContext& ctx, RequestInfo& info) {
    ResponsesRequest rr;
    GenerationSpec spec = build_responses_spec(body, ctx, info, rr);
    ResponsesFormatter f(std::move(rr), static_cast<int64_t>(std::time(nullptr)));
    return std::make_pair(std::move(spec),
                          std::unique_ptr<WireFormatter>(new ResponsesWire(std::move(f))));
  };
  svr.Post("/v1/responses", generation_handler(r, responses, false));
  svr.Post("/responses", generation_handler(r, responses, false));
}

}  // namespace ds4::server
