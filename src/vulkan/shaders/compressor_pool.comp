#version 450
// Gated softmax pooling of a compressor (model forward, compressor_step), independently per
// output feature j < d:  P_j = sum_m softmax_m(score[m][j]) * kv[m][j] over the candidate
// rows m (ratio 4: 8 rows, the previous window's first half of each row then the current
// window's second half; else `ratio` rows). Scores <= -5e29 are masked; an all-masked
// feature gives 0. Sums run in the CPU's order: exp() is the only inexact step.
#include "common.glsl"

layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer K { float kv[]; };     // rows x width
layout(std430, binding = 1) readonly buffer S { float score[]; };  // rows x width
layout(std430, binding = 2) writeonly buffer O { float o[]; };     // d
layout(push_constant) uniform P {
  uint ratio;
  uint d;
  uint width;
} pc;

float at(uint m, uint j, bool is_score) {
  uint idx = m * pc.width + j;
  if (pc.ratio == 4u && m >= 4u) idx += pc.d;
  return is_score ? score[idx] : kv[idx];
}

void main() {
  const uint j = gl_GlobalInvocationID.x;
  if (j >= pc.d) return;
  const uint cand = pc.ratio == 4u ? 8u : pc.ratio;
  float mx = -1.0 / 0.0;
  for (uint m = 0u; m < cand; ++m) mx = max(mx, at(m, j, true));
  if (mx <= -5e29) {
    o[j] = 0.0;
    return;
  }
  float e[128];
  precise float z = 0.0;
  for (uint m = 0u; m < cand; ++m) {
    const float s = at(m, j, true);
    e[m] = s <= -5e29 ? 0.0 : exp(s - mx);
    z = z + e[m];
  }
  precise float acc = 0.0;
  for (uint m = 0u; m < cand; ++m) {
    precise float t = exact_div(e[m], z) * at(m, j, false);
    acc = acc + t;
  }
  o[j] = acc;
}
