#include "server/http_server.h"

#include <httplib.h>

#include <cstdlib>
#include <ctime>
#include <functional>

#include "server/anthropic.h"
#include "server/openai.h"
#include "server/request_fields.h"
#include "server/responses.h"
#include "server/connections.h"

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
  // The JSON parser stops at a NUL byte as at the end of its input; JSON text never holds
  // one, so whatever follows it must not be silently dropped.
  if (const size_t nul = req.body.find('\0'); nul != std::string::npos) {
    throw bad_request("invalid JSON request: NUL byte at offset " + std::to_string(nul));
  }
  try {
    return OJ::parse(req.body);
  } catch (const nlohmann::ordered_json::exception& e) {
    // parse_error, and out_of_range for a number that overflows a double (1e400).
    throw bad_request(std::string("invalid JSON request: ") + e.what());
  }
}

// Why the request's body framing is ambiguous, or "" when it is not. Two Content-Length
// headers, or one beside Transfer-Encoding, let a proxy and this server disagree on where
// the body ends (request smuggling); a non-numeric length would be read as 0.
std::string framing_problem(const httplib::Request& req) {
  const size_t lengths = req.get_header_value_count("Content-Length");
  if (lengths > 1) return "more than one Content-Length header";
  if (lengths == 1) {
    const std::string v = req.get_header_value("Content-Length");
    if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos) {
      return "invalid Content-Length header";
    }
    if (req.has_header("Transfer-Encoding")) return "both Content-Length and Transfer-Encoding";
  }
  if (req.get_header_value_count("Transfer-Encoding") > 1) {
    return "more than one Transfer-Encoding header";
  }
  return "";
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
      svr_(std::make_unique<RequestEngine>()), max_token_bytes_(max_token_bytes(tok)) {
  ConnectionLimits limits;
  limits.backlog = options_.listen_backlog;
  limits.max_connections = options_.max_connections;
  limits.max_per_client = options_.max_client_connections;
  limits.header_timeout_s = options_.header_timeout_s;
  limits.idle_timeout_s = options_.keep_alive_timeout_s;
  limits.io_timeout_s = options_.io_timeout_s;
  limits.open_gauge = &metrics_.open_connections;
  limits.refused_counter = &metrics_.refused_connections;
  conns_ = std::make_unique<ConnectionServer>(*svr_, limits);
  install_routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() { return conns_->bind(options_.host, options_.port); }

bool HttpServer::serve() { return conns_->serve(); }

void HttpServer::stop_accepting() { conns_->stop_accepting(); }

bool HttpServer::drain(int timeout_ms) { return conns_->drain(timeout_ms); }

void HttpServer::install_routes() {
  httplib::Server& svr = *svr_;
  svr.set_payload_max_length(options_.max_body_bytes);
  // Connections, timeouts and limits are handled in connections.cpp; these two only feed
  // the Keep-Alive header ("timeout=N, max=M") that tells clients how long idle
  // connections live, so they retire them first.
  svr.set_keep_alive_max_count(100000);
  svr.set_keep_alive_timeout(options_.keep_alive_timeout_s);

  svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    metrics_.requests_total++;
    current_request_headers_done(req.version == "HTTP/1.0");
    if (const std::string why = framing_problem(req); !why.empty()) {
      // The body was not read and cannot be delimited: the connection ends here.
      res.set_header("Connection", "close");
      send_error(res, bad_request("bad HTTP request: " + why));
      return httplib::Server::HandlerResponse::Handled;
    }
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

  // Runs just before the status line is written.
  svr.set_post_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    current_response_started();
    // A 503 (shutting down) is temporary: tell clients when to come back.
    if (res.status == 503 && !res.has_header("Retry-After")) res.set_header("Retry-After", "10");
    // A body left unread (refused before it was read: 401, 413, bad framing) would be
    // parsed as the next request; so would anything after it. Such a connection ends here,
    // as does every one once the server drains for shutdown.
    const bool chunked = req.has_header("Transfer-Encoding");
    const uint64_t length = std::strtoull(req.get_header_value("Content-Length").c_str(), nullptr, 10);
    const bool unread = chunked ? req.body.empty() : req.body.size() != length;
    if (unread || current_connection_draining() || res.get_header_value("Connection") == "close") {
      current_connection_close_after();
      res.headers.erase("Keep-Alive");
      res.headers.erase("Connection");
      res.set_header("Connection", "close");
    }
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
        } catch (const nlohmann::ordered_json::exception& e) {
          // A body field of a type a handler did not check one by one: the client's error.
          send_error(res, bad_request(std::string("invalid request: ") + e.what()));
          return;
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
          throw bad_request("token id " + t.dump() + " out of range", "tokens");
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
        ServerContext ctx{options_, tok_, worker_.context_size(), worker_.tool_replay(),
                          max_token_bytes_};
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

      // Wait until the worker takes the job: an error before generation starts (context
      // overflow, shutdown) still gets a proper status instead of an SSE error frame.
      auto backlog = std::make_shared<std::vector<GenEvent>>();
      while (backlog->empty()) {
        job->wait_events(*backlog, 250ms);
        if (backlog->empty() && current_client_gone()) {
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
            if (current_client_gone()) {
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
          [job, fmt, backlog](size_t, httplib::DataSink& sink) {
            auto write = [&](const std::string& s) {
              return s.empty() || sink.write(s.data(), s.size());
            };
            bool started = false, fin_probed = false;
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
                if (current_client_gone()) {
                  job->cancelled = true;
                  return false;
                }
                // Keep-alives hold proxies and client idle timers open during long
                // prefills; a failed write is how a vanished client shows up here. Once
                // the client has shut down its side (it may have left or only half-closed)
                // one goes out at once: a closed socket answers it with a reset.
                const bool probe = !fin_probed && current_client_half_closed();
                if (probe || std::chrono::steady_clock::now() - last_write > 2s) {
                  fin_probed = fin_probed || probe;
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
