// Throughput of the dot kernels per ISA (bytes of weights streamed per second), plus the
// activation quantizers. Rows sized like ds4's decode matvecs (4096 inputs); the "big"
// cases stream a 64 MiB weight set so memory bandwidth, not the cache, is measured.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "quant/quant.h"

namespace {

using namespace ds4::quant;

struct Fixture {
  Type type;
  int64_t n, rows;
  std::vector<uint8_t> weights, act;
  size_t row_bytes_;
};

Fixture make(Type t, int64_t n, int64_t rows) {
  Fixture f{t, n, rows, {}, {}, 0};
  std::mt19937 rng(1);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> row(n);
  f.row_bytes_ = *row_bytes(t, n);
  f.weights.resize(f.row_bytes_ * rows);
  // Quantizing every row is slow for IQ2_XXS; quantize a few and tile them.
  const int64_t distinct = std::min<int64_t>(rows, 16);
  for (int64_t r = 0; r < distinct; ++r) {
    for (auto& v : row) v = g(rng);
    quantize_row(t, row.data(), f.weights.data() + r * f.row_bytes_, n);
  }
  for (int64_t r = distinct; r < rows; ++r) {
    std::memcpy(f.weights.data() + r * f.row_bytes_, f.weights.data() + (r % distinct) * f.row_bytes_, f.row_bytes_);
  }
  for (auto& v : row) v = g(rng);
  f.act.resize(activation_bytes(activation_type(t), n));
  quantize_activations(t, row.data(), f.act.data(), n);
  return f;
}

float run_dot(const Kernels& k, const Fixture& f, int64_t r) {
  const uint8_t* w = f.weights.data() + r * f.row_bytes_;
  const void* x = f.act.data();
  switch (f.type) {
    case Type::F32: return k.dot_f32(reinterpret_cast<const float*>(w), static_cast<const float*>(x), f.n);
    case Type::F16: return k.dot_f16(reinterpret_cast<const uint16_t*>(w), static_cast<const float*>(x), f.n);
    case Type::BF16: return k.dot_bf16(reinterpret_cast<const uint16_t*>(w), static_cast<const float*>(x), f.n);
    case Type::Q8_0:
      return k.dot_q8_0(reinterpret_cast<const block_q8_0*>(w), static_cast<const block_q8_0_act*>(x), f.n);
    case Type::Q2_K:
      return k.dot_q2_K(reinterpret_cast<const block_q2_K*>(w), static_cast<const block_q8_K*>(x), f.n);
    case Type::Q4_K:
      return k.dot_q4_K(reinterpret_cast<const block_q4_K*>(w), static_cast<const block_q8_K*>(x), f.n);
    case Type::IQ2_XXS:
      return k.dot_iq2_xxs(reinterpret_cast<const block_iq2_xxs*>(w), static_cast<const block_q8_K*>(x), f.n);
    default: return 0;
  }
}

void BM_Dot(benchmark::State& state, Type t, Isa isa, int64_t rows) {
  if (!isa_available(isa)) {
    state.SkipWithError("ISA not available");
    return;
  }
  const Kernels& k = kernels(isa);
  const Fixture f = make(t, 4096, rows);
  for (auto _ : state) {
    float acc = 0;
    for (int64_t r = 0; r < rows; ++r) acc += run_dot(k, f, r);
    benchmark::DoNotOptimize(acc);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(f.weights.size()));
}

// IQ2_XXS rows against 8 activation vectors (prefill shape), single vs multi kernel.
void BM_Iq2Multi(benchmark::State& state, Isa isa, bool multi) {
  if (!isa_available(isa)) {
    state.SkipWithError("ISA not available");
    return;
  }
  const Kernels& k = kernels(isa);
  const Fixture f = make(Type::IQ2_XXS, 4096, 64);
  constexpr int kVectors = 8;
  std::vector<block_q8_K> xs(16 * kVectors);
  for (int v = 0; v < kVectors; ++v) std::memcpy(&xs[16 * v], f.act.data(), f.act.size());
  float out[kVectors];
  for (auto _ : state) {
    for (int64_t r = 0; r < f.rows; ++r) {
      const auto* w = reinterpret_cast<const block_iq2_xxs*>(f.weights.data() + r * f.row_bytes_);
      if (multi) {
        k.dot_iq2_xxs_multi(w, xs.data(), 16, kVectors, f.n, out);
      } else {
        for (int v = 0; v < kVectors; ++v) out[v] = k.dot_iq2_xxs(w, xs.data() + 16 * v, f.n);
      }
      benchmark::DoNotOptimize(out);
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * f.rows * kVectors * f.n);
}

void BM_Q8Multi(benchmark::State& state, Isa isa, bool multi) {
  if (!isa_available(isa)) {
    state.SkipWithError("ISA not available");
    return;
  }
  const Kernels& k = kernels(isa);
  const Fixture f = make(Type::Q8_0, 4096, 64);
  constexpr int kVectors = 8;
  const int64_t blocks = f.n / QK8_0;
  std::vector<block_q8_0_act> xs(blocks * kVectors);
  for (int v = 0; v < kVectors; ++v) std::memcpy(&xs[blocks * v], f.act.data(), f.act.size());
  float out[kVectors];
  for (auto _ : state) {
    for (int64_t r = 0; r < f.rows; ++r) {
      const auto* w = reinterpret_cast<const block_q8_0*>(f.weights.data() + r * f.row_bytes_);
      if (multi) {
        k.dot_q8_0_multi(w, xs.data(), blocks, kVectors, f.n, out);
      } else {
        for (int v = 0; v < kVectors; ++v) out[v] = k.dot_q8_0(w, xs.data() + blocks * v, f.n);
      }
      benchmark::DoNotOptimize(out);
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * f.rows * kVectors * f.n);
}

void BM_KMulti(benchmark::State& state, Type t, Isa isa, bool multi) {
  if (!isa_available(isa)) {
    state.SkipWithError("ISA not available");
    return;
  }
  const Kernels& k = kernels(isa);
  const Fixture f = make(t, 4096, 64);
  constexpr int kVectors = 8;
  std::vector<block_q8_K> xs(16 * kVectors);
  for (int v = 0; v < kVectors; ++v) std::memcpy(&xs[16 * v], f.act.data(), f.act.size());
  float out[kVectors];
  for (auto _ : state) {
    for (int64_t r = 0; r < f.rows; ++r) {
      const uint8_t* w = f.weights.data() + r * f.row_bytes_;
      if (t == Type::Q2_K) {
        const auto* wq = reinterpret_cast<const block_q2_K*>(w);
        if (multi) {
          k.dot_q2_K_multi(wq, xs.data(), 16, kVectors, f.n, out);
        } else {
          for (int v = 0; v < kVectors; ++v) out[v] = k.dot_q2_K(wq, xs.data() + 16 * v, f.n);
        }
      } else {
        const auto* wq = reinterpret_cast<const block_q4_K*>(w);
        if (multi) {
          k.dot_q4_K_multi(wq, xs.data(), 16, kVectors, f.n, out);
        } else {
          for (int v = 0; v < kVectors; ++v) out[v] = k.dot_q4_K(wq, xs.data() + 16 * v, f.n);
        }
      }
      benchmark::DoNotOptimize(out);
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * f.rows * kVectors * f.n);
}

void BM_QuantizeAct(benchmark::State& state, Type t) {
  std::vector<float> x(4096);
  std::mt19937 rng(2);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (auto& v : x) v = g(rng);
  std::vector<uint8_t> out(activation_bytes(activation_type(t), 4096));
  for (auto _ : state) {
    quantize_activations(t, x.data(), out.data(), 4096);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * 4096);
}

void BM_QuantizeRow(benchmark::State& state, Type t) {
  std::vector<float> x(4096);
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (auto& v : x) v = g(rng);
  std::vector<uint8_t> out(*row_bytes(t, 4096));
  for (auto _ : state) {
    quantize_row(t, x.data(), out.data(), 4096);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * 4096);
}

int register_all() {
  const Type types[] = {Type::F32, Type::F16, Type::BF16, Type::Q8_0, Type::Q2_K, Type::Q4_K, Type::IQ2_XXS};
  for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
    if (!isa_available(isa)) continue;
    for (Type t : types) {
      const std::string name = std::string(type_name(t)) + "/" + isa_name(isa);
      // 64 rows stay in cache; "big" streams ~64 MiB of weights from memory.
      benchmark::RegisterBenchmark(("dot_cached/" + name).c_str(), BM_Dot, t, isa, 64);
      const int64_t big_rows = (64ll << 20) / static_cast<int64_t>(*row_bytes(t, 4096));
      benchmark::RegisterBenchmark(("dot_stream/" + name).c_str(), BM_Dot, t, isa, big_rows);
    }
  }
  for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI}) {
    if (!isa_available(isa)) continue;
    benchmark::RegisterBenchmark((std::string("iq2_x8/single/") + isa_name(isa)).c_str(), BM_Iq2Multi, isa, false);
    benchmark::RegisterBenchmark((std::string("iq2_x8/multi/") + isa_name(isa)).c_str(), BM_Iq2Multi, isa, true);
    benchmark::RegisterBenchmark((std::string("q8_0_x8/single/") + isa_name(isa)).c_str(), BM_Q8Multi, isa, false);
    benchmark::RegisterBenchmark((std::string("q8_0_x8/multi/") + isa_name(isa)).c_str(), BM_Q8Multi, isa, true);
    for (Type t : {Type::Q2_K, Type::Q4_K}) {
      const std::string name = std::string(type_name(t)) + "_x8/";
      benchmark::RegisterBenchmark((name + "single/" + isa_name(isa)).c_str(), BM_KMulti, t, isa, false);
      benchmark::RegisterBenchmark((name + "multi/" + isa_name(isa)).c_str(), BM_KMulti, t, isa, true);
    }
  }
  for (Type t : {Type::Q8_0, Type::Q4_K}) {
    benchmark::RegisterBenchmark(("quantize_act/" + std::string(type_name(t))).c_str(), BM_QuantizeAct, t);
  }
  for (Type t : {Type::Q8_0, Type::Q2_K, Type::Q4_K, Type::IQ2_XXS}) {
    benchmark::RegisterBenchmark(("quantize_row/" + std::string(type_name(t))).c_str(), BM_QuantizeRow, t);
  }
  return 0;
}

const int registered = register_all();

}  // namespace

BENCHMARK_MAIN();
