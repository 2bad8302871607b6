#version 450
// Hyper-connection mixes of one token (model numerics hc_split_sinkhorn): pre/post gates and
// the Sinkhorn-normalised hc x hc combination matrix. hc is small (4), so one invocation
// does a token, in the CPU's order; exp() is the only inexact step.
#include "common.glsl"

layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer M { float m[]; };        // tokens x (2+hc)*hc
layout(std430, binding = 1) readonly buffer S3 { float scale3[]; };  // 3
layout(std430, binding = 2) readonly buffer Bs { float base[]; };    // (2+hc)*hc
layout(std430, binding = 3) writeonly buffer O { float o[]; };      // tokens x (2+hc)*hc: pre, post, comb
layout(std430, binding = 4) readonly buffer F { float factor[]; };   // per token, when has_factor
layout(push_constant) uniform P {
  uint n_tokens;
  uint hc;     // at most 8
  uint iters;
  float eps;
  uint has_factor;
} pc;

// The token's mix input, scaled by its stream's RMS factor first when given (model forward
// hc_pre: mt[i] *= f).
float mix(uint i) {
  const uint t = gl_GlobalInvocationID.x;
  precise float v = m[t * (2u + pc.hc) * pc.hc + i];
  if (pc.has_factor != 0u) v = v * factor[t];
  return v;
}

float sigmoid_(float x) { return exact_div(1.0, 1.0 + exp(-x)); }

void main() {
  const uint t = gl_GlobalInvocationID.x;
  if (t >= pc.n_tokens) return;
  const uint hc = pc.hc, stride = (2u + hc) * hc, mb = t * stride;
  for (uint s = 0u; s < hc; ++s) {
    precise float a = mix(s) * scale3[0] + base[s];
    precise float pre = sigmoid_(a) + pc.eps;
    precise float b = mix(hc + s) * scale3[1] + base[hc + s];
    precise float post = 2.0 * sigmoid_(b);
    o[mb + s] = pre;
    o[mb + hc + s] = post;
  }
  float C[64];
  for (uint i = 0u; i < hc; ++i) {
    float mx = -1.0 / 0.0;
    for (uint j = 0u; j < hc; ++j) {
      precise float c = mix(2u * hc + i * hc + j) * scale3[2] + base[2u * hc + i * hc + j];
      C[i * hc + j] = c;
      mx = max(mx, c);
    }
    precise float sum = 0.0;
    for (uint j = 0u; j < hc; ++j) {
      C[i * hc + j] = exp(C[i * hc + j] - mx);
      sum = sum + C[i * hc + j];
    }
    for (uint j = 0u; j < hc; ++j) {
      precise float c = exact_div(C[i * hc + j], sum) + pc.eps;
      C[i * hc + j] = c;
    }
  }
  for (uint it = 0u; it < pc.iters; ++it) {
    // The CPU normalises columns first, then (row, column) pairs for the remaining iterations.
    if (it > 0u) {
      for (uint i = 0u; i < hc; ++i) {
        precise float s = 0.0;
        for (uint j = 0u; j < hc; ++j) s = s + C[i * hc + j];
        precise float den = s + pc.eps;
        for (uint j = 0u; j < hc; ++j) C[i * hc + j] = exact_div(C[i * hc + j], den);
      }
    }
    for (uint j = 0u; j < hc; ++j) {
      precise float s = 0.0;
      for (uint i = 0u; i < hc; ++i) s = s + C[i * hc + j];
      precise float den = s + pc.eps;
      for (uint i = 0u; i < hc; ++i) C[i * hc + j] = exact_div(C[i * hc + j], den);
    }
  }
  for (uint k = 0u; k < hc * hc; ++k) o[mb + 2u * hc + k] = C[k];
}
