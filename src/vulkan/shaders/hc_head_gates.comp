#version 450
// Output-head stream weights (model forward head): w[t][s] = sigmoid(m[t][s] * f[t] * scale
// + base[s]) + eps, written as the "pre" gates of hc_sinkhorn's layout (stride (2+hc)*hc per
// token) so that hc_mix's pre mode forms the weighted stream sum.
#include "common.glsl"

layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer M { float m[]; };      // tokens x hc
layout(std430, binding = 1) readonly buffer F { float factor[]; }; // tokens
layout(std430, binding = 2) readonly buffer Bs { float base[]; };  // hc
layout(std430, binding = 3) writeonly buffer O { float o[]; };     // tokens x (2+hc)*hc
layout(push_constant) uniform P {
  uint n_tokens;
  uint hc;
  float scale;
  float eps;
} pc;

void main() {
  const uint t = gl_GlobalInvocationID.x;
  if (t >= pc.n_tokens) return;
  for (uint s = 0u; s < pc.hc; ++s) {
    precise float a = m[t * pc.hc + s] * factor[t] * pc.scale + base[s];
    precise float w = exact_div(1.0, 1.0 + exp(-a)) + pc.eps;
    o[t * (2u + pc.hc) * pc.hc + s] = w;
  }
}
