// Two dot products that share one operand, for the float-weight products of a prefill chunk
// (F16/F32 rows against several vectors: the HC mixes, the router, the compressors and the
// indexer's projections). Each result equals quant::kernels().dot_f32 / dot_f16 bit for
// bit: per output the same four 8-lane FMA chains over the same elements, summed the same
// way. Two outputs give eight independent chains (one output's four wait on the FMA
// latency) and load the shared operand once.
#pragma once

#include <cstdint>

namespace ds4::cpu {

struct FloatDots {
  // out[0] = dot(a, x0), out[1] = dot(a, x1); n a multiple of 8.
  void (*dot2_f32)(const float* a, const float* x0, const float* x1, int64_t n, float* out);
  void (*dot2_f16)(const uint16_t* w, const float* x0, const float* x1, int64_t n, float* out);
};

// The pair kernels matching the dot kernels this process chose, or null where there are none
// (scalar or AVX-512 dots: callers then use the single dots).
const FloatDots* float_dots();

}  // namespace ds4::cpu
