// ds4-server command line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "args/args.h"
#include "args/engine_options.h"
#include "kvcache/policy.h"

namespace ds4::server {

struct ServerOptions : args::EngineFlags {
  std::string model_path = "ds4flash.gguf";
  std::string host = "127.0.0.1";
  int port = 8000;
  int ctx = 32768;
  int64_t default_max_tokens = 393216;  // -n: used when a request gives no limit
  bool cors = false;
  std::string api_key;  // empty: no authentication
  std::string mtp_path;
  int mtp_draft = 0;  // speculative decoding with up to N MTP drafts (src/spec); 0 = off
  bool mtp_adaptive = true;  // false (--mtp-fixed): always N drafts, for benchmarks and tests
  // Limits on what a client may send.
  size_t max_body_bytes = 64u << 20;
  int max_json_depth = 256;
  size_t max_messages = 100000;
  size_t max_stop_sequences = 16;
  size_t max_stop_bytes = 1024;
  int max_top_logprobs = 20;
  // Live sessions (slots) decoded together, and the jobs that may wait for one.
  int parallel = 1;
  int max_queue = 64;
  // Connections (connections.h): each open connection has its own thread.
  int max_connections = 512;        // --max-connections (alias --http-threads); 0 = no cap
  int max_client_connections = 128;  // per client address; 0 = no cap
  int header_timeout_s = 10;        // request line + headers must arrive within this
  int keep_alive_timeout_s = 15;    // an idle keep-alive connection closes after this
  int io_timeout_s = 10;            // a body read or response write stalled this long fails
  int listen_backlog = 512;
  // Exact DSML tool replay (docs/server.md): ids remembered; 0 or the disable flag = off.
  size_t tool_memory_max_ids = 100000;
  bool disable_exact_dsml_tool_replay = false;
  // Test-only: honour the request field "ds4_test_output" (scripted sampling) and
  // "ds4_test_delay_ms" (a pause per generated token).
  bool test_hooks = false;
  bool quiet = false;
  // Disk KV cache (--kv-*; off unless --kv-disk-dir is given).
  kvcache::CacheOptions kv;
};

// Fills `o` from the arguments (program name excluded). The outcome is done() after
// --help/--version (exit 0) or a usage error (exit 2: unknown flag, bad value).
args::Outcome parse_server_args(const std::vector<std::string>& args, ServerOptions& o);
std::string server_usage();

}  // namespace ds4::server
