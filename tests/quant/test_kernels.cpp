// Dot-product kernels: every SIMD table against the scalar reference on random blocks of
// many lengths, and quantized dots against float dots of the dequantized operands.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "quant/quant.h"
#include "quant/tables.h"
#include "test_util.h"
#include "test_seed.h"

namespace ds4::quant {
namespace {

using test::cpu_has_f16c;
using test::gaussian;

std::vector<Isa> simd_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
    if (isa_available(isa)) out.push_back(isa);
  }
  return out;
}

// Random f16 with a sane exponent (no inf/NaN), as real block scales are.
uint16_t random_scale(std::mt19937& rng) {
  const uint16_t exp = static_cast<uint16_t>(5 + rng() % 20);  // 2^-10 .. 2^9
  return static_cast<uint16_t>(((rng() & 1) << 15) | (exp << 10) | (rng() & 0x3FF));
}

template <typename Block>
std::vector<Block> random_blocks(size_t count, std::mt19937& rng) {
  std::vector<Block> v(count);
  auto* bytes = reinterpret_cast<uint8_t*>(v.data());
  for (size_t i = 0; i < count * sizeof(Block); ++i) bytes[i] = static_cast<uint8_t>(rng());
  return v;
}

// Activations in [-127, 127] (what the quantizers produce), consistent bsums.
std::vector<block_q8_K> random_q8_K(size_t count, std::mt19937& rng) {
  std::vector<block_q8_K> v(count);
  std::uniform_int_distribution<int> q(-127, 127);
  std::uniform_real_distribution<float> d(-0.05f, 0.05f);
  for (auto& b : v) {
    b.d = d(rng);
    for (auto& x : b.qs) x = static_cast<int8_t>(q(rng));
    for (int j = 0; j < 16; ++j) {
      int s = 0;
      for (int i = 0; i < 16; ++i) s += b.qs[16 * j + i];
      b.bsums[j] = static_cast<int16_t>(s);
    }
  }
  return v;
}

TEST(Kernels, DispatchBasics) {
  EXPECT_TRUE(isa_available(Isa::Scalar));
  EXPECT_STREQ(kernels(Isa::Scalar).isa_name, "scalar");
  EXPECT_EQ(&kernels(Isa::Scalar), &scalar::kernels());
  for (Isa isa : {Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
    if (isa_available(isa)) {
      EXPECT_STREQ(kernels(isa).isa_name, isa_name(isa));
    } else {
      EXPECT_THROW(kernels(isa), std::runtime_error) << isa_name(isa);
    }
  }
#if defined(__x86_64__) && defined(DS4_QUANT_EXPECT_X86_SIMD)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c()) {
    EXPECT_TRUE(isa_available(Isa::AVX2));
  }
  if (!__builtin_cpu_supports("avx512f")) {
    EXPECT_FALSE(isa_available(Isa::AVX512));
    EXPECT_FALSE(isa_available(Isa::AVX512_VNNI));
  }
#endif
  std::printf("  best kernels: %s\n", kernels().isa_name);
}

// DS4_ISA is read once per process, so each setting runs in a fresh child.
void expect_isa_under_env(const char* value, const char* expected) {
  EXPECT_EXIT(
      {
        setenv("DS4_ISA", value, 1);
        std::exit(std::string(kernels().isa_name) == expected ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "")
      << "DS4_ISA=" << value;
}

TEST(KernelsDeathTest, EnvironmentOverride) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  expect_isa_under_env("scalar", "scalar");
  if (isa_available(Isa::AVX2)) expect_isa_under_env("avx2", "avx2");
  // Unknown or unsupported values fall back to the best ISA with a warning.
  Isa best = Isa::Scalar;
  for (Isa isa : {Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
    if (isa_available(isa)) best = isa;
  }
  expect_isa_under_env("bogus", isa_name(best));
  if (!isa_available(Isa::AVX512)) expect_isa_under_env("avx512", isa_name(best));
}

const int64_t kFloatLengths[] = {0, 1, 7, 8, 9, 15, 16, 31, 32, 33, 63, 100, 255, 1000, 4096, 4099};

TEST(Kernels, FloatDotsMatchScalar) {
  const Kernels& ref = scalar::kernels();
  for (Isa isa : simd_isas()) {
    const Kernels& k = kernels(isa);
    for (int64_t n : kFloatLengths) {
      const auto w = gaussian(static_cast<size_t>(n), 100 + static_cast<uint32_t>(n));
      const auto x = gaussian(static_cast<size_t>(n), 200 + static_cast<uint32_t>(n));
      std::vector<uint16_t> h(n), b(n);
      double mag = 0;
      for (int64_t i = 0; i < n; ++i) {
        h[i] = f32_to_f16(w[i]);
        b[i] = f32_to_bf16(w[i]);
        mag += std::fabs(w[i] * x[i]);
      }
      // Same products, other summation order: error bounded by ~n ulps of the magnitude.
      const double tol = 1e-6 * mag + 1e-30;
      EXPECT_NEAR(k.dot_f32(w.data(), x.data(), n), ref.dot_f32(w.data(), x.data(), n), tol) << isa_name(isa) << n;
      EXPECT_NEAR(k.dot_f16(h.data(), x.data(), n), ref.dot_f16(h.data(), x.data(), n), tol) << isa_name(isa) << n;
      EXPECT_NEAR(k.dot_bf16(b.data(), x.data(), n), ref.dot_bf16(b.data(), x.data(), n), tol) << isa_name(isa) << n;
    }
  }
}

TEST(Kernels, Q8_0MatchesScalar) {
  const Kernels& ref = scalar::kernels();
  std::mt19937 rng(ds4::testdata::test_seed(11));
  for (Isa isa : simd_isas()) {
    const Kernels& k = kernels(isa);
    for (int64_t nb : {0, 1, 2, 3, 5, 8, 17, 128}) {
      auto w = random_blocks<block_q8_0>(nb, rng);  // includes -128 weights
      std::vector<block_q8_0_act> x(nb);
      std::uniform_int_distribution<int> q(-127, 127);
      double mag = 0;
      for (int64_t b = 0; b < nb; ++b) {
        w[b].d = random_scale(rng);
        x[b].d = std::uniform_real_distribution<float>(-0.1f, 0.1f)(rng);
        int64_t abs_sum = 0;
        for (int j = 0; j < 32; ++j) {
          x[b].qs[j] = static_cast<int8_t>(q(rng));
          abs_sum += std::abs(w[b].qs[j] * x[b].qs[j]);
        }
        mag += std::fabs(f16_to_f32(w[b].d) * x[b].d) * abs_sum;
      }
      const float got = k.dot_q8_0(w.data(), x.data(), nb * 32);
      const float want = ref.dot_q8_0(w.data(), x.data(), nb * 32);
      // Block sums are exact integers in both; only the order of the float block sums differs.
      EXPECT_NEAR(got, want, 1e-6 * mag + 1e-30) << isa_name(isa) << " blocks " << nb;
    }
  }
}

TEST(Kernels, Q8_0ExactOnIntegerData) {
  // With power-of-two scales and small integers every partial sum is exact, so any
  // summation order gives the same float.
  std::mt19937 rng(ds4::testdata::test_seed(12));
  for (Isa isa : simd_isas()) {
    for (int64_t nb : {1, 3, 64}) {
      auto w = random_blocks<block_q8_0>(nb, rng);
      std::vector<block_q8_0_act> x(nb);
      for (int64_t b = 0; b < nb; ++b) {
        w[b].d = 0x3C00;
        x[b].d = 0.5f;
        for (int j = 0; j < 32; ++j) x[b].qs[j] = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
      }
      EXPECT_EQ(kernels(isa).dot_q8_0(w.data(), x.data(), nb * 32),
                scalar::kernels().dot_q8_0(w.data(), x.data(), nb * 32));
    }
  }
}

template <typename Block, typename Fn>
void check_k_kernel(const char* name, Fn pick, void (*fix)(Block&, std::mt19937&)) {
  std::mt19937 rng(ds4::testdata::test_seed(13));
  for (Isa isa : simd_isas()) {
    // Block counts around the kernels' four-block groups and their tails.
    for (int64_t nb : {0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 16}) {
      for (int rep = 0; rep < 20; ++rep) {
        auto w = random_blocks<Block>(nb, rng);
        for (auto& b : w) fix(b, rng);
        const auto x = random_q8_K(nb, rng);
        const float got = pick(kernels(isa))(w.data(), x.data(), nb * 256);
        const float want = pick(scalar::kernels())(w.data(), x.data(), nb * 256);
        // Integer block sums, same float combination order: bit-identical.
        ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want))
            << name << " " << isa_name(isa) << " blocks " << nb << " rep " << rep;
      }
    }
  }
}

TEST(Kernels, Q2_KMatchesScalarExactly) {
  check_k_kernel<block_q2_K>(
      "q2_K", [](const Kernels& k) { return k.dot_q2_K; },
      [](block_q2_K& b, std::mt19937& r) {
        b.d = random_scale(r);
        b.dmin = random_scale(r);
      });
}

TEST(Kernels, Q4_KMatchesScalarExactly) {
  check_k_kernel<block_q4_K>(
      "q4_K", [](const Kernels& k) { return k.dot_q4_K; },
      [](block_q4_K& b, std::mt19937& r) {
        b.d = random_scale(r);
        b.dmin = random_scale(r);
      });
}

TEST(Kernels, IQ2_XXSMatchesScalarExactly) {
  check_k_kernel<block_iq2_xxs>(
      "iq2_xxs", [](const Kernels& k) { return k.dot_iq2_xxs; },
      [](block_iq2_xxs& b, std::mt19937& r) { b.d = random_scale(r); });
}

// Extreme codes against full-scale activations: every quant bit set or clear, activations
// at +-127. These maximise the byte products the SIMD kernels keep in 16-bit lanes, so any
// saturation or lost carry would show as a difference from the scalar integer sums.
template <typename Block>
void check_extremes(const char* name, float (*pick_single)(const Kernels&, const Block*, const block_q8_K*, int64_t),
                    void (*pick_multi)(const Kernels&, const Block*, const block_q8_K*, int64_t, int, int64_t, float*),
                    void (*set_scales)(Block&)) {
  for (Isa isa : simd_isas()) {
    for (int fill : {0x00, 0xFF, 0xAA, 0x55}) {
      for (int act : {127, -127, 0}) {  // 0: alternating signs
        for (int64_t nb : {1, 2, 3, 5, 8, 16}) {
          std::vector<Block> w(nb);
          std::memset(w.data(), fill, w.size() * sizeof(Block));
          for (auto& b : w) set_scales(b);
          constexpr int kVectors = 5;
          std::vector<block_q8_K> x(nb * kVectors);
          for (size_t i = 0; i < x.size(); ++i) {
            x[i].d = 0.01f * static_cast<float>(1 + i % 3);
            for (int j = 0; j < QK_K; ++j) x[i].qs[j] = static_cast<int8_t>(act != 0 ? act : (j % 2 ? 127 : -127));
            for (int j = 0; j < 16; ++j) {
              int sum = 0;
              for (int k = 0; k < 16; ++k) sum += x[i].qs[16 * j + k];
              x[i].bsums[j] = static_cast<int16_t>(sum);
            }
          }
          const float want = pick_single(scalar::kernels(), w.data(), x.data(), nb * QK_K);
          const float got = pick_single(kernels(isa), w.data(), x.data(), nb * QK_K);
          ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want))
              << name << " " << isa_name(isa) << " fill " << fill << " act " << act << " blocks " << nb;
          float out[kVectors];
          pick_multi(kernels(isa), w.data(), x.data(), nb, kVectors, nb * QK_K, out);
          for (int v = 0; v < kVectors; ++v) {
            const float single = pick_single(scalar::kernels(), w.data(), x.data() + v * nb, nb * QK_K);
            ASSERT_EQ(std::bit_cast<uint32_t>(out[v]), std::bit_cast<uint32_t>(single))
                << name << " multi " << isa_name(isa) << " fill " << fill << " vector " << v;
          }
        }
      }
    }
  }
}

TEST(Kernels, ExtremeCodesMatchScalarExactly) {
  check_extremes<block_q2_K>(
      "q2_K", [](const Kernels& k, const block_q2_K* w, const block_q8_K* x, int64_t n) { return k.dot_q2_K(w, x, n); },
      [](const Kernels& k, const block_q2_K* w, const block_q8_K* x, int64_t s, int nx, int64_t n, float* o) {
        k.dot_q2_K_multi(w, x, s, nx, n, o);
      },
      [](block_q2_K& b) {
        b.d = 0x3C00;  // 1.0
        b.dmin = 0x3800;  // 0.5
      });
  check_extremes<block_q4_K>(
      "q4_K", [](const Kernels& k, const block_q4_K* w, const block_q8_K* x, int64_t n) { return k.dot_q4_K(w, x, n); },
      [](const Kernels& k, const block_q4_K* w, const block_q8_K* x, int64_t s, int nx, int64_t n, float* o) {
        k.dot_q4_K_multi(w, x, s, nx, n, o);
      },
      [](block_q4_K& b) {
        b.d = 0x3C00;
        b.dmin = 0x3800;
      });
  check_extremes<block_iq2_xxs>(
      "iq2_xxs",
      [](const Kernels& k, const block_iq2_xxs* w, const block_q8_K* x, int64_t n) { return k.dot_iq2_xxs(w, x, n); },
      [](const Kernels& k, const block_iq2_xxs* w, const block_q8_K* x, int64_t s, int nx, int64_t n, float* o) {
        k.dot_iq2_xxs_multi(w, x, s, nx, n, o);
      },
      [](block_iq2_xxs& b) { b.d = 0x3C00; });
}

TEST(Kernels, ActivationQuantizersMatchScalarBytes) {
  const Kernels& ref = scalar::kernels();
  for (Isa isa : simd_isas()) {
    const Kernels& k = kernels(isa);
    for (uint32_t seed = 0; seed < 20; ++seed) {
      const int64_t n = 256 * (1 + seed % 5);
      auto x = gaussian(static_cast<size_t>(n), 300 + seed, seed % 2 ? 1e-3f : 4.0f);
      // Edge cases: a zero block, magnitude ties of opposite sign (the first wins), and
      // values landing exactly on .5 after scaling.
      if (seed % 3 == 0) std::fill(x.begin(), x.begin() + 256, 0.0f);
      if (seed % 3 == 1) {
        x[5] = -9.0f;
        x[9] = 9.0f;
        x[10] = 4.5f * 9.0f / 127.0f;
      }
      std::vector<block_q8_0_act> a0(n / 32), a1(n / 32);
      ref.quantize_act_q8_0(x.data(), a0.data(), n);
      k.quantize_act_q8_0(x.data(), a1.data(), n);
      ASSERT_EQ(std::memcmp(a0.data(), a1.data(), a0.size() * sizeof(a0[0])), 0) << isa_name(isa) << seed;
      std::vector<block_q8_K> b0(n / 256), b1(n / 256);
      ref.quantize_act_q8_K(x.data(), b0.data(), n);
      k.quantize_act_q8_K(x.data(), b1.data(), n);
      ASSERT_EQ(std::memcmp(b0.data(), b1.data(), b0.size() * sizeof(b0[0])), 0) << isa_name(isa) << seed;
    }
  }
}

TEST(Kernels, MultiVectorDotEqualsSingleDots) {
  std::mt19937 rng(ds4::testdata::test_seed(31));
  for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
    if (!isa_available(isa)) continue;
    const Kernels& k = kernels(isa);
    for (int64_t nb : {1, 3, 16}) {
      auto w = random_blocks<block_iq2_xxs>(nb, rng);
      for (auto& b : w) b.d = random_scale(rng);
      for (int nx : {1, 2, 5}) {
        const int64_t stride = nb + 1;  // padding between vectors must be skipped
        const auto x = random_q8_K(stride * nx, rng);
        std::vector<float> out(nx, -1.0f);
        k.dot_iq2_xxs_multi(w.data(), x.data(), stride, nx, nb * 256, out.data());
        for (int v = 0; v < nx; ++v) {
          const float single = k.dot_iq2_xxs(w.data(), x.data() + v * stride, nb * 256);
          ASSERT_EQ(std::bit_cast<uint32_t>(out[v]), std::bit_cast<uint32_t>(single)) << isa_name(isa) << nb << nx;
        }
      }
    }
  }
}

// The row-tile kernel against the scalar single dot: random bit patterns (every sign field,
// parity and scale), row counts around its four-row groups, padded strides.
TEST(Kernels, IQ2_XXSRowTileEqualsSingleDots) {
  std::mt19937 rng(ds4::testdata::test_seed(37));
  for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
    if (!isa_available(isa)) continue;
    const Kernels& k = kernels(isa);
    for (int64_t nb : {1, 2, 5}) {
      for (int nr : {1, 3, 4, 5, 9}) {
        const int64_t w_stride = nb + 2;
        auto w = random_blocks<block_iq2_xxs>(w_stride * nr, rng);
        for (auto& b : w) b.d = random_scale(rng);
        for (int nx : {1, 2, 7}) {
          const int64_t stride = nb + 1;
          const auto x = random_q8_K(stride * nx, rng);
          std::vector<float> out(static_cast<size_t>(nr * nx), -1.0f);
          k.dot_iq2_xxs_rows(w.data(), w_stride, nr, x.data(), stride, nx, nb * 256, out.data());
          for (int r = 0; r < nr; ++r) {
            for (int v = 0; v < nx; ++v) {
              const float want = scalar::kernels().dot_iq2_xxs(w.data() + r * w_stride, x.data() + v * stride, nb * 256);
              ASSERT_EQ(std::bit_cast<uint32_t>(out[r * nx + v]), std::bit_cast<uint32_t>(want))
                  << isa_name(isa) << " blocks " << nb << " rows " << nr << " vectors " << nx << " at " << r << "," << v;
            }
          }
        }
      }
    }
  }
}

template <typename Block>
void check_k_rows(const char* name,
                  void (*pick)(const Kernels&, const Block*, int64_t, int, const block_q8_K*, int64_t, int, int64_t, float*),
                  float (*single)(const Block*, const block_q8_K*, int64_t), void (*fix)(Block&, std::mt19937&)) {
  std::mt19937 rng(ds4::testdata::test_seed(39));
  for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
    if (!isa_available(isa)) continue;
    for (int64_t nb : {1, 2, 5}) {
      for (int nr : {1, 4, 6}) {
        const int64_t w_stride = nb + 1;
        auto w = random_blocks<Block>(w_stride * nr, rng);
        for (auto& b : w) fix(b, rng);
        for (int nx : {1, 3}) {
          const int64_t stride = nb + 2;
          const auto x = random_q8_K(stride * nx, rng);
          std::vector<float> out(static_cast<size_t>(nr * nx), -1.0f);
          pick(kernels(isa), w.data(), w_stride, nr, x.data(), stride, nx, nb * 256, out.data());
          for (int r = 0; r < nr; ++r) {
            for (int v = 0; v < nx; ++v) {
              const float want = single(w.data() + r * w_stride, x.data() + v * stride, nb * 256);
              ASSERT_EQ(std::bit_cast<uint32_t>(out[r * nx + v]), std::bit_cast<uint32_t>(want))
                  << name << " " << isa_name(isa) << " blocks " << nb << " rows " << nr << " vectors " << nx;
            }
          }
        }
      }
    }
  }
}

TEST(Kernels, KQuantRowTilesEqualSingleDots) {
  check_k_rows<block_q2_K>(
      "q2_K",
      [](const Kernels& k, const block_q2_K* w, int64_t ws, int nr, const block_q8_K* x, int64_t xs, int nx, int64_t n,
         float* o) { k.dot_q2_K_rows(w, ws, nr, x, xs, nx, n, o); },
      scalar::kernels().dot_q2_K,
      [](block_q2_K& b, std::mt19937& r) {
        b.d = random_scale(r);
        b.dmin = random_scale(r);
      });
  check_k_rows<block_q4_K>(
      "q4_K",
      [](const Kernels& k, const block_q4_K* w, int64_t ws, int nr, const block_q8_K* x, int64_t xs, int nx, int64_t n,
         float* o) { k.dot_q4_K_rows(w, ws, nr, x, xs, nx, n, o); },
      scalar::kernels().dot_q4_K,
      [](block_q4_K& b, std::mt19937& r) {
        b.d = random_scale(r);
        b.dmin = random_scale(r);
      });
}

// Constant bit patterns (uniform grid codes, all-negative or all-positive signs, extreme
// scales) against activations at +-127, where the tile kernel's unsigned u = x + 128 reaches
// 255: any saturation of its 16-bit pair sums would show as a difference.
// The repack is lossless (random bytes, so every sign field, parity and scale) and its
// layout is the documented one: grid indices first, then per 8 weights one byte whose bits
// 0-6 xor their left neighbour give the signs (bit 7 of the signs = bit 6 of the byte) and
// whose bit 7 is one scale bit. Checked against dequantize_row of the original bytes.
TEST(IQ2XXSRepack, RoundTripAndLayout) {
  std::mt19937 rng(91);
  auto w = random_blocks<block_iq2_xxs>(37, rng);
  for (auto& b : w) b.d = random_scale(rng);
  auto r = w;
  iq2_xxs_repack(r.data(), static_cast<int64_t>(r.size()));
  ASSERT_NE(0, std::memcmp(r.data(), w.data(), w.size() * sizeof(block_iq2_xxs)));
  std::vector<float> want(256);
  for (size_t b = 0; b < w.size(); ++b) {
    ASSERT_EQ(r[b].d, w[b].d);
    dequantize_row(Type::IQ2_XXS, &w[b], want.data(), 256);
    const auto* qs = reinterpret_cast<const uint8_t*>(r[b].qs);
    const float d = f16_to_f32(r[b].d);
    for (int g = 0; g < 8; ++g) {
      int scale = 0;
      for (int k = 0; k < 4; ++k) scale |= (qs[32 + 4 * g + k] >> 7) << k;
      for (int k = 0; k < 4; ++k) {
        const uint8_t t = qs[32 + 4 * g + k] & 0x7F;
        const uint8_t signs = static_cast<uint8_t>(t ^ (t << 1));
        for (int j = 0; j < 8; ++j) {
          const float v = want[32 * g + 8 * k + j];
          ASSERT_EQ((v < 0) != (d < 0), ((signs >> j) & 1) != 0) << "block " << b << " group " << g << " run " << k;
          const float mag = std::fabs(v / (d * (0.5f + static_cast<float>(scale)) * 0.25f));
          const uint64_t grid = tables::kIq2xxsGrid[qs[4 * g + k]];
          ASSERT_NEAR(mag, static_cast<float>((grid >> (8 * j)) & 0xFF), 1e-3f * (mag + 1))
              << "block " << b << " group " << g << " run " << k << " weight " << j;
        }
      }
    }
  }
  iq2_xxs_unpack(r.data(), static_cast<int64_t>(r.size()));
  EXPECT_EQ(0, std::memcmp(r.data(), w.data(), w.size() * sizeof(block_iq2_xxs)));
}

// The repacked kernels on every ISA equal the scalar plain kernels on the original rows.
TEST(IQ2XXSRepack, KernelsEqualPlainScalar) {
  std::mt19937 rng(93);
  for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
    if (!isa_available(isa)) continue;
    const Kernels& k = kernels(isa);
    const Kernels& s = scalar::kernels();
    for (int64_t nb : {1, 2, 3, 16}) {
      for (int nr : {1, 4, 6}) {
        const int64_t w_stride = nb + 1;
        auto w = random_blocks<block_iq2_xxs>(w_stride * nr, rng);
        for (auto& b : w) b.d = random_scale(rng);
        auto r = w;
        iq2_xxs_repack(r.data(), static_cast<int64_t>(r.size()));
        for (int nx : {1, 3, 5}) {
          const int64_t stride = nb + 2;
          const auto x = random_q8_K(stride * nx, rng);
          const int64_t n = nb * QK_K;
          std::vector<float> tile(static_cast<size_t>(nr * nx)), multi(static_cast<size_t>(nx));
          k.dot_iq2_xxs_r_rows(r.data(), w_stride, nr, x.data(), stride, nx, n, tile.data());
          for (int i = 0; i < nr; ++i) {
            k.dot_iq2_xxs_r_multi(r.data() + i * w_stride, x.data(), stride, nx, n, multi.data());
            for (int v = 0; v < nx; ++v) {
              const float want = s.dot_iq2_xxs(w.data() + i * w_stride, x.data() + v * stride, n);
              const float one = k.dot_iq2_xxs_r(r.data() + i * w_stride, x.data() + v * stride, n);
              const auto bits = std::bit_cast<uint32_t>(want);
              ASSERT_EQ(std::bit_cast<uint32_t>(one), bits) << isa_name(isa) << " nb " << nb << " row " << i;
              ASSERT_EQ(std::bit_cast<uint32_t>(multi[v]), bits) << isa_name(isa) << " nb " << nb << " row " << i;
              ASSERT_EQ(std::bit_cast<uint32_t>(tile[i * nx + v]), bits) << isa_name(isa) << " nb " << nb;
            }
          }
        }
      }
    }
  }
}

TEST(Kernels, IQ2_XXSRowTileExtremes) {
  for (Isa isa : simd_isas()) {
    const Kernels& k = kernels(isa);
    for (int fill : {0x00, 0xFF, 0xAA, 0x55, 0x7F, 0x80}) {
      for (int act : {127, -127, 0}) {
        const int64_t nb = 3;
        const int nr = 5, nx = 3;
        std::vector<block_iq2_xxs> w(nb * nr);
        std::memset(w.data(), fill, w.size() * sizeof(block_iq2_xxs));
        for (auto& b : w) b.d = 0x3C00;
        std::vector<block_q8_K> x(nb * nx);
        for (size_t i = 0; i < x.size(); ++i) {
          x[i].d = 0.01f * static_cast<float>(1 + i % 3);
          for (int j = 0; j < QK_K; ++j) x[i].qs[j] = static_cast<int8_t>(act != 0 ? act : (j % 2 ? 127 : -127));
        }
        std::vector<float> out(nr * nx);
        k.dot_iq2_xxs_rows(w.data(), nb, nr, x.data(), nb, nx, nb * QK_K, out.data());
        for (int r = 0; r < nr; ++r) {
          for (int v = 0; v < nx; ++v) {
            const float want = scalar::kernels().dot_iq2_xxs(w.data() + r * nb, x.data() + v * nb, nb * QK_K);
            ASSERT_EQ(std::bit_cast<uint32_t>(out[r * nx + v]), std::bit_cast<uint32_t>(want))
                << isa_name(isa) << " fill " << fill << " act " << act;
          }
        }
      }
    }
  }
}

template <typename Block, typename Multi, typename Single>
void check_k_multi(const char* name, Multi multi, Single single, void (*fix)(Block&, std::mt19937&)) {
  std::mt19937 rng(ds4::testdata::test_seed(33));
  for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
    if (!isa_available(isa)) continue;
    const Kernels& k = kernels(isa);
    for (int64_t nb : {1, 3, 16}) {
      auto w = random_blocks<Block>(nb, rng);
      for (auto& b : w) fix(b, rng);
      for (int nx : {1, 2, 5}) {
        const int64_t stride = nb + 1;
        const auto x = random_q8_K(stride * nx, rng);
        std::vector<float> out(nx, -1.0f);
        multi(k)(w.data(), x.data(), stride, nx, nb * 256, out.data());
        for (int v = 0; v < nx; ++v) {
          // K-quant results agree across ISAs too, so compare with the scalar single dot.
          const float want = single(scalar::kernels())(w.data(), x.data() + v * stride, nb * 256);
          ASSERT_EQ(std::bit_cast<uint32_t>(out[v]), std::bit_cast<uint32_t>(want))
              << name << " " << isa_name(isa) << " " << nb << " " << nx;
        }
      }
    }
  }
}

TEST(Kernels, KQuantMultiVectorEqualsSingleDots) {
  check_k_multi<block_q2_K>(
      "q2_K", [](const Kernels& k) { return k.dot_q2_K_multi; }, [](const Kernels& k) { return k.dot_q2_K; },
      [](block_q2_K& b, std::mt19937& r) {
        b.d = random_scale(r);
        b.dmin = random_scale(r);
      });
  check_k_multi<block_q4_K>(
      "q4_K", [](const Kernels& k) { return k.dot_q4_K_multi; }, [](const Kernels& k) { return k.dot_q4_K; },
      [](block_q4_K& b, std::mt19937& r) {
        b.d = random_scale(r);
        b.dmin = random_scale(r);
      });
}

TEST(Kernels, Q8_0MultiVectorEqualsSingleDots) {
  std::mt19937 rng(ds4::testdata::test_seed(32));
  std::uniform_int_distribution<int> q(-127, 127);
  for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
    if (!isa_available(isa)) continue;
    const Kernels& k = kernels(isa);
    for (int64_t nb : {1, 2, 5, 128}) {
      auto w = random_blocks<block_q8_0>(nb, rng);
      for (auto& b : w) b.d = random_scale(rng);
      for (int nx : {1, 2, 3, 4, 6, 7, 9}) {
        const int64_t stride = nb + 2;
        std::vector<block_q8_0_act> x(stride * nx);
        for (auto& b : x) {
          b.d = std::uniform_real_distribution<float>(-0.1f, 0.1f)(rng);
          for (auto& v : b.qs) v = static_cast<int8_t>(q(rng));
        }
        std::vector<float> out(nx);
        k.dot_q8_0_multi(w.data(), x.data(), stride, nx, nb * 32, out.data());
        for (int v = 0; v < nx; ++v) {
          const float single = k.dot_q8_0(w.data(), x.data() + v * stride, nb * 32);
          ASSERT_EQ(std::bit_cast<uint32_t>(out[v]), std::bit_cast<uint32_t>(single)) << isa_name(isa) << nb << nx;
        }
      }
    }
  }
}

// The tile kernel (nr rows x nx vectors): each result equals that table's single dot bit for
// bit, whatever the row count, vector count, strides and block count (odd counts leave a
// last block for the even accumulator; 4-vector groups leave partial groups).
TEST(Kernels, Q8_0RowsEqualSingleDots) {
  std::mt19937 rng(ds4::testdata::test_seed(33));
  std::uniform_int_distribution<int> q(-127, 127);
  for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
    if (!isa_available(isa)) continue;
    const Kernels& k = kernels(isa);
    for (int64_t nb : {1, 2, 7, 9, 128}) {
      for (int nr : {1, 3, 33}) {
        const int64_t w_stride = nb + 1;  // padded rows
        auto w = random_blocks<block_q8_0>(static_cast<size_t>(w_stride * nr), rng);  // includes -128 weights
        for (auto& b : w) b.d = random_scale(rng);
        for (int nx : {1, 2, 5, 9, 32}) {
          const int64_t stride = nb + 2;
          std::vector<block_q8_0_act> x(static_cast<size_t>(stride * nx));
          for (auto& b : x) {
            b.d = std::uniform_real_distribution<float>(-0.1f, 0.1f)(rng);
            for (auto& v : b.qs) v = static_cast<int8_t>(q(rng));
          }
          // Extreme codes in the first vector: -128 weights against +-127 activations.
          for (int64_t b = 0; b < nb; ++b) {
            for (int j = 0; j < 32; ++j) x[b].qs[j] = static_cast<int8_t>(j % 3 == 0 ? -127 : 127);
          }
          for (int j = 0; j < 32; ++j) w[0].qs[j] = -128;
          std::vector<float> out(static_cast<size_t>(nr * nx), -1.0f);
          k.dot_q8_0_rows(w.data(), w_stride, nr, x.data(), stride, nx, nb * 32, out.data());
          for (int r = 0; r < nr; ++r) {
            for (int v = 0; v < nx; ++v) {
              const float single = k.dot_q8_0(w.data() + r * w_stride, x.data() + v * stride, nb * 32);
              ASSERT_EQ(std::bit_cast<uint32_t>(out[r * nx + v]), std::bit_cast<uint32_t>(single))
                  << isa_name(isa) << " nb " << nb << " nr " << nr << " nx " << nx << " row " << r << " vector " << v;
            }
          }
        }
      }
    }
  }
}

TEST(Kernels, VecDotMultiAllTypes) {
  const int64_t n = 1024;
  const int nx = 6;
  const auto w = gaussian(n, 41);
  for (Type t : {Type::F32, Type::F16, Type::BF16, Type::Q8_0, Type::Q2_K, Type::Q4_K, Type::IQ2_XXS}) {
    std::vector<uint8_t> wq(*row_bytes(t, n));
    quantize_row(t, w.data(), wq.data(), n);
    const size_t stride = activation_bytes(activation_type(t), n);
    std::vector<uint8_t> xs(stride * nx);
    for (int v = 0; v < nx; ++v) {
      const auto x = gaussian(n, 50 + v);
      quantize_activations(t, x.data(), xs.data() + v * stride, n);
    }
    float out[nx];
    vec_dot_multi(t, wq.data(), xs.data(), stride, nx, n, out);
    for (int v = 0; v < nx; ++v) {
      EXPECT_EQ(out[v], vec_dot(t, wq.data(), xs.data() + v * stride, n)) << type_name(t) << v;
    }
    // Three rows (the same row and a second quantized row) through vec_dot_rows.
    const size_t rb = wq.size();
    std::vector<uint8_t> rows(rb * 3);
    const auto w2 = gaussian(n, 42);
    std::memcpy(rows.data(), wq.data(), rb);
    quantize_row(t, w2.data(), rows.data() + rb, n);
    std::memcpy(rows.data() + 2 * rb, wq.data(), rb);
    float tile[3 * nx];
    vec_dot_rows(t, rows.data(), rb, 3, xs.data(), stride, nx, n, tile);
    for (int r = 0; r < 3; ++r) {
      for (int v = 0; v < nx; ++v) {
        EXPECT_EQ(tile[r * nx + v], vec_dot(t, rows.data() + r * rb, xs.data() + v * stride, n)) << type_name(t) << r << v;
      }
    }
  }
  std::vector<uint8_t> buf(4096);
  float out[2];
  EXPECT_THROW(vec_dot_rows(Type::Q2_K, buf.data(), 84, 1, buf.data(), 292, 2, 100, out), std::invalid_argument);
  EXPECT_THROW(vec_dot(Type::Q8_0, buf.data(), buf.data(), 40), std::invalid_argument);
  EXPECT_THROW(vec_dot(Type::IQ2_XXS, buf.data(), buf.data(), 300), std::invalid_argument);
  EXPECT_THROW(vec_dot_multi(Type::IQ2_XXS, buf.data(), buf.data(), 100, 2, 256, out), std::invalid_argument);
}

// Float dot of two float vectors in double, the truth for consistency checks.
double dot_double(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

std::vector<float> dequant_activations(ActType a, const void* act, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  switch (a) {
    case ActType::F32: std::memcpy(out.data(), act, n * sizeof(float)); break;
    case ActType::Q8_0: {
      const auto* b = static_cast<const block_q8_0_act*>(act);
      for (int64_t i = 0; i < n; ++i) out[i] = b[i / 32].d * b[i / 32].qs[i % 32];
      break;
    }
    case ActType::Q8_K: dequantize_row(Type::Q8_K, act, out.data(), n); break;
  }
  return out;
}

TEST(Kernels, QuantizedDotMatchesDequantizedDot) {
  const int64_t n = 4096;
  const auto w = gaussian(n, 21, 0.05f);
  const auto x = gaussian(n, 22, 2.0f);
  for (Type t : {Type::F32, Type::F16, Type::BF16, Type::Q8_0, Type::Q2_K, Type::Q4_K, Type::IQ2_XXS}) {
    std::vector<uint8_t> wq(*row_bytes(t, n));
    quantize_row(t, w.data(), wq.data(), n);
    std::vector<float> wd(n);
    dequantize_row(t, wq.data(), wd.data(), n);
    const ActType a = activation_type(t);
    std::vector<uint8_t> xq(activation_bytes(a, n));
    quantize_activations(t, x.data(), xq.data(), n);
    const auto xd = dequant_activations(a, xq.data(), n);

    double mag = 0;
    for (int64_t i = 0; i < n; ++i) mag += std::fabs(static_cast<double>(wd[i]) * xd[i]);
    const double exact = dot_double(wd, xd);
    for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
      if (!isa_available(isa)) continue;
      float got = 0;
      const Kernels& k = kernels(isa);
      switch (t) {
        case Type::F32: got = k.dot_f32(reinterpret_cast<const float*>(wq.data()), x.data(), n); break;
        case Type::F16: got = k.dot_f16(reinterpret_cast<const uint16_t*>(wq.data()), x.data(), n); break;
        case Type::BF16: got = k.dot_bf16(reinterpret_cast<const uint16_t*>(wq.data()), x.data(), n); break;
        case Type::Q8_0:
          got = k.dot_q8_0(reinterpret_cast<const block_q8_0*>(wq.data()),
                           reinterpret_cast<const block_q8_0_act*>(xq.data()), n);
          break;
        case Type::Q2_K:
          got = k.dot_q2_K(reinterpret_cast<const block_q2_K*>(wq.data()),
                           reinterpret_cast<const block_q8_K*>(xq.data()), n);
          break;
        case Type::Q4_K:
          got = k.dot_q4_K(reinterpret_cast<const block_q4_K*>(wq.data()),
                           reinterpret_cast<const block_q8_K*>(xq.data()), n);
          break;
        case Type::IQ2_XXS:
          got = k.dot_iq2_xxs(reinterpret_cast<const block_iq2_xxs*>(wq.data()),
                              reinterpret_cast<const block_q8_K*>(xq.data()), n);
          break;
        default: break;
      }
      EXPECT_NEAR(got, exact, 2e-6 * mag) << type_name(t) << " " << isa_name(isa);
    }
    // vec_dot dispatches on the weight type to the chosen table.
    EXPECT_NEAR(vec_dot(t, wq.data(), xq.data(), n), exact, 2e-6 * mag) << type_name(t);
    // And the whole quantized path stays close to the float dot of the originals.
    const double truth = dot_double(w, x);
    double abs_mag = 0;
    for (int64_t i = 0; i < n; ++i) abs_mag += std::fabs(static_cast<double>(w[i]) * x[i]);
    const double allowed = (t == Type::Q2_K || t == Type::IQ2_XXS) ? 0.1 : t == Type::Q4_K ? 0.03 : 0.01;
    EXPECT_NEAR(vec_dot(t, wq.data(), xq.data(), n), truth, allowed * abs_mag) << type_name(t);
  }
  std::vector<uint8_t> dummy(1024);
  EXPECT_THROW(vec_dot(Type::Q6_K, dummy.data(), dummy.data(), 256), std::invalid_argument);
}

}  // namespace
}  // namespace ds4::quant
