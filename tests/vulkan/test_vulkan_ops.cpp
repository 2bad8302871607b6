// Per-op tests of the Vulkan backend against the CPU references (src/quant scalar kernels,
// src/model numerics). Block-format products and the activation quantizers must be
// bit-identical; float ops within the tolerances docs/vulkan.md lists. The whole binary runs
// under the Khronos validation layer (DS4_VULKAN_VALIDATION=1 from CTest): any message fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "cpu/attention.h"
#include "model/numerics.h"
#include "quant/quant.h"
#include "vulkan/context.h"
#include "vulkan/ops.h"
#include "vulkan/recorder.h"
#include "test_seed.h"

namespace ds4::vulkan {
namespace {

using quant::Type;

Context* g_ctx = nullptr;
Ops* g_ops = nullptr;

// The vulkan_no_device ctest runs this binary with the loader pointed at no driver.
bool no_device_mode() {
  const char* e = std::getenv("DS4_VULKAN_TEST_NO_DEVICE");
  return e && std::strcmp(e, "1") == 0;
}

class VulkanEnv : public ::testing::Environment {
 public:
  void SetUp() override {
    if (no_device_mode()) return;
    std::cout << describe_devices(list_devices());
    // DS4_VULKAN_DEVICE picks another device (scripts/vulkan_perf.sh on a multi-GPU host).
    const char* dev = std::getenv("DS4_VULKAN_DEVICE");
    ctx_ = std::make_unique<Context>(ContextOptions{.device = dev ? std::atoi(dev) : 0});
    std::cout << "using " << ctx_->info().name << ", subgroup size " << ctx_->info().subgroup_size
              << ", validation " << (ctx_->validation_enabled() ? "on" : "off") << "\n";
    ops_ = std::make_unique<Ops>(*ctx_);
    g_ctx = ctx_.get();
    g_ops = ops_.get();
  }
  void TearDown() override {
    if (!ctx_) return;
    ops_.reset();
    const uint64_t msgs = ctx_->validation_messages();
    ctx_.reset();
    EXPECT_EQ(msgs, 0u) << "validation layer messages";
  }

 private:
  std::unique_ptr<Context> ctx_;
  std::unique_ptr<Ops> ops_;
};

template <typename T>
Buffer upload(const std::vector<T>& v) {
  Buffer b = g_ctx->create_buffer(std::max<size_t>(v.size() * sizeof(T), 16));
  g_ctx->upload(b, v.data(), v.size() * sizeof(T));
  return b;
}

template <typename T>
std::vector<T> download(const Buffer& b, size_t n) {
  std::vector<T> v(n);
  g_ctx->download(b, v.data(), n * sizeof(T));
  return v;
}

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(ds4::testdata::test_seed(seed));
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Lowers the context's binding limit for one scope (restored even when a check throws).
struct BindingLimit {
  explicit BindingLimit(uint64_t bytes) { g_ctx->limit_binding_bytes(bytes); }
  ~BindingLimit() { g_ctx->limit_binding_bytes(UINT64_MAX); }
};

// Byte-exact comparison that names the first difference (block and byte within it).
void expect_same_bytes(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want, size_t block_bytes) {
  ASSERT_EQ(got.size(), want.size());
  size_t diffs = 0, first = got.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && diffs++ == 0) first = i;
  EXPECT_EQ(diffs, 0u) << "first difference at block " << first / block_bytes << " byte " << first % block_bytes
                       << ": " << int(got[first]) << " vs " << int(want[first]);
}

TEST(VulkanNoDevice, ClearErrors) {
  if (!no_device_mode()) GTEST_SKIP() << "run by the vulkan_no_device ctest (no driver visible)";
  EXPECT_TRUE(list_devices().empty());
  EXPECT_NE(describe_devices({}).find("no Vulkan device"), std::string::npos);
  try {
    Context c;
    FAIL() << "a context opened without a driver";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no Vulkan device"), std::string::npos) << e.what();
  }
}

TEST(VulkanRuntime, ListsTheDeviceInUse) {
  auto devs = list_devices();
  ASSERT_FALSE(devs.empty());
  EXPECT_TRUE(devs[0].usable) << devs[0].missing;
  EXPECT_GT(devs[0].subgroup_size, 0u);
  EXPECT_NE(describe_devices(devs).find(devs[0].name), std::string::npos);
}

TEST(VulkanRuntime, BadDeviceIndexIsAClearError) {
  try {
    Context c(ContextOptions{.device = 99});
    FAIL() << "device 99 opened";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("--device 99 does not exist"), std::string::npos) << e.what();
  }
}

// A chain of dependent dispatches in one command buffer (each RMSNorm reads the previous
// output), re-submitted twice: barriers must order them, and the second run must see the
// first run's final state only through its inputs (it recomputes the same values).
TEST(VulkanRuntime, DependentDispatchesInOneSubmission) {
  const int n = 300;
  auto x = random_floats(n, 7);
  Buffer a = upload(x), b = g_ctx->create_buffer(n * 4), c = g_ctx->create_buffer(n * 4);
  Recorder rec(*g_ctx);
  g_ops->rms_norm(rec, {&a}, {}, n, 1, n, {&b}, n, 1e-6f);
  auto scale = std::vector<float>(n, 2.0f);
  Buffer s = upload(scale);
  g_ops->rms_norm(rec, {&b}, {&s}, n, 1, n, {&c}, n, 1e-6f);
  g_ops->rms_norm(rec, {&c}, {}, n, 1, n, {&b}, n, 1e-6f);  // write-after-read of b
  EXPECT_EQ(rec.dispatches(), 3u);
  EXPECT_EQ(rec.barriers(), 2u);
  for (int run = 0; run < 2; ++run) {
    rec.submit_and_wait();
    auto out = download<float>(b, n);
    std::vector<float> r1(n), r2(n), r3(n);
    model::rms_norm(x.data(), nullptr, r1.data(), n, 1e-6f);
    model::rms_norm(r1.data(), scale.data(), r2.data(), n, 1e-6f);
    model::rms_norm(r2.data(), nullptr, r3.data(), n, 1e-6f);
    for (int i = 0; i < n; ++i) ASSERT_NEAR(out[i], r3[i], 2e-6f * std::fabs(r3[i]) + 1e-7f) << i;
  }
}

// ---- activation quantizers ------------------------------------------------------------

// Vectors with the cases the quantizers must agree on: ties of |max| with opposite signs,
// an all-zero block, huge and tiny magnitudes, halfway rounding points.
std::vector<float> tricky_vector(int n, uint32_t seed) {
  auto v = random_floats(n, seed);
  if (n >= 1024) {
    v[3] = 5.0f;
    v[200] = -5.0f;                           // |max| tie: the first wins
    for (int i = 256; i < 512; ++i) v[i] = 0;  // zero block
    for (int i = 512; i < 768; ++i) v[i] *= 1e-30f;
    for (int i = 768; i < 1024; ++i) v[i] = static_cast<float>(i % 255 - 127) * 0.5f;  // exact halves
  }
  return v;
}

TEST(VulkanOps, QuantizeQ8KIsByteIdentical) {
  const int n = 2048, nvec = 3;
  std::vector<float> x;
  for (int v = 0; v < nvec; ++v) {
    auto t = tricky_vector(n, 11 + v);
    x.insert(x.end(), t.begin(), t.end());
  }
  const size_t words = Ops::act_words(Type::Q2_K, n);
  Buffer xb = upload(x), yb = g_ctx->create_buffer(words * 4 * nvec);
  Recorder rec(*g_ctx);
  g_ops->quantize_act(rec, Type::Q2_K, {&xb}, n, nvec, n, {&yb}, words);
  rec.submit_and_wait();
  auto got = download<uint8_t>(yb, words * 4 * nvec);
  std::vector<uint8_t> want(words * 4 * nvec);
  for (int v = 0; v < nvec; ++v) quant::quantize_activations(Type::Q2_K, x.data() + v * n, want.data() + v * words * 4, n);
  expect_same_bytes(got, want, sizeof(quant::block_q8_K));
}

TEST(VulkanOps, QuantizeQ8_0IsByteIdentical) {
  const int n = 1024 + 96, nvec = 2;  // not a multiple of 256: partial workgroup
  std::vector<float> x;
  for (int v = 0; v < nvec; ++v) {
    auto t = tricky_vector(n, 21 + v);
    x.insert(x.end(), t.begin(), t.end());
  }
  const size_t words = Ops::act_words(Type::Q8_0, n);
  Buffer xb = upload(x), yb = g_ctx->create_buffer(words * 4 * nvec);
  Recorder rec(*g_ctx);
  g_ops->quantize_act(rec, Type::Q8_0, {&xb}, n, nvec, n, {&yb}, words);
  rec.submit_and_wait();
  auto got = download<uint8_t>(yb, words * 4 * nvec);
  std::vector<uint8_t> want(words * 4 * nvec);
  for (int v = 0; v < nvec; ++v) quant::quantize_activations(Type::Q8_0, x.data() + v * n, want.data() + v * words * 4, n);
  expect_same_bytes(got, want, sizeof(quant::block_q8_0_act));
}

// ---- matrix products -------------------------------------------------------------------

struct MatCase {
  Type type;
  int rows, cols, nvec;
  size_t offset;          // byte offset of the matrix in its buffer (unaligned on purpose)
  uint64_t binding_limit; // 0: the device's; else rows are split across dispatches
};

void PrintTo(const MatCase& c, std::ostream* os) {
  *os << quant::type_name(c.type) << " " << c.rows << "x" << c.cols << " nvec " << c.nvec << " off " << c.offset
      << " limit " << c.binding_limit;
}

class VulkanMatmul : public ::testing::TestWithParam<MatCase> {};

TEST_P(VulkanMatmul, MatchesCpuKernels) {
  const MatCase c = GetParam();
  const size_t row_bytes = *quant::row_bytes(c.type, c.cols);
  // Weights: random floats quantized by the CPU's quantizer into the GGUF layout.
  std::vector<uint8_t> wbytes(c.offset + row_bytes * c.rows + 8, 0xA5);
  auto wf = random_floats(static_cast<size_t>(c.rows) * c.cols, 100 + c.rows, 0.05f);
  for (int r = 0; r < c.rows; ++r)
    quant::quantize_row(c.type, wf.data() + static_cast<size_t>(r) * c.cols, wbytes.data() + c.offset + r * row_bytes,
                        c.cols);
  std::vector<float> x;
  for (int v = 0; v < c.nvec; ++v) {
    auto t = random_floats(c.cols, 300 + v);
    x.insert(x.end(), t.begin(), t.end());
  }
  // CPU: operands from the CPU quantizer, products from the scalar reference kernels.
  const size_t words = Ops::act_words(c.type, c.cols);
  std::vector<uint32_t> xq(words * c.nvec);
  for (int v = 0; v < c.nvec; ++v)
    quant::quantize_activations(c.type, x.data() + static_cast<size_t>(v) * c.cols, xq.data() + v * words, c.cols);
  const auto& sk = quant::scalar::kernels();
  std::vector<float> want(static_cast<size_t>(c.rows) * c.nvec), mag(want.size());
  for (int v = 0; v < c.nvec; ++v) {
    const void* xa = xq.data() + v * words;
    for (int r = 0; r < c.rows; ++r) {
      const uint8_t* wr = wbytes.data() + c.offset + r * row_bytes;
      float d = 0;
      switch (c.type) {
        case Type::F32: d = sk.dot_f32(reinterpret_cast<const float*>(wr), static_cast<const float*>(xa), c.cols); break;
        case Type::F16: d = sk.dot_f16(reinterpret_cast<const uint16_t*>(wr), static_cast<const float*>(xa), c.cols); break;
        case Type::Q8_0: d = sk.dot_q8_0(reinterpret_cast<const quant::block_q8_0*>(wr), static_cast<const quant::block_q8_0_act*>(xa), c.cols); break;
        case Type::Q2_K: d = sk.dot_q2_K(reinterpret_cast<const quant::block_q2_K*>(wr), static_cast<const quant::block_q8_K*>(xa), c.cols); break;
        case Type::Q4_K: d = sk.dot_q4_K(reinterpret_cast<const quant::block_q4_K*>(wr), static_cast<const quant::block_q8_K*>(xa), c.cols); break;
        case Type::IQ2_XXS: d = sk.dot_iq2_xxs(reinterpret_cast<const quant::block_iq2_xxs*>(wr), static_cast<const quant::block_q8_K*>(xa), c.cols); break;
        default: FAIL();
      }
      want[static_cast<size_t>(v) * c.rows + r] = d;
      // sum |w_i x_i| bounds the rounding error of any summation order.
      std::vector<float> wrow(c.cols);
      quant::dequantize_row(c.type, wr, wrow.data(), c.cols);
      double m = 0;
      for (int i = 0; i < c.cols; ++i) m += std::fabs(static_cast<double>(wrow[i]) * x[static_cast<size_t>(v) * c.cols + i]);
      mag[static_cast<size_t>(v) * c.rows + r] = static_cast<float>(m);
    }
  }

  // GPU: the same float vectors quantized on the device, then the product.
  BindingLimit limit(c.binding_limit ? c.binding_limit : UINT64_MAX);
  Buffer wb = upload(wbytes), xb = upload(x);
  Buffer qb = g_ctx->create_buffer(words * 4 * c.nvec), yb = g_ctx->create_buffer(want.size() * 4);
  Recorder rec(*g_ctx);
  const bool is_float = c.type == Type::F32 || c.type == Type::F16;
  g_ops->quantize_act(rec, c.type, {&xb}, c.cols, c.nvec, c.cols, {&qb}, words);
  DeviceMatrix m{c.type, c.rows, c.cols, row_bytes, &wb, c.offset};
  g_ops->matmul(rec, m, is_float ? Range{&xb} : Range{&qb}, words, c.nvec, {&yb}, c.rows);
  rec.submit_and_wait();
  if (c.binding_limit) {
    EXPECT_GT(rec.dispatches(), 2u) << "the binding limit should split the rows";
  }
  auto got = download<float>(yb, want.size());
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (is_float) {
      const double err = std::fabs(static_cast<double>(got[i]) - want[i]) / std::max(mag[i], 1e-30f);
      worst = std::max(worst, err);
      EXPECT_LE(err, 2e-6) << "row " << i % c.rows << " vec " << i / c.rows;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i]))
          << "row " << i % c.rows << " vec " << i / c.rows << ": " << got[i] << " vs " << want[i];
    }
  }
  if (is_float) std::cout << "  max |gpu-cpu| / sum|w*x| = " << worst << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Formats, VulkanMatmul,
    ::testing::Values(MatCase{Type::F32, 37, 320, 1, 0, 0}, MatCase{Type::F32, 19, 1000, 3, 4, 0},
                      MatCase{Type::F16, 37, 512, 1, 2, 0}, MatCase{Type::F16, 21, 4096, 2, 0, 0},
                      MatCase{Type::Q8_0, 37, 512, 1, 34, 0}, MatCase{Type::Q8_0, 23, 96, 10, 2, 0},
                      MatCase{Type::Q2_K, 37, 512, 1, 0, 0}, MatCase{Type::Q2_K, 17, 2560, 10, 84, 0},
                      MatCase{Type::Q4_K, 37, 512, 1, 0, 0}, MatCase{Type::Q4_K, 17, 2048, 9, 144, 0},
                      MatCase{Type::IQ2_XXS, 37, 512, 1, 66, 0}, MatCase{Type::IQ2_XXS, 17, 4096, 10, 2, 0},
                      // Rows split over several dispatches with unaligned binding offsets.
                      MatCase{Type::IQ2_XXS, 29, 1024, 1, 66, 4200}, MatCase{Type::Q8_0, 29, 256, 1, 34, 2048},
                      // Rows of at most 4 blocks (the short-row variant), row counts not a
                      // multiple of its 16 rows, vector groups of 4, a split.
                      MatCase{Type::Q8_0, 37, 64, 1, 34, 0}, MatCase{Type::Q8_0, 53, 128, 9, 0, 0},
                      MatCase{Type::Q2_K, 37, 256, 5, 84, 0}, MatCase{Type::Q4_K, 19, 1024, 3, 0, 0},
                      MatCase{Type::IQ2_XXS, 21, 768, 2, 66, 0}, MatCase{Type::Q8_0, 45, 64, 2, 34, 1024}),
    [](const auto& info) {
      return std::string(quant::type_name(info.param.type)) + "_" + std::to_string(info.param.rows) + "x" +
             std::to_string(info.param.cols) + "_v" + std::to_string(info.param.nvec) +
             (info.param.binding_limit ? "_split" : "");
    });

// ---- elementwise and routing ops ------------------------------------------------------

TEST(VulkanOps, RmsNormMatchesCpu) {
  const int n = 1000, nvec = 4;
  auto x = random_floats(n * nvec, 5, 3.0f), w = random_floats(n, 6);
  Buffer xb = upload(x), wb = upload(w), yb = g_ctx->create_buffer(n * nvec * 4);
  Recorder rec(*g_ctx);
  g_ops->rms_norm(rec, {&xb}, {&wb}, n, nvec, n, {&yb}, n, 1e-6f);
  rec.submit_and_wait();
  auto got = download<float>(yb, n * nvec);
  double worst = 0;
  for (int v = 0; v < nvec; ++v) {
    std::vector<float> want(n);
    model::rms_norm(x.data() + v * n, w.data(), want.data(), n, 1e-6f);
    for (int i = 0; i < n; ++i) {
      const double rel = std::fabs(got[v * n + i] - want[i]) / std::max(std::fabs(want[i]), 1e-30f);
      worst = std::max(worst, rel);
    }
  }
  std::cout << "  rms_norm max rel err " << worst << "\n";
  EXPECT_LE(worst, 1e-6);
}

TEST(VulkanOps, SwigluMatchesCpu) {
  const int n = 700, nvec = 3;
  auto g = random_floats(n * nvec, 8, 4.0f), u = random_floats(n * nvec, 9, 4.0f);
  std::vector<float> sc = {0.5f, 1.25f, -0.75f};
  Buffer gb = upload(g), ub = upload(u), sb = upload(sc), ob = g_ctx->create_buffer(n * nvec * 4);
  for (float lim : {0.0f, 3.0f}) {
    Recorder rec(*g_ctx);
    g_ops->swiglu(rec, {&gb}, {&ub}, {&sb}, n, nvec, n, {&ob}, lim);
    rec.submit_and_wait();
    auto got = download<float>(ob, n * nvec);
    double worst = 0;
    for (int v = 0; v < nvec; ++v) {
      for (int i = 0; i < n; ++i) {
        // The CPU's expression (model forward, SwiGLU of routed pairs).
        float gv = g[v * n + i], uv = u[v * n + i];
        if (lim > 0.f) {
          gv = std::min(gv, lim);
          uv = std::clamp(uv, -lim, lim);
        }
        const float want = gv / (1.f + std::exp(-gv)) * uv * sc[v];
        worst = std::max(worst, static_cast<double>(std::fabs(got[v * n + i] - want)) /
                                    std::max(std::fabs(want), 1e-3f));
      }
    }
    std::cout << "  swiglu (lim " << lim << ") max rel err " << worst << "\n";
    EXPECT_LE(worst, 1e-5);
  }
}

TEST(VulkanOps, RopeIsExact) {
  const int dims = 64, half = dims / 2, row = 192, nrows = 5;
  auto rope = model::Rope::make(dims, 10000.f, true, 65536, 16.f, 32.f, 1.f);
  auto x = random_floats(row * nrows, 12);
  std::vector<int64_t> pos = {0, 1, 77, 4095, 1000003};
  std::vector<float> cs(static_cast<size_t>(nrows) * half * 2);
  Ops::rope_cos_sin(rope.freq.data(), half, pos.data(), nrows, cs.data());
  Buffer xb = upload(x), cb = upload(cs);
  for (bool inverse : {false, true}) {
    g_ctx->upload(xb, x.data(), x.size() * 4);
    Recorder rec(*g_ctx);
    g_ops->rope(rec, {&xb}, {&cb}, half, nrows, row, row - dims, half, inverse);
    rec.submit_and_wait();
    auto got = download<float>(xb, x.size());
    auto want = x;
    for (int r = 0; r < nrows; ++r) rope.apply(want.data() + r * row + row - dims, pos[r], inverse);
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i])) << i << " inverse " << inverse;
  }
}

TEST(VulkanOps, RouteTopkMatchesCpu) {
  const int E = 256, K = 6, T = 5;
  auto logits = random_floats(E * T, 13, 2.0f), bias = random_floats(E, 14, 0.1f);
  logits[2 * E + 10] = logits[2 * E + 20] = 9.0f;  // exact tie (no bias): lower index first
  Buffer lb = upload(logits), bb = upload(bias), cb = g_ctx->create_buffer(T * K * 4), wb = g_ctx->create_buffer(T * K * 4);
  for (bool use_bias : {false, true}) {
    Recorder rec(*g_ctx);
    g_ops->route_topk(rec, {&lb}, use_bias ? Range{&bb} : Range{}, E, K, T, true, 1.5f, {&cb}, {&wb});
    rec.submit_and_wait();
    auto chosen = download<int32_t>(cb, T * K);
    auto weight = download<float>(wb, T * K);
    for (int t = 0; t < T; ++t) {
      // The CPU's routing (model forward, moe_sublayer).
      std::vector<float> pi(E), biased(E);
      for (int e = 0; e < E; ++e) {
        pi[e] = std::sqrt(model::softplus(logits[t * E + e]));
        biased[e] = pi[e] + (use_bias ? bias[e] : 0.f);
      }
      std::vector<int> order(E);
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + K, order.end(),
                        [&](int a, int b) { return biased[a] > biased[b] || (biased[a] == biased[b] && a < b); });
      float sum = 0;
      for (int k = 0; k < K; ++k) sum += pi[order[k]];
      for (int k = 0; k < K; ++k) {
        EXPECT_EQ(chosen[t * K + k], order[k]) << "token " << t << " slot " << k;
        const float want = pi[order[k]] / std::max(sum, 6.103515625e-05f) * 1.5f;
        EXPECT_NEAR(weight[t * K + k], want, 2e-6f * std::fabs(want)) << "token " << t << " slot " << k;
      }
    }
  }
}

TEST(VulkanOps, HashRoutingMatchesCpu) {
  const int E = 64, K = 6, T = 4, vocab = 20;
  auto logits = random_floats(E * T, 35, 2.0f);
  std::vector<int32_t> table(vocab * K), tokens = {3, 19, 0, 3};
  std::mt19937 rng(ds4::testdata::test_seed(36));
  for (auto& v : table) v = static_cast<int32_t>(rng() % E);
  Buffer lb = upload(logits), tb = upload(tokens), hb = upload(table);
  Buffer cb = g_ctx->create_buffer(T * K * 4), wb = g_ctx->create_buffer(T * K * 4);
  Recorder rec(*g_ctx);
  g_ops->route_topk(rec, {&lb}, {}, E, K, T, true, 2.5f, {&cb}, {&wb}, {&tb}, {&hb});
  rec.submit_and_wait();
  auto chosen = download<int32_t>(cb, T * K);
  auto weight = download<float>(wb, T * K);
  for (int t = 0; t < T; ++t) {
    // The CPU's hash routing (model forward, moe_sublayer): experts from the table, weights
    // from sqrt(softplus) of those experts' logits.
    float sum = 0;
    for (int k = 0; k < K; ++k) sum += std::sqrt(model::softplus(logits[t * E + table[tokens[t] * K + k]]));
    for (int k = 0; k < K; ++k) {
      const int e = table[tokens[t] * K + k];
      EXPECT_EQ(chosen[t * K + k], e);
      const float want = std::sqrt(model::softplus(logits[t * E + e])) / std::max(sum, 6.103515625e-05f) * 2.5f;
      EXPECT_NEAR(weight[t * K + k], want, 2e-6f * std::fabs(want));
    }
  }
}

TEST(VulkanOps, SinkAttentionMatchesCpu) {
  const int H = 6, dim = 96, total_rows = 50, T = 3;
  auto q = random_floats(T * H * dim, 15, 0.3f), rows = random_floats(total_rows * dim, 16, 0.3f);
  auto sinks = random_floats(H, 17);
  // Per token: window rows then compressed rows, picked out of order (as an indexer's top-k
  // would); the tokens of a prefill chunk see growing (causal) windows.
  std::vector<std::vector<int32_t>> lists = {{40, 41, 42, 3, 17, 9},
                                             {40, 41, 42, 43, 3, 17, 9, 30},
                                             {40, 41, 42, 43, 44, 45, 46, 47, 3, 17, 9, 30, 0, 22}};
  std::vector<int32_t> index, spans;
  int max_rows = 0;
  for (const auto& l : lists) {
    spans.push_back(static_cast<int32_t>(index.size()));
    spans.push_back(static_cast<int32_t>(l.size()));
    index.insert(index.end(), l.begin(), l.end());
    max_rows = std::max(max_rows, static_cast<int>(l.size()));
  }
  Buffer qb = upload(q), rb = upload(rows), ib = upload(index), spb = upload(spans), sb = upload(sinks);
  Buffer scratch = g_ctx->create_buffer(T * H * max_rows * 4), ob = g_ctx->create_buffer(T * H * dim * 4);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  Recorder rec(*g_ctx);
  g_ops->attention(rec, {&qb}, {&rb}, {&ib}, {&spb}, T, max_rows, {&sb}, H, dim, scale, {&scratch}, {&ob});
  rec.submit_and_wait();
  auto got = download<float>(ob, T * H * dim);
  double worst = 0;
  for (int t = 0; t < T; ++t) {
    std::vector<const float*> ptrs;
    for (int j : lists[t]) ptrs.push_back(rows.data() + j * dim);
    std::vector<float> want(H * dim), sc(lists[t].size());
    cpu::attend_heads_scalar(q.data() + t * H * dim, 0, H, dim, ptrs.data(), static_cast<int>(ptrs.size()), sinks.data(),
                             scale, want.data(), sc.data());
    for (int i = 0; i < H * dim; ++i) {
      // Relative to the head's largest output (a convex mix of rows: its scale).
      const int h = i / dim;
      const float hmax = std::fabs(*std::max_element(want.begin() + h * dim, want.begin() + (h + 1) * dim,
                                                     [](float a, float b) { return std::fabs(a) < std::fabs(b); }));
      worst = std::max(worst, static_cast<double>(std::fabs(got[t * H * dim + i] - want[i]) / hmax));
    }
  }
  std::cout << "  attention max err / head max " << worst << "\n";
  EXPECT_LE(worst, 1e-6);
}

TEST(VulkanOps, HcSinkhornMatchesCpu) {
  const int hc = 4, T = 70, iters = 20, per = (2 + hc) * hc;
  auto m = random_floats(T * per, 18, 2.0f), base = random_floats(per, 19, 0.5f);
  std::vector<float> scale3 = {0.7f, 1.3f, 0.9f};
  Buffer mb = upload(m), sb = upload(scale3), bb = upload(base), ob = g_ctx->create_buffer(T * per * 4);
  Recorder rec(*g_ctx);
  g_ops->hc_sinkhorn(rec, {&mb}, {&sb}, {&bb}, hc, iters, 1e-6f, T, {&ob});
  rec.submit_and_wait();
  auto got = download<float>(ob, T * per);
  double worst = 0;
  for (int t = 0; t < T; ++t) {
    std::vector<float> want(per);
    model::hc_split_sinkhorn(m.data() + t * per, scale3.data(), base.data(), hc, iters, 1e-6f, want.data(),
                             want.data() + hc, want.data() + 2 * hc);
    for (int i = 0; i < per; ++i)
      worst = std::max(worst, static_cast<double>(std::fabs(got[t * per + i] - want[i]) / std::max(std::fabs(want[i]), 1e-6f)));
  }
  std::cout << "  hc_sinkhorn max rel err " << worst << "\n";
  EXPECT_LE(worst, 1e-5);
}

// Routing and the routed-expert products in one submission (the expert ids never leave the
// device), experts spread over several buffers; every output bit-identical to the CPU's dot.
class VulkanExperts : public ::testing::TestWithParam<Type> {};

TEST_P(VulkanExperts, RoutedProductsMatchCpu) {
  const Type type = GetParam();
  const int E = 9, K = 3, T = 4, rows = 40, cols = 512;
  const size_t rb = *quant::row_bytes(type, cols);
  std::vector<uint8_t> w(rb * rows * E);
  auto wf = random_floats(static_cast<size_t>(E) * rows * cols, 40, 0.05f);
  for (int r = 0; r < E * rows; ++r) quant::quantize_row(type, wf.data() + static_cast<size_t>(r) * cols, w.data() + r * rb, cols);
  DeviceExperts dev = DeviceExperts::upload(*g_ctx, type, E, rows, cols, w.data(), 4);
  ASSERT_EQ(dev.segments.size(), 3u);
  auto x = random_floats(T * cols, 41), logits = random_floats(T * E, 42, 2.0f);
  const size_t words = Ops::act_words(type, cols);
  Buffer xb = upload(x), lb = upload(logits), qb = g_ctx->create_buffer(words * 4 * T);
  Buffer cb = g_ctx->create_buffer(T * K * 4), wb = g_ctx->create_buffer(T * K * 4), yb = g_ctx->create_buffer(T * K * rows * 4);
  Recorder rec(*g_ctx);
  g_ops->route_topk(rec, {&lb}, {}, E, K, T, true, 1.0f, {&cb}, {&wb});
  const bool flt = type == Type::F32 || type == Type::F16;  // f32 vectors are the operand
  g_ops->quantize_act(rec, type, {&xb}, cols, T, cols, {&qb}, words);
  g_ops->matmul_experts(rec, dev, {flt ? &xb : &qb}, words, {&cb}, T * K, K, {&yb}, rows);
  rec.submit_and_wait();
  auto ids = download<int32_t>(cb, T * K);
  auto got = download<float>(yb, T * K * rows);
  std::vector<uint8_t> xq(words * 4 * T);
  for (int t = 0; t < T; ++t) quant::quantize_activations(type, x.data() + t * cols, xq.data() + t * words * 4, cols);
  for (int p = 0; p < T * K; ++p) {
    ASSERT_GE(ids[p], 0);
    ASSERT_LT(ids[p], E);
    for (int r = 0; r < rows; ++r) {
      // The scalar reference (the CPU's SIMD Q8_0 dot adds in another order).
      const uint8_t* wr = w.data() + (static_cast<size_t>(ids[p]) * rows + r) * rb;
      const uint8_t* xa = xq.data() + (p / K) * words * 4;
      const auto& sk = quant::scalar::kernels();
      float want = 0;
      if (flt) {
        // A tree sum on the device, a sequential one here: the float matmul's bound.
        const float* xt = x.data() + (p / K) * cols;
        std::vector<float> wrow(cols);
        quant::dequantize_row(type, wr, wrow.data(), cols);
        double mag = 0;
        for (int i = 0; i < cols; ++i) mag += std::fabs(static_cast<double>(wrow[i]) * xt[i]);
        want = type == Type::F32 ? sk.dot_f32(reinterpret_cast<const float*>(wr), xt, cols)
                                 : sk.dot_f16(reinterpret_cast<const uint16_t*>(wr), xt, cols);
        ASSERT_LE(std::fabs(got[p * rows + r] - want), 2e-6 * mag) << "pair " << p << " row " << r;
        continue;
      }
      switch (type) {
        case Type::Q8_0: want = sk.dot_q8_0(reinterpret_cast<const quant::block_q8_0*>(wr), reinterpret_cast<const quant::block_q8_0_act*>(xa), cols); break;
        case Type::Q2_K: want = sk.dot_q2_K(reinterpret_cast<const quant::block_q2_K*>(wr), reinterpret_cast<const quant::block_q8_K*>(xa), cols); break;
        case Type::Q4_K: want = sk.dot_q4_K(reinterpret_cast<const quant::block_q4_K*>(wr), reinterpret_cast<const quant::block_q8_K*>(xa), cols); break;
        default: want = sk.dot_iq2_xxs(reinterpret_cast<const quant::block_iq2_xxs*>(wr), reinterpret_cast<const quant::block_q8_K*>(xa), cols); break;
      }
      ASSERT_EQ(std::bit_cast<uint32_t>(got[p * rows + r]), std::bit_cast<uint32_t>(want)) << "pair " << p << " row " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, VulkanExperts,
                         ::testing::Values(Type::F32, Type::F16, Type::Q8_0, Type::Q2_K, Type::Q4_K, Type::IQ2_XXS),
                         [](const auto& info) { return std::string(quant::type_name(info.param)); });

// Strided row copies at unaligned word offsets, with and without the added rows; and the
// grouped RoPE form (a token's heads share one table entry) against per-row rotation.
TEST(VulkanOps, CopyRowsAndGroupedRopeAreExact) {
  auto src = random_floats(7 * 13, 120), b = random_floats(5 * 11, 121), dst0 = random_floats(200, 122);
  Buffer bs = upload(src), bb = upload(b), bd = upload(dst0);
  Recorder rec(*g_ctx);
  g_ops->copy_rows(rec, Rows{{&bs}, 3, 13}, Rows{{&bd}, 1, 10}, 9, 4);
  g_ops->copy_rows(rec, Rows{{&bs}, 2, 13}, Rows{{&bd}, 121, 19}, 7, 3, Rows{{&bb}, 5, 11});
  rec.submit_and_wait();
  auto got = download<float>(bd, 200);
  auto want = dst0;
  for (int r = 0; r < 4; ++r)
    for (int i = 0; i < 9; ++i) want[1 + r * 10 + i] = src[3 + r * 13 + i];
  for (int r = 0; r < 3; ++r)
    for (int i = 0; i < 7; ++i) want[121 + r * 19 + i] = src[2 + r * 13 + i] + b[5 + r * 11 + i];
  for (int i = 0; i < 200; ++i) ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i])) << i;

  const int T = 3, H = 2, Dh = 16, R = 8, stride = 40;  // token rows padded to 40 floats
  const auto rope = model::Rope::make(R, 10000.f, false, 0, 1.f, 0.f, 0.f);
  const int64_t pos[T] = {4, 9, 30};
  std::vector<float> cs(T * R);
  Ops::rope_cos_sin(rope.freq.data(), R / 2, pos, T, cs.data());
  auto x = random_floats(T * stride, 123);
  Buffer bx = upload(x), bcs = upload(cs);
  Recorder rec2(*g_ctx);
  g_ops->rope(rec2, {&bx}, {&bcs}, R / 2, T * H, Dh, Dh - R, R / 2, false, H, stride);
  rec2.submit_and_wait();
  auto gx = download<float>(bx, T * stride);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) rope.apply(x.data() + t * stride + h * Dh + Dh - R, pos[t]);
  for (int i = 0; i < T * stride; ++i) ASSERT_EQ(std::bit_cast<uint32_t>(gx[i]), std::bit_cast<uint32_t>(x[i])) << i;
}

TEST(VulkanOps, HcMixIsExact) {
  const int hc = 4, D = 300, T = 3, per = (2 + hc) * hc;
  auto x = random_floats(T * hc * D, 20), y = random_floats(T * D, 21), gates = random_floats(T * per, 22, 0.5f);
  Buffer xb = upload(x), yb = upload(y), gb = upload(gates);
  Buffer ub = g_ctx->create_buffer(T * D * 4), ob = g_ctx->create_buffer(T * hc * D * 4);
  Recorder rec(*g_ctx);
  g_ops->hc_mix(rec, false, {&xb}, {&gb}, {}, hc, D, T, {&ub});
  g_ops->hc_mix(rec, true, {&xb}, {&gb}, {&yb}, hc, D, T, {&ob});
  rec.submit_and_wait();
  auto u = download<float>(ub, T * D), o = download<float>(ob, T * hc * D);
  for (int t = 0; t < T; ++t) {
    const float* g = gates.data() + t * per;
    for (int d = 0; d < D; ++d) {
      // The CPU's hc_pre / hc_post expressions (model forward).
      float acc = 0.f;
      for (int s2 = 0; s2 < hc; ++s2) acc += g[s2] * x[(t * hc + s2) * D + d];
      ASSERT_EQ(std::bit_cast<uint32_t>(u[t * D + d]), std::bit_cast<uint32_t>(acc));
      for (int j = 0; j < hc; ++j) {
        float a2 = g[hc + j] * y[t * D + d];
        for (int i = 0; i < hc; ++i) a2 += g[2 * hc + i * hc + j] * x[(t * hc + i) * D + d];
        ASSERT_EQ(std::bit_cast<uint32_t>(o[(t * hc + j) * D + d]), std::bit_cast<uint32_t>(a2));
      }
    }
  }
}

TEST(VulkanOps, CompressorPoolMatchesCpu) {
  for (int ratio : {4, 128}) {
    const int d = 160, width = ratio == 4 ? 2 * d : d, cand = ratio == 4 ? 8 : ratio;
    auto kv = random_floats(cand * width, 23), score = random_floats(cand * width, 24, 3.0f);
    for (int m = 0; m < cand; ++m) score[m * width + (ratio == 4 && m >= 4 ? d : 0) + 5] = -1e30f;  // fully masked
    score[2 * width + 7] = -1e30f;                                  // one masked candidate
    Buffer kb = upload(kv), sb = upload(score), ob = g_ctx->create_buffer(d * 4);
    Recorder rec(*g_ctx);
    g_ops->compressor_pool(rec, {&kb}, {&sb}, ratio, d, width, {&ob});
    rec.submit_and_wait();
    auto got = download<float>(ob, d);
    double worst = 0;
    for (int j = 0; j < d; ++j) {
      // The CPU's pooling (model forward, compressor_step).
      auto at = [&](int m, const std::vector<float>& buf) {
        if (ratio == 4) return m < 4 ? buf[m * width + j] : buf[m * width + d + j];
        return buf[m * width + j];
      };
      float mx = -INFINITY;
      for (int m = 0; m < cand; ++m) mx = std::max(mx, at(m, score));
      float want = 0.f;
      if (mx > -5e29f) {
        std::vector<float> e(cand);
        float z = 0.f;
        for (int m = 0; m < cand; ++m) {
          const float sv = at(m, score);
          e[m] = sv <= -5e29f ? 0.f : std::exp(sv - mx);
          z += e[m];
        }
        for (int m = 0; m < cand; ++m) want += (e[m] / z) * at(m, kv);
      }
      if (j == 5) {
        EXPECT_EQ(got[j], 0.f);
      }
      worst = std::max(worst, static_cast<double>(std::fabs(got[j] - want)));
    }
    std::cout << "  compressor_pool (ratio " << ratio << ") max abs err " << worst << "\n";
    EXPECT_LE(worst, 1e-6);
  }
}

TEST(VulkanOps, IndexerScoreIsExactToScalar) {
  const int heads = 8, dim = 128, n = 300;
  auto q = random_floats(heads * dim, 25), rows = random_floats(n * dim, 26), w = random_floats(heads, 27);
  const float wscale = 1.0f / std::sqrt(static_cast<float>(dim * heads));
  Buffer qb = upload(q), rb = upload(rows), wb = upload(w), sb = g_ctx->create_buffer(n * 4);
  Recorder rec(*g_ctx);
  g_ops->indexer_score(rec, {&qb}, {&rb}, {&wb}, n, heads, dim, wscale, {&sb});
  rec.submit_and_wait();
  auto got = download<float>(sb, n);
  const auto& k = quant::scalar::kernels();
  for (int r = 0; r < n; ++r) {
    float s2 = 0.f;
    for (int h = 0; h < heads; ++h)
      s2 += (w[h] * wscale) * std::max(0.f, k.dot_f32(q.data() + h * dim, rows.data() + r * dim, dim));
    ASSERT_EQ(std::bit_cast<uint32_t>(got[r]), std::bit_cast<uint32_t>(s2)) << r;
  }
}

TEST(VulkanOps, TopkRowsMatchesCpuSelection) {
  for (int n : {10, 700, 5000}) {
    for (int k : {1, 7, n / 2, n}) {
      auto sc = random_floats(n, 28 + n);
      // Ties (including across the k-th place), negative zero and negatives.
      for (int i = 0; i < n; i += 3) sc[i] = std::round(sc[i] * 2.f) / 2.f;
      if (n > 4) sc[1] = -0.0f, sc[2] = 0.0f;
      Buffer sb = upload(sc), ob = g_ctx->create_buffer(k * 4);
      Recorder rec(*g_ctx);
      g_ops->topk_rows(rec, {&sb}, n, k, {&ob});
      rec.submit_and_wait();
      auto got = download<int32_t>(ob, k);
      std::vector<int> sel(n);
      std::iota(sel.begin(), sel.end(), 0);
      std::partial_sort(sel.begin(), sel.begin() + k, sel.end(),
                        [&](int x, int y) { return sc[x] > sc[y] || (sc[x] == sc[y] && x < y); });
      sel.resize(k);
      std::sort(sel.begin(), sel.end());
      ASSERT_EQ(got, std::vector<int32_t>(sel.begin(), sel.end())) << "n " << n << " k " << k;
    }
  }
}

TEST(VulkanOps, HadamardIsExact) {
  for (int n : {128, 512}) {
    const int rows = 3, stride = n + 8;
    auto x = random_floats(rows * stride, 29);
    Buffer xb = upload(x);
    Recorder rec(*g_ctx);
    g_ops->hadamard(rec, {&xb}, n, rows, stride);
    rec.submit_and_wait();
    auto got = download<float>(xb, x.size());
    auto want = x;
    for (int r = 0; r < rows; ++r) model::hadamard_scaled(want.data() + r * stride, n);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i])) << i;
  }
}

TEST(VulkanOps, CopyIsExactAndBandwidthIsMeasured) {
  std::vector<uint32_t> v(4096 + 4);
  std::iota(v.begin(), v.end(), 12345u);
  Buffer a = upload(v), b = g_ctx->create_buffer(v.size() * 4);
  Recorder rec(*g_ctx);
  g_ops->copy(rec, {&a}, {&b}, v.size() * 4);
  rec.submit_and_wait();
  EXPECT_EQ(download<uint32_t>(b, v.size()), v);
  const double gbs = g_ops->measure_bandwidth(1 << 20, 4);
  std::cout << "  copy bandwidth (information only) " << gbs << " GB/s\n";
  EXPECT_GT(gbs, 0.0);
}

TEST(VulkanOps, FpSimulationIsExact) {
  for (bool fp8 : {true, false}) {
    const int n = 256, rows = 3, stride = 300;
    auto x = random_floats(rows * stride, fp8 ? 30 : 31, 2.0f);
    for (int i = 0; i < 64; ++i) x[i] *= 1e-7f;  // below the amax floor
    for (int i = 64; i < 96; ++i) x[i] = 0.f;    // all-zero block
    x[100] = 1e4f;
    x[101] = -3e-12f;
    Buffer xb = upload(x);
    Recorder rec(*g_ctx);
    g_ops->fp_sim(rec, fp8, {&xb}, n, rows, stride);
    rec.submit_and_wait();
    auto got = download<float>(xb, x.size());
    auto want = x;
    for (int r = 0; r < rows; ++r) (fp8 ? model::fp8_sim64 : model::fp4_sim32)(want.data() + r * stride, n);
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i])) << i << (fp8 ? " fp8" : " fp4");
  }
}

TEST(VulkanOps, EmbeddingGatherIsExact) {
  for (Type t : {Type::F32, Type::F16, Type::Q8_0}) {
    const int vocab = 50, dim = 96, hc = 2;
    const size_t rb = *quant::row_bytes(t, dim);
    auto tf = random_floats(vocab * dim, 32);
    std::vector<uint8_t> table(rb * vocab + 2);
    for (int r = 0; r < vocab; ++r) quant::quantize_row(t, tf.data() + r * dim, table.data() + 2 + r * rb, dim);
    std::vector<int32_t> tokens = {0, 49, 7, 7, 23};
    // Rows split over bindings of ~20 rows, the table starting at byte 2.
    BindingLimit limit(std::max<uint64_t>(rb * 20 + 64, 4096));
    Buffer wb = upload(table), tb = upload(tokens), xb = g_ctx->create_buffer(tokens.size() * hc * dim * 4);
    Recorder rec(*g_ctx);
    g_ops->embed(rec, DeviceMatrix{t, vocab, dim, rb, &wb, 2}, {&tb}, static_cast<int>(tokens.size()), hc, {&xb});
    rec.submit_and_wait();
    EXPECT_GE(rec.dispatches(), 2u);
    auto got = download<float>(xb, tokens.size() * hc * dim);
    std::vector<float> row(dim);
    for (size_t i = 0; i < tokens.size(); ++i) {
      quant::dequantize_row(t, table.data() + 2 + tokens[i] * rb, row.data(), dim);
      for (int s2 = 0; s2 < hc; ++s2)
        for (int d = 0; d < dim; ++d)
          ASSERT_EQ(std::bit_cast<uint32_t>(got[(i * hc + s2) * dim + d]), std::bit_cast<uint32_t>(row[d]))
              << quant::type_name(t) << " token " << i << " stream " << s2 << " dim " << d;
    }
  }
}

TEST(VulkanOps, MoeCombineIsExact) {
  const int T = 3, K = 6, D = 200;
  auto pairs = random_floats(T * K * D, 33), sh = random_floats(T * D, 34);
  Buffer pb = upload(pairs), sb = upload(sh), yb = g_ctx->create_buffer(T * D * 4);
  for (bool with_shared : {false, true}) {
    Recorder rec(*g_ctx);
    g_ops->moe_combine(rec, {&pb}, with_shared ? Range{&sb} : Range{}, D, K, T, {&yb});
    rec.submit_and_wait();
    auto got = download<float>(yb, T * D);
    for (int t = 0; t < T; ++t)
      for (int d = 0; d < D; ++d) {
        float acc = 0.f;  // the CPU's order: slots, then the shared expert
        for (int k = 0; k < K; ++k) acc += pairs[(t * K + k) * D + d];
        if (with_shared) acc += sh[t * D + d];
        ASSERT_EQ(std::bit_cast<uint32_t>(got[t * D + d]), std::bit_cast<uint32_t>(acc)) << t << " " << d;
      }
  }
}

// One MoE sublayer for a few tokens composed from the ops in one submission, with the
// published files' formats (routed gate/up IQ2_XXS, down Q2_K, shared expert Q8_0): routing
// ids and weights stay on the device from the router to the combine. Compared with the same
// composition on the CPU references; every op is exact except exp() in SwiGLU and the
// routing weights, whose ulp-level differences can move an int8 of the re-quantized hidden
// vector by one step, hence a tolerance instead of equality.
TEST(VulkanOps, MoeSublayerComposition) {
  const int D = 256, F = 256, E = 8, K = 2, T = 3;
  const float lim = 10.f, route_scale = 1.5f;
  auto make = [&](Type t, int n, int rows, int cols, uint32_t seed) {
    const size_t rb = *quant::row_bytes(t, cols);
    std::vector<uint8_t> w(rb * rows * n);
    auto f = random_floats(static_cast<size_t>(n) * rows * cols, seed, 0.08f);
    for (int r = 0; r < n * rows; ++r) quant::quantize_row(t, f.data() + static_cast<size_t>(r) * cols, w.data() + r * rb, cols);
    return w;
  };
  auto gate = make(Type::IQ2_XXS, E, F, D, 50), up = make(Type::IQ2_XXS, E, F, D, 51), down = make(Type::Q2_K, E, D, F, 52);
  auto sgate = make(Type::Q8_0, 1, F, D, 53), sup = make(Type::Q8_0, 1, F, D, 54), sdown = make(Type::Q8_0, 1, D, F, 55);
  auto x = random_floats(T * D, 56), logits = random_floats(T * E, 57, 2.0f), bias = random_floats(E, 58, 0.1f);

  // ---- device ----
  auto dg = DeviceExperts::upload(*g_ctx, Type::IQ2_XXS, E, F, D, gate.data(), 3);
  auto du = DeviceExperts::upload(*g_ctx, Type::IQ2_XXS, E, F, D, up.data(), 3);
  auto dd = DeviceExperts::upload(*g_ctx, Type::Q2_K, E, D, F, down.data(), 3);
  Buffer bsg = upload(sgate), bsu = upload(sup), bsd = upload(sdown);
  const size_t rb_d = *quant::row_bytes(Type::Q8_0, D), rb_f = *quant::row_bytes(Type::Q8_0, F);
  Buffer bx = upload(x), bl = upload(logits), bb = upload(bias);
  const size_t wk = Ops::act_words(Type::IQ2_XXS, D), wkf = Ops::act_words(Type::Q2_K, F);
  const size_t w0 = Ops::act_words(Type::Q8_0, D), w0f = Ops::act_words(Type::Q8_0, F);
  Buffer ids = g_ctx->create_buffer(T * K * 4), wts = g_ctx->create_buffer(T * K * 4);
  Buffer xk = g_ctx->create_buffer(T * wk * 4), x0 = g_ctx->create_buffer(T * w0 * 4);
  Buffer g = g_ctx->create_buffer(T * K * F * 4), u = g_ctx->create_buffer(T * K * F * 4), h = g_ctx->create_buffer(T * K * F * 4);
  Buffer hk = g_ctx->create_buffer(T * K * wkf * 4), pd = g_ctx->create_buffer(T * K * D * 4);
  Buffer sg = g_ctx->create_buffer(T * F * 4), su = g_ctx->create_buffer(T * F * 4), sh = g_ctx->create_buffer(T * F * 4);
  Buffer sh0 = g_ctx->create_buffer(T * w0f * 4), sdo = g_ctx->create_buffer(T * D * 4), y = g_ctx->create_buffer(T * D * 4);
  Recorder rec(*g_ctx);
  g_ops->route_topk(rec, {&bl}, {&bb}, E, K, T, true, route_scale, {&ids}, {&wts});
  g_ops->quantize_act(rec, Type::IQ2_XXS, {&bx}, D, T, D, {&xk}, wk);
  g_ops->quantize_act(rec, Type::Q8_0, {&bx}, D, T, D, {&x0}, w0);
  g_ops->matmul_experts(rec, dg, {&xk}, wk, {&ids}, T * K, K, {&g}, F);
  g_ops->matmul_experts(rec, du, {&xk}, wk, {&ids}, T * K, K, {&u}, F);
  g_ops->swiglu(rec, {&g}, {&u}, {&wts}, F, T * K, F, {&h}, lim);
  g_ops->quantize_act(rec, Type::Q2_K, {&h}, F, T * K, F, {&hk}, wkf);
  g_ops->matmul_experts(rec, dd, {&hk}, wkf, {&ids}, T * K, 1, {&pd}, D);
  g_ops->matmul(rec, DeviceMatrix{Type::Q8_0, F, D, rb_d, &bsg, 0}, {&x0}, w0, T, {&sg}, F);
  g_ops->matmul(rec, DeviceMatrix{Type::Q8_0, F, D, rb_d, &bsu, 0}, {&x0}, w0, T, {&su}, F);
  g_ops->swiglu(rec, {&sg}, {&su}, {}, F, T, F, {&sh}, lim);
  g_ops->quantize_act(rec, Type::Q8_0, {&sh}, F, T, F, {&sh0}, w0f);
  g_ops->matmul(rec, DeviceMatrix{Type::Q8_0, D, F, rb_f, &bsd, 0}, {&sh0}, w0f, T, {&sdo}, D);
  g_ops->moe_combine(rec, {&pd}, {&sdo}, D, K, T, {&y});
  rec.submit_and_wait();
  auto got = download<float>(y, T * D);
  auto got_ids = download<int32_t>(ids, T * K);

  // ---- CPU ----
  const size_t rbg = *quant::row_bytes(Type::IQ2_XXS, D), rbd = *quant::row_bytes(Type::Q2_K, F);
  auto dot = [](Type t, const uint8_t* row, const std::vector<float>& v, int n) {
    std::vector<uint8_t> q(quant::activation_bytes(quant::activation_type(t), n));
    quant::quantize_activations(t, v.data(), q.data(), n);
    return quant::vec_dot(t, row, q.data(), n);
  };
  auto swiglu1 = [&](float gv, float uv) {
    gv = std::min(gv, lim);
    uv = std::clamp(uv, -lim, lim);
    return gv / (1.f + std::exp(-gv)) * uv;
  };
  double worst = 0, ymax = 0;
  for (int t = 0; t < T; ++t) {
    std::vector<float> xt(x.begin() + t * D, x.begin() + (t + 1) * D), pi(E), biased(E);
    for (int e = 0; e < E; ++e) {
      pi[e] = std::sqrt(model::softplus(logits[t * E + e]));
      biased[e] = pi[e] + bias[e];
    }
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + K, order.end(),
                      [&](int a, int b) { return biased[a] > biased[b] || (biased[a] == biased[b] && a < b); });
    float sum = 0;
    for (int k = 0; k < K; ++k) sum += pi[order[k]];
    std::vector<float> yt(D, 0.f);
    for (int k = 0; k < K; ++k) {
      const int e = order[k];
      ASSERT_EQ(got_ids[t * K + k], e);
      const float wkt = pi[e] / std::max(sum, 6.103515625e-05f) * route_scale;
      std::vector<float> hv(F);
      for (int f = 0; f < F; ++f)
        hv[f] = swiglu1(dot(Type::IQ2_XXS, gate.data() + (static_cast<size_t>(e) * F + f) * rbg, xt, D),
                        dot(Type::IQ2_XXS, up.data() + (static_cast<size_t>(e) * F + f) * rbg, xt, D)) * wkt;
      for (int d = 0; d < D; ++d) yt[d] += dot(Type::Q2_K, down.data() + (static_cast<size_t>(e) * D + d) * rbd, hv, F);
    }
    std::vector<float> hs(F);
    for (int f = 0; f < F; ++f)
      hs[f] = swiglu1(dot(Type::Q8_0, sgate.data() + f * rb_d, xt, D), dot(Type::Q8_0, sup.data() + f * rb_d, xt, D));
    for (int d = 0; d < D; ++d) {
      yt[d] += dot(Type::Q8_0, sdown.data() + d * rb_f, hs, F);
      worst = std::max(worst, static_cast<double>(std::fabs(got[t * D + d] - yt[d])));
      ymax = std::max(ymax, static_cast<double>(std::fabs(yt[d])));
    }
  }
  std::cout << "  MoE sublayer: max |gpu-cpu| / max|y| = " << worst / ymax << " (" << rec.dispatches()
            << " dispatches, " << rec.barriers() << " barriers, one submission)\n";
  EXPECT_LE(worst / ymax, 1e-3);
}

// One decode token of an attention sublayer composed from the ops in one submission (Q LoRA
// with norm, per-head norm and RoPE, KV norm/RoPE/FP8 simulation written into a row ring,
// sink attention over the window, inverse RoPE, grouped low-rank output), Q8_0 weights as in
// the published files, against the same composition of CPU references.
TEST(VulkanOps, AttentionSublayerComposition) {
  const int D = 256, H = 4, Dh = 128, R = 64, N = Dh - R, QR = 128, G = 2, OL = 64, cap = 8;
  const int HD = H * Dh, group_in = HD / G;
  const int64_t pos = 5;  // rows 0..4 already in the ring, this token's row goes to slot 5
  const Type t = Type::Q8_0;
  auto make = [&](int rows, int cols, uint32_t seed) {
    const size_t rb = *quant::row_bytes(t, cols);
    std::vector<uint8_t> w(rb * rows);
    auto f = random_floats(static_cast<size_t>(rows) * cols, seed, 0.1f);
    for (int r = 0; r < rows; ++r) quant::quantize_row(t, f.data() + static_cast<size_t>(r) * cols, w.data() + r * rb, cols);
    return w;
  };
  auto wqa = make(QR, D, 60), wqb = make(HD, QR, 61), wkv = make(Dh, D, 62), woa = make(G * OL, group_in, 63),
       wob = make(D, G * OL, 64);
  auto qa_norm = random_floats(QR, 65, 0.3f), kv_norm = random_floats(Dh, 66, 0.3f), sinks = random_floats(H, 67);
  for (auto& v : qa_norm) v += 1.f;
  for (auto& v : kv_norm) v += 1.f;
  auto a = random_floats(D, 68);
  auto ring = random_floats(cap * Dh, 69, 0.5f);
  const auto rope = model::Rope::make(R, 10000.f, false, 0, 1.f, 0.f, 0.f);
  std::vector<float> cs(R);
  Ops::rope_cos_sin(rope.freq.data(), R / 2, &pos, 1, cs.data());
  const float eps = 1e-6f, scale = 1.0f / std::sqrt(static_cast<float>(Dh));
  std::vector<int32_t> window = {0, 1, 2, 3, 4, 5};
  std::vector<int32_t> span = {0, static_cast<int32_t>(window.size())};

  // ---- device ----
  auto rbq = [&](int cols) { return *quant::row_bytes(t, cols); };
  auto words = [&](int n) { return Ops::act_words(t, n); };
  Buffer bqa = upload(wqa), bqb = upload(wqb), bkv = upload(wkv), boa = upload(woa), bob = upload(wob);
  Buffer bqan = upload(qa_norm), bkvn = upload(kv_norm), bsink = upload(sinks), bcs = upload(cs), bwin = upload(window);
  Buffer ba = upload(a), bring = upload(ring), bspan = upload(span);
  Buffer aq = g_ctx->create_buffer(words(D) * 4), qa = g_ctx->create_buffer(QR * 4), kvraw = g_ctx->create_buffer(Dh * 4);
  Buffer cq = g_ctx->create_buffer(QR * 4), cqq = g_ctx->create_buffer(words(QR) * 4), q = g_ctx->create_buffer(HD * 4);
  Buffer qn = g_ctx->create_buffer(HD * 4), k = g_ctx->create_buffer(Dh * 4), scores = g_ctx->create_buffer(H * cap * 4);
  // Each group's operand starts at a binding-aligned offset (devices ask for 4 to 256 bytes).
  const size_t align = g_ctx->binding_alignment();
  const size_t og = (words(group_in) * 4 + align - 1) / align * align / 4;
  Buffer o = g_ctx->create_buffer(HD * 4), oq = g_ctx->create_buffer(G * og * 4);
  Buffer low = g_ctx->create_buffer(G * OL * 4), lowq = g_ctx->create_buffer(words(G * OL) * 4), y = g_ctx->create_buffer(D * 4);
  Recorder rec(*g_ctx);
  g_ops->quantize_act(rec, t, {&ba}, D, 1, D, {&aq}, words(D));
  g_ops->matmul(rec, DeviceMatrix{t, QR, D, rbq(D), &bqa, 0}, {&aq}, words(D), 1, {&qa}, QR);
  g_ops->matmul(rec, DeviceMatrix{t, Dh, D, rbq(D), &bkv, 0}, {&aq}, words(D), 1, {&kvraw}, Dh);
  g_ops->rms_norm(rec, {&qa}, {&bqan}, QR, 1, QR, {&cq}, QR, eps);
  g_ops->quantize_act(rec, t, {&cq}, QR, 1, QR, {&cqq}, words(QR));
  g_ops->matmul(rec, DeviceMatrix{t, HD, QR, rbq(QR), &bqb, 0}, {&cqq}, words(QR), 1, {&q}, HD);
  g_ops->rms_norm(rec, {&q}, {}, Dh, H, Dh, {&qn}, Dh, eps);
  g_ops->rope(rec, {&qn}, {&bcs}, R / 2, H, Dh, N, 0, false);
  g_ops->rms_norm(rec, {&kvraw}, {&bkvn}, Dh, 1, Dh, {&k}, Dh, eps);
  g_ops->rope(rec, {&k}, {&bcs}, R / 2, 1, Dh, N, 0, false);
  g_ops->fp_sim(rec, true, {&k}, N, 1, Dh);
  g_ops->copy(rec, {&k}, {&bring, static_cast<size_t>(pos) * Dh * 4, Dh * 4}, Dh * 4);
  g_ops->attention(rec, {&qn}, {&bring}, {&bwin}, {&bspan}, 1, static_cast<int>(window.size()), {&bsink}, H, Dh, scale,
                   {&scores}, {&o});
  g_ops->rope(rec, {&o}, {&bcs}, R / 2, H, Dh, N, 0, true);
  g_ops->quantize_act(rec, t, {&o}, group_in, G, group_in, {&oq}, og);
  for (int gi = 0; gi < G; ++gi)
    g_ops->matmul(rec, DeviceMatrix{t, OL, group_in, rbq(group_in), &boa, static_cast<size_t>(gi) * OL * rbq(group_in)},
                  {&oq, gi * og * 4, words(group_in) * 4}, words(group_in), 1, {&low}, G * OL,
                  static_cast<size_t>(gi) * OL);
  g_ops->quantize_act(rec, t, {&low}, G * OL, 1, G * OL, {&lowq}, words(G * OL));
  g_ops->matmul(rec, DeviceMatrix{t, D, G * OL, rbq(G * OL), &bob, 0}, {&lowq}, words(G * OL), 1, {&y}, D);
  rec.submit_and_wait();
  auto got = download<float>(y, D);

  // ---- CPU ----
  auto mv = [&](const std::vector<uint8_t>& w, size_t off, int rows, int cols, const float* x, float* out) {
    std::vector<uint8_t> xq(words(cols) * 4);
    quant::quantize_activations(t, x, xq.data(), cols);
    for (int r = 0; r < rows; ++r) out[r] = quant::vec_dot(t, w.data() + off + r * rbq(cols), xq.data(), cols);
  };
  std::vector<float> cqa(QR), ckv(Dh), ccq(QR), cqv(HD), ck(Dh), co(HD), clow(G * OL), cy(D);
  mv(wqa, 0, QR, D, a.data(), cqa.data());
  mv(wkv, 0, Dh, D, a.data(), ckv.data());
  model::rms_norm(cqa.data(), qa_norm.data(), ccq.data(), QR, eps);
  mv(wqb, 0, HD, QR, ccq.data(), cqv.data());
  for (int h = 0; h < H; ++h) {
    model::rms_norm(cqv.data() + h * Dh, nullptr, cqv.data() + h * Dh, Dh, eps);
    rope.apply(cqv.data() + h * Dh + N, pos);
  }
  model::rms_norm(ckv.data(), kv_norm.data(), ck.data(), Dh, eps);
  rope.apply(ck.data() + N, pos);
  model::fp8_sim64(ck.data(), N);
  auto cring = ring;
  std::copy(ck.begin(), ck.end(), cring.begin() + pos * Dh);
  std::vector<const float*> rows;
  for (int i : window) rows.push_back(cring.data() + i * Dh);
  std::vector<float> sc(window.size());
  cpu::attend_heads_scalar(cqv.data(), 0, H, Dh, rows.data(), static_cast<int>(rows.size()), sinks.data(), scale,
                           co.data(), sc.data());
  for (int h = 0; h < H; ++h) rope.apply(co.data() + h * Dh + N, pos, true);
  for (int gi = 0; gi < G; ++gi)
    mv(woa, static_cast<size_t>(gi) * OL * rbq(group_in), OL, group_in, co.data() + gi * group_in, clow.data() + gi * OL);
  mv(wob, 0, D, G * OL, clow.data(), cy.data());
  double worst = 0, ymax = 0;
  for (int d = 0; d < D; ++d) {
    worst = std::max(worst, static_cast<double>(std::fabs(got[d] - cy[d])));
    ymax = std::max(ymax, static_cast<double>(std::fabs(cy[d])));
  }
  std::cout << "  attention sublayer: max |gpu-cpu| / max|y| = " << worst / ymax << " (" << rec.dispatches()
            << " dispatches, " << rec.barriers() << " barriers, one submission)\n";
  EXPECT_LE(worst / ymax, 1e-3);
}

// One decode step of a ratio-4 compressor (the indexer's flavour, FP simulation off) on the
// device in one submission: the token's kv row and gate+ape score row written into the state,
// gated pooling over the 8 candidate rows, the window shift, norm, RoPE at the compressed
// row's position, Hadamard, appended to the compressed rows; against the forward pass's
// compressor step done with the CPU references. The state rows must match exactly.
TEST(VulkanOps, CompressorStepComposition) {
  const int r = 4, d = 128, width = 2 * d, R = 64, n_rows = 5;
  const int64_t pos = 23;  // phase 3: the step that completes compressed row 5
  const int phase = static_cast<int>(pos % r), rho = 4 + phase;
  auto kv_state = random_floats(8 * width, 70), score_state = random_floats(8 * width, 71, 2.0f);
  auto ape = random_floats(r * width, 72, 0.5f), kv_in = random_floats(width, 73), gate = random_floats(width, 74, 2.0f);
  auto norm = random_floats(d, 75, 0.2f);
  for (auto& v : norm) v += 1.f;
  auto rows = random_floats((n_rows + 1) * d, 76);
  const auto rope = model::Rope::make(R, 160000.f, true, 65536, 16.f, 32.f, 1.f);
  const int64_t rpos = static_cast<int64_t>(r) * n_rows;
  std::vector<float> cs(R);
  Ops::rope_cos_sin(rope.freq.data(), R / 2, &rpos, 1, cs.data());
  const float eps = 1e-6f;

  Buffer bkv = upload(kv_state), bsc = upload(score_state), bape = upload(ape), bin = upload(kv_in), bg = upload(gate);
  Buffer bnorm = upload(norm), brows = upload(rows), bcs = upload(cs);
  Buffer P = g_ctx->create_buffer(d * 4), z = g_ctx->create_buffer(d * 4);
  const size_t row_bytes = width * 4;
  Recorder rec(*g_ctx);
  g_ops->copy(rec, {&bin}, {&bkv, rho * row_bytes, row_bytes}, row_bytes);
  g_ops->add(rec, {&bg}, {&bape, phase * row_bytes, row_bytes}, {&bsc, rho * row_bytes, row_bytes}, width);
  g_ops->compressor_pool(rec, {&bkv}, {&bsc}, r, d, width, {&P});
  g_ops->copy(rec, {&bkv, 4 * row_bytes, 4 * row_bytes}, {&bkv, 0, 4 * row_bytes}, 4 * row_bytes);
  g_ops->copy(rec, {&bsc, 4 * row_bytes, 4 * row_bytes}, {&bsc, 0, 4 * row_bytes}, 4 * row_bytes);
  g_ops->rms_norm(rec, {&P}, {&bnorm}, d, 1, d, {&z}, d, eps);
  g_ops->rope(rec, {&z}, {&bcs}, R / 2, 1, d, d - R, 0, false);
  g_ops->hadamard(rec, {&z}, d, 1, d);
  g_ops->copy(rec, {&z}, {&brows, static_cast<size_t>(n_rows) * d * 4, d * 4u}, d * 4);
  rec.submit_and_wait();
  auto got_kv = download<float>(bkv, 8 * width), got_sc = download<float>(bsc, 8 * width);
  auto got_rows = download<float>(brows, (n_rows + 1) * d);

  // CPU: the forward pass's compressor_step with the CPU references.
  auto kv = kv_state, sc = score_state;
  for (int j = 0; j < width; ++j) {
    kv[rho * width + j] = kv_in[j];
    sc[rho * width + j] = gate[j] + ape[phase * width + j];
  }
  std::vector<float> Pc(d), zc(d);
  for (int j = 0; j < d; ++j) {
    auto at = [&](int m, const std::vector<float>& buf) { return m < 4 ? buf[m * width + j] : buf[m * width + d + j]; };
    float mx = -INFINITY;
    for (int m = 0; m < 8; ++m) mx = std::max(mx, at(m, sc));
    float e[8], zsum = 0.f, acc = 0.f;
    for (int m = 0; m < 8; ++m) zsum += (e[m] = std::exp(at(m, sc) - mx));
    for (int m = 0; m < 8; ++m) acc += (e[m] / zsum) * at(m, kv);
    Pc[j] = acc;
  }
  std::copy(kv.begin() + 4 * width, kv.end(), kv.begin());
  std::copy(sc.begin() + 4 * width, sc.end(), sc.begin());
  model::rms_norm(Pc.data(), norm.data(), zc.data(), d, eps);
  rope.apply(zc.data() + d - R, rpos);
  model::hadamard_scaled(zc.data(), d);
  for (int i = 0; i < 8 * width; ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(got_kv[i]), std::bit_cast<uint32_t>(kv[i])) << "kv state " << i;
    ASSERT_EQ(std::bit_cast<uint32_t>(got_sc[i]), std::bit_cast<uint32_t>(sc[i])) << "score state " << i;
  }
  for (int i = 0; i < n_rows * d; ++i) ASSERT_EQ(got_rows[i], rows[i]) << "earlier compressed rows untouched";
  double worst = 0, zmax = 0;
  for (int j = 0; j < d; ++j) {
    worst = std::max(worst, static_cast<double>(std::fabs(got_rows[n_rows * d + j] - zc[j])));
    zmax = std::max(zmax, static_cast<double>(std::fabs(zc[j])));
  }
  std::cout << "  compressor step: new row max |gpu-cpu| / max|z| = " << worst / zmax << " (" << rec.dispatches()
            << " dispatches, " << rec.barriers() << " barriers)\n";
  EXPECT_LE(worst / zmax, 1e-5);
}

// The hyper-connection pre step of a block for a few tokens (model forward hc_pre): the mix
// projection of the flattened streams (F32 weights), scaled by the streams' RMS factor,
// Sinkhorn, then the pre-weighted sum of the streams; against the CPU references.
TEST(VulkanOps, HcPreComposition) {
  const int hc = 4, D = 256, T = 3, mixn = (2 + hc) * hc, iters = 20;
  const float eps = 1e-6f, hc_eps = 1e-6f;
  auto X = random_floats(T * hc * D, 80), fn = random_floats(mixn * hc * D, 81, 0.05f);
  auto base = random_floats(mixn, 82, 0.3f);
  std::vector<float> scale3 = {0.8f, 1.1f, 0.6f};
  Buffer bX = upload(X), bfn = upload(fn), bbase = upload(base), bs3 = upload(scale3);
  Buffer m = g_ctx->create_buffer(T * mixn * 4), f = g_ctx->create_buffer(T * 4);
  Buffer gates = g_ctx->create_buffer(T * mixn * 4), u = g_ctx->create_buffer(T * D * 4);
  Recorder rec(*g_ctx);
  g_ops->matmul(rec, DeviceMatrix{Type::F32, mixn, hc * D, static_cast<size_t>(hc * D) * 4, &bfn, 0}, {&bX}, hc * D, T,
                {&m}, mixn);
  g_ops->rms_factor(rec, {&bX}, hc * D, T, hc * D, {&f}, eps);
  g_ops->hc_sinkhorn(rec, {&m}, {&bs3}, {&bbase}, hc, iters, hc_eps, T, {&gates}, {&f});
  g_ops->hc_mix(rec, false, {&bX}, {&gates}, {}, hc, D, T, {&u});
  rec.submit_and_wait();
  auto got_g = download<float>(gates, T * mixn), got_u = download<float>(u, T * D);
  const auto& k = quant::scalar::kernels();
  double worst_g = 0, worst_u = 0;
  for (int t = 0; t < T; ++t) {
    const float* x = X.data() + t * hc * D;
    std::vector<float> mt(mixn), pre(hc), post(hc), comb(hc * hc);
    for (int i = 0; i < mixn; ++i) mt[i] = k.dot_f32(fn.data() + i * hc * D, x, hc * D);
    const float fac = model::rms_factor(x, hc * D, eps);
    for (auto& v : mt) v *= fac;
    model::hc_split_sinkhorn(mt.data(), scale3.data(), base.data(), hc, iters, hc_eps, pre.data(), post.data(),
                             comb.data());
    std::vector<float> want(mixn);
    std::copy(pre.begin(), pre.end(), want.begin());
    std::copy(post.begin(), post.end(), want.begin() + hc);
    std::copy(comb.begin(), comb.end(), want.begin() + 2 * hc);
    for (int i = 0; i < mixn; ++i)
      worst_g = std::max(worst_g, static_cast<double>(std::fabs(got_g[t * mixn + i] - want[i]) / std::fabs(want[i])));
    for (int d = 0; d < D; ++d) {
      float acc = 0.f;
      for (int s2 = 0; s2 < hc; ++s2) acc += pre[s2] * x[s2 * D + d];
      worst_u = std::max(worst_u, static_cast<double>(std::fabs(got_u[t * D + d] - acc)));
    }
  }
  std::cout << "  hc_pre: gates max rel err " << worst_g << ", mixed stream max abs err " << worst_u << "\n";
  EXPECT_LE(worst_g, 1e-5);
  EXPECT_LE(worst_u, 1e-5);
}

// The output head for a few tokens (model forward head): stream weights from the F32 hc
// projection scaled by the RMS factor, the weighted stream sum, the final norm, the Q8_0
// vocabulary projection (rows split over bindings); against the CPU references.
TEST(VulkanOps, HeadComposition) {
  const int hc = 4, D = 256, T = 2, vocab = 300;
  const float eps = 1e-6f, hc_eps = 1e-6f, hscale = 0.9f;
  auto X = random_floats(T * hc * D, 90), hfn = random_floats(hc * hc * D, 91, 0.05f);
  auto hbase = random_floats(hc, 92, 0.3f), hnorm = random_floats(D, 93, 0.2f);
  for (auto& v : hnorm) v += 1.f;
  const size_t rb = *quant::row_bytes(Type::Q8_0, D);
  std::vector<uint8_t> out(rb * vocab);
  auto of = random_floats(vocab * D, 94, 0.1f);
  for (int r = 0; r < vocab; ++r) quant::quantize_row(Type::Q8_0, of.data() + r * D, out.data() + r * rb, D);
  const size_t w0 = Ops::act_words(Type::Q8_0, D);
  BindingLimit limit(64 * 1024);  // the vocabulary projection in several dispatches
  Buffer bX = upload(X), bfn = upload(hfn), bbase = upload(hbase), bnorm = upload(hnorm), bout = upload(out);
  Buffer m = g_ctx->create_buffer(T * hc * 4), f = g_ctx->create_buffer(T * 4), gates = g_ctx->create_buffer(T * (2 + hc) * hc * 4);
  Buffer h = g_ctx->create_buffer(T * D * 4), hn = g_ctx->create_buffer(T * D * 4), hq = g_ctx->create_buffer(T * w0 * 4);
  Buffer logits = g_ctx->create_buffer(T * vocab * 4);
  Recorder rec(*g_ctx);
  g_ops->matmul(rec, DeviceMatrix{Type::F32, hc, hc * D, static_cast<size_t>(hc * D) * 4, &bfn, 0}, {&bX}, hc * D, T,
                {&m}, hc);
  g_ops->rms_factor(rec, {&bX}, hc * D, T, hc * D, {&f}, eps);
  g_ops->hc_head_gates(rec, {&m}, {&f}, {&bbase}, hc, hscale, hc_eps, T, {&gates});
  g_ops->hc_mix(rec, false, {&bX}, {&gates}, {}, hc, D, T, {&h});
  g_ops->rms_norm(rec, {&h}, {&bnorm}, D, T, D, {&hn}, D, eps);
  g_ops->quantize_act(rec, Type::Q8_0, {&hn}, D, T, D, {&hq}, w0);
  g_ops->matmul(rec, DeviceMatrix{Type::Q8_0, vocab, D, rb, &bout, 0}, {&hq}, w0, T, {&logits}, vocab);
  rec.submit_and_wait();
  auto got = download<float>(logits, T * vocab);
  const auto& k = quant::scalar::kernels();
  double worst = 0, lmax = 0;
  int top_agree = 0;
  for (int t = 0; t < T; ++t) {
    const float* x = X.data() + t * hc * D;
    const float fac = model::rms_factor(x, hc * D, eps);
    std::vector<float> ht(D, 0.f), hnt(D), want(vocab);
    for (int s2 = 0; s2 < hc; ++s2) {
      const float ws = model::sigmoid(k.dot_f32(hfn.data() + s2 * hc * D, x, hc * D) * fac * hscale + hbase[s2]) + hc_eps;
      for (int d = 0; d < D; ++d) ht[d] += ws * x[s2 * D + d];
    }
    model::rms_norm(ht.data(), hnorm.data(), hnt.data(), D, eps);
    std::vector<uint8_t> xq(w0 * 4);
    quant::quantize_activations(Type::Q8_0, hnt.data(), xq.data(), D);
    for (int r = 0; r < vocab; ++r) {
      want[r] = k.dot_q8_0(reinterpret_cast<const quant::block_q8_0*>(out.data() + r * rb),
                           reinterpret_cast<const quant::block_q8_0_act*>(xq.data()), D);
      worst = std::max(worst, static_cast<double>(std::fabs(got[t * vocab + r] - want[r])));
      lmax = std::max(lmax, static_cast<double>(std::fabs(want[r])));
    }
    top_agree += std::max_element(want.begin(), want.end()) - want.begin() ==
                 std::max_element(got.begin() + t * vocab, got.begin() + (t + 1) * vocab) - (got.begin() + t * vocab);
  }
  EXPECT_GT(rec.dispatches(), 7u);
  std::cout << "  head: logits max |gpu-cpu| / max|logit| = " << worst / lmax << ", top-1 agree " << top_agree << "/" << T
            << "\n";
  EXPECT_LE(worst / lmax, 1e-3);
  EXPECT_EQ(top_agree, T);
}

// A decode step recorded once and submitted for three consecutive tokens: the per-token
// inputs (the token's vector, its RoPE table, its ring slot, the visible rows) live in
// host-visible buffers the host rewrites between submissions; the KV row lands in the ring
// slot read on the device. Each step is compared with the CPU chain, whose ring evolves too.
TEST(VulkanRuntime, DecodeStepRecordedOnceRunsManyTokens) {
  const int D = 256, Dh = 128, R = 64, N = Dh - R, H = 2, cap = 8;
  const Type t = Type::Q8_0;
  const size_t rb = *quant::row_bytes(t, D);
  auto make = [&](int rows, uint32_t seed) {
    std::vector<uint8_t> w(rb * rows);
    auto f = random_floats(static_cast<size_t>(rows) * D, seed, 0.1f);
    for (int r = 0; r < rows; ++r) quant::quantize_row(t, f.data() + static_cast<size_t>(r) * D, w.data() + r * rb, D);
    return w;
  };
  auto wk = make(Dh, 100), wq = make(H * Dh, 101);
  auto ring0 = random_floats(cap * Dh, 102, 0.5f), sinks = random_floats(H, 103);
  const auto rope = model::Rope::make(R, 10000.f, false, 0, 1.f, 0.f, 0.f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
  const size_t words = Ops::act_words(t, D);

  Buffer bwk = upload(wk), bwq = upload(wq), ring = upload(ring0), bs = upload(sinks);
  Buffer hx = g_ctx->create_host_buffer(D * 4), hcs = g_ctx->create_host_buffer(R * 4);
  Buffer hslot = g_ctx->create_host_buffer(4), hidx = g_ctx->create_host_buffer(cap * 4), hspan = g_ctx->create_host_buffer(8);
  ASSERT_TRUE(hx.mapped() && hcs.mapped() && hslot.mapped() && hidx.mapped() && hspan.mapped());
  Buffer xq = g_ctx->create_buffer(words * 4), k = g_ctx->create_buffer(Dh * 4), q = g_ctx->create_buffer(H * Dh * 4);
  Buffer scores = g_ctx->create_buffer(H * cap * 4), out = g_ctx->create_buffer(H * Dh * 4);
  Recorder rec(*g_ctx);
  g_ops->quantize_act(rec, t, {&hx}, D, 1, D, {&xq}, words);
  g_ops->matmul(rec, DeviceMatrix{t, Dh, D, rb, &bwk, 0}, {&xq}, words, 1, {&k}, Dh);
  g_ops->rope(rec, {&k}, {&hcs}, R / 2, 1, Dh, N, 0, false);
  g_ops->scatter_row(rec, {&k}, {&hslot}, 0, Dh, cap, {&ring});
  g_ops->matmul(rec, DeviceMatrix{t, H * Dh, D, rb, &bwq, 0}, {&xq}, words, 1, {&q}, H * Dh);
  g_ops->rope(rec, {&q}, {&hcs}, R / 2, H, Dh, N, 0, false);
  g_ops->attention(rec, {&q}, {&ring}, {&hidx}, {&hspan}, 1, cap, {&bs}, H, Dh, scale, {&scores}, {&out});

  auto cring = ring0;
  for (int step = 0; step < 3; ++step) {
    const int64_t pos = 4 + step;
    auto x = random_floats(D, 110 + step);
    std::vector<float> cs(R);
    Ops::rope_cos_sin(rope.freq.data(), R / 2, &pos, 1, cs.data());
    const int32_t slot = static_cast<int32_t>(pos % cap);
    std::vector<int32_t> idx(cap, 0);
    for (int i = 0; i <= pos; ++i) idx[i] = i;
    const int32_t span[2] = {0, static_cast<int32_t>(pos + 1)};
    std::memcpy(hx.mapped(), x.data(), D * 4);
    std::memcpy(hcs.mapped(), cs.data(), R * 4);
    std::memcpy(hslot.mapped(), &slot, 4);
    std::memcpy(hidx.mapped(), idx.data(), cap * 4);
    std::memcpy(hspan.mapped(), span, 8);
    rec.submit_and_wait();
    auto got = download<float>(out, H * Dh);

    std::vector<uint8_t> cxq(words * 4);
    quant::quantize_activations(t, x.data(), cxq.data(), D);
    std::vector<float> ck(Dh), cq(H * Dh), co(H * Dh), sc(pos + 1);
    for (int r = 0; r < Dh; ++r) ck[r] = quant::vec_dot(t, wk.data() + r * rb, cxq.data(), D);
    for (int r = 0; r < H * Dh; ++r) cq[r] = quant::vec_dot(t, wq.data() + r * rb, cxq.data(), D);
    rope.apply(ck.data() + N, pos);
    for (int h = 0; h < H; ++h) rope.apply(cq.data() + h * Dh + N, pos);
    std::copy(ck.begin(), ck.end(), cring.begin() + slot * Dh);
    std::vector<const float*> rows;
    for (int i = 0; i <= pos; ++i) rows.push_back(cring.data() + i * Dh);
    cpu::attend_heads_scalar(cq.data(), 0, H, Dh, rows.data(), static_cast<int>(rows.size()), sinks.data(), scale,
                             co.data(), sc.data());
    double worst = 0, omax = 0;
    for (int i = 0; i < H * Dh; ++i) {
      worst = std::max(worst, static_cast<double>(std::fabs(got[i] - co[i])));
      omax = std::max(omax, static_cast<double>(std::fabs(co[i])));
    }
    EXPECT_LE(worst / omax, 1e-5) << "step " << step;
    auto ring_now = download<float>(ring, cap * Dh);
    for (int i = 0; i < Dh; ++i) EXPECT_NEAR(ring_now[slot * Dh + i], ck[i], 1e-6f * (1.f + std::fabs(ck[i]))) << step;
  }
  EXPECT_EQ(rec.dispatches(), 7u);  // recorded once, not per token
}

}  // namespace
}  // namespace ds4::vulkan

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new ds4::vulkan::VulkanEnv);
  return RUN_ALL_TESTS();
}
