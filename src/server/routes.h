// The HTTP route table, split by protocol: routes_admin.cpp (health, metrics, slots, models,
// tokenizer endpoints, and the handlers every request passes: auth, CORS, framing, errors),
// routes_openai.cpp (chat and text completions), routes_anthropic.cpp (messages,
// count_tokens), routes_responses.cpp (Responses). This header holds what they share: the
// server's parts, JSON answers, and the generation handler that runs a job and writes its
// answer or SSE stream through a protocol's WireFormatter. Only the route files include it.
#pragma once

#include <httplib.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/api_error.h"
#include "server/job.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "server/options.h"
#include "server/worker.h"
#include "text/tokenizer.h"

namespace ds4::server {

// What the routes work with; owned by HttpServer, outlives every handler.
struct Routes {
  const ServerOptions& options;
  const text::Tokenizer& tok;
  Worker& worker;
  Metrics& metrics;
  std::atomic<uint64_t>& next_id;
  size_t max_token_bytes;  // for the early prompt-size bound (request_fields.h)

  // The request context; with `bound` the early prompt-size check is on.
  ServerContext context(bool bound) const {
    return ServerContext{options, tok, worker.context_size(), worker.tool_replay(),
                         bound ? max_token_bytes : 0};
  }
};

void send_json(httplib::Response& res, int status, const nlohmann::ordered_json& body);
void set_retry_after(httplib::Response& res, const ApiError& e);
void send_error(httplib::Response& res, const ApiError& e);
// Parses a request body as JSON (ordered: tool schema key order is part of the prompt);
// 413 / 400 ApiError for oversized, too deep, NUL-holding or malformed bodies.
nlohmann::ordered_json parse_body(const httplib::Request& req, const ServerOptions& o);
// SSE frames: "data: ..." and "event: NAME\ndata: ...".
std::string sse(const nlohmann::ordered_json& payload);
std::string named_sse(const std::string& event, const nlohmann::ordered_json& data);

// One endpoint's wire format behind one interface for the generation handler: SSE framing,
// keep-alives, error shapes, and the non-streaming answer.
struct WireFormatter {
  virtual ~WireFormatter() = default;
  // Appends the SSE text one event produces.
  virtual void stream_event(const GenEvent& ev, std::string& out) = 0;
  virtual void collect(const GenEvent& ev) = 0;
  virtual nlohmann::ordered_json final_response() = 0;
  virtual std::string keepalive(bool started) const {
    return started ? ": keep-alive\n\n" : ": prefill\n\n";
  }
  virtual std::string stream_end() const { return ""; }
  // A failure after the SSE headers went out.
  virtual std::string stream_error(const ApiError& e) { return sse(e.to_json()); }
  virtual nlohmann::ordered_json error_body(const ApiError& e) const { return e.to_json(); }
};

// A WireFormatter over a protocol's formatter F (constructed in place from `args`):
// F::stream_event fills a list of Event, each written as one SSE frame by Frame; collect and
// the non-streaming answer go to F as they are.
template <class F, class Event, std::string (*Frame)(const Event&)>
struct FormatterWire : WireFormatter {
  template <class... Args>
  explicit FormatterWire(Args&&... args) : f(std::forward<Args>(args)...) {}
  F f;
  void stream_event(const GenEvent& ev, std::string& out) override {
    events.clear();
    f.stream_event(ev, events);
    out += frames();
  }
  void collect(const GenEvent& ev) override { f.collect(ev); }
  nlohmann::ordered_json final_response() override { return f.final_response(); }

 protected:
  // The SSE text of `events`.
  std::string frames() const {
    std::string out;
    for (const Event& e : events) out += Frame(e);
    return out;
  }
  std::vector<Event> events;
};

// Builds a job's spec and its wire formatter from the request body (throws ApiError).
using Prepare = std::function<std::pair<GenerationSpec, std::unique_ptr<WireFormatter>>(
    const nlohmann::ordered_json& body, const ServerContext& ctx, RequestInfo& info)>;
// The handler of a generation endpoint: parses, submits the job, then answers in one piece or
// streams; errors before generation starts get a status (Anthropic's shape when asked).
httplib::Server::Handler generation_handler(Routes& r, Prepare prepare, bool anthropic_errors);

void install_admin_routes(httplib::Server& svr, Routes& r);
void install_openai_routes(httplib::Server& svr, Routes& r);
void install_anthropic_routes(httplib::Server& svr, Routes& r);
void install_responses_routes(httplib::Server& svr, Routes& r);

}  // namespace ds4::server
