#version 450
// Lightning-indexer scores of compressed rows for one token (model forward):
//   s_row = sum_h (w[h] * wscale) * max(0, q_h . k_row)
// One invocation per row; the dot runs in index order like the scalar reference.
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Q { float q[]; };     // heads x dim
layout(std430, binding = 1) readonly buffer K { float rows[]; };  // n_rows x dim
layout(std430, binding = 2) readonly buffer Wt { float w[]; };    // heads
layout(std430, binding = 3) writeonly buffer S { float score[]; };
layout(push_constant) uniform P {
  uint n_rows;
  uint heads;
  uint dim;
  float wscale;
} pc;

void main() {
  const uint row = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64u;
  if (row >= pc.n_rows) return;
  precise float s = 0.0;
  for (uint h = 0u; h < pc.heads; ++h) {
    precise float dot = 0.0;
    for (uint i = 0u; i < pc.dim; ++i) {
      precise float p = q[h * pc.dim + i] * rows[row * pc.dim + i];
      dot = dot + p;
    }
    precise float wh = w[h] * pc.wscale;
    precise float t = wh * max(0.0, dot);
    s = s + t;
  }
  score[row] = s;
}
