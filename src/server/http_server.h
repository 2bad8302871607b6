// The HTTP layer: routes, authentication, CORS, limits, SSE. No tensors here: generation
// goes through the Worker, text through the tokenizer and chat renderer.
#pragma once

#include <atomic>
#include <memory>

#include "server/metrics.h"
#include "server/options.h"
#include "server/worker.h"
#include "text/tokenizer.h"

namespace httplib {
class Server;
}

namespace ds4::server {

class HttpServer {
 public:
  HttpServer(const ServerOptions& options, const text::Tokenizer& tok, Worker& worker,
             Metrics& metrics);
  ~HttpServer();
  // Binds the listening socket; returns the bound port (useful with --port 0).
  // Throws std::runtime_error when the address cannot be bound.
  int bind();
  // Serves until stop(). Returns false if the listener failed.
  bool serve();
  void stop();

 private:
  void install_routes();

  const ServerOptions& options_;
  const text::Tokenizer& tok_;
  Worker& worker_;
  Metrics& metrics_;
  std::unique_ptr<httplib::Server> svr_;
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace ds4::server
