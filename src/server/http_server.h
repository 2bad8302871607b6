// The HTTP layer: routes (by protocol, routes.h), authentication, CORS, limits, SSE. No tensors here: generation
// goes through the Worker, text through the tokenizer and chat renderer.
#pragma once

#include <atomic>
#include <memory>

#include "server/metrics.h"
#include "server/options.h"
#include "server/worker.h"
#include "text/tokenizer.h"

namespace ds4::server {

class ConnectionServer;
class RequestEngine;
struct Routes;

class HttpServer {
 public:
  HttpServer(const ServerOptions& options, const text::Tokenizer& tok, Worker& worker,
             Metrics& metrics);
  ~HttpServer();
  // Binds the listening socket; returns the bound port (useful with --port 0).
  // Throws std::runtime_error when the address cannot be bound.
  int bind();
  // Serves until stop_accepting(). Returns false if the listener failed.
  bool serve();
  // Shutdown, in order: stop_accepting() (new connections are refused); drain(0) (idle
  // connections close, every response from now on ends its connection); once the worker
  // has answered or cut short every job, drain(ms) waits for the answers to be written.
  void stop_accepting();
  bool drain(int timeout_ms);

 private:
  void install_routes();

  const ServerOptions& options_;
  const text::Tokenizer& tok_;
  Worker& worker_;
  Metrics& metrics_;
  std::unique_ptr<RequestEngine> svr_;
  std::unique_ptr<ConnectionServer> conns_;
  std::atomic<uint64_t> next_id_{1};
  std::unique_ptr<Routes> routes_;  // what the route handlers use (routes.h)
};

}  // namespace ds4::server
