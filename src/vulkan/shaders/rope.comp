#version 450
// Rotates adjacent pairs of the rope tail of each row by per-row angles. The cos/sin table
// (per group of rows, per pair) is computed on the host with the CPU's float expressions, because
// Vulkan's sin/cos are only accurate to 2^-11 absolute: the rotation itself is then exact
// to the CPU's arithmetic.
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer CS { vec2 cs[]; };
layout(push_constant) uniform P {
  uint half_dims;  // pairs per row
  uint row_stride; // floats between rows
  uint tail;       // offset of the rope tail within a row
  uint cs_stride;  // vec2 between rows in the table (0: one table for all rows)
  uint inverse;
  uint rows_per_group;  // rows sharing one table entry (a token's heads)
  uint group_stride;    // floats between groups of rows
} pc;

void main() {
  const uint k = gl_GlobalInvocationID.x;
  if (k >= pc.half_dims) return;
  const uint row = gl_WorkGroupID.y;
  const uint g = row / pc.rows_per_group, rg = row - g * pc.rows_per_group;
  const vec2 c_s = cs[g * pc.cs_stride + k];
  const float c = c_s.x, s = pc.inverse != 0u ? -c_s.y : c_s.y;
  const uint o = g * pc.group_stride + rg * pc.row_stride + pc.tail + 2u * k;
  const float x0 = x[o], x1 = x[o + 1u];
  precise float a = x0 * c - x1 * s;
  precise float b = x0 * s + x1 * c;
  x[o] = a;
  x[o + 1u] = b;
}
