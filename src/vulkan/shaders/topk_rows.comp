#version 450
// The k highest scores of n (ties: lower index first), written as ascending row indices, like
// the CPU's partial_sort + sort. One workgroup: an exact radix select of the k-th largest key
// (4 passes of 8 bits over order-preserving integer keys), then an in-order compaction.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer S { float score[]; };
layout(std430, binding = 1) writeonly buffer O { int selected[]; };
layout(push_constant) uniform P {
  uint n;
  uint k;  // 1 <= k <= n
  uint out_off;  // index of the first output word
} pc;

shared uint s_hist[256];
shared uint s_prefix;
shared uint s_remaining;
shared uint s_gt[256];
shared uint s_eq[256];
shared uint s_base_sel;
shared uint s_base_eq;

// Larger float -> larger uint (NaN aside); -0 and +0 are one key, as they compare equal.
uint key(uint i) {
  const float f = score[i];
  const uint b = f == 0.0 ? 0u : floatBitsToUint(f);
  return (b & 0x80000000u) != 0u ? ~b : (b | 0x80000000u);
}

void main() {
  const uint tid = gl_LocalInvocationID.x;
  if (tid == 0u) {
    s_prefix = 0u;
    s_remaining = pc.k;
  }
  uint mask = 0u;
  for (int shift = 24; shift >= 0; shift -= 8) {
    s_hist[tid] = 0u;
    barrier();
    const uint prefix = s_prefix;
    for (uint i = tid; i < pc.n; i += 256u) {
      const uint u = key(i);
      if ((u & mask) == prefix) atomicAdd(s_hist[(u >> uint(shift)) & 255u], 1u);
    }
    barrier();
    if (tid == 0u) {
      uint cum = 0u;
      for (int b = 255; b >= 0; --b) {
        const uint h = s_hist[b];
        if (cum + h >= s_remaining) {
          s_prefix = prefix | (uint(b) << uint(shift));
          s_remaining -= cum;
          break;
        }
        cum += h;
      }
    }
    mask |= 255u << uint(shift);
    barrier();
  }
  // Every key above the threshold, and the first `remaining` keys equal to it.
  const uint thr = s_prefix, take_eq = s_remaining;
  if (tid == 0u) {
    s_base_sel = 0u;
    s_base_eq = 0u;
  }
  barrier();
  for (uint c0 = 0u; c0 < pc.n; c0 += 256u) {
    const uint i = c0 + tid;
    const uint u = i < pc.n ? key(i) : 0u;
    const bool gt = i < pc.n && u > thr, eq = i < pc.n && u == thr;
    // Inclusive scans of the two flags over the chunk (Hillis-Steele).
    s_gt[tid] = gt ? 1u : 0u;
    s_eq[tid] = eq ? 1u : 0u;
    barrier();
    for (uint off = 1u; off < 256u; off <<= 1) {
      uint a = 0u, b = 0u;
      if (tid >= off) {
        a = s_gt[tid - off];
        b = s_eq[tid - off];
      }
      barrier();
      s_gt[tid] += a;
      s_eq[tid] += b;
      barrier();
    }
    const uint eq_rank = s_base_eq + s_eq[tid] - 1u;  // among equal keys, in index order
    const bool take = gt || (eq && eq_rank < take_eq);
    // Position: selected before this chunk + gt before me + taken equals before me.
    const uint eq_before = min(s_base_eq + s_eq[tid] - (eq ? 1u : 0u), take_eq);
    const uint pos = s_base_sel + (s_gt[tid] - (gt ? 1u : 0u)) + (eq_before - min(s_base_eq, take_eq));
    if (take) selected[pc.out_off + pos] = int(i);
    barrier();
    if (tid == 255u) {
      s_base_sel += s_gt[255] + (min(s_base_eq + s_eq[255], take_eq) - min(s_base_eq, take_eq));
      s_base_eq += s_eq[255];
    }
    barrier();
  }
}
