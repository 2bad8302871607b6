// Matrix-vector products straight from stored (possibly quantized) weight rows.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/thread_pool.h"
#include "quant/types.h"

namespace ds4::cpu {

// A 2-D weight as stored in the GGUF: `out` rows of `in` values, row r at data + r*row_bytes.
struct MatView {
  const uint8_t* data = nullptr;
  quant::Type type = quant::Type::F32;
  int64_t in = 0;
  int64_t out = 0;
  uint64_t row_bytes = 0;
  // Test hook (debug::use_f32_activations): dot each dequantized weight row with the
  // unrounded f32 activations instead of running the quantized kernels, so a quantized file
  // can be compared with its dequantized f32 twin without activation rounding.
  bool f32_activations = false;

  bool valid() const { return data != nullptr; }
  const uint8_t* row(int64_t r) const { return data + static_cast<uint64_t>(r) * row_bytes; }
  MatView rows(int64_t begin, int64_t count) const {
    MatView v = *this;
    v.data = row(begin);
    v.out = count;
    return v;
  }
};

// Y[v][r] = W.row(r) . X[v] for v < n_vec. Activations are quantized once per vector for
// the weight type (ds4 numerics, spec §9); F32/F16/BF16 weights use f32 activations.
// Work is split over rows, so every dot product is the same whatever the batch or threads.
void matmul(ThreadPool& pool, const MatView& w, const float* x, int64_t n_vec, int64_t x_stride,
            float* y, int64_t y_stride);

inline void matvec(ThreadPool& pool, const MatView& w, const float* x, float* y) {
  matmul(pool, w, x, 1, w.in, y, w.out);
}

}  // namespace ds4::cpu
