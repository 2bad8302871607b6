#version 450
// MoE routing on the device: pi = sqrt(softplus(logit)); the top-k experts by pi + bias
// (ties to the lower index, like the CPU's sort); weights pi / max(sum, 2^-14) (when
// normalised) times route_scale. One workgroup per token. Hash-routed layers (hash != 0)
// take the experts from the token's row of the tid2eid table instead of the top-k.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer L { float logits[]; };
layout(std430, binding = 1) readonly buffer B { float bias[]; };
layout(std430, binding = 2) writeonly buffer C { int chosen[]; };
layout(std430, binding = 3) writeonly buffer Wt { float weight[]; };
layout(std430, binding = 4) readonly buffer Tk { int tokens[]; };   // hash mode: token ids
layout(std430, binding = 5) readonly buffer Tb { int tid2eid[]; };  // hash mode: vocab x k
layout(push_constant) uniform P {
  uint n_experts;  // at most 1024
  uint k;          // experts per token, at most 16
  uint has_bias;
  uint normalise;
  float route_scale;
  uint hash;
} pc;

shared float s_pi[1024];
shared float s_key[1024];
shared float s_best[256];
shared uint s_arg[256];
shared uint s_chosen[16];

// log1p without a library call: log(u) * y / (u - 1) corrects the rounding of u = 1 + y.
float log1p_(float y) {
  precise float u = 1.0 + y;
  if (u == 1.0) return y;
  precise float r = log(u) * y / (u - 1.0);
  return r;
}

float softplus_(float v) {
  if (v > 20.0) return v;
  if (v < -20.0) return exp(v);
  return log1p_(exp(v));
}

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint t = gl_WorkGroupID.x;
  for (uint e = tid; e < pc.n_experts; e += 256u) {
    const float p = sqrt(softplus_(logits[t * pc.n_experts + e]));
    s_pi[e] = p;
    precise float key = p + (pc.has_bias != 0u ? bias[e] : 0.0);
    s_key[e] = key;
  }
  barrier();
  if (pc.hash != 0u) {
    if (tid < pc.k) s_chosen[tid] = uint(tid2eid[tokens[t] * int(pc.k) + int(tid)]);
    barrier();
  }
  for (uint r = 0u; r < (pc.hash != 0u ? 0u : pc.k); ++r) {
    float best = -1.0 / 0.0;
    uint arg = 0xFFFFFFFFu;
    for (uint e = tid; e < pc.n_experts; e += 256u) {
      bool taken = false;
      for (uint q = 0u; q < r; ++q) taken = taken || s_chosen[q] == e;
      const float kv = s_key[e];
      if (!taken && (arg == 0xFFFFFFFFu || kv > best)) { best = kv; arg = e; }
    }
    s_best[tid] = best;
    s_arg[tid] = arg;
    barrier();
    for (uint s = 128u; s > 0u; s >>= 1) {
      if (tid < s) {
        const float ob = s_best[tid + s];
        const uint oa = s_arg[tid + s];
        const bool better = oa != 0xFFFFFFFFu &&
            (s_arg[tid] == 0xFFFFFFFFu || ob > s_best[tid] || (ob == s_best[tid] && oa < s_arg[tid]));
        if (better) { s_best[tid] = ob; s_arg[tid] = oa; }
      }
      barrier();
    }
    if (tid == 0u) s_chosen[r] = s_arg[0];
    barrier();
  }
  if (tid == 0u) {
    precise float sum = 0.0;
    for (uint r = 0u; r < pc.k; ++r) sum = sum + s_pi[s_chosen[r]];
    for (uint r = 0u; r < pc.k; ++r) {
      precise float wk = pc.normalise != 0u ? s_pi[s_chosen[r]] / max(sum, 6.103515625e-05) : s_pi[s_chosen[r]];
      chosen[t * pc.k + r] = int(s_chosen[r]);
      weight[t * pc.k + r] = wk * pc.route_scale;
    }
  }
}
