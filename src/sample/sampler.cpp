#include "sample/sampler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

namespace ds4::sample {

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Rng::Rng(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

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

std::vector<TokenProb> filtered_distribution(std::span<const float> logits, const Params& p) {
  std::vector<TokenProb> cand;
  const int32_t best = argmax(logits);
  if (best < 0) return cand;
  if (p.temperature <= 0.0f) return {{best, 0.0f}};

  cand.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); i++)
    if (std::isfinite(logits[i])) cand.push_back({static_cast<int32_t>(i), logits[i]});
  // Descending logit, ties by lower id, so the order (and thus sampling) is deterministic.
  auto by_logit = [](const TokenProb& a, const TokenProb& b) {
    return a.logprob != b.logprob ? a.logprob > b.logprob : a.id < b.id;
  };
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < cand.size()) {
    std::partial_sort(cand.begin(), cand.begin() + p.top_k, cand.end(), by_logit);
    cand.resize(static_cast<size_t>(p.top_k));
  } else {
    std::sort(cand.begin(), cand.end(), by_logit);
  }

  // Softmax at the temperature in double: the filters compare small probabilities.
  const double max_logit = cand[0].logprob;
  std::vector<double> prob(cand.size());
  double sum = 0.0;
  for (size_t i = 0; i < cand.size(); i++) {
    prob[i] = std::exp((cand[i].logprob - max_logit) / p.temperature);
    sum += prob[i];
  }
  for (auto& v : prob) v /= sum;

  // min-p relative to the best token, then the nucleus over what is left (mass measured
  // against the top-k distribution, as ds4 does). The best token always survives.
  const double min_prob = prob[0] * std::max(0.0f, p.min_p);
  const double top_p = (p.top_p > 0.0f && p.top_p < 1.0f) ? p.top_p : 1.0;
  size_t keep = 0;
  double mass = 0.0;
  for (size_t i = 0; i < cand.size(); i++) {
    if (i > 0 && prob[i] < min_prob) break;
    mass += prob[i];
    keep = i + 1;
    if (top_p < 1.0 && mass >= top_p) break;
  }
  cand.resize(keep);
  for (size_t i = 0; i < keep; i++) cand[i].logprob = static_cast<float>(std::log(prob[i] / mass));
  return cand;
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
  const auto dist = filtered_distribution(logits, params_);
  if (dist.empty()) return -1;
  double r = rng_.uniform();
  for (const auto& c : dist) {
    r -= std::exp(static_cast<double>(c.logprob));
    if (r < 0.0) return c.id;
  }
  return dist.back().id;
}

}  // namespace ds4::sample
