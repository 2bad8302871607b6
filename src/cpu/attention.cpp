#include "cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "quant/isa.h"
#include "quant/quant.h"

namespace ds4::cpu {

#if defined(DS4_CPU_HAVE_AVX2)
void attend_heads_avx2(const float* q, int h0, int h1, int dim, const float* const* rows, int n_rows,
                       const float* sinks, float scale, float* out, float* scores);
void index_scores_avx2(const float* q, const float* w, int heads, int dim, const float* keys, int64_t r0,
                       int64_t r1, float* scores);
#endif

void attend_heads_scalar(const float* q, int h0, int h1, int dim, const float* const* rows, int n_rows,
                         const float* sinks, float scale, float* out, float* scores) {
  for (int h = h0; h < h1; ++h) {
    const float* qh = q + static_cast<int64_t>(h) * dim;
    const float sink = sinks[h];
    float mx = sink;
    for (int j = 0; j < n_rows; ++j) {
      scores[j] = dot_lanes8(qh, rows[j], dim) * scale;
      mx = std::max(mx, scores[j]);
    }
    float z = std::exp(sink - mx);
    for (int j = 0; j < n_rows; ++j) {
      scores[j] = std::exp(scores[j] - mx);
      z += scores[j];
    }
    float* oh = out + static_cast<int64_t>(h) * dim;
    std::fill(oh, oh + dim, 0.f);
    for (int j = 0; j < n_rows; ++j) {
      const float pj = scores[j] / z;
      const float* kr = rows[j];
      for (int d = 0; d < dim; ++d) oh[d] += pj * kr[d];
    }
  }
}

AttendFn attend_heads() {
  static const AttendFn fn = [] {
#if defined(DS4_CPU_HAVE_AVX2)
    if (quant::chosen_isa() != quant::Isa::Scalar && quant::isa_available(quant::Isa::AVX2)) {
      return &attend_heads_avx2;
    }
#endif
    return &attend_heads_scalar;
  }();
  return fn;
}

void index_scores_scalar(const float* q, const float* w, int heads, int dim, const float* keys, int64_t r0,
                         int64_t r1, float* scores) {
  for (int64_t j = r0; j < r1; ++j) {
    const float* kr = keys + j * dim;
    float s = 0.f;
    for (int h = 0; h < heads; ++h) s += w[h] * std::max(0.f, dot_lanes8(q + static_cast<int64_t>(h) * dim, kr, dim));
    scores[j - r0] = s;
  }
}

IndexScoreFn index_scores() {
  static const IndexScoreFn fn = [] {
#if defined(DS4_CPU_HAVE_AVX2)
    if (quant::chosen_isa() != quant::Isa::Scalar && quant::isa_available(quant::Isa::AVX2)) {
      return &index_scores_avx2;
    }
#endif
    return &index_scores_scalar;
  }();
  return fn;
}

}  // namespace ds4::cpu
