#version 450
// Activation quantizers, byte-identical to the CPU's (src/quant quantize_act_q8_K /
// quantize_act_q8_0). Output blocks have the CPU struct layouts:
//   block_q8_K:     f32 d | int8 qs[256] | int16 bsums[16]   (73 words)
//   block_q8_0_act: f32 d | int8 qs[32]                      (9 words)
// One workgroup of 64 threads quantizes 256 values (Q8_K: one block, Q8_0: eight blocks).
#include "common.glsl"

layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { uint y[]; };
layout(push_constant) uniform P {
  uint n;         // values per vector (a whole number of blocks)
  uint x_stride;  // floats between vectors
  uint y_stride;  // words between vectors
} pc;

shared float s_amax[64];
shared uint s_idx[64];
shared int s_sum[64];

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint vec = gl_WorkGroupID.y;
  const uint chunk = gl_WorkGroupID.x;  // 256 values
  const uint xbase = vec * pc.x_stride + chunk * 256u + tid * 4u;
  // Q8_0 vectors need only be whole 32-value blocks: threads past the end idle.
  const bool live = chunk * 256u + tid * 4u < pc.n;
  float v[4];
  for (uint i = 0u; i < 4u; ++i) v[i] = live ? x[xbase + i] : 0.0;

#ifdef ACT_Q8_K
  // First index of the largest |x| (the CPU scans with a strict >).
  float amax = 0.0;
  uint idx = 0xFFFFFFFFu;
  for (uint i = 0u; i < 4u; ++i) {
    float a = abs(v[i]);
    if (a > amax) { amax = a; idx = tid * 4u + i; }
  }
  s_amax[tid] = amax;
  s_idx[tid] = idx;
  barrier();
  for (uint s = 32u; s > 0u; s >>= 1) {
    if (tid < s) {
      float a = s_amax[tid + s];
      uint j = s_idx[tid + s];
      if (a > s_amax[tid] || (a == s_amax[tid] && j < s_idx[tid])) { s_amax[tid] = a; s_idx[tid] = j; }
    }
    barrier();
  }
  const uint ybase = vec * pc.y_stride + chunk * 73u;
  if (s_amax[0] == 0.0) {
    y[ybase + 1u + tid] = 0u;
    if (tid == 0u) y[ybase] = 0u;
    if (tid < 8u) y[ybase + 65u + tid] = 0u;
    return;
  }
  const float maxv = x[vec * pc.x_stride + chunk * 256u + s_idx[0]];
  const float iscale = exact_div(-127.0, maxv);
  uint packed = 0u;
  int qsum = 0;
  for (uint i = 0u; i < 4u; ++i) {
    precise float t = iscale * v[i];
    int q = clamp(int(roundEven(t)), -128, 127);
    qsum += q;
    packed |= (uint(q) & 0xFFu) << (8u * i);
  }
  y[ybase + 1u + tid] = packed;
  s_sum[tid] = qsum;
  barrier();
  // bsums[j] covers values 16j..16j+15 = threads 4j..4j+3; two int16 per word.
  if ((tid & 7u) == 0u) {
    int b0 = s_sum[tid] + s_sum[tid + 1u] + s_sum[tid + 2u] + s_sum[tid + 3u];
    int b1 = s_sum[tid + 4u] + s_sum[tid + 5u] + s_sum[tid + 6u] + s_sum[tid + 7u];
    y[ybase + 65u + tid / 8u] = (uint(b0) & 0xFFFFu) | ((uint(b1) & 0xFFFFu) << 16);
  }
  if (tid == 0u) y[ybase] = floatBitsToUint(exact_div(1.0, iscale));
#endif

#ifdef ACT_Q8_0
  // Eight threads per 32-value block.
  float amax = 0.0;
  for (uint i = 0u; i < 4u; ++i) amax = max(amax, abs(v[i]));
  s_amax[tid] = amax;
  barrier();
  const uint g = tid & ~7u;
  float bmax = s_amax[g];
  for (uint i = 1u; i < 8u; ++i) bmax = max(bmax, s_amax[g + i]);
  const float d = exact_div(bmax, 127.0);
  const float id = d != 0.0 ? exact_div(1.0, d) : 0.0;
  uint packed = 0u;
  for (uint i = 0u; i < 4u; ++i) {
    precise float t = v[i] * id;
    int q = clamp(int(roundEven(t)), -128, 127);
    packed |= (uint(q) & 0xFFu) << (8u * i);
  }
  const uint block = chunk * 8u + tid / 8u;
  const uint ybase = vec * pc.y_stride + block * 9u;
  if (!live) return;
  y[ybase + 1u + (tid & 7u)] = packed;
  if ((tid & 7u) == 0u) y[ybase] = floatBitsToUint(d);
#endif
}
