#include "server/http_server.h"

#include <httplib.h>

#include <ctime>
#include <functional>

#include "server/anthropic.h"
#include "server/openai.h"
#include "server/responses.h"
#include "server/peer.h"

namespace ds4::server {

using json = nlohmann::ordered_json;
using OJ = nlohmann::ordered_json;
using namespace std::chrono_literals;

namespace {

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

void set_retry_after(httplib::Response& res, const ApiError& e) {
  if (e.retry_after_s > 0) res.set_header("Retry-After", std::to_string(e.retry_after_s));
}

void send_error(httplib::Response& res, const ApiError& e) {
  set_retry_after(res, e);
  send_json(res, e.status, e.to_json());
}

// Parses a request body as JSON (ordered: tool schema key order is part of the prompt).
OJ parse_body(const httplib::Request& req, const ServerOptions& o) {
  if (req.body.size() > o.max_body_bytes) {
    throw ApiError(413, "request body larger than " + std::to_string(o.max_body_bytes) + " bytes");
  }
  if (!json_depth_ok(req.body, o.max_json_depth)) {
    throw bad_request("invalid JSON request: nesting deeper than " +
                      std::to_string(o.max_json_depth));
  }
  try {
    return OJ::parse(req.body);
  } catch (const nlohmann::ordered_json::parse_error& e) {
    throw bad_request(std::string("invalid JSON request: ") + e.what());
  }
}

bool is_anthropic_path(const std::string& path) {
  return path.rfind("/v1/messages", 0) == 0 || path.rfind("/messages", 0) == 0;
}

std::string sse(const json& payload) { return "data: " + dump_json(payload) + "\n\n"; }

bool is_final(const GenEvent& ev) {
  return ev.kind == GenEvent::Kind::Done || ev.kind == GenEvent::Kind::Failed;
}

// One endpoint's wire format behind one interface for the generation handler: SSE framing,
// keep-alives, error shapes, and the non-streaming answer.
struct WireFormatter {
  virtual ~WireFormatter() = default;
  // Appends the SSE text one event produces.
  virtual void stream_event(const GenEvent& ev, std::string& out) = 0;
  virtual void collect(const GenEvent& ev) = 0;
  virtual json final_response() = 0;
  virtual std::string keepalive(bool started) const {
    return started ? ": keep-alive\n\n" : ": prefill\n\n";
  }
  virtual std::string stream_end() const { return ""; }
  // A failure after the SSE headers went out.
  virtual std::string stream_error(const ApiError& e) { return sse(e.to_json()); }
  virtual json error_body(const ApiError& e) const { return e.to_json(); }
};

std::string named_sse(const std::string& event, const json& data) {
  return "event: " + event + "\ndata: " + dump_json(data) + "\n\n";
}

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

struct AnthropicWire final : WireFormatter {
  explicit AnthropicWire(AnthropicFormatter f) : f(std::move(f)) {}
  AnthropicFormatter f;
  std::vector<NamedEvent> events;
  void stream_event(const GenEvent& ev, std::string& out) override {
    events.clear();
    f.stream_event(ev, events);
    for (const auto& [name, data] : events) out += named_sse(name, data);
  }
  void collect(const GenEvent& ev) override { f.collect(ev); }
  json final_response() override { return f.final_response(); }
  // Claude Code's stream watchdog counts events, not SSE comments.
  std::string keepalive(bool) const override { return named_sse("ping", {{"type", "ping"}}); }
  std::string stream_error(const ApiError& e) override {
    return named_sse("error", anthropic_error_json(e));
  }
  json error_body(const ApiError& e) const override { return anthropic_error_json(e); }
};

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

HttpServer::HttpServer(const ServerOptions& options, const text::Tokenizer& tok, Worker& worker,
                       Metrics& metrics)
    : options_(options), tok_(tok), worker_(worker), metrics_(metrics),
      svr_(std::make_unique<httplib::Server>()) {
  install_routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  int port = options_.port;
  if (port == 0) {
    port = svr_->bind_to_any_port(options_.host.c_str());
  } else if (!svr_->bind_to_port(options_.host.c_str(), port)) {
    port = -1;
  }
  if (port <= 0) {
    throw std::runtime_error("cannot listen on " + options_.host + ":" +
                             std::to_string(options_.port));
  }
  return port;
}

bool HttpServer::serve() { return svr_->listen_after_bind(); }

void HttpServer::stop() { svr_->stop(); }

void HttpServer::install_routes() {
  httplib::Server& svr = *svr_;
  const int threads = options_.http_threads;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr.set_payload_max_length(options_.max_body_bytes);
  svr.set_read_timeout(10, 0);
  svr.set_write_timeout(10, 0);
  // Clients pool connections; a server that drops an idle one just as the client reuses it
  // fails that request ("other side closed"), so idle connections live well beyond the
  // clients' own idle timers.
  svr.set_keep_alive_max_count(100000);
  svr.set_keep_alive_timeout(30);

  svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    metrics_.requests_total++;
    if (options_.cors) {
      res.set_header("Access-Control-Allow-Origin", "*");
      res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      res.set_header("Access-Control-Allow-Headers", "*");
      if (req.method == "OPTIONS") {
        res.status = 204;
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (!options_.api_key.empty() && req.path != "/health") {
      std::string auth = req.get_header_value("Authorization");
      std::string key = req.get_header_value("x-api-key");
      bool ok = auth == "Bearer " + options_.api_key || key == options_.api_key;
      if (!ok) {
        ApiError e(401, "invalid or missing API key", "authentication_error");
        e.code = "invalid_api_key";
        if (is_anthropic_path(req.path)) send_json(res, 401, anthropic_error_json(e));
        else send_error(res, e);
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  // Statuses cpp-httplib produces itself (no route, oversized body, bad request line) still
  // get an error object.
  svr.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
    metrics_.request_errors++;
    if (!res.body.empty()) return;
    std::string msg = res.status == 404   ? "unknown endpoint"
                      : res.status == 413 ? "request body too large"
                      : res.status == 400 ? "bad HTTP request"
                                          : "request failed";
    send_error(res, ApiError(res.status, msg,
                             res.status >= 500 ? "server_error" : "invalid_request_error"));
  });
  svr.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "internal error";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        send_error(res, ApiError(500, what, "server_error"));
      });

  svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"status", "ok"}});
  });
  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.render_prometheus() + worker_.render_slot_metrics(),
                    "text/plain; version=0.0.4");
  });
  svr.Get("/slots", [this](const httplib::Request&, httplib::Response& res) {
    json out = json::array();
    for (const auto& s : worker_.slot_infos()) {
      out.push_back({{"id", s.id},
                     {"state", s.state},
                     {"n_ctx", s.n_ctx},
                     {"tokens", s.tokens},
                     {"prefix_hash", s.prefix_hash},
                     {"last_used", s.last_used},
                     {"task", s.task},
                     {"requests", s.totals.requests},
                     {"reused_tokens", s.totals.reused},
                     {"evaluated_tokens", s.totals.evaluated},
                     {"generated_tokens", s.totals.generated},
                     {"cancelled", s.totals.cancelled}});
    }
    send_json(res, 200, out);
  });

  auto list_models = [this](const httplib::Request&, httplib::Response& res) {
    json data = json::array();
    for (const auto& id : model_ids()) {
      data.push_back(model_object(id, worker_.context_size(), options_.default_max_tokens));
    }
    send_json(res, 200, {{"object", "list"}, {"data", data}});
  };
  svr.Get("/v1/models", list_models);
  svr.Get("/models", list_models);
  auto get_model = [this](const httplib::Request& req, httplib::Response& res) {
    std::string id = req.matches[1];
    for (const auto& known : model_ids()) {
      if (known == id) {
        send_json(res, 200, model_object(id, worker_.context_size(), options_.default_max_tokens));
        return;
      }
    }
    ApiError e(404, "model '" + id + "' not found");
    e.code = "model_not_found";
    send_error(res, e);
  };
  svr.Get(R"(/v1/models/(.+))", get_model);
  svr.Get(R"(/models/(.+))", get_model);

  svr.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    try {
      OJ body = parse_body(req, options_);
      if (!body.is_object() || !body.contains("content") || !body["content"].is_string()) {
        throw bad_request("'content' must be a string", "content");
      }
      auto flag = [&](const char* k, bool dflt) {
        if (!body.contains(k) || body[k].is_null()) return dflt;
        if (!body[k].is_boolean()) throw bad_request(std::string("'") + k + "' must be a boolean", k);
        return body[k].get<bool>();
      };
      bool parse_special = flag("parse_special", true);
      bool add_special = flag("add_special", false);
      bool with_pieces = flag("with_pieces", false);
      auto ids = tok_.encode(body["content"].get<std::string>(), parse_special);
      if (add_special) ids.insert(ids.begin(), tok_.bos_id());
      json tokens = json::array();
      for (int id : ids) {
        if (with_pieces) tokens.push_back({{"id", id}, {"piece", tok_.token_bytes(id)}});
        else tokens.push_back(id);
      }
      send_json(res, 200, {{"tokens", tokens}});
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });
  svr.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    try {
      OJ body = parse_body(req, options_);
      if (!body.is_object() || !body.contains("tokens") || !body["tokens"].is_array()) {
        throw bad_request("'tokens' must be an array of token ids", "tokens");
      }
      std::vector<int> ids;
      for (const auto& t : body["tokens"]) {
        if (!t.is_number_integer()) throw bad_request("'tokens' must hold integers", "tokens");
        int64_t id = t.get<int64_t>();
        if (id < 0 || id >= static_cast<int64_t>(tok_.vocab_size())) {
          throw bad_request("token id " + std::to_string(id) + " out of range", "tokens");
        }
        ids.push_back(static_cast<int>(id));
      }
      send_json(res, 200, {{"content", tok_.decode(ids)}});
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });
  svr.Post("/apply-template", [this](const httplib::Request& req, httplib::Response& res) {
    try {
      OJ body = parse_body(req, options_);
      ServerContext ctx{options_, tok_, worker_.context_size(), worker_.tool_replay()};
      GenerationSpec spec = build_template_spec(body, ctx);
      send_json(res, 200, {{"prompt", spec.rendered}, {"tokens", spec.tokens}});
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });

  // Builds a job's spec and its wire formatter from the request body (throws ApiError).
  using Prepare = std::function<std::pair<GenerationSpec, std::unique_ptr<WireFormatter>>(
      const OJ& body, const ServerContext& ctx, RequestInfo& info)>;
  auto generation = [this](Prepare prepare, bool anthropic_errors) {
    return [this, prepare, anthropic_errors](const httplib::Request& req, httplib::Response& res) {
      RequestInfo info;
      std::shared_ptr<Job> job;
      std::shared_ptr<WireFormatter> fmt;
      auto fail = [&](const ApiError& e) {
        set_retry_after(res, e);
        send_json(res, e.status, fmt ? fmt->error_body(e)
                                     : anthropic_errors ? anthropic_error_json(e) : e.to_json());
      };
      try {
        OJ body = parse_body(req, options_);
        ServerContext ctx{options_, tok_, worker_.context_size(), worker_.tool_replay()};
        auto [spec, f] = prepare(body, ctx, info);
        fmt = std::move(f);
        job = worker_.submit(std::move(spec));
      } catch (const ApiError& e) {
        fail(e);
        return;
      } catch (const nlohmann::ordered_json::exception& e) {
        // A field of an unexpected JSON type the builders did not check one by one.
        fail(bad_request(std::string("invalid request: ") + e.what()));
        return;
      }
      const int fd = find_connection_fd(req.local_addr, req.local_port, req.remote_addr,
                                        req.remote_port);

      // Wait until the worker takes the job: an error before generation starts (context
      // overflow, shutdown) still gets a proper status instead of an SSE error frame.
      auto backlog = std::make_shared<std::vector<GenEvent>>();
      while (backlog->empty()) {
        job->wait_events(*backlog, 250ms);
        if (backlog->empty() && peer_closed(fd)) {
          job->cancelled = true;
          return;
        }
      }
      if (backlog->front().kind == GenEvent::Kind::Failed) {
        fail(*backlog->front().error);
        return;
      }

      if (!info.stream) {
        auto last_probe = std::chrono::steady_clock::now();
        while (true) {
          bool finished = false;
          for (const auto& ev : *backlog) {
            if (ev.kind == GenEvent::Kind::Failed) {
              fail(*ev.error);
              return;
            }
            fmt->collect(ev);
            finished = finished || is_final(ev);
          }
          backlog->clear();
          if (finished) break;
          job->wait_events(*backlog, 250ms);
          // Events may flow without pause, so the peer is probed by the clock.
          if (std::chrono::steady_clock::now() - last_probe > 250ms) {
            last_probe = std::chrono::steady_clock::now();
            if (peer_closed(fd)) {
              job->cancelled = true;
              return;
            }
          }
        }
        send_json(res, 200, fmt->final_response());
        return;
      }

      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Accel-Buffering", "no");
      res.set_chunked_content_provider(
          "text/event-stream",
          [job, fmt, backlog, fd](size_t, httplib::DataSink& sink) {
            auto write = [&](const std::string& s) {
              return s.empty() || sink.write(s.data(), s.size());
            };
            bool started = false;
            auto last_write = std::chrono::steady_clock::now();
            std::string frames;
            while (true) {
              for (const auto& ev : *backlog) {
                if (ev.kind == GenEvent::Kind::Started) started = true;
                if (ev.kind == GenEvent::Kind::Failed) {
                  write(fmt->stream_error(*ev.error));
                  sink.done();
                  return true;
                }
                frames.clear();
                fmt->stream_event(ev, frames);
                if (!frames.empty()) {
                  if (!write(frames)) {
                    job->cancelled = true;
                    return false;
                  }
                  last_write = std::chrono::steady_clock::now();
                }
                if (is_final(ev)) {
                  write(fmt->stream_end());
                  sink.done();
                  return true;
                }
              }
              backlog->clear();
              job->wait_events(*backlog, 250ms);
              if (backlog->empty()) {
                if (peer_closed(fd)) {
                  job->cancelled = true;
                  return false;
                }
                // Keep-alives hold proxies and client idle timers open during long
                // prefills; a failed write is how a vanished client shows up here.
                if (std::chrono::steady_clock::now() - last_write > 2s) {
                  if (!write(fmt->keepalive(started))) {
                    job->cancelled = true;
                    return false;
                  }
                  last_write = std::chrono::steady_clock::now();
                }
              }
            }
          },
          [job](bool success) {
            if (!success) job->cancelled = true;
          });
    };
  };
  auto next_seq = [this] { return next_id_++; };
  Prepare chat = [next_seq](const OJ& body, const ServerContext& ctx, RequestInfo& info) {
    GenerationSpec spec = build_chat_spec(body, ctx, info);
    auto f = std::make_unique<ChatFormatter>("chatcmpl-" + std::to_string(next_seq()), info.model,
                                             static_cast<int64_t>(std::time(nullptr)), info);
    return std::make_pair(std::move(spec), std::unique_ptr<WireFormatter>(
                                               new OpenAIWire<ChatFormatter>(std::move(f))));
  };
  Prepare completion = [next_seq](const OJ& body, const ServerContext& ctx, RequestInfo& info) {
    GenerationSpec spec = build_completion_spec(body, ctx, info);
    auto f = std::make_unique<CompletionFormatter>("cmpl-" + std::to_string(next_seq()), info.model,
                                                   static_cast<int64_t>(std::time(nullptr)), info);
    return std::make_pair(std::move(spec), std::unique_ptr<WireFormatter>(
                                               new OpenAIWire<CompletionFormatter>(std::move(f))));
  };
  Prepare messages = [](const OJ& body, const ServerContext& ctx, RequestInfo& info) {
    GenerationSpec spec = build_messages_spec(body, ctx, info);
    AnthropicFormatter f(ToolReplay::random_id("msg_").substr(0, 28), info.model);
    return std::make_pair(std::move(spec),
                          std::unique_ptr<WireFormatter>(new AnthropicWire(std::move(f))));
  };
  Prepare responses = [](const OJ& body, const ServerContext& ctx, RequestInfo& info) {
    ResponsesRequest rr;
    GenerationSpec spec = build_responses_spec(body, ctx, info, rr);
    ResponsesFormatter f(std::move(rr), static_cast<int64_t>(std::time(nullptr)));
    return std::make_pair(std::move(spec),
                          std::unique_ptr<WireFormatter>(new ResponsesWire(std::move(f))));
  };
  svr.Post("/v1/chat/completions", generation(chat, false));
  svr.Post("/chat/completions", generation(chat, false));
  svr.Post("/v1/completions", generation(completion, false));
  svr.Post("/completions", generation(completion, false));
  svr.Post("/v1/messages", generation(messages, true));
  svr.Post("/messages", generation(messages, true));
  svr.Post("/v1/responses", generation(responses, false));
  svr.Post("/responses", generation(responses, false));
  auto count_tokens = [this](const httplib::Request& req, httplib::Response& res) {
    try {
      OJ body = parse_body(req, options_);
      ServerContext ctx{options_, tok_, worker_.context_size(), worker_.tool_replay()};
      send_json(res, 200, {{"input_tokens", count_message_tokens(body, ctx)}});
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
