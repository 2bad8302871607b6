// What the protocol route files share: JSON answers, SSE frames and the generation handler.
#include "server/routes.h"

#include "server/anthropic.h"
#include "server/connections.h"

namespace ds4::server {

using json = nlohmann::ordered_json;
using OJ = nlohmann::ordered_json;
using namespace std::chrono_literals;

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

std::string sse(const json& payload) { return "data: " + dump_json(payload) + "\n\n"; }

std::string named_sse(const std::string& event, const json& data) {
  return "event: " + event + "\ndata: " + dump_json(data) + "\n\n";
}

namespace {

bool is_final(const GenEvent& ev) {
  return ev.kind == GenEvent::Kind::Done || ev.kind == GenEvent::Kind::Failed;
}

}  // namespace

httplib::Server::Handler generation_handler(Routes& r, Prepare prepare, bool anthropic_errors) {
  return [&r, prepare, anthropic_errors](const httplib::Request& req, httplib::Response& res) {
    RequestInfo info;
    std::shared_ptr<Job> job;
    std::shared_ptr<WireFormatter> fmt;
    auto fail = [&](const ApiError& e) {
      set_retry_after(res, e);
      send_json(res, e.status, fmt ? fmt->error_body(e)
                                   : anthropic_errors ? anthropic_error_json(e) : e.to_json());
    };
    try {
      OJ body = parse_body(req, r.options);
      auto [spec, f] = prepare(body, r.context(true), info);
      fmt = std::move(f);
      job = r.worker.submit(std::move(spec));
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
}

}  // namespace ds4::server
