#include "server/options.h"

#include <charconv>
#include <limits>

namespace ds4::server {

namespace {

int64_t parse_int(const std::string& flag, const std::string& value, int64_t lo, int64_t hi) {
  int64_t out = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (ec != std::errc() || ptr != value.data() + value.size() || out < lo || out > hi) {
    throw UsageError(flag + ": expected an integer in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "], got '" + value + "'");
  }
  return out;
}

}  // namespace

std::string server_usage() {
  return R"(usage: ds4-server [options]

OpenAI- and Anthropic-compatible HTTP server for DeepSeek V4 Flash (chat completions,
completions, responses, messages).

  -m, --model FILE        GGUF model (default ds4flash.gguf)
      --mtp FILE          optional MTP sidecar GGUF
      --mtp-draft N       speculative decoding: up to N (1..4) MTP drafts verified in one
                          pass, same output as plain decode; adaptive (default 0 = off)
  -c, --ctx N             context size in tokens (default 32768)
  -n, --tokens N          default max tokens per request (default 393216)
  -t, --threads N         inference threads (default: all cores)
  -b, --backend NAME      cpu (default) or vulkan (builds with Vulkan; for now the
                          embedding and output head on the GPU, the blocks on the CPU)
      --device N          Vulkan device index (default 0)
      --list-devices      print the Vulkan devices and exit
  -np, --parallel N       live sessions (slots) decoded together (default 1); each holds
                          its own KV state of --ctx tokens (the size is printed at start)
      --max-queue N       requests that may wait for a busy slot (default 64); one more
                          is answered 429 with Retry-After
      --host ADDR         listen address (default 127.0.0.1; "localhost" accepted)
      --port N            listen port (default 8000; 0 picks a free port)
      --cors              add permissive CORS headers, answer OPTIONS with 204
      --api-key KEY       require "Authorization: Bearer KEY" or "x-api-key: KEY"
      --max-body-bytes N  request body limit (default 67108864)
      --quiet             no per-request log lines
      --tool-memory-max-ids N
                          tool call ids whose sampled DSML is remembered for exact
                          replay (default 100000; 0 disables)
      --disable-exact-dsml-tool-replay
                          render past tool calls canonically from their JSON
  -h, --help              this text

Connections (each open connection has its own thread; over a cap a new connection gets
429 or 503 and is closed):
      --max-connections N          open connections in all (default 512; 0: no cap;
                                   --http-threads is an alias)
      --max-client-connections N   open connections per client address (default 128;
                                   0: no cap; behind a proxy every client shares one)
      --header-timeout S           a request's line and headers must arrive within S
                                   seconds of its first byte (default 10; a new
                                   connection must start a request within S too)
      --keep-alive-timeout S       an idle keep-alive connection closes after S seconds
                                   (default 15)
      --io-timeout S               a body read or response write stalled for S seconds
                                   ends the connection (default 10)
      --listen-backlog N           connections the kernel queues before accept
                                   (default 512)

Disk KV cache (off unless --kv-disk-dir is given):
      --kv-disk-dir DIR                       checkpoint directory (created 0700)
      --kv-disk-space-mb N                    space budget in MiB (default 4096; 0: 4096)
      --kv-cache-min-tokens N                 never save or load shorter (default 512)
      --kv-cache-cold-max-tokens N            cold saves for prompts up to N tokens
                                              (default 30000; 0 off; else >= min tokens)
      --kv-cache-continued-interval-tokens N  continued save spacing (default 10000; 0 off)
      --kv-cache-boundary-trim-tokens N       tail trimmed before cold saves (default 32)
      --kv-cache-boundary-align-tokens N      cold length aligned down, continued spacing
                                              rounded up (default 2048; 0 off)
      --kv-cache-reject-different-quant       never load checkpoints of another expert quant

Test-only (never for production):
      --test-hooks        honour the request fields "ds4_test_output" (a text whose tokens
                          replace the sampled ones; the model still evaluates each token)
                          or "ds4_test_output_tokens" (the same with token ids), and
                          "ds4_test_delay_ms" (sleep per generated token)
)";
}

ServerOptions parse_server_args(const std::vector<std::string>& args, bool& help) {
  ServerOptions o;
  help = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw UsageError(a + ": missing value");
      return args[++i];
    };
    if (a == "-h" || a == "--help") {
      help = true;
    } else if (a == "-m" || a == "--model") {
      o.model_path = value();
    } else if (a == "--mtp") {
      o.mtp_path = value();
    } else if (a == "--mtp-draft") {
      o.mtp_draft = static_cast<int>(parse_int(a, value(), 0, 4));
    } else if (a == "-c" || a == "--ctx") {
      o.ctx = static_cast<int>(parse_int(a, value(), 1, std::numeric_limits<int>::max()));
    } else if (a == "-n" || a == "--tokens") {
      o.default_max_tokens = parse_int(a, value(), 0, std::numeric_limits<int>::max());
    } else if (a == "-t" || a == "--threads") {
      o.threads = static_cast<int>(parse_int(a, value(), 0, 4096));
    } else if (a == "-b" || a == "--backend") {
      o.backend = value();
      if (o.backend != "cpu" && o.backend != "vulkan")
        throw UsageError("--backend: unknown backend '" + o.backend + "' (cpu or vulkan)");
    } else if (a == "--device") {
      o.device = static_cast<int>(parse_int(a, value(), 0, 1023));
    } else if (a == "--list-devices") {
      o.list_devices = true;
    } else if (a == "--host") {
      o.host = value();
      if (o.host == "localhost") o.host = "127.0.0.1";
      if (o.host.empty()) throw UsageError("--host: empty address");
    } else if (a == "--port") {
      o.port = static_cast<int>(parse_int(a, value(), 0, 65535));
    } else if (a == "-np" || a == "--parallel") {
      o.parallel = static_cast<int>(parse_int(a, value(), 1, 256));
    } else if (a == "--max-queue") {
      o.max_queue = static_cast<int>(parse_int(a, value(), 0, 1000000));
    } else if (a == "--cors") {
      o.cors = true;
    } else if (a == "--api-key") {
      o.api_key = value();
      if (o.api_key.empty()) throw UsageError("--api-key: empty key");
    } else if (a == "--max-body-bytes") {
      o.max_body_bytes = static_cast<size_t>(parse_int(a, value(), 1024, int64_t(1) << 40));
    } else if (a == "--max-connections" || a == "--http-threads") {
      o.max_connections = static_cast<int>(parse_int(a, value(), 0, 1000));
    } else if (a == "--max-client-connections") {
      o.max_client_connections = static_cast<int>(parse_int(a, value(), 0, 1000));
    } else if (a == "--header-timeout") {
      o.header_timeout_s = static_cast<int>(parse_int(a, value(), 1, 3600));
    } else if (a == "--keep-alive-timeout") {
      o.keep_alive_timeout_s = static_cast<int>(parse_int(a, value(), 1, 3600));
    } else if (a == "--io-timeout") {
      o.io_timeout_s = static_cast<int>(parse_int(a, value(), 1, 3600));
    } else if (a == "--listen-backlog") {
      o.listen_backlog = static_cast<int>(parse_int(a, value(), 1, 65535));
    } else if (a == "--tool-memory-max-ids" || a == "--tool-replay-max") {
      o.tool_memory_max_ids = static_cast<size_t>(parse_int(a, value(), 0, int64_t(1) << 32));
    } else if (a == "--disable-exact-dsml-tool-replay" || a == "--no-tool-replay") {
      o.disable_exact_dsml_tool_replay = true;
    } else if (a == "--quiet") {
      o.quiet = true;
    } else if (a == "--kv-disk-dir") {
      o.kv.dir = value();
      if (o.kv.dir.empty()) throw UsageError("--kv-disk-dir: empty path");
    } else if (a == "--kv-disk-space-mb") {
      o.kv.space_mb = static_cast<uint64_t>(parse_int(a, value(), 0, int64_t(1) << 30));
    } else if (a == "--kv-cache-min-tokens") {
      o.kv.min_tokens = static_cast<int>(parse_int(a, value(), 1, std::numeric_limits<int>::max()));
    } else if (a == "--kv-cache-cold-max-tokens") {
      o.kv.cold_max_tokens = static_cast<int>(parse_int(a, value(), 0, std::numeric_limits<int>::max()));
    } else if (a == "--kv-cache-continued-interval-tokens") {
      o.kv.continued_interval_tokens =
          static_cast<int>(parse_int(a, value(), 0, std::numeric_limits<int>::max()));
    } else if (a == "--kv-cache-boundary-trim-tokens") {
      o.kv.boundary_trim_tokens =
          static_cast<int>(parse_int(a, value(), 0, std::numeric_limits<int>::max()));
    } else if (a == "--kv-cache-boundary-align-tokens") {
      o.kv.boundary_align_tokens =
          static_cast<int>(parse_int(a, value(), 0, std::numeric_limits<int>::max()));
    } else if (a == "--kv-cache-reject-different-quant") {
      o.kv.reject_different_quant = true;
    } else if (a == "--test-hooks") {
      o.test_hooks = true;
    } else {
      throw UsageError("unknown option '" + a + "' (see --help)");
    }
  }
  if (std::string why = o.kv.check(); !why.empty()) throw UsageError(why);
  return o;
}

}  // namespace ds4::server
