#version 450
// y = x * (mean(x^2) + eps)^-1/2 (* w). One workgroup per vector; fixed-shape tree sum (the
// CPU sums in double: results agree to a few ulp, see docs/vulkan.md). With FACTOR_ONLY the
// shader writes just the factor, one float per vector (hyper-connection mixes scale by it).
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Wt { float w[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
  uint n;
  uint x_stride;
  uint y_stride;
  uint has_weight;
  float eps;
} pc;

shared float s_part[256];

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint xb = gl_WorkGroupID.x * pc.x_stride, yb = gl_WorkGroupID.x * pc.y_stride;
  precise float acc = 0.0;
  for (uint i = tid; i < pc.n; i += 256u) {
    precise float sq = x[xb + i] * x[xb + i];
    acc = acc + sq;
  }
  s_part[tid] = acc;
  barrier();
  for (uint s = 128u; s > 0u; s >>= 1) {
    if (tid < s) {
      precise float t = s_part[tid] + s_part[tid + s];
      s_part[tid] = t;
    }
    barrier();
  }
  precise float mean = s_part[0] / float(pc.n) + pc.eps;
  const float f = 1.0 / sqrt(mean);
#ifdef FACTOR_ONLY
  if (tid == 0u) y[gl_WorkGroupID.x] = f;
  return;
#endif
  for (uint i = tid; i < pc.n; i += 256u) {
    precise float v = x[xb + i] * f;
    if (pc.has_weight != 0u) v = v * w[i];
    y[yb + i] = v;
  }
}
