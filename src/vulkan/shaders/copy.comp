#version 450
// dst = src, 16 bytes per invocation (the bandwidth probe, and buffer-to-buffer copies inside
// a recorded sequence).
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer S { uvec4 src[]; };
layout(std430, binding = 1) writeonly buffer D { uvec4 dst[]; };
layout(push_constant) uniform P {
  uint n;  // uvec4 elements
} pc;

void main() {
  const uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
  if (i < pc.n) dst[i] = src[i];
}
