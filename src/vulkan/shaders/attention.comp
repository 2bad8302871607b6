#version 450
// Multi-query attention of one token with a per-head sink logit over gathered key/value rows
// (one row is both key and value for every head):
//   s_j = (q_h . row_j) * scale,  p_j = exp(s_j - m) / (exp(sink_h - m) + sum_j exp(s_j - m))
//   out_h = sum_j p_j * row_j,    m = max(sink_h, max_j s_j)
// Rows are picked by index (raw window, compressed rows, indexer top-k alike); token t uses
// row_index[spans[2t] .. spans[2t] + spans[2t+1]), so a prefill chunk with causal windows is
// one dispatch. Every sum runs in the CPU reference's order (src/cpu attention.cpp), so only
// exp() can differ. One workgroup per (head, token).
#include "common.glsl"

layout(local_size_x = 128) in;
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer R { float rows[]; };
layout(std430, binding = 2) readonly buffer I { int row_index[]; };
layout(std430, binding = 3) readonly buffer Sp { int spans[]; };  // tokens x (first, count)
layout(std430, binding = 4) readonly buffer S { float sinks[]; };
layout(std430, binding = 5) buffer Sc { float scores[]; };  // scratch: tokens x heads x max_rows
layout(std430, binding = 6) writeonly buffer O { float o[]; };   // tokens x heads x dim
layout(push_constant) uniform P {
  uint dim;
  uint heads;
  uint max_rows;
  float scale;
} pc;

shared float s_max[128];
shared float s_z;

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y;
  const uint first = uint(spans[2u * t]), n_rows = min(uint(spans[2u * t + 1u]), pc.max_rows);
  const uint qb = (t * pc.heads + h) * pc.dim, sb = (t * pc.heads + h) * pc.max_rows;
  float mx = sinks[h];
  for (uint j = tid; j < n_rows; j += 128u) {
    const uint rb = uint(row_index[first + j]) * pc.dim;
    precise float acc = 0.0;
    for (uint d = 0u; d < pc.dim; ++d) {
      precise float p = q[qb + d] * rows[rb + d];
      acc = acc + p;
    }
    precise float s = acc * pc.scale;
    scores[sb + j] = s;
    mx = max(mx, s);
  }
  s_max[tid] = mx;
  barrier();
  for (uint s = 64u; s > 0u; s >>= 1) {
    if (tid < s) s_max[tid] = max(s_max[tid], s_max[tid + s]);
    barrier();
  }
  const float m = s_max[0];
  for (uint j = tid; j < n_rows; j += 128u) scores[sb + j] = exp(scores[sb + j] - m);
  memoryBarrierBuffer();
  barrier();
  if (tid == 0u) {
    precise float z = exp(sinks[h] - m);
    for (uint j = 0u; j < n_rows; ++j) z = z + scores[sb + j];
    s_z = z;
  }
  barrier();
  const float z = s_z;
  for (uint d = tid; d < pc.dim; d += 128u) {
    precise float acc = 0.0;
    for (uint j = 0u; j < n_rows; ++j) {
      const float pj = exact_div(scores[sb + j], z);
      precise float contrib = pj * rows[uint(row_index[first + j]) * pc.dim + d];
      acc = acc + contrib;
    }
    o[qb + d] = acc;
  }
}
