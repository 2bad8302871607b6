#version 450
// Hyper-connection stream mixing (model forward hc_pre / hc_post), one invocation per
// (token, dim), sums in the CPU's order (exact):
//   PRE:  u[t][d]    = sum_s pre[t][s] * x[t][s][d]
//   POST: x'[t][j][d] = post[t][j] * y[t][d] + sum_i comb[t][i][j] * x[t][i][d]
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };      // tokens x hc x dim
layout(std430, binding = 1) readonly buffer G { float gates[]; };  // tokens x (2+hc)*hc (pre, post, comb)
layout(std430, binding = 2) readonly buffer Y { float y[]; };      // tokens x dim (POST)
layout(std430, binding = 3) writeonly buffer O { float o[]; };     // PRE: tokens x dim; POST: tokens x hc x dim
layout(push_constant) uniform P {
  uint dim;
  uint hc;
  uint post_mode;
} pc;

void main() {
  const uint d = gl_GlobalInvocationID.x;
  if (d >= pc.dim) return;
  const uint t = gl_WorkGroupID.y, hc = pc.hc;
  const uint xb = t * hc * pc.dim, gb = t * (2u + hc) * hc;
  if (pc.post_mode == 0u) {
    precise float acc = 0.0;
    for (uint s = 0u; s < hc; ++s) {
      precise float p = gates[gb + s] * x[xb + s * pc.dim + d];
      acc = acc + p;
    }
    o[t * pc.dim + d] = acc;
    return;
  }
  for (uint j = 0u; j < hc; ++j) {
    precise float acc = gates[gb + hc + j] * y[t * pc.dim + d];
    for (uint i = 0u; i < hc; ++i) {
      precise float p = gates[gb + 2u * hc + i * hc + j] * x[xb + i * pc.dim + d];
      acc = acc + p;
    }
    o[xb + j * pc.dim + d] = acc;
  }
}
