#include "spec/speculative.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

namespace ds4::spec {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double prob_of(const std::vector<sample::TokenProb>& d, int32_t id) {
  for (const auto& t : d)
    if (t.id == id) return std::exp(static_cast<double>(t.logprob));
  return 0.0;
}

int32_t draw(const std::vector<sample::TokenProb>& d, sample::Rng& rng) {
  double r = rng.uniform();
  for (const auto& t : d) {
    r -= std::exp(static_cast<double>(t.logprob));
    if (r < 0.0) return t.id;
  }
  return d.back().id;
}

}  // namespace

int32_t accept_or_resample(const std::vector<sample::TokenProb>& p, const std::vector<sample::TokenProb>& q,
                           int32_t drafted, sample::Rng& rng, bool* accepted, Rule rule) {
  *accepted = false;
  if (p.empty()) return drafted;
  if (rule == Rule::Wrong) {
    *accepted = true;
    return drafted;
  }
  const double pd = prob_of(p, drafted), qd = prob_of(q, drafted);
  const double u = rng.uniform();
  if (pd > 0.0 && (qd <= 0.0 || u * qd < pd)) {
    *accepted = true;
    return drafted;
  }
  // Residual max(0, p - q) over p's support (elsewhere p = 0, so the residual is 0 too).
  std::vector<sample::TokenProb> res;
  res.reserve(p.size());
  double sum = 0.0;
  for (const auto& t : p) {
    const double r = std::exp(static_cast<double>(t.logprob)) - prob_of(q, t.id);
    if (r > 0.0) {
      res.push_back({t.id, static_cast<float>(r)});
      sum += r;
    }
  }
  if (!(sum > 0.0)) return draw(p, rng);  // p == q up to rounding: cannot really be rejected
  double r = rng.uniform() * sum;
  for (const auto& t : res) {
    r -= t.logprob;  // holds the residual mass here
    if (r < 0.0) return t.id;
  }
  return res.back().id;
}

std::string unsupported_reason(const Engine& engine, int max_draft) {
  if (max_draft < 0 || max_draft > kMaxDraft)
    return "--mtp-draft must be between 0 and " + std::to_string(kMaxDraft) + " (got " +
           std::to_string(max_draft) + ")";
  if (max_draft > 0 && !engine.has_mtp())
    return "--mtp-draft needs the model's MTP block: this model file has no mtp.0.* tensors "
           "(pass the MTP sidecar GGUF with --mtp FILE, or use --mtp-draft 0)";
  return {};
}

Decoder::Decoder(Engine& engine, Session& session, sample::Sampler& sampler, const Options& opt)
    : e_(engine), s_(session), sampler_(sampler), opt_(opt), base_(session.n_tokens()) {
  opt_.max_draft = std::clamp(opt_.max_draft, 0, kMaxDraft);
  if (!s_.has_mtp()) opt_.max_draft = 0;
}

std::span<const float> Decoder::logits() const {
  if (pending_) return {rows_.row(j_), static_cast<size_t>(rows_.n_vocab)};
  const std::vector<float>& l = s_.logits();
  return {l.data(), l.size()};
}

namespace {

// sum(min(p, q)): the probability that the rejection rule accepts a draft drawn from q.
double overlap(const std::vector<sample::TokenProb>& p, const std::vector<sample::TokenProb>& q) {
  double sum = 0.0;
  for (const auto& t : q) sum += std::min(std::exp(static_cast<double>(t.logprob)), prob_of(p, t.id));
  return sum;
}

// Mean of the last timings without the largest: a pass preempted by another process is part
// of what decode costs on a shared machine (the mean keeps it), one stall of the whole
// machine is not (the largest goes).
double typical(const double* v, int n) {
  if (n <= 0) return 0.0;
  double sum = 0.0, mx = v[0];
  for (int i = 0; i < n; ++i) {
    sum += v[i];
    mx = std::max(mx, v[i]);
  }
  return n > 2 ? (sum - mx) / (n - 1) : sum / n;
}

}  // namespace

int32_t Decoder::sample(std::span<const float> target, bool greedy) {
  const bool plain_greedy = greedy || sampler_.params().temperature <= 0.0f;
  if (!pending_ || j_ >= static_cast<int>(drafts_.size())) {
    // A probe's expected acceptance under sampling: sum(min(p, q)) (advance() records it).
    if (probe_draft_ >= 0 && !plain_greedy)
      overlap_ = overlap(sample::filtered_distribution(target, sampler_.params()), probe_q_);
    return sampler_.sample(target, greedy);
  }
  const int32_t d = drafts_[j_];
  if (plain_greedy) return sample::argmax(target);
  const auto p = sample::filtered_distribution(target, sampler_.params());
  overlap_ = overlap(p, q_[j_]);  // the expectation of the outcome: less noise than it
  bool acc;
  return accept_or_resample(p, q_[j_], d, sampler_.rng(), &acc, opt_.rule);
}

void Decoder::Acceptance::add(double hit) {
  // Fading: about the last 20 decisions count (acceptance changes along a text).
  constexpr double kKeep = 0.95;
  hits = kKeep * hits + hit;
  misses = kKeep * misses + (1.0 - hit);
}

double Decoder::Acceptance::upper() const {
  const double m = mean();
  return std::min(1.0, m + std::sqrt(m * (1.0 - m) / (n() + 3.0)));
}

void Decoder::record(double hit) {
  acc_.add(hit);
  if (probing_) burst_hits_ += hit;
}

double Decoder::pass_cost(int k) const {
  if (pinned_) return pinned_->verify[k];
  if (cost_n_[k] > 0) return typical(cost_[k], std::min(cost_n_[k], kCostWindow));
  const double c0 = cost_n_[0] > 0 ? typical(cost_[0], std::min(cost_n_[0], kCostWindow)) : 0.0;
  // Not measured yet: linear from the widest narrower verify measured (a verify's cost grows
  // with its width), else a cautious prior of half a step per extra position.
  for (int j = k - 1; j >= 1; --j)
    if (cost_n_[j] > 0) return c0 + k * std::max(0.0, pass_cost(j) - c0) / j;
  return c0 * (1.0 + 0.5 * k);
}

double Decoder::rate(int k, double a) const {
  a = std::min(a, 0.999);
  const double expected = (1.0 - std::pow(a, k + 1)) / (1.0 - a);  // i.i.d. acceptance
  return expected / (pass_cost(k) + k * draft_cost());
}

double Decoder::draft_cost() const {
  if (pinned_) return pinned_->draft;
  return typical(draft_cost_, std::min(draft_n_, kCostWindow));
}

void Decoder::observe_pass(int k, double seconds) {
  cost_[k][cost_n_[k]++ % kCostWindow] = seconds;
}

void Decoder::observe_draft(double seconds) { draft_cost_[draft_n_++ % kCostWindow] = seconds; }

int Decoder::draft_limit(int more) const {
  int lim = std::min(opt_.max_draft, more - 1);
  lim = std::min(lim, s_.context_size() - base_ - 1);
  if (base_ == 0 || s_.hidden().empty()) lim = 0;
  return std::max(lim, 0);
}

int Decoder::choose_k(int lim) {
  if (lim <= 0) return 0;
  if (!opt_.adaptive) return lim;
  // Speculate only on evidence (two decisions' worth) and once a plain step was timed; from
  // a probe burst only once it saw a draft accepted (else faded misses and the prior would
  // restart wasted verifies after every burst).
  if ((cost_n_[0] == 0 && !pinned_) || acc_.n() < 2.0) return 0;
  if (probing_ && burst_hits_ < 0.5) return 0;
  const double a = acc_.mean();
  int best = 0;
  double best_rate = rate(0, a);
  for (int k = 1; k <= lim; ++k) {
    const double r = rate(k, a);
    if (r > best_rate) {
      best_rate = r;
      best = k;
    }
  }
  return best;
}

bool Decoder::probe_now(int lim) {
  if (lim <= 0 || !opt_.adaptive) return false;
  const bool budget = probe_seconds_ <= kProbeShare * decode_seconds_;
  if (!probing_) {
    if (base_ < next_burst_at_ || !budget) return false;
    probing_ = true;
    burst_ = 0;
    burst_hits_ = 0;
    acc_.hits *= 0.5;  // older evidence counts less in the new burst
    acc_.misses *= 0.5;
  }
  // Go on while an optimistic acceptance would make some k pay (costs not yet measured:
  // the first probe is taken anyway).
  bool optimistic = !pinned_ && (cost_n_[0] == 0 || draft_n_ == 0);
  for (int k = 1; k <= lim && !optimistic; ++k) optimistic = rate(k, acc_.upper()) > rate(0, 0.0);
  if (!optimistic || burst_ >= kMaxBurst) {
    probing_ = false;
    next_burst_at_ = base_ + interval_;
    interval_ = std::min(2 * interval_, kMaxInterval);
    return false;
  }
  if (!budget) return false;  // the burst goes on once decode has paid for its probes
  ++burst_;
  return true;
}

int32_t Decoder::draft_one(const float* hidden, int32_t prev, int pos, std::vector<sample::TokenProb>* q) {
  const bool sampling = sampler_.params().temperature > 0.0f;
  if (forced_) {
    const int32_t d = forced_(pos + 2);
    if (sampling) *q = {{d, 0.0f}};  // q: all mass on the forced draft
    return d;
  }
  const std::vector<float>& ml = s_.mtp_eval(hidden, prev, pos);
  if (!sampling) return sample::argmax(ml);
  *q = sample::filtered_distribution(ml, sampler_.params());
  return q->empty() ? sample::argmax(ml) : draw(*q, sampler_.rng());
}

void Decoder::advance(int32_t token, int more) {
  // The draft decision for this token, whoever picked it (sample(), a grammar, a script):
  // a verified draft is kept exactly when it equals the token.
  const bool drafted = pending_ && j_ < static_cast<int>(drafts_.size());
  if (drafted || probe_draft_ >= 0) {
    const int32_t d = drafted ? drafts_[j_] : probe_draft_;
    record(overlap_ >= 0.0 ? overlap_ : (token == d ? 1.0 : 0.0));
  }
  overlap_ = -1.0;
  probe_draft_ = -1;
  if (drafted && token == drafts_[j_]) {
    ++j_;  // verified already: the session holds it
    ++base_;
    ++stats_.accepted;
    return;
  }
  pending_ = false;
  if (s_.n_tokens() > base_) s_.rewind(base_);  // cheap: within the rewind reach
  const int lim = draft_limit(more);
  int k = choose_k(lim);
  k_now_ = k;
  if (k == 0) {
    if (probe_now(lim)) {
      // The draft of the token after `token`, compared when that token is sampled.
      const double td = now_s();
      h_ = s_.hidden();
      probe_draft_ = draft_one(h_.data(), token, base_ - 1, &probe_q_);
      const double dt = now_s() - td;
      observe_draft(dt);
      probe_seconds_ += pinned_ ? pinned_->draft : dt;
      decode_seconds_ += pinned_ ? pinned_->draft : dt;
      ++stats_.probes;
    }
    const double t0 = now_s();
    s_.eval(token);
    const double dt = now_s() - t0;
    observe_pass(0, dt);
    decode_seconds_ += pinned_ ? pinned_->verify[0] : dt;
    ++stats_.singles;
    ++base_;
    return;
  }
  // Drafting pays here: after a fall back to k = 0, the next probe burst comes soon.
  probing_ = false;
  interval_ = kFirstInterval;
  next_burst_at_ = base_ + interval_;
  // Draft k tokens: the MTP block on (hidden state of position base_-1, token, base_-1),
  // then on its own output state.
  const double td = now_s();
  drafts_.clear();
  q_.clear();
  h_ = s_.hidden();
  int32_t prev = token;
  for (int i = 0; i < k; ++i) {
    q_.emplace_back();
    const int32_t d = draft_one(h_.data(), prev, base_ - 1 + i, &q_.back());
    if (d < 0) {
      k = i;
      break;
    }
    drafts_.push_back(d);
    prev = d;
    if (i + 1 < k && !forced_) h_ = s_.mtp_hidden();
  }
  const double t0 = now_s();
  if (k > 0) observe_draft((t0 - td) / k);
  std::vector<BatchEntry> batch;
  batch.reserve(static_cast<size_t>(k) + 1);
  batch.push_back({&s_, token, base_, true});
  for (int i = 0; i < k; ++i) batch.push_back({&s_, drafts_[i], base_ + 1 + i, true});
  e_.eval_batch(batch, &rows_);
  const double t1 = now_s();
  observe_pass(k, t1 - t0);
  decode_seconds_ += pinned_ ? pinned_->verify[k] + k * pinned_->draft : t1 - td;
  if (k > 0) {
    ++stats_.verifies;
    stats_.drafted += k;
  } else {
    ++stats_.singles;
  }
  pending_ = true;
  j_ = 0;
  ++base_;
}

void Decoder::settle() {
  pending_ = false;
  probe_draft_ = -1;
  overlap_ = -1.0;
  if (s_.n_tokens() > base_) s_.rewind(base_);
}

}  // namespace ds4::spec
