#version 450
// FP8 (e4m3, blocks of 64) / FP4 (e2m1, blocks of 32) quantize-dequantize simulation, in
// place on the first n values of each row (model numerics fp8_sim64 / fp4_sim32). Every step
// is exact (power-of-two scales applied with ldexp, rounding to the minifloat grid with
// roundEven), so the result is bit-identical to the CPU. One invocation per block.
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer X { float x[]; };
layout(push_constant) uniform P {
  uint n;           // values per row (a multiple of the block)
  uint row_stride;
  uint n_blocks;    // rows * n / block
  float inv_max;    // 1/448 or 1/6 as the CPU's float expression gives it
  float min_amax;
} pc;

#ifdef FP8
#define BLOCK 64u
#define MANT 3
#define MIN_EXP (-6)
#define MAXV 448.0
#else
#define BLOCK 32u
#define MANT 1
#define MIN_EXP 0
#define MAXV 6.0
#endif

int exponent_of(float a) { return int((floatBitsToUint(a) >> 23) & 255u) - 127; }

float pow2_ceil(float y) {
  const uint bits = floatBitsToUint(y);
  int e = int((bits >> 23) & 255u);
  if ((bits & 0x7FFFFFu) != 0u) e += 1;
  return ldexp(1.0, e - 127);
}

float round_minifloat(float v) {
  const float a = abs(v);
  if (a == 0.0) return v;
  const int e = max(exponent_of(a), MIN_EXP);
  const float q = ldexp(roundEven(ldexp(a, MANT - e)), e - MANT);
  return v < 0.0 ? -q : q;
}

void main() {
  const uint blk = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64u;
  if (blk >= pc.n_blocks) return;
  const uint per_row = pc.n / BLOCK;
  const uint base = (blk / per_row) * pc.row_stride + (blk % per_row) * BLOCK;
  float amax = 0.0;
  for (uint i = 0u; i < BLOCK; ++i) amax = max(amax, abs(x[base + i]));
  amax = max(amax, pc.min_amax);
  precise float t = amax * pc.inv_max;
  const float scale = pow2_ceil(t);
  const int se = exponent_of(scale);
  for (uint i = 0u; i < BLOCK; ++i) {
    const float v = clamp(ldexp(x[base + i], -se), -MAXV, MAXV);
    x[base + i] = ldexp(round_minifloat(v), se);
  }
}
