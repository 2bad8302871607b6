#version 450
// Sum of a token's routed-expert outputs in slot order, then the shared expert's (model
// forward moe_sublayer): exact. Pair outputs are [tokens * k][dim] in (token, slot) order.
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Pr { float pairs[]; };
layout(std430, binding = 1) readonly buffer Sh { float shared_out[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
  uint dim;
  uint k;
  uint has_shared;
} pc;

void main() {
  const uint d = gl_GlobalInvocationID.x;
  if (d >= pc.dim) return;
  const uint t = gl_WorkGroupID.y;
  precise float acc = 0.0;
  for (uint s = 0u; s < pc.k; ++s) acc = acc + pairs[(t * pc.k + s) * pc.dim + d];
  if (pc.has_shared != 0u) acc = acc + shared_out[t * pc.dim + d];
  y[t * pc.dim + d] = acc;
}
