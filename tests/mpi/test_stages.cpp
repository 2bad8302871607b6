// The layer split of the MPI pipeline (docs/mpi.md): by bytes against a brute-force search
// over every split, and the --layer-split counts and their errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>
#include <stdexcept>

#include "model/stages.h"

namespace ds4::model {
namespace {

uint64_t largest_stage(const StageBytes& b, const std::vector<int>& bounds) {
  const int S = static_cast<int>(bounds.size()) - 1;
  uint64_t worst = 0;
  for (int s = 0; s < S; ++s) {
    uint64_t c = 0;
    for (int i = bounds[s]; i < bounds[s + 1]; ++i) c += b.layers[i];
    if (s == 0) c += b.embed;
    if (s == S - 1) c += b.head;
    worst = std::max(worst, c);
  }
  return worst;
}

// Every split into S non-empty stages, smallest largest stage.
uint64_t brute_force(const StageBytes& b, int S) {
  const int n = static_cast<int>(b.layers.size());
  uint64_t best = ~uint64_t{0};
  std::vector<int> bounds(S + 1);
  bounds[0] = 0;
  bounds[S] = n;
  std::function<void(int)> rec = [&](int s) {
    if (s == S) {
      best = std::min(best, largest_stage(b, bounds));
      return;
    }
    for (int i = bounds[s - 1] + 1; i <= n - (S - s); ++i) {
      bounds[s] = i;
      rec(s + 1);
    }
  };
  if (S == 1) return largest_stage(b, bounds);
  rec(1);
  return best;
}

TEST(Stages, SplitByBytesIsOptimal) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    StageBytes b;
    const int n = 1 + static_cast<int>(rng() % 9);
    for (int i = 0; i < n; ++i) b.layers.push_back(1 + rng() % 1000);
    b.embed = rng() % 3000;
    b.head = rng() % 3000;
    for (int S = 1; S <= n && S <= 4; ++S) {
      const std::vector<int> bounds = split_by_bytes(b, S);
      ASSERT_EQ(static_cast<int>(bounds.size()), S + 1);
      EXPECT_EQ(bounds.front(), 0);
      EXPECT_EQ(bounds.back(), n);
      for (int s = 0; s < S; ++s) EXPECT_LT(bounds[s], bounds[s + 1]) << "every stage holds a layer";
      EXPECT_EQ(largest_stage(b, bounds), brute_force(b, S)) << "trial " << trial << " S " << S;
    }
  }
}

TEST(Stages, FlashLikeSlice) {
  // 4 equal-ish layers, a small embedding, a large head: the head's stage gets fewer layers.
  StageBytes b{{187, 187, 225, 195}, 60, 563};
  EXPECT_EQ(split_by_bytes(b, 2), (std::vector<int>{0, 3, 4}));
  EXPECT_THROW(split_by_bytes(b, 5), std::invalid_argument);
}

TEST(Stages, CountsAndErrors) {
  EXPECT_EQ(split_from_counts({2, 2}, 4, 2), (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(split_from_counts({1, 2, 3}, 6, 3), (std::vector<int>{0, 1, 3, 6}));
  EXPECT_THROW(split_from_counts({2, 2}, 4, 3), std::invalid_argument);  // count per rank
  EXPECT_THROW(split_from_counts({2, 3}, 4, 2), std::invalid_argument);  // sum
  EXPECT_THROW(split_from_counts({4, 0}, 4, 2), std::invalid_argument);  // empty rank
  EXPECT_EQ(parse_layer_split("22,21"), (std::vector<int>{22, 21}));
  EXPECT_EQ(parse_layer_split("7"), (std::vector<int>{7}));
  for (const char* bad : {"", ",", "2,", ",2", "2,,3", "-1,2", "a", "2 3", "99999999"})
    EXPECT_THROW(parse_layer_split(bad), std::invalid_argument) << bad;
}

}  // namespace
}  // namespace ds4::model
