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

int32_t Decoder::sample(std::span<const float> target, bool greedy) {
  const bool plain_greedy = greedy || sampler_.params().temperature <= 0.0f;
  if (!pending_ || j_ >= static_cast<int>(drafts_.size())) return sampler_.sample(target, greedy);
  const int32_t d = drafts_[j_];
  int32_t tok;
  bool acc;
  if (plain_greedy) {
    tok = sample::argmax(target);
    acc = tok == d;
  } else {
    const auto p = sample::filtered_distribution(target, sampler_.params());
    tok = accept_or_resample(p, q_[j_], d, sampler_.rng(), &acc);
  }
  alpha_ = 0.9 * alpha_ + (acc ? 0.1 : 0.0);
  return tok;
}

int Decoder::choose_k(int more) const {
  int lim = std::min(opt_.max_draft, more - 1);
  lim = std::min(lim, s_.context_size() - base_ - 1);
  if (base_ == 0 || s_.hidden().empty()) lim = 0;
  if (lim <= 0) return 0;
  if (!opt_.adaptive) return lim;
  // Warm-up: measure a plain step (no waste) and a verify of 2; larger k not yet measured
  // are extrapolated linearly from those two (a verify's cost grows with its width).
  for (int k = 0; k <= 1; ++k)
    if (cost_n_[k] == 0) return k;
  auto cost = [&](int k) { return cost_n_[k] > 0 ? cost_[k] : cost_[0] + k * std::max(0.0, cost_[1] - cost_[0]); };
  // Expected committed tokens per pass with i.i.d. acceptance alpha: (1 - a^(k+1)) / (1 - a).
  int best = 0;
  double best_rate = 1.0 / cost_[0];
  for (int k = 1; k <= lim; ++k) {
    const double a = std::min(alpha_, 0.999);
    const double expected = (1.0 - std::pow(a, k + 1)) / (1.0 - a);
    const double rate = expected / (cost(k) + k * draft_cost_);
    if (rate > best_rate) {
      best_rate = rate;
      best = k;
    }
  }
  return best;
}

void Decoder::observe(int k, double seconds, int) {
  double& c = cost_[k];
  c = cost_n_[k]++ == 0 ? seconds : 0.8 * c + 0.2 * seconds;
}

void Decoder::advance(int32_t token, int more) {
  if (pending_ && j_ < static_cast<int>(drafts_.size()) && token == drafts_[j_]) {
    ++j_;  // verified already: the session holds it
    ++base_;
    ++stats_.accepted;
    return;
  }
  pending_ = false;
  if (s_.n_tokens() > base_) s_.rewind(base_);  // cheap: within the rewind reach
  int k = choose_k(more);
  if (k == 0 && opt_.adaptive && opt_.max_draft > 0 && std::min(opt_.max_draft, more - 1) > 0 && base_ > 0 &&
      !s_.hidden().empty() && cost_n_[0] > 0 && ++cycle_ >= 32) {
    cycle_ = 0;  // at k = 0 acceptance is unknown: probe one draft now and then
    k = 1;
  }
  k_now_ = k;
  if (k == 0) {
    const double t0 = now_s();
    s_.eval(token);
    observe(0, now_s() - t0, 0);
    ++stats_.singles;
    ++base_;
    return;
  }
  // Draft k tokens: the MTP block on (hidden state of position base_-1, token, base_-1),
  // then on its own output state.
  const double td = now_s();
  drafts_.clear();
  q_.clear();
  const bool sampling = sampler_.params().temperature > 0.0f;
  h_ = s_.hidden();
  int32_t prev = token;
  for (int i = 0; i < k; ++i) {
    int32_t d;
    if (forced_) {
      d = forced_(base_ + 1 + i);
      if (sampling) q_.push_back({{d, 0.0f}});  // q: all mass on the forced draft
      drafts_.push_back(d);
      prev = d;
      continue;
    }
    const std::vector<float>& ml = s_.mtp_eval(h_.data(), prev, base_ - 1 + i);
    if (sampling) {
      q_.push_back(sample::filtered_distribution(ml, sampler_.params()));
      d = q_.back().empty() ? sample::argmax(ml) : draw(q_.back(), sampler_.rng());
    } else {
      d = sample::argmax(ml);
    }
    if (d < 0) {
      k = i;
      break;
    }
    drafts_.push_back(d);
    prev = d;
    if (i + 1 < k) h_ = s_.mtp_hidden();
  }
  const double t0 = now_s();
  if (k > 0) {
    draft_cost_ = draft_n_++ == 0 ? (t0 - td) / k : 0.8 * draft_cost_ + 0.2 * (t0 - td) / k;
  }
  std::vector<BatchEntry> batch;
  batch.reserve(static_cast<size_t>(k) + 1);
  batch.push_back({&s_, token, base_, true});
  for (int i = 0; i < k; ++i) batch.push_back({&s_, drafts_[i], base_ + 1 + i, true});
  e_.eval_batch(batch, &rows_);
  observe(k, now_s() - t0, 0);
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
  if (s_.n_tokens() > base_) s_.rewind(base_);
}

}  // namespace ds4::spec
