// Matrix products straight from stored (possibly quantized) weight rows.
//
// Y[v][r] = W.row(r) . X[v]. Activations are quantized once per vector for the weight type
// (docs/quant.md, "Activation operands"); F32/F16/BF16 weights use f32 activations. Every output element is
// one kernel dot product (the batched kernels equal the single-vector ones bit for bit), so
// results never depend on the batch, the tiling, the thread count or the scheduling.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/arena.h"
#include "cpu/thread_pool.h"
#include "quant/quant.h"
#include "quant/types.h"
#include "model/tensor.h"

namespace ds4::cpu {

using model::MatView;

// The operand a product with w takes: the weight type's activation format, or f32 under the
// f32_activations test hook.
inline quant::ActType operand_type(const MatView& w) {
  return w.f32_activations ? quant::ActType::F32 : quant::activation_type(w.type);
}

// One product of a batch: n_vec input vectors (x + v*x_stride) against every row of w,
// results at y + v*y_stride + r. Instead of x, a quantized weight type may take operands
// already quantized for it (quant::quantize_activations), xq_stride bytes apart.
struct MatMul {
  MatView w;
  const float* x = nullptr;
  int64_t x_stride = 0;
  int64_t n_vec = 1;
  float* y = nullptr;
  int64_t y_stride = 0;
  const void* xq = nullptr;
  size_t xq_stride = 0;
};

// Runs every product of the batch in one parallel dispatch (row tiles of all products are
// claimed by the pool's threads). Products that share an input (same x, stride, count,
// length and activation type) quantize it once. Scratch comes from `arena`.
void matmul_batch(ThreadPool& pool, Arena& arena, const MatMul* jobs, int n_jobs);

inline void matmul_batch(ThreadPool& pool, Arena& arena, const std::vector<MatMul>& jobs) {
  matmul_batch(pool, arena, jobs.data(), static_cast<int>(jobs.size()));
}

void matmul(ThreadPool& pool, Arena& arena, const MatView& w, const float* x, int64_t n_vec,
            int64_t x_stride, float* y, int64_t y_stride);

// Convenience forms with a per-thread scratch arena.
void matmul(ThreadPool& pool, const MatView& w, const float* x, int64_t n_vec, int64_t x_stride,
            float* y, int64_t y_stride);

inline void matvec(ThreadPool& pool, const MatView& w, const float* x, float* y) {
  matmul(pool, w, x, 1, w.in, y, w.out);
}

}  // namespace ds4::cpu
