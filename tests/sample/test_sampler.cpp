#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "sample/sampler.h"
#include "test_seed.h"

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

// The one seeded generator against published vectors: splitmix64's outputs from seed 1234567
// and xoshiro256**'s from the state {1, 2, 3, 4}.
TEST(Rng, MatchesPublishedVectors) {
  uint64_t x = 1234567;
  const uint64_t splitmix[] = {6457827717110365317ull, 3203168211198807973ull, 9817491932198370423ull,
                               4593380528125082431ull, 16408922859458223821ull};
  for (uint64_t want : splitmix) EXPECT_EQ(ds4::random::splitmix64(x), want);
  auto rng = ds4::random::Rng::with_state(1, 2, 3, 4);
  const uint64_t xoshiro[] = {11520ull, 0ull, 1509978240ull, 1215971899390074240ull,
                              1216172134540287360ull, 607988272756665600ull};
  for (uint64_t want : xoshiro) EXPECT_EQ(rng.next(), want);
}

// Seeding fills the state with four splitmix64 outputs of the seed, so Rng(s) continues the
// sequence of with_state on those four values.
TEST(Rng, SeedingGoesThroughSplitmix) {
  uint64_t x = 42;
  const uint64_t a = ds4::random::splitmix64(x), b = ds4::random::splitmix64(x),
                 c = ds4::random::splitmix64(x), d = ds4::random::splitmix64(x);
  ds4::random::Rng seeded(42);
  auto direct = ds4::random::Rng::with_state(a, b, c, d);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(seeded.next(), direct.next());
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

// Ids others must not guess: the prefix, then lower-case hex digits, never repeated.
TEST(RandomIds, PrefixThenHexDigits) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = ds4::random::unguessable_hex("call_", 32);
    ASSERT_EQ(id.size(), 37u);
    EXPECT_EQ(id.substr(0, 5), "call_");
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef", 5), std::string::npos) << id;
    EXPECT_TRUE(seen.insert(id).second) << id;
  }
  EXPECT_EQ(ds4::random::unguessable_hex("x", 12).size(), 13u);
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

// The sampler selects instead of sorting; its draw must be the token a plain walk over the
// fully sorted, filtered distribution picks with the same uniform number. The reference here
// is written independently: softmax in double, full sort, min-p, top-p, walk.
TEST(Sampler, SelectionDrawsWhatASortedWalkDraws) {
  std::mt19937 gen(ds4::testdata::test_seed(11));
  std::normal_distribution<float> normal(0.0f, 2.0f);
  // The kept tokens in order with their weights.
  auto reference = [](const std::vector<float>& l, const Params& p) {
    std::vector<int> ids;
    for (size_t i = 0; i < l.size(); i++)
      if (std::isfinite(l[i])) ids.push_back(static_cast<int>(i));
    std::sort(ids.begin(), ids.end(), [&](int a, int b) { return l[a] != l[b] ? l[a] > l[b] : a < b; });
    if (p.top_k > 0 && ids.size() > static_cast<size_t>(p.top_k)) ids.resize(static_cast<size_t>(p.top_k));
    std::vector<double> w;
    double sum = 0;
    for (int id : ids) {
      w.push_back(std::exp((static_cast<double>(l[id]) - l[ids[0]]) / p.temperature));
      sum += w.back();
    }
    size_t keep = 0;
    double mass = 0;
    for (size_t i = 0; i < ids.size(); i++) {
      if (i > 0 && w[i] / sum < w[0] / sum * p.min_p) break;
      mass += w[i] / sum;
      keep = i + 1;
      if (p.top_p < 1.0f && mass >= p.top_p) break;
    }
    ids.resize(keep);
    w.resize(keep);
    return std::make_pair(ids, w);
  };
  auto walk = [](const std::pair<std::vector<int>, std::vector<double>>& dist, double u) {
    const auto& [ids, w] = dist;
    double kept = 0;
    for (double x : w) kept += x;
    double r = u * kept;
    for (size_t i = 0; i < ids.size(); i++) {
      r -= w[i];
      if (r < 0) return ids[i];
    }
    return ids.back();
  };
  for (int round = 0; round < 24; round++) {
    std::vector<float> l(5000 + 997 * round);
    for (auto& x : l) x = normal(gen);
    for (size_t i = 0; i < l.size(); i += 7) l[i] = -std::numeric_limits<float>::infinity();
    for (size_t i = 3; i < l.size(); i += 101) l[i] = 1.5f;  // ties, broken by id
    Params p = plain();
    p.seed = 100 + static_cast<uint64_t>(round);
    p.temperature = round % 3 == 0 ? 0.7f : 1.0f;
    p.min_p = round % 2 ? 0.05f : 0.0f;
    p.top_p = round % 4 < 2 ? 1.0f : 0.9f;
    p.top_k = round % 5 == 4 ? 300 : 0;
    Sampler s(p);
    ds4::sample::Rng rng(p.seed);
    const auto dist = reference(l, p);
    for (int draw = 0; draw < 20; draw++) {
      const int got = s.sample(l);
      EXPECT_EQ(got, walk(dist, rng.uniform())) << "round " << round << " draw " << draw;
    }
  }
}
