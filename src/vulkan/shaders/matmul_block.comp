#version 450
// Quantized weight rows (Q8_0, Q2_K, Q4_K, IQ2_XXS in their GGUF block layouts, decoded
// here) times activations quantized by quantize_act.comp. Each block's sum is formed in
// integers (exact in any order) and turned into a float exactly as the CPU's scalar kernel
// does; the block terms are then added one after another in block order. The result is
// therefore bit-identical to the CPU kernels (src/quant kernels_scalar.cpp) on any device.
//
// One workgroup (64 invocations) covers 4 weight rows; each invocation forms one block's
// integer sums and float term alone, so a pass covers 16 consecutive blocks of each row
// (adjacent invocations read adjacent blocks), and one invocation per (row, vector) then adds
// the pass's terms in block order. Vectors are processed in groups of up to 8.
// SHORT_ROWS (rows of at most 4 blocks, e.g. a small model's 64-wide vocabulary head): 16
// rows of 4 blocks per workgroup instead, vectors in groups of 4 (the same sums in the same
// order; a quarter of the workgroups, none of them mostly idle).
#include "common.glsl"
#include "matmul_push.glsl"

#define WG 64u
#ifdef SHORT_ROWS
#define RPW 16u
#define BPR 4u
#define MAXV 4u
#else
#define RPW 4u   // weight rows per workgroup
#define BPR 16u  // blocks of a row in flight (one per invocation)
#define MAXV 8u  // vectors per group (at most BPR)
#endif
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 1) readonly buffer X { uint x[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
#ifdef W_IQ2_XXS
// 256 grid entries (two words each: magnitudes of 8 weights), then 128 sign bytes.
layout(std430, binding = 3) readonly buffer T { uint tables[]; };
shared uint s_grid[512];
shared uint s_signs[32];
#define IDS_BINDING 4
#else
#define IDS_BINDING 3
#endif
#ifdef IDS
layout(std430, binding = IDS_BINDING) readonly buffer Ids { int ids[]; };
#endif

#ifdef W_Q8_0
#define BLOCK_VALUES 32u
#define BLOCK_BYTES 34u
#define ACT_WORDS 9u
#endif
#ifdef W_Q2_K
#define BLOCK_VALUES 256u
#define BLOCK_BYTES 84u
#define ACT_WORDS 73u
#endif
#ifdef W_Q4_K
#define BLOCK_VALUES 256u
#define BLOCK_BYTES 144u
#define ACT_WORDS 73u
#endif
#ifdef W_IQ2_XXS
#define BLOCK_VALUES 256u
#define BLOCK_BYTES 66u
#define ACT_WORDS 73u
#endif

shared float s_term[MAXV][RPW][BPR];

// Q8_K activation block at word a: qs byte i, bsums entry j.
int act_q(uint a, uint i) { return I8_AT(x, a + 1u, i); }
int act_bsum(uint a, uint j) { return bitfieldExtract(int(x[a + 65u + (j >> 1)]), int((j & 1u) * 16u), 16); }

// Integer partial sums of part p (0..7) of weight block at byte wb against activation block
// at word a. isum: the scaled quant products; msum: the min correction (K-quants).
// Four bytes at an even byte offset o of W (one load when o is word-aligned).
uint w4(uint o) { return (o & 2u) == 0u ? w[o >> 2] : (U16_AT(w, o) | (U16_AT(w, o + 2u) << 16)); }

// Dot of four unsigned bytes of u with the four signed bytes of word v.
int dot4_us(uint u, uint v) {
  const int iv = int(v);
  return int(u & 255u) * bitfieldExtract(iv, 0, 8) + int((u >> 8) & 255u) * bitfieldExtract(iv, 8, 8) +
         int((u >> 16) & 255u) * bitfieldExtract(iv, 16, 8) + int(u >> 24) * bitfieldExtract(iv, 24, 8);
}

// Dot of four signed bytes of u with the four signed bytes of v.
int dot4_ss(uint u, uint v) {
  const int iu = int(u), iv = int(v);
  return bitfieldExtract(iu, 0, 8) * bitfieldExtract(iv, 0, 8) + bitfieldExtract(iu, 8, 8) * bitfieldExtract(iv, 8, 8) +
         bitfieldExtract(iu, 16, 8) * bitfieldExtract(iv, 16, 8) + bitfieldExtract(iu, 24, 8) * bitfieldExtract(iv, 24, 8);
}

// Integer partial sums of part p (0..7) of weight block at byte wb against activation block
// at word a. isum: the scaled quant products; msum: the min correction (K-quants). Integer
// sums are exact in any grouping, so words of four values are taken at a time.
void block_part(uint wb, uint a, uint p, out int isum, out int msum) {
  isum = 0;
  msum = 0;
#ifdef W_Q8_0
  isum = dot4_ss(w4(wb + 2u + 4u * p), x[a + 1u + p]);
#endif
#ifdef W_Q2_K
  const uint h = p >> 2, j = p & 3u;
  int sub0 = 0, sub1 = 0;
  for (uint i = 0u; i < 4u; ++i) {
    sub0 += dot4_us((w4(wb + 16u + 32u * h + 4u * i) >> (2u * j)) & 0x03030303u, x[a + 1u + 32u * h + 8u * j + i]);
    sub1 += dot4_us((w4(wb + 32u + 32u * h + 4u * i) >> (2u * j)) & 0x03030303u, x[a + 5u + 32u * h + 8u * j + i]);
  }
  isum = sub0 * int(BYTE_AT(w, wb + 8u * h + 2u * j) & 15u) + sub1 * int(BYTE_AT(w, wb + 8u * h + 2u * j + 1u) & 15u);
  msum = act_bsum(a, 2u * p) * int(BYTE_AT(w, wb + 2u * p) >> 4) +
         act_bsum(a, 2u * p + 1u) * int(BYTE_AT(w, wb + 2u * p + 1u) >> 4);
#endif
#ifdef W_Q4_K
  uint sc, m;
  if (p < 4u) {
    sc = BYTE_AT(w, wb + 4u + p) & 63u;
    m = BYTE_AT(w, wb + 8u + p) & 63u;
  } else {
    sc = (BYTE_AT(w, wb + 8u + p) & 15u) | ((BYTE_AT(w, wb + p) >> 6) << 4);
    m = (BYTE_AT(w, wb + 8u + p) >> 4) | ((BYTE_AT(w, wb + 4u + p) >> 6) << 4);
  }
  const uint shift = (p & 1u) * 4u;
  const uint q = wb + 16u + 32u * (p >> 1);
  int sub = 0;
  for (uint i = 0u; i < 8u; ++i) sub += dot4_us((w4(q + 4u * i) >> shift) & 0x0F0F0F0Fu, x[a + 1u + 8u * p + i]);
  isum = sub * int(sc);
  msum = int(m) * (act_bsum(a, 2u * p) + act_bsum(a, 2u * p + 1u));
#endif
#ifdef W_IQ2_XXS
  const uint o = wb + 2u + 8u * p;
  const uint w0 = w4(o);
  const uint w1 = w4(o + 4u);
  int gsum = 0;
  for (uint k = 0u; k < 4u; ++k) {
    const uint gi = (w0 >> (8u * k)) & 255u;
    const uint si = (w1 >> (7u * k)) & 127u;
    const uint signs = (s_signs[si >> 2] >> ((si & 3u) * 8u)) & 255u;
    for (uint half_ = 0u; half_ < 2u; ++half_) {
      const uint mags = s_grid[2u * gi + half_];
      const int xv = int(x[a + 1u + 8u * p + 2u * k + half_]);
      for (uint jj = 0u; jj < 4u; ++jj) {
        const int v = int((mags >> (8u * jj)) & 255u) * bitfieldExtract(xv, int(8u * jj), 8);
        gsum += ((signs >> (4u * half_ + jj)) & 1u) != 0u ? -v : v;
      }
    }
  }
  isum = gsum * int(2u * (w1 >> 28) + 1u);
#endif
}

// The float term of one block from its reduced integer sums (the CPU's expression order).
float block_term(uint wb, uint a, int isum, int msum) {
  const float xd = uintBitsToFloat(x[a]);
#ifdef W_Q8_0
  precise float t = f16_bits_to_f32(U16_AT(w, wb)) * xd * float(isum);
  return t;
#endif
#ifdef W_Q2_K
  precise float dall = xd * f16_bits_to_f32(U16_AT(w, wb + 80u));
  precise float dmin = xd * f16_bits_to_f32(U16_AT(w, wb + 82u));
  precise float t = dall * float(isum) - dmin * float(msum);
  return t;
#endif
#ifdef W_Q4_K
  precise float d = xd * f16_bits_to_f32(U16_AT(w, wb));
  precise float dmin = xd * f16_bits_to_f32(U16_AT(w, wb + 2u));
  precise float t = d * float(isum) - dmin * float(msum);
  return t;
#endif
#ifdef W_IQ2_XXS
  precise float t = f16_bits_to_f32(U16_AT(w, wb)) * xd * float(isum);
  return t;
#endif
}

void main() {
  const uint tid = gl_LocalInvocationID.x;
#ifdef W_IQ2_XXS
  for (uint i = tid; i < 512u; i += WG) s_grid[i] = tables[i];
  if (tid < 32u) s_signs[tid] = tables[512u + tid];
  barrier();
#endif
  const uint lr = tid / BPR, slot = tid % BPR;
  const uint row = current_row() * RPW + lr;
  const bool live = row < pc.rows;  // barriers below are reached by every invocation
  const uint nblocks = pc.cols / BLOCK_VALUES;
#ifdef IDS
  const uint pair = gl_WorkGroupID.y;
  const uint expert = uint(ids[pair]);
  if (expert < pc.e_lo || expert >= pc.e_hi) return;  // uniform over the workgroup
  const uint rbase = pc.w_off + (expert - pc.e_lo) * pc.expert_bytes + row * pc.w_row_bytes;
  const uint xoff = (pair / pc.k_per_token) * pc.x_stride, yoff = pair * pc.y_stride + pc.y_off;
  const uint nvec = 1u;
#else
  const uint rbase = pc.w_off + row * pc.w_row_bytes;
  const uint xoff = 0u, yoff = pc.y_off, nvec = pc.nvec;
#endif
  // Vectors go MAXV at a time: each invocation forms its block's term for every vector of
  // the group (the weight block is decoded from cache), then invocation `slot` of each row
  // adds the pass's terms of vector v0 + slot in block order.
  for (uint v0 = 0u; v0 < nvec; v0 += MAXV) {
    const uint nv = min(MAXV, nvec - v0);
    precise float acc = 0.0;
    for (uint b0 = 0u; b0 < nblocks; b0 += BPR) {
      const uint b = b0 + slot;
      for (uint vi = 0u; vi < nv; ++vi) {
        float term = 0.0;
        if (live && b < nblocks) {
          const uint a = xoff + (v0 + vi) * pc.x_stride + b * ACT_WORDS;
          int isum = 0, msum = 0;
          for (uint p = 0u; p < 8u; ++p) {
            int pi, pm;
            block_part(rbase + b * BLOCK_BYTES, a, p, pi, pm);
            isum += pi;
            msum += pm;
          }
          term = block_term(rbase + b * BLOCK_BYTES, a, isum, msum);
        }
        s_term[vi][lr][slot] = term;
      }
      barrier();
      if (live && slot < nv) {
        const uint nb = min(BPR, nblocks - b0);
        for (uint k = 0u; k < nb; ++k) acc = acc + s_term[slot][lr][k];
      }
      barrier();
    }
    if (live && slot < nv) {
#ifdef W_IQ2_XXS
      precise float r = 0.125 * acc;  // value = d*(2s+1)*grid/8
      y[yoff + (v0 + slot) * pc.y_stride + row] = r;
#else
      y[yoff + (v0 + slot) * pc.y_stride + row] = acc;
#endif
    }
  }
}
