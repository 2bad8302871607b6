#version 450
// Embedding rows of the tokens, copied into each of the hc streams (model forward embed):
// X[t][s][d] = dequantized row tokens[t] (F32, F16 or Q8_0; the CPU's dequantization).
// A table larger than one binding is bound in row chunks, one dispatch each: a dispatch
// writes only the tokens whose id lies in its chunk [r_lo, r_hi).
#include "common.glsl"

layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 1) readonly buffer T { int tokens[]; };
layout(std430, binding = 2) writeonly buffer X { float x[]; };
layout(push_constant) uniform P {
  uint dim;
  uint hc;
  uint row_bytes;
  uint w_type;  // 0 F32, 1 F16, 8 Q8_0 (GGUF ids)
  uint w_off;   // byte offset of row r_lo inside the binding
  uint r_lo;
  uint r_hi;
} pc;

void main() {
  const uint d = gl_GlobalInvocationID.x;
  if (d >= pc.dim) return;
  const uint t = gl_WorkGroupID.y;
  const int id = tokens[t];
  if (id < 0 || uint(id) < pc.r_lo || uint(id) >= pc.r_hi) return;
  float v;
  {
    const uint rb = pc.w_off + (uint(id) - pc.r_lo) * pc.row_bytes;
    if (pc.w_type == 0u) {
      // Two half-words: the row may start at any even byte.
      v = uintBitsToFloat(U16_AT(w, rb + 4u * d) | (U16_AT(w, rb + 4u * d + 2u) << 16));
    } else if (pc.w_type == 1u) {
      v = f16_bits_to_f32(U16_AT(w, rb + 2u * d));
    } else {
      const uint b = rb + (d / 32u) * 34u;
      precise float p = f16_bits_to_f32(U16_AT(w, b)) * float(bitfieldExtract(int(BYTE_AT(w, b + 2u + d % 32u)), 0, 8));
      v = p;
    }
  }
  for (uint s = 0u; s < pc.hc; ++s) x[(t * pc.hc + s) * pc.dim + d] = v;
}
