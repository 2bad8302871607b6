// Quantizers: round-trip error on gaussian rows, importance weighting, exact properties
// of the activation quantizers, and argument checking.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "quant/quant.h"
#include "test_util.h"
#include "test_seed.h"

namespace ds4::quant {
namespace {

using test::gaussian;
using test::rel_rmse;

std::vector<float> round_trip(Type t, const std::vector<float>& x, const float* importance = nullptr) {
  const size_t bytes = *row_bytes(t, x.size());
  std::vector<uint8_t> q(bytes);
  quantize_row(t, x.data(), q.data(), static_cast<int64_t>(x.size()), importance);
  std::vector<float> y(x.size());
  dequantize_row(t, q.data(), y.data(), static_cast<int64_t>(x.size()));
  return y;
}

// Relative RMSE bounds on N(0,1) rows. Expected from the bit budgets (uniform quantizer
// noise is step/sqrt(12) per value): Q8_0 step = amax/127 with amax ~2.2 sigma over 32
// values -> ~0.5%; Q8_K the same over 256 values (amax ~2.9 sigma) -> ~0.7%; Q4_K 15 steps
// over a 32-value sub-block's range (~4 sigma) -> ~7%; Q2_K 3 steps per 16 values -> ~30%;
// IQ2_XXS 2.06 bits on a constrained 3-level grid -> ~34%. Measured here: 0.54%, 0.72%,
// 7.2%, 29.7%, 34.4%; the bounds leave ~15-25% headroom.
struct Bound {
  Type type;
  double max_rel_rmse;
};

TEST(Quantize, GaussianRoundTripError) {
  const auto x = gaussian(256 * 64, 1);
  const Bound bounds[] = {{Type::F16, 0.0005}, {Type::BF16, 0.004}, {Type::Q8_0, 0.0065},
                          {Type::Q8_K, 0.0085}, {Type::Q4_K, 0.09},  {Type::Q2_K, 0.34},
                          {Type::IQ2_XXS, 0.40}};
  for (const auto& b : bounds) {
    const double e = rel_rmse(x, round_trip(b.type, x));
    RecordProperty(std::string(type_name(b.type)), std::to_string(e));
    std::printf("  %-8s rel RMSE %.4f (bound %.3f)\n", std::string(type_name(b.type)).c_str(), e, b.max_rel_rmse);
    EXPECT_LT(e, b.max_rel_rmse) << type_name(b.type);
  }
  EXPECT_EQ(rel_rmse(x, round_trip(Type::F32, x)), 0.0);
}

TEST(Quantize, FinerFormatsAreMoreAccurate) {
  const auto x = gaussian(256 * 32, 2);
  const double q8 = rel_rmse(x, round_trip(Type::Q8_0, x));
  const double q4 = rel_rmse(x, round_trip(Type::Q4_K, x));
  const double q2 = rel_rmse(x, round_trip(Type::Q2_K, x));
  EXPECT_LT(q8 * 5, q4);
  EXPECT_LT(q4 * 2, q2);
}

TEST(Quantize, Q8_0ErrorWithinHalfStep) {
  const auto x = gaussian(32 * 50, 3, 3.0f);
  const auto y = round_trip(Type::Q8_0, x);
  for (size_t b = 0; b < x.size() / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * b + j]));
    const float d = amax / 127;
    for (int j = 0; j < 32; ++j) {
      // half a step, plus the f16 rounding of d (relative 2^-11) times up to 127 steps
      EXPECT_LE(std::fabs(x[32 * b + j] - y[32 * b + j]), d * 0.5f + amax * 0.0005f + 1e-7f);
    }
  }
}

// sum w (x - y)^2 over a row set, for importance w.
double weighted_error(const std::vector<float>& x, const std::vector<float>& y, const std::vector<float>& w) {
  double e = 0;
  for (size_t i = 0; i < x.size(); ++i) e += w[i] * (x[i] - y[i]) * (x[i] - y[i]);
  return e;
}

TEST(Quantize, ImportanceReducesWeightedError) {
  const size_t n = 256 * 32;
  const auto x = gaussian(n, 4);
  // Strongly skewed importance: a few columns matter 100x more, like a real imatrix.
  std::vector<float> imp(n);
  std::mt19937 rng(ds4::testdata::test_seed(5));
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (auto& w : imp) w = u(rng) < 0.1f ? 100.0f : 1.0f;
  for (Type t : {Type::Q4_K, Type::Q2_K, Type::IQ2_XXS}) {
    const double plain = weighted_error(x, round_trip(t, x), imp);
    const double weighted = weighted_error(x, round_trip(t, x, imp.data()), imp);
    std::printf("  %-8s weighted error: plain %.2f, with importance %.2f\n",
                std::string(type_name(t)).c_str(), plain, weighted);
    EXPECT_LT(weighted, plain * 0.9) << type_name(t);
  }
}

TEST(Quantize, UniformImportanceStillAccurate) {
  const auto x = gaussian(256 * 16, 6);
  const std::vector<float> ones(x.size(), 1.0f);
  EXPECT_LT(rel_rmse(x, round_trip(Type::Q4_K, x, ones.data())), 0.09);
  EXPECT_LT(rel_rmse(x, round_trip(Type::Q2_K, x, ones.data())), 0.34);
  EXPECT_LT(rel_rmse(x, round_trip(Type::IQ2_XXS, x, ones.data())), 0.40);
}

TEST(Quantize, ZeroRowsStayZero) {
  const std::vector<float> zeros(512, 0.0f);
  for (Type t : {Type::Q8_0, Type::Q8_K, Type::Q4_K, Type::Q2_K, Type::IQ2_XXS}) {
    for (const auto& y : {round_trip(t, zeros), round_trip(t, zeros, zeros.data())}) {
      for (float v : y) ASSERT_EQ(v, 0.0f) << type_name(t);
    }
  }
}

TEST(Quantize, ScaleInvariance) {
  // Scaling a row by a power of two scales every decoded value by the same factor (the
  // searches only compare ratios, and f16 scales stay in range).
  const auto x = gaussian(512, 7);
  std::vector<float> x4(x.size());
  for (size_t i = 0; i < x.size(); ++i) x4[i] = x[i] * 4.0f;
  for (Type t : {Type::Q8_0, Type::Q4_K, Type::Q2_K, Type::IQ2_XXS}) {
    const auto y = round_trip(t, x), y4 = round_trip(t, x4);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i] * 4.0f, y4[i]) << type_name(t) << " " << i;
  }
}

TEST(Quantize, SignsAndParityIQ2) {
  // With all values of one sign pattern representable (even negatives per 8), the decoded
  // signs must match the input's wherever the value is not tiny.
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i) x[i] = ((i % 8 == 1 || i % 8 == 4) ? -1.0f : 1.0f) * (1.0f + (i % 3));
  const auto y = round_trip(Type::IQ2_XXS, x);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(std::signbit(x[i]), std::signbit(y[i])) << i;
}

TEST(ActivationQ8_0, ScaleAndTiesToEven) {
  float x[32] = {};
  x[0] = 127.0f;  // amax 127 -> d = 1 exactly
  x[1] = 2.5f;
  x[2] = 3.5f;
  x[3] = -2.5f;
  x[4] = -0.5f;
  x[5] = 0.49f;
  x[6] = -127.0f;
  block_q8_0_act q;
  quantize_act_q8_0(x, &q, 32);
  EXPECT_EQ(q.d, 1.0f);
  EXPECT_EQ(q.qs[0], 127);
  EXPECT_EQ(q.qs[1], 2);
  EXPECT_EQ(q.qs[2], 4);
  EXPECT_EQ(q.qs[3], -2);
  EXPECT_EQ(q.qs[4], 0);
  EXPECT_EQ(q.qs[5], 0);
  EXPECT_EQ(q.qs[6], -127);

  // d is amax/127 in f32 (not rounded to f16).
  const auto g = gaussian(64, 8);
  block_q8_0_act qg[2];
  quantize_act_q8_0(g.data(), qg, 64);
  for (int b = 0; b < 2; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(g[32 * b + j]));
    EXPECT_EQ(qg[b].d, amax / 127.0f);
    for (int j = 0; j < 32; ++j) {
      EXPECT_EQ(qg[b].qs[j], static_cast<int>(std::nearbyint(g[32 * b + j] * (1.0f / qg[b].d))));
      EXPECT_LE(std::abs(qg[b].qs[j]), 127);
    }
  }
  const float zeros[32] = {};
  quantize_act_q8_0(zeros, &q, 32);
  EXPECT_EQ(q.d, 0.0f);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(q.qs[j], 0);
}

TEST(ActivationQ8_K, SignedMaxAndBsums) {
  std::vector<float> x(256, 0.0f);
  x[10] = -254.0f;  // largest magnitude is negative: iscale = -127/-254 = 0.5, d = 2
  x[11] = 5.0f;     // 2.5 -> 2 (ties to even)
  x[12] = 7.0f;     // 3.5 -> 4
  x[13] = 200.0f;   // 100
  x[40] = -3.0f;    // -1.5 -> -2
  block_q8_K q;
  quantize_act_q8_K(x.data(), &q, 256);
  EXPECT_EQ(q.d, 2.0f);
  EXPECT_EQ(q.qs[10], -127);
  EXPECT_EQ(q.qs[11], 2);
  EXPECT_EQ(q.qs[12], 4);
  EXPECT_EQ(q.qs[13], 100);
  EXPECT_EQ(q.qs[40], -2);
  EXPECT_EQ(q.bsums[0], -127 + 2 + 4 + 100);
  EXPECT_EQ(q.bsums[2], -2);
  // Positive max: iscale = -127/max, so d < 0 and the max maps to -127.
  x.assign(256, 1.0f);
  x[0] = 127.0f;
  quantize_act_q8_K(x.data(), &q, 256);
  EXPECT_EQ(q.d, -1.0f);
  EXPECT_EQ(q.qs[0], -127);
  EXPECT_EQ(q.qs[1], -1);
  EXPECT_EQ(q.bsums[1], -16);
  // Random rows: bsums equal the sums of each 16, values within half a step.
  const auto g = gaussian(1024, 9, 5.0f);
  std::vector<block_q8_K> qg(4);
  quantize_act_q8_K(g.data(), qg.data(), 1024);
  for (int b = 0; b < 4; ++b) {
    for (int j = 0; j < 16; ++j) {
      int s = 0;
      for (int i = 0; i < 16; ++i) s += qg[b].qs[16 * j + i];
      EXPECT_EQ(qg[b].bsums[j], s);
    }
    for (int i = 0; i < 256; ++i) {
      EXPECT_LE(std::fabs(g[256 * b + i] - qg[b].d * qg[b].qs[i]), std::fabs(qg[b].d) * 0.5001f);
    }
  }
}

TEST(Activations, DispatchAndSizes) {
  EXPECT_EQ(activation_type(Type::F16), ActType::F32);
  EXPECT_EQ(activation_type(Type::BF16), ActType::F32);
  EXPECT_EQ(activation_type(Type::F32), ActType::F32);
  EXPECT_EQ(activation_type(Type::Q8_0), ActType::Q8_0);
  EXPECT_EQ(activation_type(Type::Q2_K), ActType::Q8_K);
  EXPECT_EQ(activation_type(Type::Q4_K), ActType::Q8_K);
  EXPECT_EQ(activation_type(Type::IQ2_XXS), ActType::Q8_K);
  EXPECT_THROW(activation_type(Type::Q6_K), std::invalid_argument);
  EXPECT_EQ(activation_bytes(ActType::F32, 10), 40u);
  EXPECT_EQ(activation_bytes(ActType::Q8_0, 4096), 128u * 36);
  EXPECT_EQ(activation_bytes(ActType::Q8_K, 4096), 16u * 292);
  const auto x = gaussian(256, 10);
  std::vector<uint8_t> a(activation_bytes(ActType::Q8_K, 256)), b(a.size());
  quantize_activations(Type::IQ2_XXS, x.data(), a.data(), 256);
  quantize_act_q8_K(x.data(), reinterpret_cast<block_q8_K*>(b.data()), 256);
  EXPECT_EQ(a, b);
  std::vector<float> f(256);
  quantize_activations(Type::F16, x.data(), f.data(), 256);
  EXPECT_EQ(f, x);
}

TEST(Quantize, RejectsBadArguments) {
  std::vector<float> x(512, 1.0f);
  std::vector<uint8_t> out(4096);
  EXPECT_THROW(quantize_row(Type::Q8_0, x.data(), out.data(), 31), std::invalid_argument);
  EXPECT_THROW(quantize_row(Type::Q4_K, x.data(), out.data(), 300), std::invalid_argument);
  EXPECT_THROW(quantize_row(Type::Q6_K, x.data(), out.data(), 256), std::invalid_argument);
  EXPECT_THROW(quantize_row(static_cast<Type>(99), x.data(), out.data(), 256), std::invalid_argument);
  EXPECT_THROW(quantize_act_q8_0(x.data(), reinterpret_cast<block_q8_0_act*>(out.data()), 40),
               std::invalid_argument);
  EXPECT_THROW(quantize_act_q8_K(x.data(), reinterpret_cast<block_q8_K*>(out.data()), 128),
               std::invalid_argument);
}

}  // namespace
}  // namespace ds4::quant
