// CPU backend pieces: thread pool, scratch arena, batched matrix products and the attention
// kernel. The products are checked against the scalar reference kernels, and for exact
// independence from batching, tiling and thread count (the engine's determinism contract).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cpu/arena.h"
#include "cpu/attention.h"
#include "cpu/float_dots.h"
#include "cpu/matmul.h"
#include "cpu/thread_pool.h"
#include "quant/quant.h"
#include "test_seed.h"

namespace ds4::cpu {
namespace {

// ---- thread pool ------------------------------------------------------------------------

TEST(ThreadPool, RunTasksCoversEveryTaskOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(PoolOptions{threads, false});
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {1, 2, 7, 1000}) {
      std::vector<std::atomic<int>> hits(n);
      std::atomic<int> bad_thread{0};
      pool.run_tasks(n, [&](int64_t t, int th) {
        hits[t].fetch_add(1);
        if (th < 0 || th >= threads) bad_thread.fetch_add(1);
      });
      for (int64_t t = 0; t < n; ++t) ASSERT_EQ(hits[t].load(), 1) << "threads " << threads << " task " << t;
      EXPECT_EQ(bad_thread.load(), 0);
    }
  }
}

TEST(ThreadPool, ParallelForSlicesAreDisjointAndComplete) {
  ThreadPool pool(PoolOptions{3, false});
  for (int64_t n : {1, 2, 3, 10, 1001}) {
    for (int64_t min_per : {1, 4, 600}) {
      std::vector<std::atomic<int>> hits(n);
      pool.parallel_for(n, [&](int64_t b, int64_t e) {
        EXPECT_LE(b, e);
        for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
      }, min_per);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n " << n << " i " << i;
    }
  }
}

TEST(ThreadPool, NestedCallsRunSeriallyAndFinish) {
  ThreadPool pool(PoolOptions{2, false});
  std::atomic<int64_t> sum{0};
  pool.run_tasks(4, [&](int64_t t, int) {
    pool.parallel_for(100, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum.fetch_add(t * 1000 + i);
    });
  });
  int64_t want = 0;
  for (int64_t t = 0; t < 4; ++t)
    for (int64_t i = 0; i < 100; ++i) want += t * 1000 + i;
  EXPECT_EQ(sum.load(), want);
}

TEST(ThreadPool, WakesSleepingWorkers) {
  ThreadPool pool(PoolOptions{2, true});
  for (int round = 0; round < 3; ++round) {
    // Long enough for the workers to stop spinning and sleep.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::atomic<int> hits{0};
    pool.run_tasks(64, [&](int64_t, int) { hits.fetch_add(1); });
    EXPECT_EQ(hits.load(), 64);
  }
}

TEST(ThreadPool, TaskExceptionsReachTheCallerAndThePoolStaysUsable) {
  ThreadPool pool(PoolOptions{2, false});
  for (int round = 0; round < 3; ++round) {
    EXPECT_THROW(pool.run_tasks(100, [&](int64_t t, int) {
      if (t == 50) throw std::runtime_error("task failed");
    }), std::runtime_error);
    EXPECT_THROW(pool.parallel_for(100, [&](int64_t b, int64_t) {
      if (b > 0) throw std::runtime_error("slice failed");
    }), std::runtime_error);
  }
  std::atomic<int> hits{0};
  pool.run_tasks(10, [&](int64_t, int) { hits.fetch_add(1); });
  EXPECT_EQ(hits.load(), 10);
}

TEST(ThreadPool, QuickDestructionDoesNotHang) {
  for (int i = 0; i < 50; ++i) ThreadPool pool(PoolOptions{3, i % 2 == 0});
}

TEST(ThreadPool, DefaultSizeIsPositive) {
  ThreadPool pool(PoolOptions{0, false});
  EXPECT_GE(pool.size(), 1);
  EXPECT_FALSE(pool.pinned());
}

// ---- arena ------------------------------------------------------------------------------

TEST(Arena, AlignedFramesReleaseAndReuse) {
  Arena a;
  void* first;
  {
    Arena::Frame f(a);
    first = a.alloc_bytes(100);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 64, 0u);
    void* second = a.alloc_bytes(3);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(second) % 64, 0u);
    EXPECT_NE(first, second);
    // Bigger than the first block: a second block, then coalesced on release.
    char* big = a.alloc<char>(size_t{5} << 20);
    std::memset(big, 1, size_t{5} << 20);
  }
  EXPECT_GE(a.high_water_bytes(), (size_t{5} << 20));
  const size_t cap = a.capacity_bytes();
  EXPECT_GE(cap, (size_t{5} << 20));
  {
    Arena::Frame f(a);
    void* p = a.alloc_bytes(size_t{5} << 20);
    void* q = a.alloc_bytes(128);
    EXPECT_NE(p, q);
  }
  EXPECT_EQ(a.capacity_bytes(), cap);  // steady state: nothing new allocated
  {
    Arena::Frame outer(a);
    void* p = a.alloc_bytes(64);
    {
      Arena::Frame inner(a);
      a.alloc_bytes(1000);
    }
    void* q = a.alloc_bytes(64);
    EXPECT_EQ(static_cast<char*>(q) - static_cast<char*>(p), 64);  // inner frame released
  }
}

// ---- matrix products ------------------------------------------------------------------------

struct Weights {
  quant::Type type;
  int64_t in, out;
  uint64_t row_bytes;
  std::vector<uint8_t> data;
  MatView view() const { return MatView{data.data(), type, in, out, row_bytes}; }
};

Weights random_weights(quant::Type t, int64_t in, int64_t out, std::mt19937& rng) {
  Weights w{t, in, out, *quant::row_bytes(t, in), {}};
  w.data.resize(w.row_bytes * out);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> row(in);
  for (int64_t r = 0; r < out; ++r) {
    for (auto& v : row) v = g(rng);
    quant::quantize_row(t, row.data(), w.data.data() + r * w.row_bytes, in);
  }
  return w;
}

std::vector<float> random_vectors(int64_t n, int64_t len, std::mt19937& rng) {
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> x(n * len);
  for (auto& v : x) v = g(rng);
  return x;
}

// Reference: each output the scalar kernel's dot of the row with the vector quantized by the
// reference quantizer.
float reference_dot(const Weights& w, int64_t r, const float* x) {
  const quant::ActType act = quant::activation_type(w.type);
  std::vector<uint8_t> xq(quant::activation_bytes(act, w.in));
  const quant::Kernels& s = quant::scalar::kernels();
  const uint8_t* row = w.data.data() + r * w.row_bytes;
  switch (w.type) {
    case quant::Type::F32: return s.dot_f32(reinterpret_cast<const float*>(row), x, w.in);
    case quant::Type::F16: return s.dot_f16(reinterpret_cast<const uint16_t*>(row), x, w.in);
    case quant::Type::Q8_0: {
      auto* q = reinterpret_cast<quant::block_q8_0_act*>(xq.data());
      s.quantize_act_q8_0(x, q, w.in);
      return s.dot_q8_0(reinterpret_cast<const quant::block_q8_0*>(row), q, w.in);
    }
    default: {
      auto* q = reinterpret_cast<quant::block_q8_K*>(xq.data());
      s.quantize_act_q8_K(x, q, w.in);
      if (w.type == quant::Type::Q2_K) return s.dot_q2_K(reinterpret_cast<const quant::block_q2_K*>(row), q, w.in);
      if (w.type == quant::Type::Q4_K) return s.dot_q4_K(reinterpret_cast<const quant::block_q4_K*>(row), q, w.in);
      return s.dot_iq2_xxs(reinterpret_cast<const quant::block_iq2_xxs*>(row), q, w.in);
    }
  }
}

class MatmulTest : public ::testing::TestWithParam<quant::Type> {};

TEST_P(MatmulTest, BatchMatchesScalarReferenceAndIsThreadIndependent) {
  const quant::Type t = GetParam();
  std::mt19937 rng(ds4::testdata::test_seed(7 + static_cast<int>(t)));
  const int64_t in = 512;
  // Two products sharing one input (one quantization), a third with its own input, and a
  // range of batch sizes crossing the vector tile (32).
  const Weights w0 = random_weights(t, in, 67, rng), w1 = random_weights(t, in, 5, rng),
                w2 = random_weights(t, in, 130, rng);
  for (int64_t n_vec : {1, 3, 33, 70}) {
    const std::vector<float> xa = random_vectors(n_vec, in + 8, rng), xb = random_vectors(n_vec, in, rng);
    std::vector<std::vector<float>> runs;
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(PoolOptions{threads, false});
      Arena arena;
      std::vector<float> y0(n_vec * 70, -1.f), y1(n_vec * 5), y2(n_vec * 130);
      std::vector<MatMul> jobs = {
          MatMul{w0.view(), xa.data(), in + 8, n_vec, y0.data(), 70},
          MatMul{w1.view(), xa.data(), in + 8, n_vec, y1.data(), 5},
          MatMul{w2.view(), xb.data(), in, n_vec, y2.data(), 130},
      };
      matmul_batch(pool, arena, jobs);
      for (int64_t v = 0; v < n_vec; ++v) {
        EXPECT_EQ(y0[v * 70 + 67], -1.f) << "wrote past the rows";
        for (int64_t r = 0; r < 67; ++r) {
          const float ref = reference_dot(w0, r, xa.data() + v * (in + 8));
          ASSERT_NEAR(y0[v * 70 + r], ref, 1e-4f * (1.f + std::fabs(ref))) << "v " << v << " r " << r;
        }
        for (int64_t r = 0; r < 5; ++r) {
          const float ref = reference_dot(w1, r, xa.data() + v * (in + 8));
          ASSERT_NEAR(y1[v * 5 + r], ref, 1e-4f * (1.f + std::fabs(ref)));
        }
        for (int64_t r = 0; r < 130; ++r) {
          const float ref = reference_dot(w2, r, xb.data() + v * in);
          ASSERT_NEAR(y2[v * 130 + r], ref, 1e-4f * (1.f + std::fabs(ref)));
        }
      }
      std::vector<float> all = y0;
      all.insert(all.end(), y1.begin(), y1.end());
      all.insert(all.end(), y2.begin(), y2.end());
      runs.push_back(all);
    }
    for (size_t i = 1; i < runs.size(); ++i)
      ASSERT_EQ(0, std::memcmp(runs[0].data(), runs[i].data(), runs[0].size() * sizeof(float)))
          << "results differ between thread counts, n_vec " << n_vec;
    // A batch of n vectors gives each vector exactly what a single-vector product gives.
    ThreadPool pool(PoolOptions{2, false});
    Arena arena;
    for (int64_t v = 0; v < n_vec; ++v) {
      std::vector<float> y(130);
      matmul(pool, arena, w2.view(), xb.data() + v * in, 1, in, y.data(), 130);
      const float* batched = runs[0].data() + n_vec * 70 + n_vec * 5 + v * 130;
      ASSERT_EQ(0, std::memcmp(y.data(), batched, 130 * sizeof(float))) << "v " << v;
    }
  }
}

TEST_P(MatmulTest, PreQuantizedOperandsGiveTheSameResults) {
  const quant::Type t = GetParam();
  if (quant::activation_type(t) == quant::ActType::F32) GTEST_SKIP() << "float weights take f32 inputs";
  std::mt19937 rng(ds4::testdata::test_seed(11));
  const int64_t in = 256, n_vec = 9;
  const Weights w = random_weights(t, in, 40, rng);
  const std::vector<float> x = random_vectors(n_vec, in, rng);
  const size_t ab = quant::activation_bytes(quant::activation_type(t), in);
  std::vector<uint8_t> xq(ab * n_vec);
  for (int64_t v = 0; v < n_vec; ++v) quant::quantize_activations(t, x.data() + v * in, xq.data() + v * ab, in);
  ThreadPool pool(PoolOptions{2, false});
  Arena arena;
  std::vector<float> ya(n_vec * 40), yb(n_vec * 40);
  matmul(pool, arena, w.view(), x.data(), n_vec, in, ya.data(), 40);
  MatMul j{w.view(), nullptr, 0, n_vec, yb.data(), 40};
  j.xq = xq.data();
  j.xq_stride = ab;
  matmul_batch(pool, arena, &j, 1);
  EXPECT_EQ(0, std::memcmp(ya.data(), yb.data(), ya.size() * sizeof(float)));
}

// IQ2_XXS rows re-encoded by quant::iq2_xxs_repack and flagged in the view give the plain
// products bit for bit: one vector (decode), a few and more than a vector tile (row tiles).
TEST(Matmul, RepackedIQ2XXSEqualsPlain) {
  std::mt19937 rng(23);
  const int64_t in = 768, out = 45;
  const Weights w = random_weights(quant::Type::IQ2_XXS, in, out, rng);
  Weights r = w;
  quant::iq2_xxs_repack(reinterpret_cast<quant::block_iq2_xxs*>(r.data.data()),
                        static_cast<int64_t>(r.data.size() / sizeof(quant::block_iq2_xxs)));
  MatView rv = r.view();
  rv.iq2_repacked = true;
  ThreadPool pool(PoolOptions{2, false});
  Arena arena;
  for (int64_t n_vec : {1, 5, 40}) {
    const std::vector<float> x = random_vectors(n_vec, in, rng);
    std::vector<float> ya(n_vec * out), yb(n_vec * out);
    matmul(pool, arena, w.view(), x.data(), n_vec, in, ya.data(), out);
    matmul(pool, arena, rv, x.data(), n_vec, in, yb.data(), out);
    EXPECT_EQ(0, std::memcmp(ya.data(), yb.data(), ya.size() * sizeof(float))) << "n_vec " << n_vec;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, MatmulTest,
                         ::testing::Values(quant::Type::F32, quant::Type::F16, quant::Type::Q8_0, quant::Type::Q2_K,
                                           quant::Type::Q4_K, quant::Type::IQ2_XXS),
                         [](const ::testing::TestParamInfo<quant::Type>& i) {
                           return std::string(quant::type_name(i.param));
                         });

// ---- attention --------------------------------------------------------------------------

// The pair dots stand in for two single dots in prefill products and attention scores:
// each output must be the single dot's float, bit for bit, at every length the callers pass
// (multiples of 8, with and without a 32-wide remainder).
TEST(FloatDots, PairsEqualTheSingleDotsBitForBit) {
  const FloatDots* fd = float_dots();
  if (!fd) GTEST_SKIP() << "no pair kernels beside this CPU's dot kernels";
  const quant::Kernels& k = quant::kernels();
  std::mt19937 rng(ds4::testdata::test_seed(41));
  std::normal_distribution<float> g(0.f, 1.f);
  for (int64_t n : {8, 24, 32, 40, 520, 4096, 16384 + 8}) {
    std::vector<float> a(n), x0(n), x1(n);
    std::vector<uint16_t> h(n);
    for (int64_t i = 0; i < n; ++i) {
      a[i] = g(rng) * (i % 7 == 0 ? 100.f : 1.f);  // mixed magnitudes: rounding order shows
      x0[i] = g(rng);
      x1[i] = g(rng) * 0.01f;
      h[i] = quant::f32_to_f16(g(rng));
    }
    float out[2];
    fd->dot2_f32(a.data(), x0.data(), x1.data(), n, out);
    const float want32[2] = {k.dot_f32(a.data(), x0.data(), n), k.dot_f32(a.data(), x1.data(), n)};
    EXPECT_EQ(0, std::memcmp(out, want32, sizeof out)) << "f32, n " << n;
    fd->dot2_f16(h.data(), x0.data(), x1.data(), n, out);
    const float want16[2] = {k.dot_f16(h.data(), x0.data(), n), k.dot_f16(h.data(), x1.data(), n)};
    EXPECT_EQ(0, std::memcmp(out, want16, sizeof out)) << "f16, n " << n;
  }
}

TEST(Attention, KernelMatchesReferenceAndDoubleMath) {
  std::mt19937 rng(ds4::testdata::test_seed(3));
  std::normal_distribution<float> g(0.f, 1.f);
  const int heads = 11;  // split 2 + 9 below: groups of four heads and the heads past them
  for (int dim : {144, 136})  // 144: 9 x 16 dims; 136: not a multiple of 16 (the reference path)
  for (int n_rows : {1, 5, 140}) {
    std::vector<float> q(heads * dim), sinks(heads), store(n_rows * dim);
    for (auto& v : q) v = g(rng);
    for (auto& v : sinks) v = g(rng);
    for (auto& v : store) v = g(rng);
    std::vector<const float*> rows(n_rows);
    for (int j = 0; j < n_rows; ++j) rows[j] = store.data() + j * dim;
    const float scale = 0.3f;
    std::vector<float> ref(heads * dim), out(heads * dim), sc(heads * n_rows);
    attend_heads_scalar(q.data(), 0, heads, dim, rows.data(), n_rows, sinks.data(), scale, ref.data(), sc.data());
    // Two calls over halves of the heads, as the engine splits them over threads.
    attend_heads()(q.data(), 0, 2, dim, rows.data(), n_rows, sinks.data(), scale, out.data(), sc.data());
    attend_heads()(q.data(), 2, heads, dim, rows.data(), n_rows, sinks.data(), scale, out.data(), sc.data());
    ASSERT_EQ(0, std::memcmp(ref.data(), out.data(), ref.size() * sizeof(float))) << "dim " << dim << " rows " << n_rows;
    for (int h = 0; h < heads; ++h) {
      std::vector<double> s(n_rows);
      double mx = sinks[h];
      for (int j = 0; j < n_rows; ++j) {
        double d = 0;
        for (int k = 0; k < dim; ++k) d += static_cast<double>(q[h * dim + k]) * store[j * dim + k];
        s[j] = d * scale;
        mx = std::max(mx, s[j]);
      }
      double z = std::exp(sinks[h] - mx);
      for (int j = 0; j < n_rows; ++j) z += std::exp(s[j] - mx);
      for (int k = 0; k < dim; ++k) {
        double o = 0;
        for (int j = 0; j < n_rows; ++j) o += std::exp(s[j] - mx) / z * store[j * dim + k];
        ASSERT_NEAR(out[h * dim + k], o, 1e-5 * (1 + std::fabs(o))) << "h " << h << " k " << k;
      }
    }
  }
}

// The indexer's row scores: the dispatched kernel (AVX2 on x86) is bit-identical to the
// scalar reference for any split of the rows (threads take ranges at any offset; 8-row blocks
// plus a tail), and both agree with the formula in double precision. Some heads get negative
// weights and many dots are negative, so the ReLU and the signs matter.
TEST(Indexer, ScoresMatchReferenceAndDoubleMath) {
  std::mt19937 rng(ds4::testdata::test_seed(4));
  std::normal_distribution<float> g(0.f, 1.f);
  for (int dim : {128, 32, 36}) {  // 36: not a multiple of 8 (the reference path)
    const int heads = 8, n_rows = 61;
    std::vector<float> q(heads * dim), w(heads), keys(n_rows * dim);
    for (auto& v : q) v = g(rng);
    for (auto& v : w) v = g(rng);
    for (auto& v : keys) v = g(rng);
    std::vector<float> ref(n_rows), out(n_rows, -1.f);
    index_scores_scalar(q.data(), w.data(), heads, dim, keys.data(), 0, n_rows, ref.data());
    for (int cut : {0, 1, 8, 13, 60}) {
      std::fill(out.begin(), out.end(), -1.f);
      index_scores()(q.data(), w.data(), heads, dim, keys.data(), 0, cut, out.data());
      index_scores()(q.data(), w.data(), heads, dim, keys.data(), cut, n_rows, out.data() + cut);
      ASSERT_EQ(0, std::memcmp(ref.data(), out.data(), ref.size() * sizeof(float))) << "dim " << dim << " cut " << cut;
    }
    int relu_zeroed = 0;
    for (int j = 0; j < n_rows; ++j) {
      double s = 0;
      for (int h = 0; h < heads; ++h) {
        double d = 0;
        for (int k = 0; k < dim; ++k) d += static_cast<double>(q[h * dim + k]) * keys[j * dim + k];
        relu_zeroed += d < 0;
        s += w[h] * std::max(0.0, d);
      }
      ASSERT_NEAR(ref[j], s, 1e-4 * (1 + std::fabs(s))) << "dim " << dim << " row " << j;
    }
    EXPECT_GT(relu_zeroed, 0);
  }
}

}  // namespace
}  // namespace ds4::cpu
