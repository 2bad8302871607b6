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

// Eight rows per pass over the query heads: each 8-dim slice of q_h is loaded once for the
// eight rows (the rows, 8 x dim floats, stay in L1 across all heads), and the eight rows'
// dot products leave their accumulators through one horizontal-add tree, so the ReLU, the
// head weight and the sum over heads run on all eight scores in one register.
void index_scores_avx2(const float* q, const float* w, int heads, int dim, const float* keys, int64_t r0,
                       int64_t r1, float* scores) {
  if (dim % 8 != 0) {
    index_scores_scalar(q, w, heads, dim, keys, r0, r1, scores);
    return;
  }
  const __m256 zero = _mm256_setzero_ps();
  int64_t j = r0;
  for (; j + 8 <= r1; j += 8) {
    const float* k0 = keys + j * dim;
    __m256 s = zero;
    for (int h = 0; h < heads; ++h) {
      const float* qh = q + static_cast<int64_t>(h) * dim;
      __m256 a[8];
      for (int r = 0; r < 8; ++r) a[r] = zero;
      for (int d = 0; d < dim; d += 8) {
        const __m256 qv = _mm256_loadu_ps(qh + d);
        for (int r = 0; r < 8; ++r)
          a[r] = _mm256_add_ps(a[r], _mm256_mul_ps(qv, _mm256_loadu_ps(k0 + static_cast<int64_t>(r) * dim + d)));
      }
      // hadd(a, b) = [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7]: two rounds give
      // rows 0-3 (x) and 4-7 (y) as [(l0+l1)+(l2+l3) per row | (l4+l5)+(l6+l7) per row].
      const __m256 x = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
      const __m256 y = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
      const __m256 dots = _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
      // max_ps(dots, 0) returns 0 for a NaN dot, as std::max(0.f, dot) does.
      s = _mm256_add_ps(s, _mm256_mul_ps(_mm256_set1_ps(w[h]), _mm256_max_ps(dots, zero)));
    }
    _mm256_storeu_ps(scores + (j - r0), s);
  }
  if (j < r1) index_scores_scalar(q, w, heads, dim, keys, j, r1, scores + (j - r0));
}

}  // namespace ds4::cpu
