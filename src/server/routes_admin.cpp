// Routes of no one protocol: the handlers every request passes (framing, CORS, API key,
// errors), health, metrics, slots, models, and the tokenizer and template endpoints.
#include "server/anthropic.h"
#include "server/connections.h"
#include "server/request_fields.h"
#include "server/routes.h"

namespace ds4::server {

using json = nlohmann::ordered_json;
using OJ = nlohmann::ordered_json;

namespace {

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

}  // namespace

void install_admin_routes(httplib::Server& svr, Routes& r) {
  svr.set_payload_max_length(r.options.max_body_bytes);
  // Connections, timeouts and limits are handled in connections.cpp; these two only feed
  // the Keep-Alive header ("timeout=N, max=M") that tells clients how long idle
  // connections live, so they retire them first.
  svr.set_keep_alive_max_count(100000);
  svr.set_keep_alive_timeout(r.options.keep_alive_timeout_s);

  svr.set_pre_routing_handler([&r](const httplib::Request& req, httplib::Response& res) {
    r.metrics.requests_total++;
    current_request_headers_done(req.version == "HTTP/1.0");
    if (const std::string why = framing_problem(req); !why.empty()) {
      // The body was not read and cannot be delimited: the connection ends here.
      res.set_header("Connection", "close");
      send_error(res, bad_request("bad HTTP request: " + why));
      return httplib::Server::HandlerResponse::Handled;
    }
    if (r.options.cors) {
      res.set_header("Access-Control-Allow-Origin", "*");
      res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      res.set_header("Access-Control-Allow-Headers", "*");
      if (req.method == "OPTIONS") {
        res.status = 204;
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (!r.options.api_key.empty() && req.path != "/health") {
      std::string auth = req.get_header_value("Authorization");
      std::string key = req.get_header_value("x-api-key");
      bool ok = auth == "Bearer " + r.options.api_key || key == r.options.api_key;
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
  svr.set_error_handler([&r](const httplib::Request&, httplib::Response& res) {
    r.metrics.request_errors++;
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
  svr.Get("/metrics", [&r](const httplib::Request&, httplib::Response& res) {
    res.set_content(r.metrics.render_prometheus() + r.worker.render_slot_metrics(),
                    "text/plain; version=0.0.4");
  });
  svr.Get("/slots", [&r](const httplib::Request&, httplib::Response& res) {
    json out = json::array();
    for (const auto& s : r.worker.slot_infos()) {
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

  auto list_models = [&r](const httplib::Request&, httplib::Response& res) {
    json data = json::array();
    for (const auto& id : model_ids()) {
      data.push_back(model_object(id, r.worker.context_size(), r.options.default_max_tokens));
    }
    send_json(res, 200, {{"object", "list"}, {"data", data}});
  };
  svr.Get("/v1/models", list_models);
  svr.Get("/models", list_models);
  auto get_model = [&r](const httplib::Request& req, httplib::Response& res) {
    std::string id = req.matches[1];
    for (const auto& known : model_ids()) {
      if (known == id) {
        send_json(res, 200, model_object(id, r.worker.context_size(), r.options.default_max_tokens));
        return;
      }
    }
    ApiError e(404, "model '" + id + "' not found");
    e.code = "model_not_found";
    send_error(res, e);
  };
  svr.Get(R"(/v1/models/(.+))", get_model);
  svr.Get(R"(/models/(.+))", get_model);

  svr.Post("/tokenize", [&r](const httplib::Request& req, httplib::Response& res) {
    try {
      OJ body = parse_body(req, r.options);
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
      auto ids = r.tok.encode(body["content"].get<std::string>(), parse_special);
      if (add_special) ids.insert(ids.begin(), r.tok.bos_id());
      json tokens = json::array();
      for (int id : ids) {
        if (with_pieces) tokens.push_back({{"id", id}, {"piece", r.tok.token_bytes(id)}});
        else tokens.push_back(id);
      }
      send_json(res, 200, {{"tokens", tokens}});
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });
  svr.Post("/detokenize", [&r](const httplib::Request& req, httplib::Response& res) {
    try {
      OJ body = parse_body(req, r.options);
      if (!body.is_object() || !body.contains("tokens") || !body["tokens"].is_array()) {
        throw bad_request("'tokens' must be an array of token ids", "tokens");
      }
      std::vector<int> ids;
      for (const auto& t : body["tokens"]) {
        if (!t.is_number_integer()) throw bad_request("'tokens' must hold integers", "tokens");
        int64_t id = t.get<int64_t>();
        if (id < 0 || id >= static_cast<int64_t>(r.tok.vocab_size())) {
          throw bad_request("token id " + t.dump() + " out of range", "tokens");
        }
        ids.push_back(static_cast<int>(id));
      }
      send_json(res, 200, {{"content", r.tok.decode(ids)}});
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });
  svr.Post("/apply-template", [&r](const httplib::Request& req, httplib::Response& res) {
    try {
      OJ body = parse_body(req, r.options);
      GenerationSpec spec = build_template_spec(body, r.context(false));
      send_json(res, 200, {{"prompt", spec.rendered}, {"tokens", spec.tokens}});
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });
}

}  // namespace ds4::server
