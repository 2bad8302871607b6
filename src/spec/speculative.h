// Speculative decoding with the model's MTP block (docs/speculative.md).
//
// A Decoder drives one session's decode loop in place of "sample from session.logits(),
// then session.eval(token)": after each committed token it drafts up to N more tokens with
// the MTP head, verifies them in one Engine::eval_batch of N+1 positions, and hands the
// verified logits out one token at a time. Acceptance is decided lazily, when the caller
// asks for the next token, so per-token state of the caller (greedy inside DSML syntax,
// grammar masks, stop strings, logprobs) sees exactly what plain decode would show it.
// Rejected drafts are dropped with Session::rewind (cheap: nothing re-evaluated).
//
// Greedy: the output is token-identical to plain decode (verify logits are bit-identical
// to single steps). Sampling: the standard rejection rule (accept a draft t drawn from q
// with probability min(1, p(t)/q(t)), else draw from the normalised max(0, p - q)), where
// p and q are the filtered target and draft distributions, keeps the output distribution
// that of plain sampling.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <span>
#include <vector>

#include "ds4/engine.h"
#include "sample/sampler.h"

namespace ds4::spec {

struct Options {
  int max_draft = 0;      // N: drafts per verify (0: plain decode), at most kMaxDraft
  bool adaptive = true;   // lower N (down to 0) when speculation does not pay
};
inline constexpr int kMaxDraft = 4;

struct Stats {
  int64_t verifies = 0;   // eval_batch passes with at least one draft
  int64_t singles = 0;    // plain single-token steps
  int64_t drafted = 0;    // drafted tokens verified
  int64_t accepted = 0;   // drafted tokens committed
  double acceptance() const { return drafted > 0 ? double(accepted) / double(drafted) : 0.0; }
};

// The acceptance rule, exposed for tests. `p` and `q` are filtered distributions (as from
// sample::filtered_distribution); `drafted` was drawn from q. Returns the token to emit and
// sets *accepted. Rule::Wrong is a deliberately broken rule (always accepts) that the
// statistical test must reject.
enum class Rule { Exact, Wrong };
int32_t accept_or_resample(const std::vector<sample::TokenProb>& p, const std::vector<sample::TokenProb>& q,
                           int32_t drafted, sample::Rng& rng, bool* accepted, Rule rule = Rule::Exact);

// Why a model cannot draft (empty when it can).
std::string unsupported_reason(const Engine& engine, int max_draft);

class Decoder {
 public:
  // `session` holds the prompt (its logits are the next-token logits); `sampler` is the
  // request's sampler (its parameters define q and p, its generator draws everything).
  Decoder(Engine& engine, Session& session, sample::Sampler& sampler, const Options& opt);

  // Target-model logits for the next token: what session.logits() would be in plain decode.
  std::span<const float> logits() const;
  // Picks the next token from `target` (logits() or a masked copy of it), greedily when
  // `greedy` or the temperature is 0: plain sampling, or the acceptance test of the draft
  // verified at this position.
  int32_t sample(std::span<const float> target, bool greedy = false);
  // Commits `token` (normally what sample() returned): replaces session.eval(token).
  // `more`: how many tokens may still be sampled after this one (drafts beyond are waste).
  void advance(int32_t token, int more = std::numeric_limits<int>::max());
  // Drops verified tokens never committed: the session then holds exactly the prompt and
  // the committed tokens. Call when the loop ends.
  void settle();

  int committed() const { return base_; }
  const Stats& stats() const { return stats_; }
  int current_draft() const { return k_now_; }
  // Test/benchmark hook: the draft for absolute position `pos` comes from this function
  // instead of the MTP block (perfect drafts from an earlier run, or wrong ones).
  void set_draft_source(std::function<int32_t(int pos)> f) { forced_ = std::move(f); }

 private:
  int choose_k(int more) const;
  void observe(int k, double seconds, int accepted);

  Engine& e_;
  Session& s_;
  sample::Sampler& sampler_;
  Options opt_;
  Stats stats_;
  int base_;                      // committed tokens (the session may hold verified extras)
  bool pending_ = false;          // rows_ hold a verify of drafts_ after token base_-1
  int j_ = 0;                     // next row of rows_ to use
  std::vector<int32_t> drafts_;
  std::vector<std::vector<sample::TokenProb>> q_;  // draft distributions (sampling only)
  ds4::BatchResult rows_;
  std::vector<float> h_;          // MTP input state copy
  std::function<int32_t(int)> forced_;
  // Controller: per-k cost (seconds per pass) and acceptance estimate.
  int k_now_ = 0;
  double cost_[kMaxDraft + 1] = {};
  int cost_n_[kMaxDraft + 1] = {};
  double draft_cost_ = 0;         // seconds per MTP draft
  int draft_n_ = 0;
  double alpha_ = 0.5;            // acceptance estimate (neutral start)
  int cycle_ = 0;                 // passes since the last probe while at k = 0
};

}  // namespace ds4::spec
