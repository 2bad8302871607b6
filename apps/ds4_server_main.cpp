// ds4-server: opens the model, starts the inference worker and the HTTP listener.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <pthread.h>
#include <unistd.h>
#include <string>
#include <thread>
#include <vector>

#include "ds4/engine.h"
#include "gguf/gguf.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/worker.h"
#include "text/tokenizer.h"

int main(int argc, char** argv) {
  using namespace ds4::server;
  std::vector<std::string> args(argv + 1, argv + argc);
  ServerOptions opt;
  try {
    bool help = false;
    opt = parse_server_args(args, help);
    if (help) {
      std::fputs(server_usage().c_str(), stdout);
      return 0;
    }
  } catch (const UsageError& e) {
    std::fprintf(stderr, "ds4-server: %s\n", e.what());
    return 2;
  }

  // Signals go to one waiting thread, never interrupting the workers.
  std::signal(SIGPIPE, SIG_IGN);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::unique_ptr<ds4::Engine> engine;
  std::unique_ptr<ds4::text::Tokenizer> tok;
  std::unique_ptr<ds4::Session> session;
  try {
    auto file = ds4::gguf::File::open(opt.model_path);
    tok = std::make_unique<ds4::text::Tokenizer>(*file);
    file.reset();
    ds4::EngineOptions eo;
    eo.threads = opt.threads;
    eo.mtp_path = opt.mtp_path;
    engine = ds4::Engine::open(opt.model_path, eo);
    if (static_cast<size_t>(engine->n_vocab()) < tok->vocab_size()) {
      throw std::runtime_error("tokenizer has more tokens than the model's vocabulary");
    }
    session = engine->new_session(opt.ctx);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ds4-server: cannot load %s: %s\n", opt.model_path.c_str(), e.what());
    return 1;
  }

  Metrics metrics;
  // Declared before the worker, which uses it until it stops.
  ToolReplay tool_replay(opt.disable_exact_dsml_tool_replay ? 0 : opt.tool_memory_max_ids);
  Worker worker(std::move(session), *tok, metrics, !opt.quiet);
  worker.set_tool_replay(&tool_replay);
  HttpServer http(opt, *tok, worker, metrics);
  int port = 0;
  try {
    port = http.bind();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ds4-server: %s\n", e.what());
    return 1;
  }
  // Tests and scripts read this line to learn the port (--port 0).
  std::fprintf(stderr, "ds4-server: listening on http://%s:%d (ctx %d)\n", opt.host.c_str(), port,
               opt.ctx);
  std::fflush(stderr);

  // The listener runs on its own thread; main waits for a stop signal. Its thread pool
  // joins only when idle keep-alive connections time out, so the process exits without
  // waiting for them once the worker has stopped and in-flight answers were written.
  std::atomic<bool> listener_failed{false};
  std::thread listener([&] {
    if (!http.serve()) listener_failed = true;
    kill(getpid(), SIGTERM);
  });
  listener.detach();
  int sig = 0;
  sigwait(&stop_signals, &sig);
  if (!listener_failed) std::fprintf(stderr, "ds4-server: signal %d, shutting down\n", sig);
  worker.stop();
  http.stop();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::fflush(stderr);
  std::_Exit(listener_failed ? 1 : 0);
}
