// ds4-bench option parsing, frontier schedule and CSV formatting (no engine needed).
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "args/args.h"
#include "args/engine_options.h"
#include "ds4_bench.h"

namespace ds4::bench {

namespace {

using args::UsageError;

// Every flag of ds4-bench, bound to `o`.
void describe(args::Parser& p, BenchOptions& o) {
  p.group("Input (exactly one)");
  p.text("--prompt-file", o.prompt_path, "FILE", "text tokenised as is (no BOS, special tokens not parsed)");
  p.text("--chat-prompt-file", o.chat_prompt_path, "FILE", "the text as one user message of a non-thinking chat");
  p.text("--system", o.system, "TEXT",
         "system prompt for --chat-prompt-file\n(default: \"You are a helpful assistant.\")");
  p.alias("-sys", "--system", true);
  p.group("Model and machine");
  args::add_engine_options(p, {o.model_path, o.threads, o.layer_split, o.backend, o.device, o.cpu_moe_layers,
                               o.list_devices});
  p.integer("--prefill-chunk", o.prefill_chunk, 1, INT_MAX, "N", "tokens per prefill chunk (default: the engine's)");
  p.flag("--warm-weights", o.warm_weights, "read every mapped weight page before measuring");
  p.flag("--repack-iq2", o.repack_iq2_xxs,
         "CPU: re-encode IQ2_XXS weights in memory at load (lossless, faster kernels; model must fit in RAM)");
  p.flag("--quality", o.quality, "accepted for ds4 compatibility (kernels are exact)");
  p.group("Schedule");
  p.integer("--ctx-start", o.ctx_start, 1, INT_MAX, "N", "first frontier (default 2048)");
  p.integer("--ctx-max", o.ctx_max, 1, INT_MAX, "N", "last frontier; the text needs this many tokens (default 32768)");
  p.integer("--ctx-alloc", o.ctx_alloc, 1, INT_MAX, "N", "session context (default ctx-max + gen-tokens + 1)");
  p.integer("--step-incr", o.step_incr, 1, INT_MAX, "N", "frontier step when --step-mul is 1 (default 2048)");
  p.value(
      "--step-mul", [&o](const std::string& v) { o.step_mul = args::Parser::parse_number(v, -1e300, 1e300, false); },
      "F", "multiplicative frontier step, >= 1 (default 1)");
  p.integer("-n,--gen-tokens", o.gen_tokens, 0, INT_MAX, "N", "greedy tokens per frontier (default 128)");
  p.alias("--tokens", "--gen-tokens", true);
  p.group("Output");
  p.text("--csv", o.csv_path, "FILE", "write the CSV there instead of stdout");
}

constexpr const char* kAbout =
    "Measures prefill and generation speed along one fixed text. For each frontier the\n"
    "session is synced to that many tokens of the text (only the new interval is\n"
    "evaluated), snapshotted in memory, then runs --gen-tokens greedy decode steps (EOS is\n"
    "never chosen) and is restored. Prints one CSV row per frontier:\n"
    "  ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes\n"
    "and on stderr the decode bytes per token, the memory-bandwidth bound and memory use.";

}  // namespace

std::string usage_text() {
  BenchOptions o;
  args::Parser p("ds4-bench", "ds4-bench -m MODEL --prompt-file FILE [options]", kAbout);
  describe(p, o);
  return p.help();
}

args::Outcome parse_options(int argc, const char* const* argv, BenchOptions& o) {
  o = BenchOptions{};
  args::Parser p("ds4-bench", "ds4-bench -m MODEL --prompt-file FILE [options]", kAbout);
  describe(p, o);
  return p.parse(argc, argv, [&] {
    if (o.list_devices) return;
    if (o.prompt_path.empty() == o.chat_prompt_path.empty()) {
      throw UsageError("give exactly one of --prompt-file or --chat-prompt-file");
    }
    if (o.ctx_start > o.ctx_max) throw UsageError("--ctx-start must be <= --ctx-max");
    if (o.step_mul < 1.0) throw UsageError("--step-mul must be >= 1");
    const int64_t needed = static_cast<int64_t>(o.ctx_max) + o.gen_tokens;
    if (needed + 1 > INT_MAX) throw UsageError("--ctx-max + --gen-tokens is too large");
    if (o.ctx_alloc == 0) {
      o.ctx_alloc = static_cast<int>(needed + 1);
    } else if (o.ctx_alloc <= needed) {
      throw UsageError("--ctx-alloc must be greater than --ctx-max + --gen-tokens (" + std::to_string(needed) + ")");
    }
  });
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
