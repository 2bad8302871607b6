// Numerical primitives against independent brute-force definitions (docs/forward-pass.md).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "model/numerics.h"
#include "test_seed.h"

using namespace ds4::model;

namespace {

// Every non-negative finite e4m3fn value by code (exponent 0 -> subnormal mant*2^-9).
std::vector<std::pair<float, int>> e4m3_grid() {
  std::vector<std::pair<float, int>> g;
  for (int code = 0; code < 0x7f; ++code) {  // 0x7f is NaN
    int e = code >> 3, m = code & 7;
    float v = e == 0 ? std::ldexp(static_cast<float>(m), -9) : std::ldexp(1.f + m / 8.f, e - 7);
    g.emplace_back(v, code);
  }
  return g;
}

std::vector<std::pair<float, int>> e2m1_grid() {
  const float vals[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  std::vector<std::pair<float, int>> g;
  for (int i = 0; i < 8; ++i) g.emplace_back(vals[i], i);
  return g;
}

// Nearest grid value, ties to the even code; computed in double.
float brute_round(float v, const std::vector<std::pair<float, int>>& grid) {
  double a = std::fabs(static_cast<double>(v));
  double best = -1, bestd = INFINITY;
  int bestc = 0;
  for (auto [g, code] : grid) {
    double d = std::fabs(a - g);
    if (d < bestd || (d == bestd && (code % 2 == 0) && (bestc % 2 != 0))) {
      best = g;
      bestd = d;
      bestc = code;
    }
  }
  return static_cast<float>(std::copysign(best, static_cast<double>(v)));
}

}  // namespace

TEST(Numerics, Pow2CeilFromBits) {
  EXPECT_EQ(pow2_ceil_bits(1.0f), 1.0f);
  EXPECT_EQ(pow2_ceil_bits(0.75f), 1.0f);
  EXPECT_EQ(pow2_ceil_bits(3.0f), 4.0f);
  EXPECT_EQ(pow2_ceil_bits(std::ldexp(1.f, -20)), std::ldexp(1.f, -20));
  // One ulp above a power of two must go up (ceilf(log2f(y)) misses this for |log2 y| >~ 4).
  for (int e = -30; e <= 10; ++e) {
    float p = std::ldexp(1.f, e);
    float above = std::nextafter(p, 1e30f);
    EXPECT_EQ(pow2_ceil_bits(above), 2 * p) << "e=" << e;
    EXPECT_EQ(pow2_ceil_bits(p), p);
  }
}

TEST(Numerics, E4M3RoundingMatchesBruteForce) {
  auto grid = e4m3_grid();
  // Every value and every midpoint (ties) between neighbours, both signs.
  for (size_t i = 0; i < grid.size(); ++i) {
    float v = grid[i].first;
    EXPECT_EQ(round_e4m3(v), v);
    EXPECT_EQ(round_e4m3(-v), -v);
    if (i + 1 < grid.size()) {
      float mid = (grid[i].first + grid[i + 1].first) / 2;  // exact in f32
      EXPECT_EQ(round_e4m3(mid), brute_round(mid, grid)) << mid;
      EXPECT_EQ(round_e4m3(-mid), brute_round(-mid, grid)) << -mid;
    }
  }
  EXPECT_EQ(round_e4m3(1.0625f), 1.0f);   // tie -> even code 0x38
  EXPECT_EQ(round_e4m3(1.1875f), 1.25f);  // tie -> even code 0x3a
  std::mt19937 rng(ds4::testdata::test_seed(1));
  std::uniform_real_distribution<float> u(-448.f, 448.f);
  for (int i = 0; i < 20000; ++i) {
    float v = u(rng) * (i % 3 == 0 ? 1e-3f : 1.f);
    ASSERT_EQ(round_e4m3(v), brute_round(v, grid)) << v;
  }
}

TEST(Numerics, E2M1RoundingMatchesBruteForce) {
  auto grid = e2m1_grid();
  for (float v = -6.f; v <= 6.f; v += 0.125f) EXPECT_EQ(round_e2m1(v), brute_round(v, grid)) << v;
  EXPECT_EQ(round_e2m1(0.25f), 0.f);
  EXPECT_EQ(round_e2m1(0.75f), 1.f);
  EXPECT_EQ(round_e2m1(2.5f), 2.f);
  EXPECT_EQ(round_e2m1(5.f), 4.f);
  std::mt19937 rng(ds4::testdata::test_seed(2));
  std::uniform_real_distribution<float> u(-6.f, 6.f);
  for (int i = 0; i < 20000; ++i) {
    float v = u(rng);
    ASSERT_EQ(round_e2m1(v), brute_round(v, grid)) << v;
  }
}

TEST(Numerics, Fp8Sim64Blocks) {
  std::mt19937 rng(ds4::testdata::test_seed(3));
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(128);
  for (auto& v : x) v = nd(rng);
  x[5] = 7.3f;  // block 0 amax
  std::vector<float> y = x;
  fp8_sim64(y.data(), 128);
  auto grid = e4m3_grid();
  for (int b = 0; b < 2; ++b) {
    double amax = 0;
    for (int i = 0; i < 64; ++i) amax = std::max(amax, static_cast<double>(std::fabs(x[b * 64 + i])));
    // Independent scale: smallest power of two >= amax/448 (amax/448 is not a power of two here).
    double sc = std::exp2(std::ceil(std::log2(static_cast<float>(amax) * (1.0f / 448.0f))));
    for (int i = 0; i < 64; ++i) {
      float want = brute_round(static_cast<float>(x[b * 64 + i] / sc), grid) * static_cast<float>(sc);
      ASSERT_EQ(y[b * 64 + i], want) << b << " " << i;
    }
  }
  // Tiny blocks use the amax floor 1e-4.
  std::vector<float> z(64, 0.f);
  z[0] = 1e-7f;
  fp8_sim64(z.data(), 64);
  const float sc = pow2_ceil_bits(1e-4f * (1.0f / 448.0f));
  EXPECT_EQ(z[0], brute_round(1e-7f / sc, grid) * sc);
}

TEST(Numerics, Fp4Sim32Blocks) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = (i - 16) * 0.37f;
  std::vector<float> y = x;
  fp4_sim32(y.data(), 32);
  const float amax = 16 * 0.37f;
  const float sc = std::exp2(std::ceil(std::log2(amax / 6.0)));  // 1 here: 5.92/6 < 1
  auto grid = e2m1_grid();
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], brute_round(x[i] / sc, grid) * sc) << i;
}

TEST(Numerics, HadamardMatchesExplicitMatrix) {
  for (int n : {32, 128}) {
    std::mt19937 rng(ds4::testdata::test_seed(n));
    std::normal_distribution<float> nd;
    std::vector<float> x(n);
    for (auto& v : x) v = nd(rng);
    std::vector<float> y = x;
    hadamard_scaled(y.data(), n);
    for (int i = 0; i < n; ++i) {
      double acc = 0;
      for (int j = 0; j < n; ++j) acc += ((std::popcount(static_cast<unsigned>(i & j)) & 1) ? -1.0 : 1.0) * x[j];
      EXPECT_NEAR(y[i], acc / std::sqrt(n), 1e-5) << n << " " << i;
    }
  }
}

TEST(Numerics, YarnRampEnds) {
  // YaRN ramp ends worked out by hand for the oracle configs and Flash.
  Rope a = Rope::make(16, 160000.f, true, 65536, 16.f, 32.f, 1.f);
  EXPECT_EQ(a.yarn_lo, 3);
  EXPECT_EQ(a.yarn_hi, 7);
  Rope b = Rope::make(64, 40000.f, true, 4096, 8.f, 32.f, 1.f);
  EXPECT_EQ(b.yarn_lo, 9);
  EXPECT_EQ(b.yarn_hi, 20);
  Rope f = Rope::make(64, 160000.f, true, 65536, 16.f, 32.f, 1.f);
  EXPECT_EQ(f.yarn_lo, 15);
  EXPECT_EQ(f.yarn_hi, 25);
  // Below lo unchanged, from hi on divided by the factor, linear in between.
  for (int k = 0; k < 32; ++k) {
    double base = std::pow(160000.0, -2.0 * k / 64);
    double g = 1 - std::clamp((k - 15) / 10.0, 0.0, 1.0);
    EXPECT_NEAR(f.freq[k], base * g + base / 16 * (1 - g), 1e-6 * base) << k;
  }
  // Without YaRN (dense layers) the plain frequencies.
  Rope d = Rope::make(64, 10000.f, false, 0, 1.f, 0, 0);
  for (int k = 0; k < 32; ++k) EXPECT_NEAR(d.freq[k], std::pow(10000.0, -2.0 * k / 64), 1e-7);
}

TEST(Numerics, RopeRotatesAdjacentPairsAndInverts) {
  Rope r = Rope::make(8, 10000.f, false, 0, 1.f, 0, 0);
  std::vector<float> x = {1, 0, 0, 1, 2, 3, -1, 0.5f};
  std::vector<float> y = x;
  r.apply(y.data(), 7);
  for (int k = 0; k < 4; ++k) {
    double th = 7.0 * std::pow(10000.0, -2.0 * k / 8);
    double x0 = x[2 * k], x1 = x[2 * k + 1];
    EXPECT_NEAR(y[2 * k], x0 * std::cos(th) - x1 * std::sin(th), 1e-5);
    EXPECT_NEAR(y[2 * k + 1], x0 * std::sin(th) + x1 * std::cos(th), 1e-5);
  }
  r.apply(y.data(), 7, true);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y[i], x[i], 1e-5);
}

TEST(Numerics, SinkhornIsDoublyStochasticAndFollowsSpec) {
  const int hc = 4, mix = (2 + hc) * hc;
  std::mt19937 rng(ds4::testdata::test_seed(5));
  std::normal_distribution<float> nd;
  std::vector<float> m(mix), base(mix);
  for (auto& v : m) v = nd(rng);
  for (auto& v : base) v = nd(rng);
  float scale[3] = {0.7f, 1.2f, 0.9f};
  std::vector<float> pre(hc), post(hc), comb(hc * hc);
  hc_split_sinkhorn(m.data(), scale, base.data(), hc, 20, 1e-6f, pre.data(), post.data(), comb.data());
  for (int s = 0; s < hc; ++s) {
    EXPECT_NEAR(pre[s], 1 / (1 + std::exp(-(m[s] * 0.7 + base[s]))) + 1e-6, 1e-6);
    EXPECT_NEAR(post[s], 2 / (1 + std::exp(-(m[hc + s] * 1.2 + base[hc + s]))), 1e-6);
  }
  // Reference in double, straight from step 3 of the hyper-connections in docs/forward-pass.md.
  double C[4][4];
  for (int i = 0; i < hc; ++i) {
    double mx = -1e300, sum = 0;
    for (int j = 0; j < hc; ++j) mx = std::max(mx, (double)m[8 + 4 * i + j] * 0.9 + base[8 + 4 * i + j]);
    for (int j = 0; j < hc; ++j) sum += C[i][j] = std::exp(m[8 + 4 * i + j] * 0.9 + base[8 + 4 * i + j] - mx);
    for (int j = 0; j < hc; ++j) C[i][j] = C[i][j] / sum + 1e-6;
  }
  auto cols = [&] {
    for (int j = 0; j < hc; ++j) {
      double s = 0;
      for (int i = 0; i < hc; ++i) s += C[i][j];
      for (int i = 0; i < hc; ++i) C[i][j] /= s + 1e-6;
    }
  };
  cols();
  for (int it = 0; it < 19; ++it) {
    for (int i = 0; i < hc; ++i) {
      double s = 0;
      for (int j = 0; j < hc; ++j) s += C[i][j];
      for (int j = 0; j < hc; ++j) C[i][j] /= s + 1e-6;
    }
    cols();
  }
  for (int i = 0; i < hc; ++i)
    for (int j = 0; j < hc; ++j) EXPECT_NEAR(comb[i * hc + j], C[i][j], 1e-6);
  for (int j = 0; j < hc; ++j) {
    double s = 0;
    for (int i = 0; i < hc; ++i) s += comb[i * hc + j];
    EXPECT_NEAR(s, 1.0, 1e-4);
  }
}

TEST(Numerics, RmsNormAndSoftplus) {
  std::vector<float> x = {1, -2, 3, -4}, w = {1, 2, 3, 4}, y(4);
  rms_norm(x.data(), w.data(), y.data(), 4, 1e-6f);
  const double f = 1 / std::sqrt((1 + 4 + 9 + 16) / 4.0 + 1e-6);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i], x[i] * f * w[i], 1e-6);
  EXPECT_NEAR(softplus(0.f), std::log(2.0), 1e-7);
  EXPECT_EQ(softplus(30.f), 30.f);
  EXPECT_NEAR(softplus(-30.f), std::exp(-30.0), 1e-20);
}
