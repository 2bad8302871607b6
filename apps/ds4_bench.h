// ds4-bench: prefill and generation speed along one fixed text (ds4's method; bench/README.md).
//
// The method is ds4's: tokenise the text once; for each frontier f (ctx_start, then +step_incr
// or ×step_mul, capped, ending at ctx_max) sync the session to the first f tokens, which
// evaluates only the new interval, snapshot it in memory, time gen_tokens greedy decode steps
// (EOS never chosen), restore the snapshot and go on. One CSV row per frontier.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "args/args.h"
#include "args/engine_options.h"
#include "ds4/engine.h"

namespace ds4::bench {

struct BenchOptions : args::EngineFlags {
  std::string model_path = "ds4flash.gguf";
  std::string prompt_path;       // raw text, tokenised as is (no BOS, no special tokens)
  std::string chat_prompt_path;  // or: a user message rendered as a non-thinking chat prompt
  std::string system = "You are a helpful assistant.";
  int ctx_start = 2048;
  int ctx_max = 32768;
  int ctx_alloc = 0;  // 0: ctx_max + gen_tokens + 1
  double step_mul = 1.0;
  int step_incr = 2048;
  int gen_tokens = 128;
  std::string csv_path;  // empty: stdout
  int prefill_chunk = 0; // 0: the engine's default
  bool warm_weights = false;
  bool repack_iq2_xxs = false;
  bool quality = false;  // accepted for ds4 compatibility; the CPU kernels are exact already
  // --parallel: aggregate decode speed of N sequences evaluated together (one
  // Engine::eval_batch row each per step) for every N listed, against N = 1 in the same run.
  std::vector<int> parallel;  // ascending, distinct, 1 included; empty: the frontier sweep
  int rounds = 3;             // interleaved rounds of the --parallel measurement
};

// Parses argv (argv[0] is skipped) into `o`. The outcome is done() after --help/--version
// (exit 0) or a usage error (exit 2: unknown flag, missing or malformed value, inconsistent
// settings; the message names the flag).
args::Outcome parse_options(int argc, const char* const* argv, BenchOptions& o);
std::string usage_text();

// The frontier after `cur` (ctx_max once reached).
int next_frontier(const BenchOptions& o, int cur);
// Every frontier in order, ctx_start first and ctx_max last.
std::vector<int> frontiers(const BenchOptions& o);

// The CSV header and one row, formatted as ds4 writes them (rates with 2 decimals).
std::string csv_header();
std::string csv_row(int ctx_tokens, int prefill_tokens, double prefill_seconds, int gen_tokens,
                    double gen_seconds, uint64_t kvcache_bytes);

// --parallel: the CSV header and one row (N, aggregate tokens/s, median ratio to N = 1 and
// the range of the per-round ratios; then the same rate and ratio from process CPU time).
std::string parallel_csv_header();
std::string parallel_csv_row(int n, int ctx_tokens, int gen_tokens, double agg_tps, double ratio,
                             double ratio_min, double ratio_max, double cpu_agg_tps, double cpu_ratio);
// The order of the N values in round `round` (rotated, so no N always runs first or last).
std::vector<int> round_order(const std::vector<int>& parallel, int round);
// Tokens by which the N sequences of --parallel differ: each is the shared start of the text
// plus its own slice of this many tokens (sequence i takes the i-th slice after the start).
int parallel_tail_tokens(int ctx_tokens);
// Tokens of text --parallel needs: ctx_tokens + (largest N - 1) * tail.
int64_t parallel_prompt_tokens(const BenchOptions& o);

// Index of the largest logit other than `excluded` (lowest index on ties); -1 if none.
int argmax_excluding(const std::vector<float>& logits, int excluded);

}  // namespace ds4::bench
