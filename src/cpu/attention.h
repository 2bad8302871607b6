// Multi-query attention of one token over a set of shared key/value rows (DeepSeek V4: one
// 512-wide row is both key and value for every head) with a per-head sink logit.
//
//   s_j = (q_h . row_j) * scale,  p_j = exp(s_j - m) / (exp(sink_h - m) + sum_j exp(s_j - m))
//   out_h = sum_j p_j * row_j      (m = max(sink_h, max_j s_j))
//
// The scalar version is the reference; the AVX2 one computes the same float expressions in
// the same order (no FMA contraction), so both give identical results. Dot products (q_h . row_j
// here, q_h . key_j in the indexer) are summed in 8 lanes, lane l taking the dims d with
// d % 8 == l in order, combined as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)): the
// order an 8-wide register computes 8 rows at a time in, whatever the ISA.
#pragma once

#include <cstdint>

namespace ds4::cpu {

// Heads [h0, h1) of q (heads x dim, row h at q + h*dim); out likewise. `scores` has room for
// (h1 - h0) * n_rows floats.
using AttendFn = void (*)(const float* q, int h0, int h1, int dim, const float* const* rows, int n_rows,
                          const float* sinks, float scale, float* out, float* scores);

// a . b over n floats in the lane order above.
inline float dot_lanes8(const float* a, const float* b, int n) {
  float lane[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  for (int d = 0; d < n; ++d) lane[d % 8] = lane[d % 8] + a[d] * b[d];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

void attend_heads_scalar(const float* q, int h0, int h1, int dim, const float* const* rows, int n_rows,
                         const float* sinks, float scale, float* out, float* scores);

// The fastest version this CPU runs (DS4_ISA=scalar forces the reference).
AttendFn attend_heads();

// Lightning-indexer scores of compressed rows [r0, r1) for one query token:
//
//   score_j = sum_h w_h * max(0, q_h . key_j)      (h in order 0..heads-1, starting from 0)
//
// q is heads x dim, key_j is at keys + j*dim, scores[j - r0] receives row j's score; w holds
// the per-head weights already scaled. The dots in dot_lanes8's order, so both versions give
// identical results whatever the ISA and however the rows are split over threads.
using IndexScoreFn = void (*)(const float* q, const float* w, int heads, int dim, const float* keys, int64_t r0,
                              int64_t r1, float* scores);

void index_scores_scalar(const float* q, const float* w, int heads, int dim, const float* keys, int64_t r0,
                         int64_t r1, float* scores);

// The fastest version this CPU runs (DS4_ISA=scalar forces the reference).
IndexScoreFn index_scores();

}  // namespace ds4::cpu
