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
#include <optional>
#include <string>
#include <span>
#include <vector>

#include "ds4/engine.h"
#include "sample/sampler.h"

namespace ds4::spec {

// The acceptance rule of sampled drafts: Rule::Exact, or Rule::Wrong, a deliberately broken
// rule (always accepts) that the statistical tests must reject.
enum class Rule { Exact, Wrong };

struct Options {
  int max_draft = 0;      // N: drafts per verify (0: plain decode), at most kMaxDraft
  bool adaptive = true;   // lower N (down to 0) when speculation does not pay
  Rule rule = Rule::Exact;  // tests only
};
inline constexpr int kMaxDraft = 4;

struct Stats {
  int64_t verifies = 0;   // eval_batch passes with at least one draft
  int64_t singles = 0;    // plain single-token steps
  int64_t drafted = 0;    // drafted tokens verified
  int64_t accepted = 0;   // drafted tokens committed
  int64_t probes = 0;     // drafts only compared with the next token (controller at k = 0)
  double acceptance() const { return drafted > 0 ? double(accepted) / double(drafted) : 0.0; }
};

// The acceptance rule, exposed for tests. `p` and `q` are filtered distributions (as from
// sample::filtered_distribution); `drafted` was drawn from q. Returns the token to emit and
// sets *accepted.
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
  // Test hook: the controller uses these costs (seconds) instead of measuring them, so its
  // decisions depend only on the drafts' outcomes. verify[k]: a pass of k drafts
  // (verify[0]: a plain step); draft: one MTP draft.
  struct Costs {
    double verify[kMaxDraft + 1] = {};
    double draft = 0;
  };
  void pin_costs(const Costs& c) { pinned_ = c; }

 private:
  // Acceptance estimate: exponentially faded counts of accepted / rejected drafts (a draft
  // decided by sampling counts its expected acceptance sum(min(p, q))), with a uniform prior.
  struct Acceptance {
    double hits = 0, misses = 0;
    void add(double hit);
    double n() const { return hits + misses; }
    double mean() const { return (hits + 1.0) / (n() + 2.0); }
    double upper() const;  // optimistic bound: mean + one standard deviation
  };
  int choose_k(int lim);
  bool probe_now(int lim);
  int draft_limit(int more) const;
  // Expected committed tokens per second when drafting k tokens at acceptance a.
  double rate(int k, double a) const;
  double pass_cost(int k) const;  // seconds of a pass verifying k drafts (k = 0: plain step)
  double draft_cost() const;      // seconds of one MTP draft
  void observe_pass(int k, double seconds);
  void observe_draft(double seconds);
  // One draft: the MTP block (or the forced source) on (hidden, prev, pos); q gets its
  // filtered distribution when sampling.
  int32_t draft_one(const float* hidden, int32_t prev, int pos, std::vector<sample::TokenProb>* q);
  void record(double hit);        // one draft decision (1 accepted, 0 rejected, or expected)

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
  // Controller (docs/speculative.md). Pass costs: the last few wall times per k.
  static constexpr int kCostWindow = 8;
  double cost_[kMaxDraft + 1][kCostWindow] = {};
  int cost_n_[kMaxDraft + 1] = {};
  double draft_cost_[kCostWindow] = {};  // seconds per MTP draft
  int draft_n_ = 0;
  std::optional<Costs> pinned_;
  Acceptance acc_;
  int k_now_ = 0;
  // Probing at k = 0: one draft per step, compared with the token the step then yields
  // (costs a draft, no verify), in bursts while acceptance could still make drafting pay;
  // bursts start `interval_` committed tokens apart, the interval doubling up to kMaxInterval
  // while the controller stays at k = 0 (back to kFirstInterval when it drafts again). All
  // probes together cost at most kProbeShare of the decode time so far (the first excepted):
  // a draft as costly as half a step (a model whose head is a large part of a step) is then
  // probed every ~50 tokens at most, a cheap one every few tokens.
  static constexpr int kFirstInterval = 16, kMaxInterval = 512, kMaxBurst = 16;
  static constexpr double kProbeShare = 0.01;
  double probe_seconds_ = 0;      // time of all probes (pinned costs: in their units)
  double decode_seconds_ = 0;     // time of all passes and drafts
  bool probing_ = true;           // a burst is running (the first one starts at once)
  int burst_ = 0;                 // probes in this burst
  double burst_hits_ = 0;         // accepted probe drafts in this burst
  int next_burst_at_ = 0;         // committed-token count that starts the next burst
  int interval_ = kFirstInterval;
  int32_t probe_draft_ = -1;      // the draft of the next token (probe), or -1
  std::vector<sample::TokenProb> probe_q_;
  double overlap_ = -1.0;         // sum(min(p, q)) of the pending decision when sampled, or -1
};

}  // namespace ds4::spec
