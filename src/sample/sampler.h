// Token sampling shared by the CLI and the server.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "random/random.h"

namespace ds4::sample {

struct Params {
  float temperature = 1.0f;  // <= 0: greedy
  int top_k = 0;             // <= 0: no limit
  float top_p = 1.0f;        // nucleus mass, in (0, 1]
  float min_p = 0.05f;       // drop tokens below min_p * p(best)
  uint64_t seed = 0;         // 0: pick one from the clock
};

// The seeded generator: a seed gives the same run on every platform and compiler.
using Rng = random::Rng;

struct TokenProb {
  int32_t id;
  float logprob;  // natural log of the model's probability (temperature 1, no filters)
};

// Index of the largest finite logit; ties go to the lowest id. -1 if none is finite.
int32_t argmax(std::span<const float> logits);

// The candidate distribution the sampler draws from, after temperature, top-k, min-p and
// top-p, sorted by probability (descending) and renormalised. Exposed for tests.
std::vector<TokenProb> filtered_distribution(std::span<const float> logits, const Params& p);

// Top-k tokens by model log-probability (log-softmax of the raw logits), best first.
std::vector<TokenProb> top_logprobs(std::span<const float> logits, int k);
// Model log-probability of one token.
float token_logprob(std::span<const float> logits, int32_t id);

class Sampler {
 public:
  explicit Sampler(Params p);
  const Params& params() const { return params_; }
  void set_params(const Params& p);  // keeps the generator state
  // Greedy when temperature <= 0 or `greedy` is set (e.g. inside DSML syntax).
  int32_t sample(std::span<const float> logits, bool greedy = false);
  // The generator (speculative decoding draws drafts and acceptance tests from it too).
  Rng& rng() { return rng_; }

 private:
  Params params_;
  Rng rng_;
};

}  // namespace ds4::sample
