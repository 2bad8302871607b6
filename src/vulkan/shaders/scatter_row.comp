#version 450
// dst[slot * n + i] = src[i] with slot read from a buffer at run time, so a recorded decode
// step can write its KV row into a ring at the position of whichever token it runs for.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer S { float src[]; };
layout(std430, binding = 1) readonly buffer I { int slot[]; };
layout(std430, binding = 2) buffer D { float dst[]; };
layout(push_constant) uniform P {
  uint n;
  uint slot_index;  // which entry of the slot buffer
  uint max_slots;   // rows in dst (a slot outside is not written)
} pc;

void main() {
  const uint i = gl_GlobalInvocationID.x;
  const int s = slot[pc.slot_index];
  if (i >= pc.n || s < 0 || uint(s) >= pc.max_slots) return;
  dst[uint(s) * pc.n + i] = src[i];
}
