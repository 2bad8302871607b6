// ds4-bench option parsing, frontier schedule and CSV formatting (no engine needed).
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "ds4_bench.h"

namespace ds4::bench {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

int parse_int(std::string_view flag, const char* s, int min_value) {
  errno = 0;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < min_value || v > INT_MAX) {
    fail("invalid value for " + std::string(flag) + ": '" + s + "' (an integer >= " +
         std::to_string(min_value) + " expected)");
  }
  return static_cast<int>(v);
}

double parse_double(std::string_view flag, const char* s) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !std::isfinite(v)) {
    fail("invalid value for " + std::string(flag) + ": '" + s + "' (a number expected)");
  }
  return v;
}

}  // namespace

std::string usage_text() {
  return "usage: ds4-bench -m MODEL --prompt-file FILE [options]\n"
         "\n"
         "Measures prefill and generation speed along one fixed text. For each frontier the\n"
         "session is synced to that many tokens of the text (only the new interval is\n"
         "evaluated), snapshotted in memory, then runs --gen-tokens greedy decode steps (EOS is\n"
         "never chosen) and is restored. Prints one CSV row per frontier:\n"
         "  ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes\n"
         "and on stderr the decode bytes per token, the memory-bandwidth bound and memory use.\n"
         "\n"
         "Input (exactly one):\n"
         "  --prompt-file FILE       text tokenised as is (no BOS, special tokens not parsed)\n"
         "  --chat-prompt-file FILE  the text as one user message of a non-thinking chat\n"
         "  -sys, --system TEXT      system prompt for --chat-prompt-file\n"
         "                           (default: \"You are a helpful assistant.\")\n"
         "Model and machine:\n"
         "  -m, --model FILE         GGUF model (default: ds4flash.gguf)\n"
         "  -t, --threads N          CPU threads (default: all cores)\n"
         "  -b, --backend NAME       cpu (default) or vulkan (builds with Vulkan; for now only\n"
         "                           the embedding and output head run on the GPU)\n"
         "  --cpu                    same as --backend cpu\n"
         "  --device N               Vulkan device index (default 0)\n"
         "  --list-devices           print the Vulkan devices and exit\n"
         "  --prefill-chunk N        tokens per prefill chunk (default: the engine's)\n"
         "  --warm-weights           read every mapped weight page before measuring\n"
         "  --quality                accepted for ds4 compatibility (kernels are exact)\n"
         "Schedule:\n"
         "  --ctx-start N            first frontier (default 2048)\n"
         "  --ctx-max N              last frontier; the text needs this many tokens (default 32768)\n"
         "  --ctx-alloc N            session context (default ctx-max + gen-tokens + 1)\n"
         "  --step-incr N            frontier step when --step-mul is 1 (default 2048)\n"
         "  --step-mul F             multiplicative frontier step, >= 1 (default 1)\n"
         "  --gen-tokens N           greedy tokens per frontier (aliases --tokens, -n; default 128)\n"
         "Output:\n"
         "  --csv FILE               write the CSV there instead of stdout\n"
         "  -h, --help               this text\n";
}

BenchOptions parse_options(int argc, const char* const* argv) {
  BenchOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) fail(std::string(a) + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      o.help = true;
    } else if (a == "-m" || a == "--model") {
      o.model_path = value();
    } else if (a == "--prompt-file") {
      o.prompt_path = value();
    } else if (a == "--chat-prompt-file") {
      o.chat_prompt_path = value();
    } else if (a == "-sys" || a == "--system") {
      o.system = value();
    } else if (a == "--ctx-start") {
      o.ctx_start = parse_int(a, value(), 1);
    } else if (a == "--ctx-max") {
      o.ctx_max = parse_int(a, value(), 1);
    } else if (a == "--ctx-alloc") {
      o.ctx_alloc = parse_int(a, value(), 1);
    } else if (a == "--step-incr") {
      o.step_incr = parse_int(a, value(), 1);
    } else if (a == "--step-mul") {
      o.step_mul = parse_double(a, value());
    } else if (a == "--gen-tokens" || a == "--tokens" || a == "-n") {
      o.gen_tokens = parse_int(a, value(), 0);
    } else if (a == "--csv") {
      o.csv_path = value();
    } else if (a == "-t" || a == "--threads") {
      o.threads = parse_int(a, value(), 1);
    } else if (a == "--prefill-chunk") {
      o.prefill_chunk = parse_int(a, value(), 1);
    } else if (a == "-b" || a == "--backend") {
      const std::string b(value());
      if (!parse_backend(b, &o.backend)) fail("unknown backend '" + b + "' (cpu or vulkan)");
      if (!has_backend(o.backend)) fail("backend '" + b + "' is not available in this build");
    } else if (a == "--cpu") {
      o.backend = Backend::Cpu;
    } else if (a == "--device") {
      o.device = parse_int(a, value(), 0);
    } else if (a == "--list-devices") {
      o.list_devices = true;
    } else if (a == "--warm-weights") {
      o.warm_weights = true;
    } else if (a == "--quality") {
      o.quality = true;
    } else {
      fail("unknown option: " + std::string(a));
    }
  }
  if (o.help || o.list_devices) return o;
  if (o.prompt_path.empty() == o.chat_prompt_path.empty()) {
    fail("give exactly one of --prompt-file or --chat-prompt-file");
  }
  if (o.ctx_start > o.ctx_max) fail("--ctx-start must be <= --ctx-max");
  if (o.step_mul < 1.0) fail("--step-mul must be >= 1");
  const int64_t needed = static_cast<int64_t>(o.ctx_max) + o.gen_tokens;
  if (needed + 1 > INT_MAX) fail("--ctx-max + --gen-tokens is too large");
  if (o.ctx_alloc == 0) {
    o.ctx_alloc = static_cast<int>(needed + 1);
  } else if (o.ctx_alloc <= needed) {
    fail("--ctx-alloc must be greater than --ctx-max + --gen-tokens (" + std::to_string(needed) + ")");
  }
  return o;
}

int next_frontier(const BenchOptions& o, int cur) {
  if (cur >= o.ctx_max) return o.ctx_max;
  int64_t next;
  if (o.step_mul == 1.0) {
    next = static_cast<int64_t>(cur) + o.step_incr;
  } else {
    const double v = std::ceil(static_cast<double>(cur) * o.step_mul);
    next = v >= static_cast<double>(o.ctx_max) ? o.ctx_max : static_cast<int64_t>(v);
    if (next <= cur) next = cur + 1;  // a factor this close to 1 still advances
  }
  return next > o.ctx_max ? o.ctx_max : static_cast<int>(next);
}

std::vector<int> frontiers(const BenchOptions& o) {
  std::vector<int> out;
  for (int f = o.ctx_start;; f = next_frontier(o, f)) {
    out.push_back(f);
    if (f >= o.ctx_max) break;
  }
  return out;
}

std::string csv_header() { return "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes"; }

std::string csv_row(int ctx_tokens, int prefill_tokens, double prefill_seconds, int gen_tokens,
                    double gen_seconds, uint64_t kvcache_bytes) {
  const double prefill_tps = prefill_seconds > 0 ? prefill_tokens / prefill_seconds : 0.0;
  const double gen_tps = gen_seconds > 0 ? gen_tokens / gen_seconds : 0.0;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%d,%d,%.2f,%d,%.2f,%llu", ctx_tokens, prefill_tokens, prefill_tps,
                gen_tokens, gen_tps, static_cast<unsigned long long>(kvcache_bytes));
  return buf;
}

int argmax_excluding(const std::vector<float>& logits, int excluded) {
  int best = -1;
  for (int i = 0; i < static_cast<int>(logits.size()); ++i) {
    if (i == excluded) continue;
    // NaN never wins; the first of equal maxima does.
    if (best < 0 ? !std::isnan(logits[i]) : logits[i] > logits[static_cast<size_t>(best)]) best = i;
  }
  return best;
}

}  // namespace ds4::bench
