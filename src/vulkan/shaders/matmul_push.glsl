// Push constants of both matmul shaders: y[v][r] = dot(W row r, x_v) for r < rows, v < nvec.
layout(push_constant) uniform P {
  uint rows;         // weight rows in this dispatch
  uint cols;         // values per row (a whole number of blocks)
  uint nvec;         // input vectors
  uint w_off;        // byte offset of row 0 inside the W binding (binding offsets are aligned)
  uint w_row_bytes;  // bytes per weight row
  uint x_stride;     // words between input vectors
  uint y_stride;     // floats between output vectors
  uint y_off;        // float offset of row 0 in each output vector
#ifdef IDS
  // Routed experts: workgroup (row, pair); pair p multiplies expert ids[p]'s row with the
  // operand of token p / k_per_token into output vector p. This dispatch holds experts
  // [e_lo, e_hi), expert e at byte (e - e_lo) * expert_bytes; other pairs skip it.
  uint e_lo;
  uint e_hi;
  uint expert_bytes;
  uint k_per_token;
#endif
} pc;

// The workgroup's index (the float shader: its row; the block shader: its group of rows).
// Groups beyond 65535 spill into the y dimension of the grid.
#ifdef IDS
uint current_row() { return gl_WorkGroupID.x; }
#else
uint current_row() { return gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x; }
#endif
