// AVX2 builds of attend_heads_scalar and index_scores_scalar: the same float expressions, each
// sum in the reference's order.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "cpu/attention.h"

namespace ds4::cpu {

namespace {

// The dot products of q_h with 8 rows (dim a multiple of 8), in dot_lanes8's order: lane l of
// row r's accumulator sums the dims d % 8 == l; two rounds of horizontal adds,
// hadd(a, b) = [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7], give rows 0-3 (x)
// and 4-7 (y) as [(l0+l1)+(l2+l3) per row | (l4+l5)+(l6+l7) per row].
inline __m256 dots8(const float* qh, const float* const* r, int dim) {
  __m256 a[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_ps();
  for (int d = 0; d < dim; d += 8) {
    const __m256 qv = _mm256_loadu_ps(qh + d);
    for (int i = 0; i < 8; ++i) a[i] = _mm256_add_ps(a[i], _mm256_mul_ps(qv, _mm256_loadu_ps(r[i] + d)));
  }
  const __m256 x = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 y = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
}

}  // namespace

// Rows in blocks, each read from memory once for all the heads [h0, h1) instead of once per
// head (a 512-dim layer's 640 window and top-k rows, 1.3 MB, do not fit in L2): scores 8 rows
// at a time per head, value sums 16 rows at a time into 16 dims of four heads (eight
// registers; the partial sums go back to `out` between blocks, exactly). Every sum keeps the
// reference's order, so the results are identical.
void attend_heads_avx2(const float* q, int h0, int h1, int dim, const float* const* rows, int n_rows,
                       const float* sinks, float scale, float* out, float* scores) {
  if (dim % 16 != 0) {
    attend_heads_scalar(q, h0, h1, dim, rows, n_rows, sinks, scale, out, scores);
    return;
  }
  const int nh = h1 - h0;
  auto sc = [&](int h) { return scores + static_cast<int64_t>(h - h0) * n_rows; };
  const __m256 vscale = _mm256_set1_ps(scale);
  int j = 0;
  for (; j + 8 <= n_rows; j += 8)
    for (int h = h0; h < h1; ++h)
      _mm256_storeu_ps(sc(h) + j, _mm256_mul_ps(dots8(q + static_cast<int64_t>(h) * dim, rows + j, dim), vscale));
  for (; j < n_rows; ++j)
    for (int h = h0; h < h1; ++h) sc(h)[j] = dot_lanes8(q + static_cast<int64_t>(h) * dim, rows[j], dim) * scale;
  for (int h = h0; h < h1; ++h) {
    float* s = sc(h);
    const float sink = sinks[h];
    float mx = sink;
    for (int i = 0; i < n_rows; ++i) mx = std::max(mx, s[i]);
    float z = std::exp(sink - mx);
    for (int i = 0; i < n_rows; ++i) {
      s[i] = std::exp(s[i] - mx);
      z += s[i];
    }
    for (int i = 0; i < n_rows; ++i) s[i] = s[i] / z;
  }
  float* o0 = out + static_cast<int64_t>(h0) * dim;
  std::fill(o0, o0 + static_cast<int64_t>(nh) * dim, 0.f);
  constexpr int kRowBlock = 16;
  for (int jb = 0; jb < n_rows; jb += kRowBlock) {
    const int je = std::min(n_rows, jb + kRowBlock);
    int h = h0;
    for (; h + 4 <= h1; h += 4) {
      float* o[4];
      const float* p[4];
      for (int i = 0; i < 4; ++i) {
        o[i] = out + static_cast<int64_t>(h + i) * dim;
        p[i] = sc(h + i);
      }
      for (int d = 0; d < dim; d += 16) {
        __m256 acc[4][2];
        for (int i = 0; i < 4; ++i) {
          acc[i][0] = _mm256_loadu_ps(o[i] + d);
          acc[i][1] = _mm256_loadu_ps(o[i] + d + 8);
        }
        for (int r = jb; r < je; ++r) {
          const __m256 k0 = _mm256_loadu_ps(rows[r] + d), k1 = _mm256_loadu_ps(rows[r] + d + 8);
          for (int i = 0; i < 4; ++i) {
            const __m256 pr = _mm256_set1_ps(p[i][r]);
            acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_mul_ps(pr, k0));
            acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_mul_ps(pr, k1));
          }
        }
        for (int i = 0; i < 4; ++i) {
          _mm256_storeu_ps(o[i] + d, acc[i][0]);
          _mm256_storeu_ps(o[i] + d + 8, acc[i][1]);
        }
      }
    }
    for (; h < h1; ++h) {  // the heads past the last group of four
      float* oh = out + static_cast<int64_t>(h) * dim;
      const float* ph = sc(h);
      for (int d = 0; d < dim; d += 16) {
        __m256 a0 = _mm256_loadu_ps(oh + d), a1 = _mm256_loadu_ps(oh + d + 8);
        for (int r = jb; r < je; ++r) {
          const __m256 pr = _mm256_set1_ps(ph[r]);
          a0 = _mm256_add_ps(a0, _mm256_mul_ps(pr, _mm256_loadu_ps(rows[r] + d)));
          a1 = _mm256_add_ps(a1, _mm256_mul_ps(pr, _mm256_loadu_ps(rows[r] + d + 8)));
        }
        _mm256_storeu_ps(oh + d, a0);
        _mm256_storeu_ps(oh + d + 8, a1);
      }
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
    const float* r8[8];
    for (int r = 0; r < 8; ++r) r8[r] = keys + (j + r) * dim;
    __m256 s = zero;
    for (int h = 0; h < heads; ++h) {
      const __m256 dots = dots8(q + static_cast<int64_t>(h) * dim, r8, dim);
      // max_ps(dots, 0) returns 0 for a NaN dot, as std::max(0.f, dot) does.
      s = _mm256_add_ps(s, _mm256_mul_ps(_mm256_set1_ps(w[h]), _mm256_max_ps(dots, zero)));
    }
    _mm256_storeu_ps(scores + (j - r0), s);
  }
  if (j < r1) index_scores_scalar(q, w, heads, dim, keys, j, r1, scores + (j - r0));
}

}  // namespace ds4::cpu
