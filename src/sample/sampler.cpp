#include "sample/sampler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

namespace ds4::sample {

int32_t argmax(std::span<const float> logits) {
  int32_t best = -1;
  float best_v = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < logits.size(); i++) {
    const float v = logits[i];
    if (!std::isfinite(v)) continue;
    if (best < 0 || v > best_v) {
      best = static_cast<int32_t>(i);
      best_v = v;
    }
  }
  return best;
}

namespace {

// A candidate with its weight exp((logit - max) / T) (the best token weighs 1).
struct Weighted {
  int32_t id;
  float logit;
  double w;
};

// The sampler's order: descending logit, ties by lower id (deterministic).
bool before(const Weighted& a, const Weighted& b) {
  return a.logit != b.logit ? a.logit > b.logit : a.id < b.id;
}

// The candidates after temperature, top-k and min-p, unordered, with their weights.
// min-p is a logit threshold (a weight below min_p never survives), so the tokens it drops
// cost neither an exp() nor a place in a sort; `total` gets the weight of the whole top-k
// set (top-p measures mass against it) only when asked for.
std::vector<Weighted> candidates(std::span<const float> logits, const Params& p, int32_t best,
                                 double* total) {
  std::vector<Weighted> cand;
  const float max_logit = logits[static_cast<size_t>(best)];
  const double t = p.temperature;
  // min-p threshold on (logit - max) / T; -inf keeps everything.
  const double cut = p.min_p > 0.0f ? std::log(static_cast<double>(p.min_p))
                                    : -std::numeric_limits<double>::infinity();
  cand.reserve(total ? logits.size() : 1024);
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < logits.size()) {
    std::vector<Weighted> all;
    all.reserve(logits.size());
    for (size_t i = 0; i < logits.size(); i++)
      if (std::isfinite(logits[i])) all.push_back({static_cast<int32_t>(i), logits[i], 0.0});
    if (static_cast<size_t>(p.top_k) < all.size()) {
      std::nth_element(all.begin(), all.begin() + (p.top_k - 1), all.end(), before);
      all.resize(static_cast<size_t>(p.top_k));
    }
    double sum = 0.0;
    for (auto& c : all) {
      const double z = (static_cast<double>(c.logit) - max_logit) / t;
      c.w = std::exp(z);
      sum += c.w;
      if (z >= cut) cand.push_back(c);
    }
    if (total) *total = sum;
    return cand;
  }
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); i++) {
    const float l = logits[i];
    if (!std::isfinite(l)) continue;
    const double z = (static_cast<double>(l) - max_logit) / t;
    if (z < cut) {
      if (total) sum += std::exp(z);
      continue;
    }
    const double w = std::exp(z);
    sum += w;
    cand.push_back({static_cast<int32_t>(i), l, w});
  }
  if (total) *total = sum;
  return cand;
}

// Reorders c so that c[0..k) are, in some order, the candidates that come before c[k] in
// the sampler's order, where c[k] is the first candidate at which the running weight (in
// that order) exceeds `target` (or reaches it, with `reach`); returns k. Expected linear time (quickselect on weight
// sums): the sampler needs only this cut, not a fully sorted list.
size_t cut_at_mass(std::vector<Weighted>& c, double target, bool reach) {
  auto past = [reach, target](double m) { return reach ? m >= target : m > target; };
  size_t lo = 0, hi = c.size();
  double acc = 0.0;  // weight of c[0..lo)
  while (hi - lo > 16) {
    // Median of three as pivot, moved to hi - 1.
    const size_t mid = lo + (hi - lo) / 2;
    if (before(c[mid], c[lo])) std::swap(c[mid], c[lo]);
    if (before(c[hi - 1], c[lo])) std::swap(c[hi - 1], c[lo]);
    if (before(c[mid], c[hi - 1])) std::swap(c[mid], c[hi - 1]);
    const Weighted pivot = c[hi - 1];
    const auto m = static_cast<size_t>(
        std::partition(c.begin() + static_cast<std::ptrdiff_t>(lo), c.begin() + static_cast<std::ptrdiff_t>(hi - 1),
                       [&](const Weighted& x) { return before(x, pivot); }) - c.begin());
    std::swap(c[m], c[hi - 1]);
    double left = 0.0;
    for (size_t i = lo; i < m; i++) left += c[i].w;
    if (past(acc + left)) {
      hi = m;
    } else if (past(acc + left + c[m].w)) {
      return m;
    } else {
      acc += left + c[m].w;
      lo = m + 1;
    }
  }
  std::sort(c.begin() + static_cast<std::ptrdiff_t>(lo), c.begin() + static_cast<std::ptrdiff_t>(hi), before);
  for (size_t i = lo; i < hi; i++) {
    acc += c[i].w;
    if (past(acc)) return i;
  }
  return hi > 0 ? hi - 1 : 0;  // rounding: the last one
}

// Applies top-p: keeps the smallest prefix (in the sampler's order) whose weight reaches
// top_p * total, unordered. The best token always survives.
void apply_top_p(std::vector<Weighted>& cand, double top_p, double total) {
  if (top_p >= 1.0 || cand.empty()) return;
  const size_t k = cut_at_mass(cand, top_p * total, /*reach=*/true);
  cand.resize(std::min(cand.size(), k + 1));
}

}  // namespace

std::vector<TokenProb> filtered_distribution(std::span<const float> logits, const Params& p) {
  std::vector<TokenProb> out;
  const int32_t best = argmax(logits);
  if (best < 0) return out;
  if (p.temperature <= 0.0f) return {{best, 0.0f}};
  const double top_p = (p.top_p > 0.0f && p.top_p < 1.0f) ? p.top_p : 1.0;
  double total = 0.0;
  auto cand = candidates(logits, p, best, top_p < 1.0 ? &total : nullptr);
  apply_top_p(cand, top_p, total);
  std::sort(cand.begin(), cand.end(), before);
  double mass = 0.0;
  for (const auto& c : cand) mass += c.w;
  out.reserve(cand.size());
  for (const auto& c : cand) out.push_back({c.id, static_cast<float>(std::log(c.w / mass))});
  return out;
}

std::vector<TokenProb> top_logprobs(std::span<const float> logits, int k) {
  std::vector<TokenProb> out;
  if (k <= 0) return out;
  double max_v = -std::numeric_limits<double>::infinity();
  for (float v : logits)
    if (std::isfinite(v)) max_v = std::max<double>(max_v, v);
  if (!std::isfinite(max_v)) return out;
  double sum = 0.0;
  for (float v : logits)
    if (std::isfinite(v)) sum += std::exp(v - max_v);
  const double log_z = max_v + std::log(sum);
  out.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); i++)
    if (std::isfinite(logits[i]))
      out.push_back({static_cast<int32_t>(i), static_cast<float>(logits[i] - log_z)});
  const size_t n = std::min<size_t>(static_cast<size_t>(k), out.size());
  std::partial_sort(out.begin(), out.begin() + n, out.end(), [](const TokenProb& a, const TokenProb& b) {
    return a.logprob != b.logprob ? a.logprob > b.logprob : a.id < b.id;
  });
  out.resize(n);
  return out;
}

float token_logprob(std::span<const float> logits, int32_t id) {
  if (id < 0 || static_cast<size_t>(id) >= logits.size() || !std::isfinite(logits[id]))
    return -std::numeric_limits<float>::infinity();
  double max_v = -std::numeric_limits<double>::infinity();
  for (float v : logits)
    if (std::isfinite(v)) max_v = std::max<double>(max_v, v);
  double sum = 0.0;
  for (float v : logits)
    if (std::isfinite(v)) sum += std::exp(v - max_v);
  return static_cast<float>(logits[id] - max_v - std::log(sum));
}

static uint64_t effective_seed(uint64_t seed) {
  if (seed != 0) return seed;
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) | 1;
}

Sampler::Sampler(Params p) : params_(p), rng_(effective_seed(p.seed)) {}

void Sampler::set_params(const Params& p) { params_ = p; }

int32_t Sampler::sample(std::span<const float> logits, bool greedy) {
  if (greedy || params_.temperature <= 0.0f) return argmax(logits);
  // The same draw as walking filtered_distribution() in order with one uniform number, but
  // by selection instead of a sort: a near-uniform distribution over the whole vocabulary
  // (a random model, a permissive grammar) keeps ~10^5 candidates.
  const int32_t best = argmax(logits);
  if (best < 0) return -1;
  const double top_p = (params_.top_p > 0.0f && params_.top_p < 1.0f) ? params_.top_p : 1.0;
  double total = 0.0;
  auto cand = candidates(logits, params_, best, top_p < 1.0 ? &total : nullptr);
  apply_top_p(cand, top_p, total);
  double mass = 0.0;
  for (const auto& c : cand) mass += c.w;
  const double r = rng_.uniform() * mass;
  return cand[cut_at_mass(cand, r, /*reach=*/false)].id;
}

}  // namespace ds4::sample
