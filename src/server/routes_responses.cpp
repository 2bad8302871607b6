// OpenAI Responses.
#include <ctime>

#include "server/responses.h"
#include "server/routes.h"

namespace ds4::server {

using json = nlohmann::ordered_json;
using OJ = nlohmann::ordered_json;

namespace {

// Responses events are named by their "type".
std::string typed_frame(const json& e) { return named_sse(e.value("type", std::string()), e); }

struct ResponsesWire final : FormatterWire<ResponsesFormatter, json, typed_frame> {
  using FormatterWire::FormatterWire;
  std::string stream_error(const ApiError& e) override {
    events.clear();
    f.stream_failure(e, events);
    return frames();
  }
};

}  // namespace

void install_responses_routes(httplib::Server& svr, Routes& r) {
  Prepare responses = [](const OJ& body, const ServerContext& ctx, RequestInfo& info) {
    ResponsesRequest rr;
    GenerationSpec spec = build_responses_spec(body, ctx, info, rr);
    return std::make_pair(std::move(spec), std::unique_ptr<WireFormatter>(new ResponsesWire(
                                               std::move(rr), static_cast<int64_t>(std::time(nullptr)))));
  };
  svr.Post("/v1/responses", generation_handler(r, responses, false));
  svr.Post("/responses", generation_handler(r, responses, false));
}

}  // namespace ds4::server
