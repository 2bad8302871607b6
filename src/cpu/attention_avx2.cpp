// AVX2 build of attend_heads_scalar: same expressions, same order, vectorised over the
// output dims (the value accumulation is the hot loop: heads x rows x dim mul-adds).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "cpu/attention.h"
#include "quant/quant.h"

namespace ds4::cpu {

void attend_heads_avx2(const float* q, int h0, int h1, int dim, const float* const* rows, int n_rows,
                       const float* sinks, float scale, float* out, float* scores) {
  const quant::Kernels& k = quant::kernels();
  for (int h = h0; h < h1; ++h) {
    const float* qh = q + static_cast<int64_t>(h) * dim;
    const float sink = sinks[h];
    float mx = sink;
    for (int j = 0; j < n_rows; ++j) {
      scores[j] = k.dot_f32(qh, rows[j], dim) * scale;
      mx = std::max(mx, scores[j]);
    }
    float z = std::exp(sink - mx);
    for (int j = 0; j < n_rows; ++j) {
      scores[j] = std::exp(scores[j] - mx);
      z += scores[j];
    }
    for (int j = 0; j < n_rows; ++j) scores[j] = scores[j] / z;
    float* oh = out + static_cast<int64_t>(h) * dim;
    int d = 0;
    // 64 output dims in registers while every row is accumulated into them.
    for (; d + 64 <= dim; d += 64) {
      __m256 acc[8];
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
      for (int j = 0; j < n_rows; ++j) {
        const __m256 p = _mm256_set1_ps(scores[j]);
        const float* kr = rows[j] + d;
        for (int i = 0; i < 8; ++i) acc[i] = _mm256_add_ps(acc[i], _mm256_mul_ps(p, _mm256_loadu_ps(kr + 8 * i)));
      }
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(oh + d + 8 * i, acc[i]);
    }
    for (; d < dim; ++d) {
      float acc = 0.f;
      for (int j = 0; j < n_rows; ++j) acc += scores[j] * rows[j][d];
      oh[d] = acc;
    }
  }
}

}  // namespace ds4::cpu
