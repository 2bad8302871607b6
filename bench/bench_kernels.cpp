// Micro-benchmarks of the fused dequantise-and-dot kernels (src/quant) as decode uses them:
// one weight matrix streamed once against one quantised activation vector, rows split over
// a small pool of pinned threads. The weight set is larger than the last-level cache, so the
// kernels are measured against memory, and every iteration also times a plain read of an
// equally large buffer with the same threads: the "frac" counter is kernel GB/s divided by
// that read bandwidth, measured in the same run and interleaved with the kernel, so other
// load on the machine affects both sides alike.
//
// Extra flags (before Google Benchmark's own): --ws_mib=N weight/read working set per case
// (default 256), --threads=LIST thread counts (default "1,2").
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "quant/quant.h"

namespace {

using namespace ds4::quant;

size_t g_working_set = 256ull << 20;
std::vector<int> g_thread_counts = {1, 2};

// ---- a tiny pinned pool: the caller is worker 0 -------------------------------------------
class Pool {
 public:
  explicit Pool(int n) : n_(n) {
    cpus_ = allowed_cpus();
    pin(0);
    for (int t = 1; t < n_; ++t) workers_.emplace_back([this, t] { loop(t); });
  }
  ~Pool() {
    stop_.store(true);
    generation_.fetch_add(1);
    for (auto& w : workers_) w.join();
    unpin();
  }
  int size() const { return n_; }
  // Runs job(thread) on every worker and returns when all are done. The result is the
  // largest per-thread CPU time of the job: the pass's duration had every thread run without
  // being preempted. Wall time would charge other processes' time slices to the kernel on a
  // shared machine, while memory stalls do count as CPU time, so this is what streaming
  // rates are computed from.
  double run(const std::function<void(int)>& job) {
    job_ = &job;
    pending_.store(n_ - 1);
    generation_.fetch_add(1, std::memory_order_release);
    cpu_s_[0] = timed_job(job, 0);
    while (pending_.load(std::memory_order_acquire) != 0) relax();
    return *std::max_element(cpu_s_.begin(), cpu_s_.end());
  }

 private:
  static std::vector<int> allowed_cpus() {
    cpu_set_t set;
    std::vector<int> cpus;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
      for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &set)) cpus.push_back(c);
      }
    }
    return cpus;
  }
  void pin(int t) const {
    if (cpus_.empty()) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpus_[static_cast<size_t>(t) % cpus_.size()], &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  }
  // The main thread must not stay pinned to one core after the pool is gone.
  void unpin() const {
    if (cpus_.empty()) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : cpus_) CPU_SET(c, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  }
  static void relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }
  void loop(int t) {
    pin(t);
    uint64_t seen = 0;
    for (;;) {
      // Spin briefly, then yield: the machine may be shared and a benchmark must not
      // starve the thread it waits for.
      int spins = 0;
      uint64_t g;
      while ((g = generation_.load(std::memory_order_acquire)) == seen) {
        if (++spins < 4096) {
          relax();
        } else {
          std::this_thread::yield();
        }
      }
      seen = g;
      if (stop_.load()) return;
      cpu_s_[static_cast<size_t>(t)] = timed_job(*job_, t);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  static double thread_cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
  static double timed_job(const std::function<void(int)>& job, int t) {
    const double t0 = thread_cpu_seconds();
    job(t);
    return thread_cpu_seconds() - t0;
  }

  int n_;
  std::vector<double> cpu_s_ = std::vector<double>(static_cast<size_t>(n_), 0.0);
  std::vector<int> cpus_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

// Contiguous share [begin, end) of `count` items for thread t of n.
inline void split(int64_t count, int t, int n, int64_t* begin, int64_t* end) {
  *begin = count * t / n;
  *end = count * (t + 1) / n;
}

// ---- the memory-read baseline --------------------------------------------------------------
// Sums 64-bit words with four independent accumulators: as little work per byte as a read
// loop can do, so its rate is the read bandwidth the kernels are held against.
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) uint64_t read_sum_avx2(const uint8_t* p, size_t bytes) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 128 <= bytes; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < bytes; ++i) sum += p[i];
  return sum;
}
#endif

uint64_t read_sum_portable(const uint8_t* p, size_t bytes) {
  uint64_t a[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 32 <= bytes; i += 32) {
    for (int k = 0; k < 4; ++k) {
      uint64_t v;
      std::memcpy(&v, p + i + 8 * k, 8);
      a[k] += v;
    }
  }
  uint64_t sum = a[0] + a[1] + a[2] + a[3];
  for (; i < bytes; ++i) sum += p[i];
  return sum;
}

uint64_t read_sum(const uint8_t* p, size_t bytes) {
#if defined(__x86_64__) || defined(__i386__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return read_sum_avx2(p, bytes);
#endif
  return read_sum_portable(p, bytes);
}

// Page-aligned, written once (so every page is really backed, not the shared zero page).
struct Buffer {
  uint8_t* data = nullptr;
  size_t size = 0;
  explicit Buffer(size_t n) : size(n) {
    data = static_cast<uint8_t*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096));
    if (!data) throw std::bad_alloc();
    for (size_t i = 0; i < n; ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  }
  ~Buffer() { std::free(data); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

Buffer& read_buffer() {
  static Buffer b(g_working_set);
  return b;
}

// One timed parallel read of the whole baseline buffer; returns seconds (see Pool::run).
double timed_read(Pool& pool) {
  Buffer& b = read_buffer();
  std::vector<uint64_t> sinks(static_cast<size_t>(pool.size()) * 8);
  const int64_t lines = static_cast<int64_t>(b.size / 128);
  const double s = pool.run([&](int t) {
    int64_t lo, hi;
    split(lines, t, pool.size(), &lo, &hi);
    sinks[static_cast<size_t>(t) * 8] = read_sum(b.data + lo * 128, static_cast<size_t>(hi - lo) * 128);
  });
  benchmark::DoNotOptimize(sinks.data());
  return s;
}

// ---- weight matrices ---------------------------------------------------------------------
constexpr int64_t kRowLen = 4096;  // the model's d_model: most decode matvecs have 4096 inputs

struct Matrix {
  Type type;
  int64_t rows = 0;
  size_t row_bytes = 0;
  std::unique_ptr<Buffer> weights;
  std::vector<uint8_t> act;  // one activation vector in the operand format of `type`
};

// Random normal rows, quantised; a few distinct rows are tiled to fill the working set (the
// IQ2_XXS quantiser is slow), which does not change what the kernels do per byte.
std::unique_ptr<Matrix> make_matrix(Type t, int64_t rows) {
  auto m = std::make_unique<Matrix>();
  m->type = t;
  m->rows = rows;
  m->row_bytes = static_cast<size_t>(*row_bytes(t, kRowLen));
  m->weights = std::make_unique<Buffer>(m->row_bytes * static_cast<size_t>(rows));
  std::mt19937 rng(1234);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> row(kRowLen);
  const int64_t distinct = std::min<int64_t>(rows, 32);
  for (int64_t r = 0; r < distinct; ++r) {
    for (auto& v : row) v = g(rng);
    quantize_row(t, row.data(), m->weights->data + r * m->row_bytes, kRowLen);
  }
  for (int64_t r = distinct; r < rows; ++r) {
    std::memcpy(m->weights->data + r * m->row_bytes, m->weights->data + (r % distinct) * m->row_bytes,
                m->row_bytes);
  }
  for (auto& v : row) v = g(rng);
  m->act.resize(activation_bytes(activation_type(t), kRowLen));
  quantize_activations(t, row.data(), m->act.data(), kRowLen);
  return m;
}

// Keeps one streamed matrix alive at a time (they are large); rebuilt when the type changes.
Matrix& streamed_matrix(Type t) {
  static std::unique_ptr<Matrix> cur;
  if (!cur || cur->type != t) {
    cur.reset();
    const int64_t rows = static_cast<int64_t>(g_working_set / *row_bytes(t, kRowLen));
    cur = make_matrix(t, rows);
  }
  return *cur;
}

// out[r] for rows [lo, hi) through one ISA's table.
void matvec_rows(const Kernels& k, const Matrix& m, int64_t lo, int64_t hi, float* out) {
  const uint8_t* base = m.weights->data;
  const void* x = m.act.data();
  for (int64_t r = lo; r < hi; ++r) {
    const void* w = base + r * m.row_bytes;
    float v = 0;
    switch (m.type) {
      case Type::F32: v = k.dot_f32(static_cast<const float*>(w), static_cast<const float*>(x), kRowLen); break;
      case Type::F16: v = k.dot_f16(static_cast<const uint16_t*>(w), static_cast<const float*>(x), kRowLen); break;
      case Type::BF16: v = k.dot_bf16(static_cast<const uint16_t*>(w), static_cast<const float*>(x), kRowLen); break;
      case Type::Q8_0:
        v = k.dot_q8_0(static_cast<const block_q8_0*>(w), static_cast<const block_q8_0_act*>(x), kRowLen);
        break;
      case Type::Q2_K:
        v = k.dot_q2_K(static_cast<const block_q2_K*>(w), static_cast<const block_q8_K*>(x), kRowLen);
        break;
      case Type::Q4_K:
        v = k.dot_q4_K(static_cast<const block_q4_K*>(w), static_cast<const block_q8_K*>(x), kRowLen);
        break;
      case Type::IQ2_XXS:
        v = k.dot_iq2_xxs(static_cast<const block_iq2_xxs*>(w), static_cast<const block_q8_K*>(x), kRowLen);
        break;
      default: break;
    }
    out[r] = v;
  }
}

// Streams the matrix once per iteration; the read baseline runs right after each pass.
void BM_MatVec(benchmark::State& state, Type t, Isa isa, int threads) {
  const Kernels& k = kernels(isa);
  Matrix& m = streamed_matrix(t);
  Pool pool(threads);
  std::vector<float> out(static_cast<size_t>(m.rows));
  const size_t bytes = m.row_bytes * static_cast<size_t>(m.rows);
  double kernel_s = 0, read_s = 0;
  std::vector<double> ratios;  // read time / kernel time of each adjacent pair of passes
  timed_read(pool);  // fault in / warm the baseline buffer outside the measurement
  for (auto _ : state) {
    const double s = pool.run([&](int th) {
      int64_t lo, hi;
      split(m.rows, th, pool.size(), &lo, &hi);
      matvec_rows(k, m, lo, hi, out.data());
    });
    state.SetIterationTime(s);
    kernel_s += s;
    const double r = timed_read(pool);
    read_s += r;
    ratios.push_back(r / s);
    benchmark::DoNotOptimize(out.data());
  }
  const double total = static_cast<double>(bytes) * static_cast<double>(state.iterations());
  state.counters["GB/s"] = total / kernel_s / 1e9;
  state.counters["read_GB/s"] = total / read_s / 1e9;
  // The median pair ratio: a burst of foreign memory traffic during one pass moves one
  // ratio, not the result.
  std::sort(ratios.begin(), ratios.end());
  const size_t mid = ratios.size() / 2;
  state.counters["frac"] = ratios.empty() ? 0.0 : ratios.size() % 2 ? ratios[mid] : 0.5 * (ratios[mid - 1] + ratios[mid]);
  state.counters["MiB"] = static_cast<double>(bytes) / (1 << 20);
}

// The read baseline alone (a row of its own in the table).
void BM_Read(benchmark::State& state, int threads) {
  Pool pool(threads);
  timed_read(pool);
  double s_total = 0;
  for (auto _ : state) {
    const double s = timed_read(pool);
    state.SetIterationTime(s);
    s_total += s;
  }
  const double total = static_cast<double>(read_buffer().size) * static_cast<double>(state.iterations());
  state.counters["GB/s"] = total / s_total / 1e9;
  state.counters["MiB"] = static_cast<double>(read_buffer().size) / (1 << 20);
}

// Compute ceiling: the same kernel on 64 rows that stay in L2 (single thread).
void BM_Cached(benchmark::State& state, Type t, Isa isa) {
  const Kernels& k = kernels(isa);
  const auto m = make_matrix(t, 64);
  std::vector<float> out(64);
  for (auto _ : state) {
    matvec_rows(k, *m, 0, 64, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  const double total = static_cast<double>(m->row_bytes * 64) * static_cast<double>(state.iterations());
  state.counters["GB"] = benchmark::Counter(total / 1e9, benchmark::Counter::kIsRate);  // shown as GB=.../s
}

// Prefill form: 64 rows against 8 activation vectors, the multi-vector kernel against 8
// single-vector calls (weights decoded once per block instead of 8 times).
void BM_Multi(benchmark::State& state, Type t, Isa isa, bool multi) {
  const Kernels& k = kernels(isa);
  const auto m = make_matrix(t, 64);
  constexpr int kVectors = 8;
  const size_t act_bytes = m->act.size();
  std::vector<uint8_t> xs(act_bytes * kVectors);
  for (int v = 0; v < kVectors; ++v) std::memcpy(xs.data() + act_bytes * v, m->act.data(), act_bytes);
  float out[kVectors];
  for (auto _ : state) {
    for (int64_t r = 0; r < m->rows; ++r) {
      const uint8_t* w = m->weights->data + r * m->row_bytes;
      if (multi) {
        switch (t) {
          case Type::Q8_0:
            k.dot_q8_0_multi(reinterpret_cast<const block_q8_0*>(w), reinterpret_cast<const block_q8_0_act*>(xs.data()),
                             static_cast<int64_t>(act_bytes / sizeof(block_q8_0_act)), kVectors, kRowLen, out);
            break;
          case Type::Q2_K:
            k.dot_q2_K_multi(reinterpret_cast<const block_q2_K*>(w), reinterpret_cast<const block_q8_K*>(xs.data()),
                             static_cast<int64_t>(act_bytes / sizeof(block_q8_K)), kVectors, kRowLen, out);
            break;
          case Type::Q4_K:
            k.dot_q4_K_multi(reinterpret_cast<const block_q4_K*>(w), reinterpret_cast<const block_q8_K*>(xs.data()),
                             static_cast<int64_t>(act_bytes / sizeof(block_q8_K)), kVectors, kRowLen, out);
            break;
          case Type::IQ2_XXS:
            k.dot_iq2_xxs_multi(reinterpret_cast<const block_iq2_xxs*>(w), reinterpret_cast<const block_q8_K*>(xs.data()),
                                static_cast<int64_t>(act_bytes / sizeof(block_q8_K)), kVectors, kRowLen, out);
            break;
          default: break;
        }
      } else {
        for (int v = 0; v < kVectors; ++v) out[v] = vec_dot(t, w, xs.data() + act_bytes * v, kRowLen);
      }
      benchmark::DoNotOptimize(out);
    }
  }
  state.counters["MAC"] = benchmark::Counter(
      static_cast<double>(m->rows * kVectors * kRowLen) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}

// ---- the int8 multiply-accumulate peak ------------------------------------------------------
// What the integer kernels are held against: independent vpmaddubsw -> vpmaddwd -> vpaddd
// chains in registers (the exact widening every int8 kernel here uses, 32 MACs per 256-bit
// step), and with AVX-512 VNNI one vpdpbusd per 64 MACs. Operands are made opaque to the
// compiler each iteration so nothing is hoisted; nothing touches memory.
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) int64_t int8_peak_avx2(int64_t iters) {
  __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-5);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[8];
  for (auto& v : acc) v = _mm256_setzero_si256();
  for (int64_t i = 0; i < iters; ++i) {
    __asm__ volatile("" : "+x"(a), "+x"(b));
    for (int k = 0; k < 8; ++k) {
      acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_add_epi8(b, acc[k])), ones));
    }
  }
  __m256i s = acc[0];
  for (int k = 1; k < 8; ++k) s = _mm256_add_epi32(s, acc[k]);
  benchmark::DoNotOptimize(s);
  return iters * 8 * 32;
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) int64_t int8_peak_vnni(int64_t iters) {
  __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-5);
  __m512i acc[8];
  for (auto& v : acc) v = _mm512_setzero_si512();
  for (int64_t i = 0; i < iters; ++i) {
    __asm__ volatile("" : "+v"(a), "+v"(b));
    for (int k = 0; k < 8; ++k) acc[k] = _mm512_dpbusd_epi32(acc[k], a, b);
  }
  __m512i s = acc[0];
  for (int k = 1; k < 8; ++k) s = _mm512_add_epi32(s, acc[k]);
  benchmark::DoNotOptimize(s);
  return iters * 8 * 64;
}
#endif

// MACs per second of one thread's int8 peak (the widest form this CPU has), measured over
// `iters` loop iterations of per-thread CPU time.
double int8_peak_rate(int64_t iters) {
#if defined(__x86_64__) || defined(__i386__)
  timespec t0, t1;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
  static const bool vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
  static const bool avx2 = __builtin_cpu_supports("avx2");
  int64_t macs = 0;
  if (vnni) {
    macs = int8_peak_vnni(iters);
  } else if (avx2) {
    macs = int8_peak_avx2(iters);
  }
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
  const double s = static_cast<double>(t1.tv_sec - t0.tv_sec) + 1e-9 * static_cast<double>(t1.tv_nsec - t0.tv_nsec);
  return s > 0 ? static_cast<double>(macs) / s : 0.0;
#else
  (void)iters;
  return 0.0;
#endif
}

void BM_Int8Peak(benchmark::State& state) {
  double best = 0;
  for (auto _ : state) best = std::max(best, int8_peak_rate(1 << 20));
  state.counters["GMAC/s"] = best / 1e9;
}

// Prefill form at the matmul driver's tile (32 vectors, 64 rows in L2, one thread, rows in
// groups through vec_dot_rows as cpu::matmul runs them): MACs per
// second of the multi-vector kernel and, as `peak_frac`, that rate over the int8 peak measured
// between the passes (median of the per-pass ratios).
void BM_Prefill(benchmark::State& state, Type t) {
  const auto m = make_matrix(t, 64);
  constexpr int kVectors = 32;
  // Rows per tile-kernel call as cpu::matmul's prefill tiles pass them: 32 for Q8_0, four
  // for the others.
  const int kRowGroup = t == Type::Q8_0 ? 32 : 4;
  const size_t act_bytes = m->act.size();
  std::vector<uint8_t> xs(act_bytes * kVectors);
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> row(kRowLen);
  for (int v = 0; v < kVectors; ++v) {
    for (auto& x : row) x = g(rng);
    quantize_activations(t, row.data(), xs.data() + act_bytes * v, kRowLen);
  }
  std::vector<float> out(static_cast<size_t>(kRowGroup * kVectors));
  std::vector<double> fracs;
  double macs = 0, secs = 0;
  for (auto _ : state) {
    timespec t0, t1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    for (int64_t r = 0; r < m->rows; r += kRowGroup) {
      vec_dot_rows(t, m->weights->data + r * m->row_bytes, m->row_bytes, kRowGroup, xs.data(), act_bytes, kVectors,
                   kRowLen, out.data());
      benchmark::DoNotOptimize(out.data());
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    const double s = static_cast<double>(t1.tv_sec - t0.tv_sec) + 1e-9 * static_cast<double>(t1.tv_nsec - t0.tv_nsec);
    const double pass_macs = static_cast<double>(m->rows * kVectors * kRowLen);
    macs += pass_macs;
    secs += s;
    const double peak = int8_peak_rate(1 << 16);
    if (s > 0 && peak > 0) fracs.push_back(pass_macs / s / peak);
  }
  state.counters["GMAC/s"] = secs > 0 ? macs / secs / 1e9 : 0.0;
  std::sort(fracs.begin(), fracs.end());
  state.counters["peak_frac"] = fracs.empty() ? 0.0 : fracs[fracs.size() / 2];
}

// IQ2_XXS as stored against the same rows re-encoded by iq2_xxs_repack (what ds4 runs with
// EngineOptions::repack_iq2_xxs), one thread, thread CPU time, the two passes alternated in
// order: `repacked_speedup` is the median of plain time / repacked time over the pass pairs
// (the results are bit-identical; tests/quant checks that). rows 64 stay in L2 (compute
// bound); the working set streams from memory; tile = the x32 prefill form.
double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

void BM_RepackAB(benchmark::State& state, bool streamed, bool tile) {
  const Kernels& k = kernels();
  const int64_t rows = streamed ? static_cast<int64_t>(g_working_set / *row_bytes(Type::IQ2_XXS, kRowLen)) : 64;
  const auto m = make_matrix(Type::IQ2_XXS, rows);
  const size_t bytes = m->row_bytes * static_cast<size_t>(rows);
  Buffer packed(bytes);
  std::memcpy(packed.data, m->weights->data, bytes);
  iq2_xxs_repack(reinterpret_cast<block_iq2_xxs*>(packed.data), static_cast<int64_t>(bytes / sizeof(block_iq2_xxs)));
  constexpr int kVectors = 32, kRowGroup = 4;
  const int nx = tile ? kVectors : 1;
  const size_t act_bytes = m->act.size();
  std::vector<uint8_t> xs(act_bytes * nx);
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> row(kRowLen);
  for (int v = 0; v < nx; ++v) {
    for (auto& x : row) x = g(rng);
    quantize_activations(Type::IQ2_XXS, row.data(), xs.data() + act_bytes * v, kRowLen);
  }
  const auto* x = reinterpret_cast<const block_q8_K*>(xs.data());
  const int64_t nb = kRowLen / QK_K;
  std::vector<float> out(static_cast<size_t>(kRowGroup * nx));
  auto pass = [&](const uint8_t* w, bool repacked) {
    const double t0 = thread_seconds();
    for (int64_t r = 0; r < rows; r += (tile ? kRowGroup : 1)) {
      const auto* wr = reinterpret_cast<const block_iq2_xxs*>(w + r * m->row_bytes);
      if (tile) {
        (repacked ? k.dot_iq2_xxs_r_rows : k.dot_iq2_xxs_rows)(wr, nb, kRowGroup, x, nb, nx, kRowLen, out.data());
      } else {
        out[0] = (repacked ? k.dot_iq2_xxs_r : k.dot_iq2_xxs)(wr, x, kRowLen);
      }
      benchmark::DoNotOptimize(out.data());
    }
    return thread_seconds() - t0;
  };
  std::vector<double> ratios;
  double plain_s = 0;
  bool plain_first = true;
  for (auto _ : state) {
    double tp, tr;
    if (plain_first) {
      tp = pass(m->weights->data, false);
      tr = pass(packed.data, true);
    } else {
      tr = pass(packed.data, true);
      tp = pass(m->weights->data, false);
    }
    plain_first = !plain_first;
    plain_s += tp;
    if (tr > 0) ratios.push_back(tp / tr);
  }
  std::sort(ratios.begin(), ratios.end());
  state.counters["repacked_speedup"] = ratios.empty() ? 0.0 : ratios[ratios.size() / 2];
  state.counters["q1"] = ratios.empty() ? 0.0 : ratios[ratios.size() / 4];
  state.counters["q3"] = ratios.empty() ? 0.0 : ratios[ratios.size() * 3 / 4];
  state.counters["plain_GB/s"] =
      plain_s > 0 ? static_cast<double>(bytes) * static_cast<double>(state.iterations()) / plain_s / 1e9 : 0.0;
}

void register_all() {
  const Type formats[] = {Type::IQ2_XXS, Type::Q2_K, Type::Q4_K, Type::Q8_0, Type::F16, Type::F32};
  std::vector<Isa> simd;
  for (Isa isa : {Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
    if (isa_available(isa)) simd.push_back(isa);
  }
  for (int threads : g_thread_counts) {
    benchmark::RegisterBenchmark(("read/threads:" + std::to_string(threads)).c_str(), BM_Read, threads)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  // Grouped by format so each matrix is built once for all ISAs and thread counts.
  for (Type t : formats) {
    for (Isa isa : simd) {
      for (int threads : g_thread_counts) {
        const std::string name = "matvec/" + std::string(type_name(t)) + "/" + isa_name(isa) +
                                 "/threads:" + std::to_string(threads);
        benchmark::RegisterBenchmark(name.c_str(), BM_MatVec, t, isa, threads)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
  for (Type t : formats) {
    for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
      if (!isa_available(isa)) continue;
      benchmark::RegisterBenchmark(("cached/" + std::string(type_name(t)) + "/" + isa_name(isa)).c_str(), BM_Cached,
                                   t, isa)
          ->Unit(benchmark::kMicrosecond);
    }
  }
  benchmark::RegisterBenchmark("peak/int8", BM_Int8Peak)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("repack/IQ2_XXS/cached", BM_RepackAB, false, false)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("repack/IQ2_XXS/streamed", BM_RepackAB, true, false)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("repack/IQ2_XXS/x32", BM_RepackAB, false, true)->Unit(benchmark::kMillisecond);
  for (Type t : {Type::IQ2_XXS, Type::Q2_K, Type::Q4_K, Type::Q8_0}) {
    benchmark::RegisterBenchmark(("x32/" + std::string(type_name(t))).c_str(), BM_Prefill, t)->Unit(benchmark::kMillisecond);
  }
  for (Type t : {Type::IQ2_XXS, Type::Q2_K, Type::Q4_K, Type::Q8_0}) {
    for (bool multi : {false, true}) {
      benchmark::RegisterBenchmark(
          ("x8/" + std::string(type_name(t)) + (multi ? "/multi" : "/single")).c_str(), BM_Multi, t,
          simd.empty() ? Isa::Scalar : simd.back(), multi)
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

// Consumes our own flags; returns false (after a message) on a malformed one.
bool parse_own_flags(int* argc, char** argv) {
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--ws_mib=", 0) == 0) {
      char* end = nullptr;
      const long v = std::strtol(a.c_str() + 9, &end, 10);
      if (*end != '\0' || v < 1 || v > 16384) {
        std::fprintf(stderr, "bench_kernels: --ws_mib wants 1..16384, got '%s'\n", a.c_str() + 9);
        return false;
      }
      g_working_set = static_cast<size_t>(v) << 20;
    } else if (a.rfind("--threads=", 0) == 0) {
      g_thread_counts.clear();
      std::string list = a.substr(10);
      size_t pos = 0;
      while (pos <= list.size()) {
        const size_t comma = std::min(list.find(',', pos), list.size());
        char* end = nullptr;
        const std::string item = list.substr(pos, comma - pos);
        const long v = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || v < 1 || v > 256) {
          std::fprintf(stderr, "bench_kernels: --threads wants a list like 1,2, got '%s'\n", list.c_str());
          return false;
        }
        g_thread_counts.push_back(static_cast<int>(v));
        pos = comma + 1;
      }
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (!parse_own_flags(&argc, argv)) return 2;
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
