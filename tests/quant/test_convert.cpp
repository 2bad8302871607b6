// Scalar number formats against hand-computed values, independent formulas, and (for f16)
// the CPU's own F16C conversion instructions.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "quant/quant.h"
#include "test_util.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include "test_seed.h"

namespace ds4::quant {
namespace {

using test::cpu_has_f16c;

float bits_f32(uint32_t u) { return std::bit_cast<float>(u); }
uint32_t f32_bits(float f) { return std::bit_cast<uint32_t>(f); }

TEST(F16, HandValues) {
  EXPECT_EQ(f16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xC000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_EQ(f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));        // smallest normal
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));        // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x03FF), std::ldexp(1023.0f, -24));     // largest subnormal
  EXPECT_EQ(f16_to_f32(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(f32_bits(f16_to_f32(0x8000)), 0x80000000u);         // -0 keeps its sign
  EXPECT_EQ(f16_to_f32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_f32(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7E00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7C01)));

  EXPECT_EQ(f32_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(65519.99f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7C00);  // tie with an odd mantissa rounds up to inf
  EXPECT_EQ(f32_to_f16(1e10f), 0x7C00);
  EXPECT_EQ(f32_to_f16(-1e10f), 0xFC00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  // Ties to even in the normal range: 1 + 2^-11 lies halfway between 0x3C00 and 0x3C01.
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(f32_to_f16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)), 0x3C01);
  // Carry out of the mantissa: 2 - 2^-12 rounds to 2.0.
  EXPECT_EQ(f32_to_f16(2.0f - std::ldexp(1.0f, -12)), 0x4000);
  // Subnormals and their ties.
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);          // tie -> even (0)
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);          // 1.5 ulp tie -> 2
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0001f, -25)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -26)), 0x0400);  // rounds up to normal
  EXPECT_EQ(f32_to_f16(1e-30f), 0x0000);
  EXPECT_EQ(f32_to_f16(-1e-30f), 0x8000);
  const uint16_t nan = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
  EXPECT_EQ(f32_to_f16(bits_f32(0x7F800001u)) & 0x7E00, 0x7E00);  // signalling NaN -> quiet NaN
}

TEST(F16, RoundTripAllHalves) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(f32_to_f16(f), h) << std::hex << h;
  }
}

#if defined(__x86_64__)
__attribute__((target("f16c"))) float hw_f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
__attribute__((target("f16c"))) uint16_t hw_f32_to_f16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

TEST(F16, MatchesF16CHardware) {
  if (!cpu_has_f16c()) GTEST_SKIP() << "CPU lacks F16C";
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = f16_to_f32(static_cast<uint16_t>(h));
    const float b = hw_f16_to_f32(static_cast<uint16_t>(h));
    ASSERT_EQ(f32_bits(a), f32_bits(b)) << std::hex << h;
  }
  // Every f32 that is exactly halfway between two halves, plus random bit patterns.
  std::mt19937 rng(ds4::testdata::test_seed(7));
  std::vector<uint32_t> samples;
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    const uint32_t lo = f32_bits(f16_to_f32(static_cast<uint16_t>(h)));
    const uint32_t hi = f32_bits(f16_to_f32(static_cast<uint16_t>(h + 1)));
    const float mid = (bits_f32(lo) + bits_f32(hi)) / 2;  // exact in f32
    samples.push_back(f32_bits(mid));
    samples.push_back(f32_bits(mid) + 1);
    samples.push_back(f32_bits(mid) - 1);
  }
  for (int i = 0; i < 300000; ++i) samples.push_back(rng());
  for (uint32_t u : samples) {
    for (uint32_t s : {0u, 0x80000000u}) {
      const float f = bits_f32(u ^ s);
      ASSERT_EQ(f32_to_f16(f), hw_f32_to_f16(f)) << std::hex << (u ^ s);
    }
  }
}
#endif

TEST(BF16, RoundingAndSpecials) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(bf16_to_f32(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xC0A0), -5.0f);
  EXPECT_EQ(f32_to_bf16(bits_f32(0x3F808000u)), 0x3F80);  // tie, even stays
  EXPECT_EQ(f32_to_bf16(bits_f32(0x3F818000u)), 0x3F82);  // tie, odd rounds up
  EXPECT_EQ(f32_to_bf16(bits_f32(0x3F808001u)), 0x3F81);  // above the tie
  EXPECT_EQ(f32_to_bf16(bits_f32(0x3F807FFFu)), 0x3F80);
  EXPECT_EQ(f32_to_bf16(bits_f32(0x7F7FFFFFu)), 0x7F80);  // max float rounds to inf
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  // NaN whose payload lives only in the low 16 bits must not become inf.
  const uint16_t nan = f32_to_bf16(bits_f32(0x7F800001u));
  EXPECT_TRUE(std::isnan(bf16_to_f32(nan)));
  // Subnormals round like any other bits.
  EXPECT_EQ(f32_to_bf16(bits_f32(0x00008000u)), 0x0000);
  EXPECT_EQ(f32_to_bf16(bits_f32(0x00018000u)), 0x0002);
  EXPECT_EQ(f32_bits(bf16_to_f32(0x0001)), 0x00010000u);
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    EXPECT_EQ(f32_bits(f), h << 16);
    if (!std::isnan(f)) {
      EXPECT_EQ(f32_to_bf16(f), h);
    }
  }
}

// Independent e4m3fn formula: sign, 4 exponent bits (bias 7), 3 mantissa bits.
double e4m3_formula(int code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  const double mag = e == 0 ? m / 8.0 * std::pow(2.0, -6) : (1 + m / 8.0) * std::pow(2.0, e - 7);
  return s ? -mag : mag;
}

TEST(FP8, AllCodesDecode) {
  for (int c = 0; c < 256; ++c) {
    const float v = fp8_e4m3_to_f32(static_cast<uint8_t>(c));
    if ((c & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(v)) << c;
      continue;
    }
    EXPECT_EQ(static_cast<double>(v), e4m3_formula(c)) << c;
  }
  EXPECT_EQ(fp8_e4m3_to_f32(0x7E), 448.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0xB8), -1.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8_e4m3_to_f32(0x08), std::ldexp(1.0f, -6));
  EXPECT_EQ(f32_bits(fp8_e4m3_to_f32(0x80)), 0x80000000u);
}

TEST(FP8, EncodeNearestTiesToEven) {
  // Exact values map back to their code.
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;
    EXPECT_EQ(f32_to_fp8_e4m3(fp8_e4m3_to_f32(static_cast<uint8_t>(c))), c) << c;
  }
  // Midpoints between neighbouring codes go to the even code; a hair off goes to the
  // nearer one.
  for (int c = 0; c < 0x7E; ++c) {
    const float lo = fp8_e4m3_to_f32(static_cast<uint8_t>(c));
    const float hi = fp8_e4m3_to_f32(static_cast<uint8_t>(c + 1));
    const float mid = (lo + hi) / 2;
    const int even = (c % 2 == 0) ? c : c + 1;
    EXPECT_EQ(f32_to_fp8_e4m3(mid), even) << c;
    EXPECT_EQ(f32_to_fp8_e4m3(-mid), 0x80 | even) << c;
    EXPECT_EQ(f32_to_fp8_e4m3(std::nextafter(mid, 0.0f)), c) << c;
    EXPECT_EQ(f32_to_fp8_e4m3(std::nextafter(mid, 1000.0f)), c + 1) << c;
  }
  // Saturation, never the NaN code.
  EXPECT_EQ(f32_to_fp8_e4m3(460.0f), 0x7E);
  EXPECT_EQ(f32_to_fp8_e4m3(464.0f), 0x7E);
  EXPECT_EQ(f32_to_fp8_e4m3(1e6f), 0x7E);
  EXPECT_EQ(f32_to_fp8_e4m3(-1e6f), 0xFE);
  EXPECT_EQ(f32_to_fp8_e4m3(std::numeric_limits<float>::infinity()), 0x7E);
  EXPECT_EQ(f32_to_fp8_e4m3(1e-10f), 0x00);
  EXPECT_EQ(f32_to_fp8_e4m3(std::ldexp(1.0f, -10)), 0x00);          // tie between 0 and 2^-9
  EXPECT_EQ(f32_to_fp8_e4m3(std::ldexp(3.0f, -10)), 0x02);          // tie between 1 and 2
  EXPECT_EQ(f32_to_fp8_e4m3(std::numeric_limits<float>::quiet_NaN()) & 0x7F, 0x7F);
}

TEST(E8M0, Codes) {
  EXPECT_EQ(e8m0_to_f32(127), 1.0f);
  EXPECT_EQ(e8m0_to_f32(128), 2.0f);
  EXPECT_EQ(e8m0_to_f32(120), 1.0f / 128);
  EXPECT_EQ(e8m0_to_f32(254), std::ldexp(1.0f, 127));
  EXPECT_EQ(e8m0_to_f32(0), std::ldexp(1.0f, -127));  // a subnormal float, still exact
  EXPECT_GT(e8m0_to_f32(0), 0.0f);
  EXPECT_TRUE(std::isnan(e8m0_to_f32(255)));
  for (int c = 1; c < 255; ++c) EXPECT_EQ(e8m0_to_f32(static_cast<uint8_t>(c)), std::pow(2.0f, c - 127.0f));
}

TEST(FP4, AllCodes) {
  const float expect[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  for (int c = 0; c < 16; ++c) {
    EXPECT_EQ(fp4_e2m1_to_f32(static_cast<uint8_t>(c)), expect[c]) << c;
    EXPECT_EQ(f32_to_fp4_e2m1(expect[c]), c) << c;
  }
  EXPECT_TRUE(std::signbit(fp4_e2m1_to_f32(8)));
  // Ties go to the even code: 0.25 -> 0, 0.75 -> 1.0, 1.25 -> 1.0, 1.75 -> 2.0,
  // 2.5 -> 2.0, 3.5 -> 4.0, 5 -> 4.0.
  struct Tie {
    float v;
    int tie_code, lower_code;
  };
  const Tie ties[] = {{0.25f, 0, 0}, {0.75f, 2, 1}, {1.25f, 2, 2}, {1.75f, 4, 3},
                      {2.5f, 4, 4},  {3.5f, 6, 5},  {5.0f, 6, 6}};
  for (const auto& t : ties) {
    EXPECT_EQ(f32_to_fp4_e2m1(t.v), t.tie_code) << t.v;
    EXPECT_EQ(f32_to_fp4_e2m1(-t.v), 8 | t.tie_code) << t.v;
    EXPECT_EQ(f32_to_fp4_e2m1(std::nextafter(t.v, 0.0f)), t.lower_code) << t.v;
    EXPECT_EQ(f32_to_fp4_e2m1(std::nextafter(t.v, 10.0f)), t.lower_code + 1) << t.v;
  }
  // Just off each tie, the nearer neighbour wins.
  EXPECT_EQ(f32_to_fp4_e2m1(0.26f), 1);
  EXPECT_EQ(f32_to_fp4_e2m1(0.74f), 1);
  EXPECT_EQ(f32_to_fp4_e2m1(1.26f), 3);
  EXPECT_EQ(f32_to_fp4_e2m1(2.51f), 5);
  EXPECT_EQ(f32_to_fp4_e2m1(4.99f), 6);
  EXPECT_EQ(f32_to_fp4_e2m1(5.01f), 7);
  EXPECT_EQ(f32_to_fp4_e2m1(100.0f), 7);
  EXPECT_EQ(f32_to_fp4_e2m1(-100.0f), 15);
  // Brute force: nearest of the 8 magnitudes, ties to the even code.
  for (int i = 0; i <= 7000; ++i) {
    const float a = i * 0.001f;
    int best = 0;
    for (int c = 1; c < 8; ++c) {
      const float dc = std::fabs(fp4_e2m1_to_f32(static_cast<uint8_t>(c)) - a);
      const float db = std::fabs(fp4_e2m1_to_f32(static_cast<uint8_t>(best)) - a);
      if (dc < db || (dc == db && c % 2 == 0)) best = c;
    }
    ASSERT_EQ(f32_to_fp4_e2m1(a), best) << a;
  }
}

TEST(OfficialWeights, Fp8BlockScales) {
  // 130 x 260: partial tiles in both directions.
  const int64_t rows = 130, cols = 260;
  std::vector<uint8_t> q(rows * cols);
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
  const uint8_t e8[2 * 3] = {127, 128, 125, 130, 0, 126};
  const float f32s[2 * 3] = {1.0f, 2.0f, 0.25f, 8.0f, -1.5f, 0.5f};
  std::vector<float> out(rows * cols);
  dequantize_fp8_weight(q.data(), e8, ScaleFormat::E8M0, rows, cols, out.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const uint8_t code = q[r * cols + c];
      const double v = (code & 0x7F) == 0x7F ? 0.0 : e4m3_formula(code);
      const double s = std::pow(2.0, e8[(r / 128) * 3 + c / 128] - 127.0);
      ASSERT_EQ(static_cast<double>(out[r * cols + c]), static_cast<double>(static_cast<float>(v * s)))
          << r << "," << c;
    }
  }
  dequantize_fp8_weight(q.data(), f32s, ScaleFormat::F32, rows, cols, out.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const uint8_t code = q[r * cols + c];
      const double v = (code & 0x7F) == 0x7F ? 0.0 : e4m3_formula(code);
      ASSERT_EQ(out[r * cols + c], static_cast<float>(v * f32s[(r / 128) * 3 + c / 128]));
    }
  }
}

TEST(OfficialWeights, Fp4LowNibbleFirst) {
  const int64_t rows = 2, cols = 64;
  std::vector<uint8_t> packed(rows * cols / 2);
  for (size_t i = 0; i < packed.size(); ++i) packed[i] = static_cast<uint8_t>((i * 53 + 7) & 0xFF);
  const uint8_t scales[4] = {127, 129, 126, 0};
  std::vector<float> out(rows * cols);
  dequantize_fp4_weight(packed.data(), scales, rows, cols, out.data());
  const float mags[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const uint8_t byte = packed[(r * cols + c) / 2];
      const uint8_t nib = (c % 2 == 0) ? (byte & 15) : (byte >> 4);
      const float v = (nib & 8 ? -1.0f : 1.0f) * mags[nib & 7];
      ASSERT_EQ(out[r * cols + c], v * std::ldexp(1.0f, scales[r * 2 + c / 32] - 127)) << r << "," << c;
    }
  }
  EXPECT_THROW(dequantize_fp4_weight(packed.data(), scales, 1, 48, out.data()), std::invalid_argument);
  EXPECT_THROW(dequantize_fp8_weight(packed.data(), scales, ScaleFormat::E8M0, -1, 4, out.data()),
               std::invalid_argument);
}

}  // namespace
}  // namespace ds4::quant
