// ds4-bench option parsing, frontier schedule and CSV formatting (no engine needed).
#include <algorithm>
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
  args::add_engine_options(p, o.model_path, o);
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
  p.group("Several sequences decoded together");
  p.value(
      "--parallel",
      [&o](const std::string& v) {
        o.parallel.clear();
        size_t at = 0;
        while (true) {
          const size_t comma = v.find(',', at);
          const std::string item = v.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
          o.parallel.push_back(static_cast<int>(args::Parser::parse_integer(item, 1, 256)));
          if (comma == std::string::npos) break;
          at = comma + 1;
        }
      },
      "N[,N...]",
      "instead of the sweep: for each N (1-256), N sequences of --ctx-start\n"
      "tokens (a shared start, then each its own slice of the text) decode\n"
      "--gen-tokens greedy tokens together, one batched forward pass per step;\n"
      "N = 1 is always measured too. CSV:\n"
      "parallel,ctx_tokens,gen_tokens,agg_tps,ratio,ratio_min,ratio_max,\n"
      "cpu_agg_tps,cpu_ratio (aggregate tokens/s of the N sequences; ratio =\n"
      "median over the rounds of that round's aggregate over its N = 1 rate;\n"
      "cpu_* the same from process CPU time x threads, what the work costs on\n"
      "a machine shared with other load)");
  p.alias("-np", "--parallel", true);
  p.integer("--rounds", o.rounds, 1, INT_MAX, "N", "interleaved rounds of --parallel (default 3)");
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
    if (!o.parallel.empty()) {
      // One frontier: --ctx-start (--ctx-max, if given, must agree).
      if (p.count("--ctx-max") > 0 && o.ctx_max != o.ctx_start) {
        throw UsageError("--parallel measures at --ctx-start; drop --ctx-max");
      }
      o.ctx_max = o.ctx_start;
      o.parallel.push_back(1);
      std::sort(o.parallel.begin(), o.parallel.end());
      o.parallel.erase(std::unique(o.parallel.begin(), o.parallel.end()), o.parallel.end());
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

std::string parallel_csv_header() {
  return "parallel,ctx_tokens,gen_tokens,agg_tps,ratio,ratio_min,ratio_max,cpu_agg_tps,cpu_ratio";
}

std::string parallel_csv_row(int n, int ctx_tokens, int gen_tokens, double agg_tps, double ratio,
                             double ratio_min, double ratio_max, double cpu_agg_tps, double cpu_ratio) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "%d,%d,%d,%.2f,%.3f,%.3f,%.3f,%.2f,%.3f", n, ctx_tokens, gen_tokens, agg_tps,
                ratio, ratio_min, ratio_max, cpu_agg_tps, cpu_ratio);
  return buf;
}

std::vector<int> round_order(const std::vector<int>& parallel, int round) {
  std::vector<int> out(parallel);
  if (!out.empty()) std::rotate(out.begin(), out.begin() + (round % static_cast<int>(out.size())), out.end());
  return out;
}

int parallel_tail_tokens(int ctx_tokens) { return std::clamp(ctx_tokens / 4, 1, 32); }

int64_t parallel_prompt_tokens(const BenchOptions& o) {
  const int largest = o.parallel.empty() ? 1 : o.parallel.back();
  return static_cast<int64_t>(o.ctx_start) + static_cast<int64_t>(largest - 1) * parallel_tail_tokens(o.ctx_start);
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
