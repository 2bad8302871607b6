#version 450
// Strided row copies inside a recorded sequence, with word offsets instead of binding offsets
// (so no row has to start at an aligned byte): for r < nrows, i < len,
//   dst[d_off + r * d_stride + i] = src[s_off + r * s_stride + i] (+ b[b_off + r * b_stride + i])
// The sum (a compressor's gate plus its positional bias) is one float add, exact to the CPU.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer S { float src[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer D { float dst[]; };
layout(push_constant) uniform P {
  uint len;
  uint nrows;
  uint s_off;
  uint s_stride;
  uint d_off;
  uint d_stride;
  uint b_off;
  uint b_stride;
  uint has_b;
} pc;

void main() {
  const uint i = gl_GlobalInvocationID.x;
  const uint r = gl_WorkGroupID.y + gl_WorkGroupID.z * gl_NumWorkGroups.y;
  if (i >= pc.len || r >= pc.nrows) return;
  float v = src[pc.s_off + r * pc.s_stride + i];
  if (pc.has_b != 0u) {
    precise float s = v + b[pc.b_off + r * pc.b_stride + i];
    v = s;
  }
  dst[pc.d_off + r * pc.d_stride + i] = v;
}
