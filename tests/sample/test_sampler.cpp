#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <vector>

#include "sample/sampler.h"

using ds4::sample::Params;
using ds4::sample::Sampler;

namespace {

// Logits whose softmax at temperature 1 is exactly the given probabilities.
std::vector<float> logits_for(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

std::map<int, double> as_map(const std::vector<ds4::sample::TokenProb>& d) {
  std::map<int, double> m;
  for (const auto& t : d) m[t.id] = std::exp(t.logprob);
  return m;
}

Params plain() {
  Params p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 7;
  return p;
}

}  // namespace

TEST(Sampler, DefaultsMatchDs4) {
  Params p;
  EXPECT_EQ(p.temperature, 1.0f);
  EXPECT_EQ(p.top_p, 1.0f);
  EXPECT_FLOAT_EQ(p.min_p, 0.05f);
}

TEST(Sampler, NoFiltersKeepsTheModelDistribution) {
  const auto l = logits_for({0.15, 0.5, 0.05, 0.3});
  auto m = as_map(ds4::sample::filtered_distribution(l, plain()));
  ASSERT_EQ(m.size(), 4u);
  EXPECT_NEAR(m[1], 0.5, 1e-6);
  EXPECT_NEAR(m[3], 0.3, 1e-6);
  EXPECT_NEAR(m[0], 0.15, 1e-6);
  EXPECT_NEAR(m[2], 0.05, 1e-6);
}

TEST(Sampler, MinPDropsTokensBelowFractionOfBest) {
  auto p = plain();
  p.min_p = 0.2f;  // threshold 0.1: the 0.05 token goes, the rest renormalise over 0.95
  auto m = as_map(ds4::sample::filtered_distribution(logits_for({0.5, 0.3, 0.15, 0.05}), p));
  ASSERT_EQ(m.size(), 3u);
  EXPECT_NEAR(m[0], 0.5 / 0.95, 1e-6);
  EXPECT_NEAR(m[1], 0.3 / 0.95, 1e-6);
  EXPECT_NEAR(m[2], 0.15 / 0.95, 1e-6);
}

TEST(Sampler, TopPKeepsSmallestPrefixReachingMass) {
  auto p = plain();
  p.top_p = 0.75f;  // 0.5 < 0.75 <= 0.8: two tokens
  auto m = as_map(ds4::sample::filtered_distribution(logits_for({0.5, 0.3, 0.15, 0.05}), p));
  ASSERT_EQ(m.size(), 2u);
  EXPECT_NEAR(m[0], 0.5 / 0.8, 1e-6);
  EXPECT_NEAR(m[1], 0.3 / 0.8, 1e-6);
}

TEST(Sampler, TopKAndTemperature) {
  auto p = plain();
  p.top_k = 3;
  p.temperature = 2.0f;  // probabilities become proportional to sqrt(p)
  auto m = as_map(ds4::sample::filtered_distribution(logits_for({0.5, 0.3, 0.15, 0.05}), p));
  ASSERT_EQ(m.size(), 3u);
  const double z = std::sqrt(0.5) + std::sqrt(0.3) + std::sqrt(0.15);
  EXPECT_NEAR(m[0], std::sqrt(0.5) / z, 1e-6);
  EXPECT_NEAR(m[1], std::sqrt(0.3) / z, 1e-6);
  EXPECT_NEAR(m[2], std::sqrt(0.15) / z, 1e-6);
}

TEST(Sampler, GreedyPicksLowestIdOnTiesAndSkipsNonFinite) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> l = {nan, 1.0f, 3.0f, inf, 3.0f, -inf};
  EXPECT_EQ(ds4::sample::argmax(l), 2);
  auto p = plain();
  p.temperature = 0.0f;
  Sampler s(p);
  for (int i = 0; i < 10; i++) EXPECT_EQ(s.sample(l), 2);
  Sampler hot(plain());
  for (int i = 0; i < 50; i++) {
    int t = hot.sample(l);
    EXPECT_TRUE(t == 1 || t == 2 || t == 4) << t;
  }
}

TEST(Sampler, FixedSeedReproducesARun) {
  const auto l = logits_for({0.25, 0.25, 0.2, 0.2, 0.1});
  auto run = [&](uint64_t seed) {
    auto p = plain();
    p.seed = seed;
    Sampler s(p);
    std::vector<int> out;
    for (int i = 0; i < 64; i++) out.push_back(s.sample(l));
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(Sampler, FrequenciesFollowTheFilteredDistribution) {
  auto p = plain();
  p.min_p = 0.2f;
  Sampler s(p);
  const auto l = logits_for({0.5, 0.3, 0.15, 0.05});
  std::map<int, int> counts;
  const int n = 40000;
  for (int i = 0; i < n; i++) counts[s.sample(l)]++;
  EXPECT_EQ(counts.count(3), 0u);
  EXPECT_NEAR(counts[0] / double(n), 0.5 / 0.95, 0.01);
  EXPECT_NEAR(counts[1] / double(n), 0.3 / 0.95, 0.01);
  EXPECT_NEAR(counts[2] / double(n), 0.15 / 0.95, 0.01);
}

TEST(Sampler, LogprobsAreLogSoftmaxOfRawLogits) {
  const auto l = logits_for({0.1, 0.6, 0.3});
  auto top = ds4::sample::top_logprobs(l, 2);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].id, 1);
  EXPECT_NEAR(top[0].logprob, std::log(0.6), 1e-6);
  EXPECT_EQ(top[1].id, 2);
  EXPECT_NEAR(top[1].logprob, std::log(0.3), 1e-6);
  EXPECT_NEAR(ds4::sample::token_logprob(l, 0), std::log(0.1), 1e-6);
  EXPECT_EQ(ds4::sample::top_logprobs(l, 10).size(), 3u);
}
