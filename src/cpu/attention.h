// Multi-query attention of one token over a set of shared key/value rows (DeepSeek V4: one
// 512-wide row is both key and value for every head) with a per-head sink logit.
//
//   s_j = (q_h . row_j) * scale,  p_j = exp(s_j - m) / (exp(sink_h - m) + sum_j exp(s_j - m))
//   out_h = sum_j p_j * row_j      (m = max(sink_h, max_j s_j))
//
// The scalar version is the reference; the AVX2 one computes the same float expressions in
// the same order (no FMA contraction), so both give identical results.
#pragma once

#include <cstdint>

namespace ds4::cpu {

// Heads [h0, h1) of q (heads x dim, row h at q + h*dim); out likewise. `scores` has room for
// n_rows floats.
using AttendFn = void (*)(const float* q, int h0, int h1, int dim, const float* const* rows, int n_rows,
                          const float* sinks, float scale, float* out, float* scores);

void attend_heads_scalar(const float* q, int h0, int h1, int dim, const float* const* rows, int n_rows,
                         const float* sinks, float scale, float* out, float* scores);

// The fastest version this CPU runs (DS4_ISA=scalar forces the reference).
AttendFn attend_heads();

}  // namespace ds4::cpu
