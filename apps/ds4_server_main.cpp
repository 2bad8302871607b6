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
#include "kvcache/store.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/worker.h"
#include "spec/speculative.h"
#include "text/tokenizer.h"

int main(int argc, char** argv) {
  using namespace ds4::server;
  ds4::init_cluster(&argc, &argv);  // under mpirun: ranks other than 0 serve their stage
  ServerOptions opt;
  const ds4::args::Outcome parsed = parse_server_args(std::vector<std::string>(argv + 1, argv + argc), opt);
  if (parsed.done()) return ds4::args::finish(parsed);
  if (opt.list_devices) {
    std::fputs(ds4::describe_devices().c_str(), stdout);
    return 0;
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
  std::vector<std::unique_ptr<ds4::Session>> sessions;
  std::unique_ptr<ds4::kvcache::DiskCache> disk;
  uint8_t quant_bits = 4;  // checkpoint header: routed experts 2-bit or otherwise 4
  try {
    auto file = ds4::gguf::File::open(opt.model_path);
    tok = std::make_unique<ds4::text::Tokenizer>(*file);
    if (const auto* t = file->find_tensor(ds4::kvcache::kExpertTensorName)) {
      quant_bits = ds4::kvcache::quant_bits_for(t->type);
    }
    file.reset();
    ds4::EngineOptions eo = opt.engine_options();
    eo.mtp_path = opt.mtp_path;
    engine = ds4::Engine::open(opt.model_path, eo);
    if (const std::string why = ds4::spec::unsupported_reason(*engine, opt.mtp_draft); !why.empty()) {
      throw std::runtime_error(why);
    }
    if (static_cast<size_t>(engine->n_vocab()) < tok->vocab_size()) {
      throw std::runtime_error("tokenizer has more tokens than the model's vocabulary");
    }
    // Every slot holds a whole --ctx of state: refuse a combination that cannot fit.
    const uint64_t per_slot = engine->session_memory_bytes(opt.ctx);
    const std::string refusal = check_slot_memory(opt.parallel, opt.ctx, per_slot,
                                                  available_memory_bytes());
    if (!refusal.empty()) {
      std::fprintf(stderr, "ds4-server: %s\n", refusal.c_str());
      return 2;
    }
    std::fprintf(stderr, "ds4-server: %d slot(s) x %.1f MiB of session state at ctx %d = %.1f MiB\n",
                 opt.parallel, per_slot / 1048576.0, opt.ctx, opt.parallel * (per_slot / 1048576.0));
    for (int i = 0; i < opt.parallel; ++i) sessions.push_back(engine->new_session(opt.ctx));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ds4-server: cannot load %s: %s\n", opt.model_path.c_str(), e.what());
    return 1;
  }
  if (!opt.kv.dir.empty()) {
    try {
      const bool log = !opt.quiet;
      disk = std::make_unique<ds4::kvcache::DiskCache>(
          opt.kv, ds4::kvcache::identity_of(engine->config(), quant_bits),
          [log](const std::string& line) {
            if (log) std::fprintf(stderr, "ds4-server: %s\n", line.c_str());
          });
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ds4-server: --kv-disk-dir: %s\n", e.what());
      return 1;
    }
  }

  Metrics metrics;
  // Declared before the worker, which uses it until it stops.
  ToolReplay tool_replay(opt.disable_exact_dsml_tool_replay ? 0 : opt.tool_memory_max_ids);
  if (disk && tool_replay.enabled()) {
    // Tool calls of stored conversations render as their sampled bytes after a restart.
    for (const auto& e : disk->read_tool_maps(4 * opt.tool_memory_max_ids)) {
      tool_replay.insert(e.id, e.dsml);
    }
  }
  WorkerOptions wo;
  wo.log = !opt.quiet;
  wo.max_queue = opt.max_queue;
  wo.prefill_chunk = engine->options().prefill_chunk;
  wo.engine = engine.get();
  wo.mtp_draft = opt.mtp_draft;
  wo.mtp_adaptive = opt.mtp_adaptive;
  // A decode step of several slots (with a prefill chunk) is one forward pass: the weights
  // are read once for all.
  wo.eval_batch = [&engine](std::span<const ds4::BatchEntry> entries) { engine->eval_batch(entries); };
  Worker worker(std::move(sessions), *tok, metrics, wo, std::move(disk));
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
  std::fprintf(stderr, "ds4-server: listening on http://%s:%d (ctx %d, %d slot(s))\n",
               opt.host.c_str(), port, opt.ctx, opt.parallel);
  std::fflush(stderr);

  // The listener runs on its own thread; main waits for a stop signal (the listener sends
  // one if it fails).
  std::atomic<bool> listener_failed{false};
  std::thread listener([&] {
    if (!http.serve()) {
      listener_failed = true;
      kill(getpid(), SIGTERM);
    }
  });
  listener.detach();
  int sig = 0;
  sigwait(&stop_signals, &sig);
  if (!listener_failed) std::fprintf(stderr, "ds4-server: signal %d, shutting down\n", sig);
  // A second signal during the drain and shutdown save exits at once (a half-written
  // checkpoint is only a temporary file).
  static std::atomic<bool> draining{true};
  std::thread([&stop_signals] {
    int again = 0;
    sigwait(&stop_signals, &again);
    if (!draining.load()) return;
    std::fprintf(stderr, "ds4-server: signal %d again, exiting\n", again);
    std::_Exit(130);
  }).detach();
  // New connections are refused, idle ones close, queued jobs are answered 503 with
  // Retry-After, the running one is cut short (its stream still ends properly), then the
  // answers are written out before the process exits.
  http.stop_accepting();
  http.drain(0);
  worker.stop();
  if (!http.drain(10000)) std::fprintf(stderr, "ds4-server: connections still open at exit\n");
  draining = false;
  std::fflush(stderr);
  ds4::finalize_cluster();  // _Exit runs no atexit handler: the other MPI ranks end here
  std::_Exit(listener_failed ? 1 : 0);
}
