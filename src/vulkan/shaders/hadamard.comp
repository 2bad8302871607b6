#version 450
// Sylvester Hadamard transform of each row (n a power of two, n <= 4096) scaled by n^-1/2,
// in place, with the CPU's butterfly order (model numerics hadamard_scaled): exact.
layout(local_size_x = 256) in;
layout(std430, binding = 0) buffer X { float x[]; };
layout(push_constant) uniform P {
  uint n;
  uint row_stride;
  float scale;  // float(1 / sqrt(double(n))), from the host
} pc;

shared float s_v[4096];

void main() {
  const uint tid = gl_LocalInvocationID.x, base = gl_WorkGroupID.x * pc.row_stride;
  for (uint i = tid; i < pc.n; i += 256u) s_v[i] = x[base + i];
  barrier();
  for (uint h = 1u; h < pc.n; h <<= 1) {
    // Butterfly b pairs j = (b / h) * 2h + b % h with j + h.
    for (uint b = tid; b < pc.n / 2u; b += 256u) {
      const uint j = (b / h) * 2u * h + (b % h);
      const float a = s_v[j], c = s_v[j + h];
      precise float sum = a + c;
      precise float dif = a - c;
      s_v[j] = sum;
      s_v[j + h] = dif;
    }
    barrier();
  }
  for (uint i = tid; i < pc.n; i += 256u) {
    precise float v = s_v[i] * pc.scale;
    x[base + i] = v;
  }
}
