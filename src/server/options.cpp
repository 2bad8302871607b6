#include "server/options.h"

#include "args/args.h"
#include "args/engine_options.h"

#include <limits>

namespace ds4::server {

namespace {

using args::UsageError;
constexpr int kIntMax = std::numeric_limits<int>::max();

constexpr const char* kAbout =
    "OpenAI- and Anthropic-compatible HTTP server for DeepSeek V4 Flash (chat completions,\n"
    "completions, responses, messages).";

constexpr const char* kFooter =
    "Over a connection cap a new connection gets 429 or 503 and is closed.";

// Every flag of ds4-server, bound to `o`.
void describe(args::Parser& p, ServerOptions& o) {
  p.group("Model and runtime");
  args::add_engine_options(p, o.model_path, o);
  args::add_mtp_options(p, {o.mtp_path, o.mtp_draft, o.mtp_adaptive});
  p.integer("-c,--ctx", o.ctx, 1, kIntMax, "N", "context size in tokens (default 32768)");
  p.integer("-n,--tokens", o.default_max_tokens, 0, kIntMax, "N", 
            "default max tokens per request (default " + std::to_string(o.default_max_tokens) + ")");
  p.integer("--parallel", o.parallel, 1, 256, "N",
            "live sessions (slots) decoded together (default 1); each holds\n"
            "its own KV state of --ctx tokens (the size is printed at start)");
  p.alias("-np", "--parallel", true);
  p.integer("--max-queue", o.max_queue, 0, 1000000, "N",
            "requests that may wait for a busy slot (default 64); one more\n"
            "is answered 429 with Retry-After");
  p.group("HTTP");
  p.value(
      "--host",
      [&o](const std::string& h) {
        if (h.empty()) throw UsageError("empty address");
        o.host = h == "localhost" ? "127.0.0.1" : h;
      },
      "ADDR", "listen address (default 127.0.0.1; \"localhost\" accepted)");
  p.integer("--port", o.port, 0, 65535, "N", "listen port (default 8000; 0 picks a free port)");
  p.flag("--cors", o.cors, "add permissive CORS headers, answer OPTIONS with 204");
  p.value(
      "--api-key",
      [&o](const std::string& k) {
        if (k.empty()) throw UsageError("empty key");
        o.api_key = k;
      },
      "KEY", "require \"Authorization: Bearer KEY\" or \"x-api-key: KEY\"");
  p.integer("--max-body-bytes", o.max_body_bytes, 1024, int64_t(1) << 40, "N",
            "request body limit (default 67108864)");
  p.flag("--quiet", o.quiet, "no per-request log lines");
  p.integer("--tool-memory-max-ids", o.tool_memory_max_ids, 0, int64_t(1) << 32, "N",
            "tool call ids whose sampled DSML is remembered for exact\n"
            "replay (default 100000; 0 disables)");
  p.alias("--tool-replay-max", "--tool-memory-max-ids", false);
  p.flag("--disable-exact-dsml-tool-replay", o.disable_exact_dsml_tool_replay,
         "render past tool calls canonically from their JSON");
  p.alias("--no-tool-replay", "--disable-exact-dsml-tool-replay", false);
  p.group("Connections (each open connection has its own thread)");
  p.integer("--max-connections", o.max_connections, 0, 1000, "N",
            "open connections in all (default 512; 0: no cap;\n"
            "--http-threads is an alias)");
  p.alias("--http-threads", "--max-connections", false);
  p.integer("--max-client-connections", o.max_client_connections, 0, 1000, "N",
            "open connections per client address (default 128;\n"
            "0: no cap; behind a proxy every client shares one)");
  p.integer("--header-timeout", o.header_timeout_s, 1, 3600, "S",
            "a request's line and headers must arrive within S\n"
            "seconds of its first byte (default 10; a new\n"
            "connection must start a request within S too)");
  p.integer("--keep-alive-timeout", o.keep_alive_timeout_s, 1, 3600, "S",
            "an idle keep-alive connection closes after S seconds\n(default 15)");
  p.integer("--io-timeout", o.io_timeout_s, 1, 3600, "S",
            "a body read or response write stalled for S seconds\nends the connection (default 10)");
  p.integer("--listen-backlog", o.listen_backlog, 1, 65535, "N",
            "connections the kernel queues before accept\n(default 512)");
  p.group("Disk KV cache (off unless --kv-disk-dir is given)");
  p.value(
      "--kv-disk-dir",
      [&o](const std::string& d) {
        if (d.empty()) throw UsageError("empty path");
        o.kv.dir = d;
      },
      "DIR", "checkpoint directory (created 0700)");
  p.integer("--kv-disk-space-mb", o.kv.space_mb, 0, int64_t(1) << 30, "N",
            "space budget in MiB (default 4096; 0: 4096)");
  p.integer("--kv-cache-min-tokens", o.kv.min_tokens, 1, kIntMax, "N", "never save or load shorter (default 512)");
  p.integer("--kv-cache-cold-max-tokens", o.kv.cold_max_tokens, 0, kIntMax, "N",
            "cold saves for prompts up to N tokens\n(default 30000; 0 off; else >= min tokens)");
  p.integer("--kv-cache-continued-interval-tokens", o.kv.continued_interval_tokens, 0, kIntMax, "N",
            "continued save spacing (default 10000; 0 off)");
  p.integer("--kv-cache-boundary-trim-tokens", o.kv.boundary_trim_tokens, 0, kIntMax, "N",
            "tail trimmed before cold saves (default 32)");
  p.integer("--kv-cache-boundary-align-tokens", o.kv.boundary_align_tokens, 0, kIntMax, "N",
            "cold length aligned down, continued spacing\nrounded up (default 2048; 0 off)");
  p.flag("--kv-cache-reject-different-quant", o.kv.reject_different_quant,
         "never load checkpoints of another expert quant");
  p.group("Test-only (never for production)");
  p.flag("--test-hooks", o.test_hooks,
         "honour the request fields \"ds4_test_output\" (a text whose tokens\n"
         "replace the sampled ones; the model still evaluates each token)\n"
         "or \"ds4_test_output_tokens\" (the same with token ids),\n"
         "\"ds4_test_output_prefix\" (forced first tokens, then sampling),\n"
         "\"ds4_test_drafts\" (token ids: with --mtp-draft, the draft of the\n"
         "i-th answer token is the i-th id instead of the MTP block's) and\n"
         "\"ds4_test_delay_ms\" (sleep per generated token)");
  p.footer(kFooter);
}

}  // namespace

std::string server_usage() {
  ServerOptions o;
  args::Parser p("ds4-server", "ds4-server [options]", kAbout);
  describe(p, o);
  return p.help();
}

args::Outcome parse_server_args(const std::vector<std::string>& args, ServerOptions& o) {
  o = ServerOptions{};
  args::Parser p("ds4-server", "ds4-server [options]", kAbout);
  describe(p, o);
  return p.parse(args, [&o] {
    if (std::string why = o.kv.check(); !why.empty()) throw UsageError(why);
  });
}

}  // namespace ds4::server
