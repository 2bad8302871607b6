#version 450
// F32 / F16 weight rows times f32 vectors (with IDS: routed experts chosen on the device). One workgroup per row; each thread sums a fixed
// stride of the row and a fixed-shape tree adds the partials, so the result does not depend
// on the device's subgroup size (only the summation order differs from the CPU's).
#include "common.glsl"
#include "matmul_push.glsl"

#define WG 64u
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
#ifdef IDS
layout(std430, binding = 3) readonly buffer Ids { int ids[]; };
#endif

shared float s_part[WG];

void main() {
  const uint row = current_row();
  if (row >= pc.rows) return;
  const uint tid = gl_LocalInvocationID.x;
#ifdef IDS
  // Routed experts (see matmul_push.glsl): workgroup (row, pair), one vector per pair.
  const uint pair = gl_WorkGroupID.y;
  const uint expert = uint(ids[pair]);
  if (expert < pc.e_lo || expert >= pc.e_hi) return;  // uniform over the workgroup
  const uint rbase = pc.w_off + (expert - pc.e_lo) * pc.expert_bytes + row * pc.w_row_bytes;
  const uint nvec = 1u;
#else
  const uint rbase = pc.w_off + row * pc.w_row_bytes;
  const uint nvec = pc.nvec;
#endif
  for (uint v = 0u; v < nvec; ++v) {
#ifdef IDS
    const uint xbase = (pair / pc.k_per_token) * pc.x_stride;
    const uint ybase = pair * pc.y_stride;
#else
    const uint xbase = v * pc.x_stride;
    const uint ybase = v * pc.y_stride;
#endif
    precise float acc = 0.0;
    for (uint i = tid; i < pc.cols; i += WG) {
#ifdef W_F32
      float wv = uintBitsToFloat(w[(rbase >> 2) + i]);
#else
      float wv = f16_bits_to_f32(U16_AT(w, rbase + 2u * i));
#endif
      precise float p = wv * x[xbase + i];
      acc = acc + p;
    }
    s_part[tid] = acc;
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
      if (tid < s) {
        precise float t = s_part[tid] + s_part[tid + s];
        s_part[tid] = t;
      }
      barrier();
    }
    if (tid == 0u) y[ybase + pc.y_off + row] = s_part[0];
    barrier();
  }
}
