#version 450
// out = silu(min(g, lim)) * clamp(u, -lim, lim) [* scale[vector]]; lim <= 0 disables the
// clamp. scale carries the routing weight of a (token, expert) pair.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer G { float g[]; };
layout(std430, binding = 1) readonly buffer U { float u[]; };
layout(std430, binding = 2) readonly buffer S { float scale[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(push_constant) uniform P {
  uint n;          // values per vector
  uint stride;     // floats between vectors (g, u and out alike)
  uint has_scale;
  float lim;
} pc;

void main() {
  const uint i = gl_GlobalInvocationID.x;
  if (i >= pc.n) return;
  const uint vec = gl_WorkGroupID.y;
  const uint k = vec * pc.stride + i;
  float gv = g[k], uv = u[k];
  if (pc.lim > 0.0) {
    gv = min(gv, pc.lim);
    uv = clamp(uv, -pc.lim, pc.lim);
  }
  precise float silu = gv / (1.0 + exp(-gv));
  precise float m = silu * uv;
  if (pc.has_scale != 0u) m = m * scale[vec];
  o[k] = m;
}
