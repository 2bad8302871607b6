// AVX2 + FMA + F16C kernels. Compiled with those flags for this file only and selected at
// run time, so the library still runs on CPUs without them.
//
// Integer products use vpmaddubsw (unsigned x signed bytes): the weight magnitude goes in
// the unsigned operand and its sign is moved onto the activation. That is exact as long as
// activations lie in [-127, 127], which every ds4 activation quantizer guarantees
// (|x|*127/amax never rounds past 127).
#include <immintrin.h>

#include <cstddef>
#include <cstring>
#include <vector>

#include "quant/internal.h"
#include "quant/quant.h"
#include "quant/tables.h"

namespace ds4::quant {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Weight rows are streamed once from memory. The hardware prefetchers alone keep too few
// lines in flight for kernels that spend several cycles per line, so each kernel asks for
// the data this far ahead of what it is reading (rows of a matrix are contiguous, so
// running past a row's end fetches the next row; a prefetch never faults). On Zen 3,
// distances of 2-16 KiB performed alike, and no prefetch cost 10-25% of the streaming rate.
constexpr int kPrefetchBytes = 4096;
inline void prefetch_ahead(const void* p) {
  _mm_prefetch(static_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T0);
}
// The 16-bit float dots stream 2 bytes per weight with little work per line: there 1 KiB
// ahead beat 4 KiB by 1.15-1.2x (interleaved A/B against ggml, 1 and 2 threads; 512 B-1 KiB
// alike, 2 KiB in between); the compute-bound quant kernels showed no difference.
constexpr int kPrefetchBytes16 = 1024;
inline void prefetch_ahead16(const void* p) {
  _mm_prefetch(static_cast<const char*>(p) + kPrefetchBytes16, _MM_HINT_T0);
}

// Shared driver for the float-weight dots: Load(i) gives 8 widened weights at i, Prefetch(i)
// requests the weights of a 32-value step ahead of time.
template <typename Load, typename Scalar, typename Prefetch>
inline float dot_float_rows(Load load, Scalar scalar_at, Prefetch prefetch, const float* x, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    prefetch(i);
    acc0 = _mm256_fmadd_ps(load(i), _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(load(i + 8), _mm256_loadu_ps(x + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(load(i + 16), _mm256_loadu_ps(x + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(load(i + 24), _mm256_loadu_ps(x + i + 24), acc3);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(load(i), _mm256_loadu_ps(x + i), acc0);
  float sum = hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
  for (; i < n; ++i) sum += scalar_at(i) * x[i];
  return sum;
}

float dot_f32(const float* w, const float* x, int64_t n) {
  return dot_float_rows([w](int64_t i) { return _mm256_loadu_ps(w + i); },
                        [w](int64_t i) { return w[i]; },
                        [w](int64_t i) {
                          prefetch_ahead(w + i);
                          prefetch_ahead(w + i + 16);
                        },
                        x, n);
}

float dot_f16(const uint16_t* w, const float* x, int64_t n) {
  return dot_float_rows(
      [w](int64_t i) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i))); },
      [w](int64_t i) { return f16_to_f32(w[i]); }, [w](int64_t i) { prefetch_ahead16(w + i); }, x, n);
}

float dot_bf16(const uint16_t* w, const float* x, int64_t n) {
  return dot_float_rows(
      [w](int64_t i) {
        const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
      },
      [w](int64_t i) { return bf16_to_f32(w[i]); }, [w](int64_t i) { prefetch_ahead16(w + i); }, x, n);
}

// 8 int32 partial sums of one 32-byte block product.
inline __m256i block_dot_q8(const int8_t* w, const int8_t* x) {
  const __m256i wq = load256(w);
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(load256(x), wq));
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

float dot_q8_0(const block_q8_0* w, const block_q8_0_act* x, int64_t n) {
  const int64_t nb = n / QK8_0;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    prefetch_ahead(w + b);
    prefetch_ahead(w + b + 1);
    const __m256 s0 = _mm256_set1_ps(_cvtsh_ss(w[b].d) * x[b].d);
    const __m256 s1 = _mm256_set1_ps(_cvtsh_ss(w[b + 1].d) * x[b + 1].d);
    acc0 = _mm256_fmadd_ps(s0, _mm256_cvtepi32_ps(block_dot_q8(w[b].qs, x[b].qs)), acc0);
    acc1 = _mm256_fmadd_ps(s1, _mm256_cvtepi32_ps(block_dot_q8(w[b + 1].qs, x[b + 1].qs)), acc1);
  }
  if (b < nb) {
    const __m256 s0 = _mm256_set1_ps(_cvtsh_ss(w[b].d) * x[b].d);
    acc0 = _mm256_fmadd_ps(s0, _mm256_cvtepi32_ps(block_dot_q8(w[b].qs, x[b].qs)), acc0);
  }
  return hsum(_mm256_add_ps(acc0, acc1));
}

// NV (1-4) vectors in one pass over the row; per vector the same two accumulators and block
// order as dot_q8_0, so each result is bit-identical to it. `stream`: the row comes from
// memory (first pass), so it is prefetched ahead as in dot_q8_0. `dw_at(b)`: block b's
// weight scale in all lanes (converted per block, or read from scales converted once per row).
// dw*xd is a vector product of two broadcasts (the activation scale's straight from memory):
// the same float as the scalar product, without a register broadcast per vector, which
// crosses lanes and runs at one per cycle on Zen 3.
template <int NV, typename DwAt>
void dot_q8_0_pass(const block_q8_0* w, const block_q8_0_act* const* xv, int64_t nb, bool stream, DwAt dw_at,
                   float* out) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc0[NV], acc1[NV];
  for (int v = 0; v < NV; ++v) acc0[v] = acc1[v] = _mm256_setzero_ps();
  auto step = [&](int64_t b, __m256* acc) {
    const __m256i wq = load256(w[b].qs);
    const __m256i wabs = _mm256_sign_epi8(wq, wq);
    const __m256 dw = dw_at(b);
    for (int v = 0; v < NV; ++v) {  // fixed trip count keeps acc in registers
      const __m256i p16 = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(load256(xv[v][b].qs), wq));
      const __m256 s = _mm256_mul_ps(dw, _mm256_broadcast_ss(&xv[v][b].d));
      acc[v] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones)), acc[v]);
    }
  };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    if (stream) {
      prefetch_ahead(w + b);
      prefetch_ahead(w + b + 1);
    }
    step(b, acc0);
    step(b + 1, acc1);
  }
  if (b < nb) step(b, acc0);
  for (int v = 0; v < NV; ++v) out[v] = hsum(_mm256_add_ps(acc0[v], acc1[v]));
}

// Up to 4 vectors per pass over the row (a batch of decode rows, a prefill tile); a last
// group of fewer vectors does only their work.
void dot_q8_0_multi(const block_q8_0* w, const block_q8_0_act* x, int64_t x_stride, int nx, int64_t n,
                    float* out) {
  const int64_t nb = n / QK8_0;
  for (int v0 = 0; v0 < nx; v0 += 4) {
    const int nv = nx - v0 < 4 ? nx - v0 : 4;
    const block_q8_0_act* xv[4];
    for (int v = 0; v < nv; ++v) xv[v] = x + (v0 + v) * x_stride;
    const bool stream = v0 == 0;  // later groups find the row in cache
    const auto dw_at = [w](int64_t b) { return _mm256_set1_ps(_cvtsh_ss(w[b].d)); };
    switch (nv) {
      case 4: dot_q8_0_pass<4>(w, xv, nb, stream, dw_at, out + v0); break;
      case 3: dot_q8_0_pass<3>(w, xv, nb, stream, dw_at, out + v0); break;
      case 2: dot_q8_0_pass<2>(w, xv, nb, stream, dw_at, out + v0); break;
      default: dot_q8_0_pass<1>(w, xv, nb, stream, dw_at, out + v0); break;
    }
  }
}

// A tile of Q8_0 rows against nx vectors (prefill, batched decode): out[i*nx + v] equals
// dot_q8_0(row i, x_v) bit for bit: per row and vector the same two accumulators, block
// order and scale dw*xd (the same float product).
// Groups of four vectors run outside the rows, so a group's activations (4 x 4.6 KB for
// 4096 inputs) stay in L1 while every row of the tile meets them; the one-row kernel above
// reads every vector's activations from L2 again for each row. The weight scales are
// converted once per row and call (dw), not once per block and pass. Forming dw*xd eight
// blocks at a time into a buffer instead of a vmulps per block and vector measured 5-7%
// slower: the buffer and the gathered activation scales cost more than the multiply.
// One group of NV vectors against every row of the tile, through the one-row pass with the
// row's converted scales.
template <int NV>
void q8_0_tile_group(const block_q8_0* w, int64_t w_stride, int nr, const block_q8_0_act* const* xv, const float* dw,
                     int64_t nb, bool stream, float* out, int nx) {
  for (int r = 0; r < nr; ++r) {
    float o[NV];
    const float* row_dw = dw + r * nb;
    const auto dw_at = [row_dw](int64_t b) { return _mm256_broadcast_ss(row_dw + b); };
    dot_q8_0_pass<NV>(w + r * w_stride, xv, nb, stream, dw_at, o);
    for (int v = 0; v < NV; ++v) out[r * nx + v] = o[v];
  }
}

void dot_q8_0_rows(const block_q8_0* w, int64_t w_stride, int nr, const block_q8_0_act* x, int64_t x_stride, int nx,
                   int64_t n, float* out) {
  const int64_t nb = n / QK8_0;
  if (nr <= 0 || nx <= 0 || nb <= 0) {
    for (int i = 0; i < nr * nx; ++i) out[i] = 0.0f;
    return;
  }
  thread_local std::vector<float> dw_buf;  // the tile's weight scales, reused across calls
  dw_buf.resize(static_cast<size_t>(nr * nb));
  float* dw = dw_buf.data();
  for (int r = 0; r < nr; ++r) {
    const block_q8_0* row = w + r * w_stride;
    for (int64_t b = 0; b < nb; ++b) dw[r * nb + b] = _cvtsh_ss(row[b].d);
  }
  for (int v0 = 0; v0 < nx; v0 += 4) {
    const int nv = nx - v0 < 4 ? nx - v0 : 4;
    const block_q8_0_act* xv[4];
    for (int v = 0; v < nv; ++v) xv[v] = x + (v0 + v) * x_stride;
    const bool stream = v0 == 0;  // later groups find the rows in cache
    float* o = out + v0;
    switch (nv) {
      case 4: q8_0_tile_group<4>(w, w_stride, nr, xv, dw, nb, stream, o, nx); break;
      case 3: q8_0_tile_group<3>(w, w_stride, nr, xv, dw, nb, stream, o, nx); break;
      case 2: q8_0_tile_group<2>(w, w_stride, nr, xv, dw, nb, stream, o, nx); break;
      default: q8_0_tile_group<1>(w, w_stride, nr, xv, dw, nb, stream, o, nx); break;
    }
  }
}

// Lane totals of four int32 vectors, {sum(a), sum(b), sum(c), sum(d)}: one reduction for
// several blocks instead of a horizontal sum per block.
// Built from unpacks and adds: vphaddd costs two cycles of throughput on Zen 3 (three in
// this reduction per call), an unpack half a cycle.
inline __m128i hsum4_i32(__m256i a, __m256i b, __m256i c, __m256i d) {
  // {a0+a2, b0+b2, a1+a3, b1+b3 | same for lanes 4-7}, and the same for c, d.
  const __m256i ab = _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
  const __m256i cd = _mm256_add_epi32(_mm256_unpacklo_epi32(c, d), _mm256_unpackhi_epi32(c, d));
  const __m256i abcd = _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
  return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

// Keeps the compiler from interleaving two blocks' computations: with both in flight it runs
// out of the 16 vector registers and spills partial products (Q2_K: 5-6% slower).
inline void finish_before_next(__m256i& a, __m256i& b) { __asm__ volatile("" : "+x"(a), "+x"(b)); }
inline void finish_before_next(__m256i& a) { __asm__ volatile("" : "+x"(a)); }

// The K-quant and IQ2_XXS dots below compute each block's integer sums exactly (two blocks
// per pass, reduced together) and then combine the blocks in float in the scalar order,
// with the scalar expressions, so their results equal the scalar reference bit for bit.

// Adds the K-quant terms (xd*d)*isum - (xd*dmin)*msum of two blocks to sum, in block order,
// from totals = {isum0, msum0, isum1, msum1} and each block's (d, dmin) f16 pair read as
// one dword: the scalar reference's expressions evaluated lane-wise (no FMA in this file),
// instead of two f16 conversions and six scalar operations per block.
inline float add_kquant_terms(float sum, __m128i totals, const uint16_t* dd0, float xd0, const uint16_t* dd1,
                              float xd1) {
  uint32_t w0, w1;
  std::memcpy(&w0, dd0, 4);
  std::memcpy(&w1, dd1, 4);
  const __m128 w = _mm_cvtph_ps(_mm_set_epi32(0, 0, static_cast<int>(w1), static_cast<int>(w0)));
  const __m128 t = _mm_mul_ps(_mm_mul_ps(_mm_setr_ps(xd0, xd0, xd1, xd1), w), _mm_cvtepi32_ps(totals));
  const __m128 terms = _mm_hsub_ps(t, t);  // {term0, term1, ...}
  sum += _mm_cvtss_f32(terms);
  return sum + _mm_cvtss_f32(_mm_movehdup_ps(terms));
}

inline float add_kquant_term(float sum, __m128i totals, const uint16_t* dd, float xd) {
  uint32_t w0;
  std::memcpy(&w0, dd, 4);
  const __m128 w = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(w0)));
  const __m128 t = _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(xd), w), _mm_cvtepi32_ps(totals));
  return sum + _mm_cvtss_f32(_mm_hsub_ps(t, t));
}

// Q2_K decode kernel, per 32-weight run: the 2-bit field, vpmaddubsw with the activations,
// and vpmaddwd with the two sub-block scales spread over the int16 lanes. The fields at bits
// 2-3 and 6-7 of a byte are masked in place (read as 4q; products stay far from int16
// saturation) and the other two fields are met with 4x their scale instead, so the lanes
// hold 4*isum, divided back exactly after the reduction: one shift per 64 quant bytes
// instead of three.
struct Q2KConsts {
  __m256i m3 = _mm256_set1_epi8(3);
  __m256i m12 = _mm256_set1_epi8(12);
  __m256i m15 = _mm256_set1_epi8(15);
  // Zero-extends bytes 0-7 (low lane) and 8-15 (high lane) of the broadcast scales to int16.
  __m256i widen = _mm256_setr_epi8(0, -1, 1, -1, 2, -1, 3, -1, 4, -1, 5, -1, 6, -1, 7, -1, 8, -1, 9, -1, 10, -1, 11, -1,
                                   12, -1, 13, -1, 14, -1, 15, -1);
};

// Run k's scale spread: scale byte 2k over the int16 lanes of the low lane, byte 2k+1 over
// the high lane. Read as vpshufb's memory operand: a load instead of the vector add per run
// that stepped one control in a register (the loads have room; the vector ALU ops, about 3.3
// per cycle here, bound the kernel).
#define DS4_Q2K_SPREAD(k)                                                                                      \
  {2 * (k),     -1, 2 * (k),     -1, 2 * (k),     -1, 2 * (k),     -1, 2 * (k),     -1, 2 * (k),     -1,     \
   2 * (k),     -1, 2 * (k),     -1, 2 * (k) + 1, -1, 2 * (k) + 1, -1, 2 * (k) + 1, -1, 2 * (k) + 1, -1,     \
   2 * (k) + 1, -1, 2 * (k) + 1, -1, 2 * (k) + 1, -1, 2 * (k) + 1, -1}
alignas(32) constexpr int8_t kQ2KSpread[8][32] = {DS4_Q2K_SPREAD(0), DS4_Q2K_SPREAD(1), DS4_Q2K_SPREAD(2),
                                                   DS4_Q2K_SPREAD(3), DS4_Q2K_SPREAD(4), DS4_Q2K_SPREAD(5),
                                                   DS4_Q2K_SPREAD(6), DS4_Q2K_SPREAD(7)};
#undef DS4_Q2K_SPREAD

inline void q2_K_block_sums_x4(const Q2KConsts& c, const block_q2_K& wb, const block_q8_K& xb, __m256i* isum4,
                               __m256i* msum) {
  prefetch_ahead(&wb);
  // The 16 scale bytes in both lanes, straight from memory (vbroadcasti128 from a register,
  // like every op that crosses the 128-bit lanes, runs at one per cycle on Zen 3).
  const __m256i sc = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wb.scales)));
  // mins: bytes 0-7 (low lane), 8-15 (high lane) zero-extended to int16, high nibble.
  *msum = _mm256_madd_epi16(_mm256_srli_epi16(_mm256_shuffle_epi8(sc, c.widen), 4), load256(xb.bsums));
  const __m256i s1 = _mm256_and_si256(sc, c.m15);
  const __m256i s4 = _mm256_slli_epi16(s1, 2);  // bytes <= 60: nothing crosses into the next byte
  // Opaque to the compiler: otherwise GCC hoists the eight controls out of the row loop and
  // copies them to the stack at every call (sixteen memory ops per row for nothing).
  const int8_t(*spreads)[32] = kQ2KSpread;
  __asm__("" : "+r"(spreads));
  __m256i acc0, acc1;
  for (int h = 0; h < 2; ++h) {
    const __m256i q = load256(wb.qs + 32 * h);
    const __m256i hq = _mm256_srli_epi16(q, 4);
    const int8_t* xq = xb.qs + 128 * h;
    const int8_t(*spread)[32] = spreads + 4 * h;
    const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_and_si256(q, c.m3), load256(xq)),
                                         _mm256_shuffle_epi8(s4, load256(spread[0])));
    const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_and_si256(q, c.m12), load256(xq + 32)),
                                         _mm256_shuffle_epi8(s1, load256(spread[1])));
    acc0 = h ? _mm256_add_epi32(acc0, p0) : p0;
    acc1 = h ? _mm256_add_epi32(acc1, p1) : p1;
    // The empty asm statements keep GCC from re-associating the adds into a tree at the end
    // of the block, which holds all eight products live and spills them.
    finish_before_next(acc0, acc1);
    acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_and_si256(hq, c.m3), load256(xq + 64)),
                                                    _mm256_shuffle_epi8(s4, load256(spread[2]))));
    acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_and_si256(hq, c.m12), load256(xq + 96)),
                                                    _mm256_shuffle_epi8(s1, load256(spread[3]))));
    finish_before_next(acc0, acc1);
  }
  *isum4 = _mm256_add_epi32(acc0, acc1);
}

// {isum0, msum0, isum1, msum1, isum2, msum2, isum3, msum3}: the lane totals of four blocks'
// sums (unpacks and adds, as hsum4_i32, with the two 128-bit halves added last).
inline __m256i block_totals4(__m256i i0, __m256i m0, __m256i i1, __m256i m1, __m256i i2, __m256i m2, __m256i i3,
                             __m256i m3) {
  auto pair = [](__m256i a, __m256i b) {
    return _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
  };
  const __m256i ab = pair(i0, m0), cd = pair(i1, m1), ef = pair(i2, m2), gh = pair(i3, m3);
  const __m256i lo = _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
  const __m256i hi = _mm256_add_epi32(_mm256_unpacklo_epi64(ef, gh), _mm256_unpackhi_epi64(ef, gh));
  // [lo.low | hi.high] + [lo.high | hi.low]: one lane-crossing op (one per cycle on Zen 3).
  return _mm256_add_epi32(_mm256_blend_epi32(lo, hi, 0xF0), _mm256_permute2x128_si256(lo, hi, 0x21));
}

// sum + the four blocks' terms (xd*d)*isum - (xd*dmin)*msum, in block order: the scalar
// reference's expressions evaluated lane-wise, then four dependent adds (the only part that
// must stay sequential; everything else overlaps with the next blocks' integer work).
template <typename Block>
inline float add_kquant_terms4(float sum, __m256i totals, const Block* w, const block_q8_K* x) {
  // Gathered with broadcast loads (no ALU work) and blends.
  auto dword = [](const Block& b) {
    return _mm_castps_si128(_mm_broadcast_ss(reinterpret_cast<const float*>(&b.d)));
  };
  const __m128i dd = _mm_blend_epi32(_mm_blend_epi32(dword(w[0]), dword(w[1]), 0x2),
                                     _mm_blend_epi32(dword(w[2]), dword(w[3]), 0x8), 0xC);
  const __m256 wd = _mm256_cvtph_ps(dd);
  const __m256 xd = _mm256_blend_ps(_mm256_blend_ps(_mm256_broadcast_ss(&x[0].d), _mm256_broadcast_ss(&x[1].d), 0x0C),
                                    _mm256_blend_ps(_mm256_broadcast_ss(&x[2].d), _mm256_broadcast_ss(&x[3].d), 0xC0),
                                    0xF0);
  const __m256 p = _mm256_mul_ps(_mm256_mul_ps(xd, wd), _mm256_cvtepi32_ps(totals));
  const __m256 terms = _mm256_sub_ps(p, _mm256_movehdup_ps(p));  // lanes 0, 2, 4, 6
  const __m128 lo = _mm256_castps256_ps128(terms), hi = _mm256_extractf128_ps(terms, 1);
  sum += _mm_cvtss_f32(lo);
  sum += _mm_cvtss_f32(_mm_movehl_ps(lo, lo));
  sum += _mm_cvtss_f32(hi);
  return sum + _mm_cvtss_f32(_mm_movehl_ps(hi, hi));
}

float dot_q2_K(const block_q2_K* w, const block_q8_K* x, int64_t n) {
  static_assert(offsetof(block_q2_K, dmin) == offsetof(block_q2_K, d) + 2);
  const Q2KConsts c;
  const __m128i unfold = _mm_setr_epi32(2, 0, 2, 0);  // {4*isum0, msum0, 4*isum1, msum1} >> it
  const __m256i unfold4 = _mm256_setr_epi32(2, 0, 2, 0, 2, 0, 2, 0);
  const int64_t nb = n / QK_K;
  float sum = 0.0f;
  int64_t b = 0;
  // {isum, msum} of four blocks from b on.
  auto totals4 = [&](int64_t b) {
    __m256i i0, m0, i1, m1, i2, m2, i3, m3;
    q2_K_block_sums_x4(c, w[b], x[b], &i0, &m0);
    q2_K_block_sums_x4(c, w[b + 1], x[b + 1], &i1, &m1);
    q2_K_block_sums_x4(c, w[b + 2], x[b + 2], &i2, &m2);
    q2_K_block_sums_x4(c, w[b + 3], x[b + 3], &i3, &m3);
    return _mm256_srav_epi32(block_totals4(i0, m0, i1, m1, i2, m2, i3, m3), unfold4);
  };
  if (nb >= 4) {
    // Software-pipelined: a group's float terms are added after the next group's integer
    // sums are issued, when their inputs are long ready, instead of waiting in the
    // scheduler behind the group's last products (L1-resident rows: 1.06x).
    __m256i totals = totals4(0);
    for (b = 4; b + 4 <= nb; b += 4) {
      const __m256i prev = totals;
      totals = totals4(b);
      sum = add_kquant_terms4(sum, prev, w + b - 4, x + b - 4);
    }
    sum = add_kquant_terms4(sum, totals, w + b - 4, x + b - 4);
  }
  for (; b + 2 <= nb; b += 2) {
    __m256i i0, m0, i1, m1;
    q2_K_block_sums_x4(c, w[b], x[b], &i0, &m0);
    q2_K_block_sums_x4(c, w[b + 1], x[b + 1], &i1, &m1);
    sum = add_kquant_terms(sum, _mm_srav_epi32(hsum4_i32(i0, m0, i1, m1), unfold), &w[b].d, x[b].d, &w[b + 1].d,
                           x[b + 1].d);
  }
  if (b < nb) {
    __m256i i0, m0;
    q2_K_block_sums_x4(c, w[b], x[b], &i0, &m0);
    const __m256i z = _mm256_setzero_si256();
    sum = add_kquant_term(sum, _mm_srav_epi32(hsum4_i32(i0, m0, z, z), unfold), &w[b].d, x[b].d);
  }
  return sum;
}

// Q4_K: same split into an isum and an msum vector per block.
struct Q4KConsts {
  __m256i m4 = _mm256_set1_epi8(0xF);
  // Control k picks int16 lane k of a 128-bit lane into all 8 int16 lanes.
  __m256i pick[8];
  // Zero-extends each min (bytes 8-11 in the low lane, 12-15 in the high lane) to int16
  // twice, so one min meets both 16-value bsums of its 32-value sub-block.
  __m256i dup_mins = _mm256_setr_epi8(8, -1, 8, -1, 9, -1, 9, -1, 10, -1, 10, -1, 11, -1, 11, -1,
                                      12, -1, 12, -1, 13, -1, 13, -1, 14, -1, 14, -1, 15, -1, 15, -1);
  __m256i low_shift = _mm256_set_epi32(4, 0, 0, 0, 4, 0, 0, 0);
  __m256i low_mask = _mm256_set_epi32(0x0F0F0F0F, 0x3F3F3F3F, 0x0F0F0F0F, 0x3F3F3F3F, 0x0F0F0F0F, 0x3F3F3F3F,
                                      0x0F0F0F0F, 0x3F3F3F3F);
  __m256i high_mask = _mm256_set_epi32(0x30303030, 0, 0x30303030, 0, 0x30303030, 0, 0x30303030, 0);
  Q4KConsts() {
    for (int k = 0; k < 8; ++k) pick[k] = _mm256_set1_epi16(static_cast<short>((2 * k + 1) << 8 | (2 * k)));
  }
};

inline void q4_K_block_sums(const Q4KConsts& c, const block_q4_K& wb, const block_q8_K& xb, __m256i* isum,
                            __m256i* msum) {
  prefetch_ahead(&wb);
  prefetch_ahead(reinterpret_cast<const uint8_t*>(&wb) + 64);
  prefetch_ahead(reinterpret_cast<const uint8_t*>(&wb) + 128);
  // The 12 scale bytes as dwords w0, w1, w2 (the 16-byte load's last 4 bytes are quants,
  // unused). Unpacked in vector registers to [scales 0-3, 4-7, mins 0-3, 4-7], the same
  // values as detail::q4k_scale_min:
  //   scales 0-3 = w0 & 0x3F..., scales 4-7 = (w2 & 0x0F...) | ((w0 >> 2) & 0x30...),
  //   mins   0-3 = w1 & 0x3F..., mins   4-7 = ((w2 >> 4) & 0x0F...) | ((w1 >> 2) & 0x30...).
  // Done in both 128-bit lanes of a broadcast load: widening or broadcasting a register
  // crosses lanes, and such ops run at one per cycle on Zen 3.
  const __m256i raw = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wb.scales)));
  const __m256i low = _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi32(raw, _MM_SHUFFLE(2, 1, 2, 0)), c.low_shift),
                                       c.low_mask);
  const __m256i high = _mm256_and_si256(_mm256_srli_epi32(_mm256_shuffle_epi32(raw, _MM_SHUFFLE(1, 1, 0, 0)), 2), c.high_mask);
  const __m256i packed = _mm256_or_si256(low, high);
  *msum = _mm256_madd_epi16(_mm256_shuffle_epi8(packed, c.dup_mins), load256(xb.bsums));
  const __m256i scales = _mm256_unpacklo_epi8(packed, _mm256_setzero_si256());
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  for (int k = 0; k < 4; ++k) {
    const __m256i q = load256(wb.qs + 32 * k);
    const __m256i lo = _mm256_and_si256(q, c.m4);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), c.m4);
    const __m256i p_lo = _mm256_maddubs_epi16(lo, load256(xb.qs + 64 * k));
    const __m256i p_hi = _mm256_maddubs_epi16(hi, load256(xb.qs + 64 * k + 32));
    acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(p_lo, _mm256_shuffle_epi8(scales, c.pick[2 * k])));
    acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(p_hi, _mm256_shuffle_epi8(scales, c.pick[2 * k + 1])));
  }
  *isum = _mm256_add_epi32(acc0, acc1);
}

float dot_q4_K(const block_q4_K* w, const block_q8_K* x, int64_t n) {
  static_assert(offsetof(block_q4_K, dmin) == offsetof(block_q4_K, d) + 2);
  const Q4KConsts c;
  const int64_t nb = n / QK_K;
  float sum = 0.0f;
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    __m256i i0, m0, i1, m1, i2, m2, i3, m3;
    q4_K_block_sums(c, w[b], x[b], &i0, &m0);
    finish_before_next(i0, m0);
    q4_K_block_sums(c, w[b + 1], x[b + 1], &i1, &m1);
    finish_before_next(i1, m1);
    q4_K_block_sums(c, w[b + 2], x[b + 2], &i2, &m2);
    finish_before_next(i2, m2);
    q4_K_block_sums(c, w[b + 3], x[b + 3], &i3, &m3);
    sum = add_kquant_terms4(sum, block_totals4(i0, m0, i1, m1, i2, m2, i3, m3), w + b, x + b);
  }
  for (; b + 2 <= nb; b += 2) {
    __m256i i0, m0, i1, m1;
    q4_K_block_sums(c, w[b], x[b], &i0, &m0);
    finish_before_next(i0, m0);
    q4_K_block_sums(c, w[b + 1], x[b + 1], &i1, &m1);
    sum = add_kquant_terms(sum, hsum4_i32(i0, m0, i1, m1), &w[b].d, x[b].d, &w[b + 1].d, x[b + 1].d);
  }
  if (b < nb) {
    __m256i i0, m0;
    q4_K_block_sums(c, w[b], x[b], &i0, &m0);
    const __m256i z = _mm256_setzero_si256();
    sum = add_kquant_term(sum, hsum4_i32(i0, m0, z, z), &w[b].d, x[b].d);
  }
  return sum;
}

// IQ2_XXS. A block is eight groups of 32 weights, each an A word (four grid indices) and a
// B word (four 7-bit sign fields, the 8th sign of each 8 being their parity, and a 4-bit
// scale). Magnitudes come from the grid (four 8-byte lookups per group). Signs and scales
// are decoded for the whole block at once in registers: the eight B words are gathered,
// their sign fields spread into bytes, the parity bits formed with three shift/xor steps on
// all 32 bytes, and the bytes laid out so that one vpshufb broadcasts a group's four sign
// bytes over its 32 weights (subgroups 0,1 of every group in the low lane, 2,3 in the
// high). Per group that leaves the lookups, one shuffle, a bit test, the conditional negate
// of the activations (x ^ m) - m, and the multiply-adds. Two blocks are decoded before
// either is multiplied, so the decode's dependency chain overlaps the other block's work.
struct Iq2Consts {
  __m256i odd_dwords = _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7);
  __m256i keep14 = _mm256_set1_epi32(0x3FFF3FFF);
  __m256i high7 = _mm256_set1_epi16(0x3F80);
  __m256i m80 = _mm256_set1_epi8(static_cast<char>(0x80));
  __m256i one32 = _mm256_set1_epi32(1);
  // Per 128-bit lane: the sign bytes of subgroups 0,1 of the lane's four groups, then those
  // of subgroups 2,3 (lane_split), then low lanes' first halves together (vpermq 3,1,2,0).
  __m256i lane_split = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
  __m256i scale_bytes = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
  __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
  // Repacked layout: sign bits 0-6 as a prefix xor, bit 7 a scale bit.
  __m256i m7f = _mm256_set1_epi8(0x7F);
  __m256i low_bits = _mm256_set1_epi32(0x01010101);
  __m256i gather_scale = _mm256_set1_epi32(0x10204080);
  __m256i bcast_signs[8];  // group g: byte 2g over 8 lanes, byte 2g+1 over the next 8
  __m256i bcast_scale[8];  // group g: byte g zero-extended into every int16 lane
  Iq2Consts() {
    for (int g = 0; g < 8; ++g) {
      alignas(32) int8_t c[32];
      for (int i = 0; i < 32; ++i) c[i] = static_cast<int8_t>(2 * g + ((i / 8) & 1));
      bcast_signs[g] = load256(c);
      bcast_scale[g] = _mm256_set1_epi16(static_cast<short>(0x8000 | g));
    }
  }
};

struct Iq2Block {
  __m256i signs;   // 32 sign bytes, bit j set = weight j of that 8 negative
  __m256i scales;  // bytes 0-7 (and 8-15) of each lane: 2s+1 of groups 0-7
};

// No BMI2 here (not part of the AVX2 table's requirements): all of it in vector registers.
// Repacked = the layout of iq2_xxs_repack(): the 32 sign bytes are one load, the signs one
// and/shift/xor (bit 6 already holds the parity), the scale bits gathered by one multiply.
template <bool Repacked>
inline Iq2Block iq2_xxs_decode(const Iq2Consts& c, const block_iq2_xxs& wb) {
  prefetch_ahead(&wb);  // one request per 66-byte block reaches nearly every line ahead
  const uint8_t* qs = reinterpret_cast<const uint8_t*>(wb.qs);
  if constexpr (Repacked) {
    const __m256i t = load256(qs + 32);  // dword g: group g's four sign bytes
    const __m256i t7 = _mm256_and_si256(t, c.m7f);
    // Bit 7 of each byte is 0 in t7, so the 16-bit shift moves nothing across bytes.
    const __m256i full = _mm256_xor_si256(t7, _mm256_slli_epi16(t7, 1));
    Iq2Block r;
    r.signs = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(full, c.lane_split), _MM_SHUFFLE(3, 1, 2, 0));
    // Scale bit k sits at bit 8k of (t >> 7); the multiply moves bits 0,8,16,24 to 28..31
    // (no other partial product reaches those bits), so >> 27 | 1 is 2s+1 as below.
    const __m256i bits = _mm256_and_si256(_mm256_srli_epi32(t, 7), c.low_bits);
    const __m256i sc = _mm256_or_si256(_mm256_srli_epi32(_mm256_mullo_epi32(bits, c.gather_scale), 27), c.one32);
    const __m256i sc8 = _mm256_packus_epi16(_mm256_packus_epi32(sc, sc), _mm256_setzero_si256());
    r.scales = _mm256_permutevar8x32_epi32(sc8, c.scale_bytes);
    return r;
  }
  // dword g = B word of group g.
  const __m256i b = _mm256_blend_epi32(_mm256_permutevar8x32_epi32(load256(qs), c.odd_dwords),
                                       _mm256_permutevar8x32_epi32(load256(qs + 32), c.odd_dwords), 0xF0);
  // Fields 0,1 into the low 16 bits and 2,3 into the high 16 bits of each dword, then each
  // 7-bit field into its own byte (x + (x & 0x3F80) moves bits 7-13 up by one).
  const __m256i x14 = _mm256_and_si256(_mm256_blend_epi16(b, _mm256_slli_epi32(b, 2), 0xAA), c.keep14);
  const __m256i s7 = _mm256_add_epi16(x14, _mm256_and_si256(x14, c.high7));
  // Parity of each byte ends in its bit 0 (bits shifted in from the neighbouring byte never
  // reach bit 0), then moves to bit 7.
  __m256i p = _mm256_xor_si256(s7, _mm256_srli_epi16(s7, 4));
  p = _mm256_xor_si256(p, _mm256_srli_epi16(p, 2));
  p = _mm256_xor_si256(p, _mm256_srli_epi16(p, 1));
  const __m256i full = _mm256_or_si256(s7, _mm256_and_si256(_mm256_slli_epi16(p, 7), c.m80));
  Iq2Block r;
  r.signs = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(full, c.lane_split), _MM_SHUFFLE(3, 1, 2, 0));
  // 2s+1 = (B >> 27) | 1, packed to bytes and copied to both lanes.
  const __m256i sc = _mm256_or_si256(_mm256_srli_epi32(b, 27), c.one32);
  const __m256i sc8 = _mm256_packus_epi16(_mm256_packus_epi32(sc, sc), _mm256_setzero_si256());
  r.scales = _mm256_permutevar8x32_epi32(sc8, c.scale_bytes);
  return r;
}

// Integer sum of group g's 32 products, as 8 int32 lanes (times its scale 2s+1).
inline __m256i iq2_xxs_group(const Iq2Consts& c, const Iq2Block& d, int g, __m256i mags, const int8_t* q8) {
  const __m256i neg = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(d.signs, c.bcast_signs[g]), c.bit), c.bit);
  const __m256i xs = _mm256_sub_epi8(_mm256_xor_si256(load256(q8), neg), neg);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(mags, xs), _mm256_shuffle_epi8(d.scales, c.bcast_scale[g]));
}

// Magnitudes of group g: four grid rows (vpgatherdq measured slower than four loads).
template <bool Repacked>
inline __m256i iq2_xxs_mags(const uint8_t* qs, int g) {
  const uint64_t* grid = tables::kIq2xxsGrid;
  const uint8_t* a = qs + (Repacked ? 4 : 8) * g;
  return _mm256_set_epi64x(static_cast<long long>(grid[a[3]]), static_cast<long long>(grid[a[2]]),
                           static_cast<long long>(grid[a[1]]), static_cast<long long>(grid[a[0]]));
}

template <bool Repacked>
inline __m256i iq2_xxs_block_sum(const Iq2Consts& c, const Iq2Block& d, const block_iq2_xxs& wb, const int8_t* q8) {
  const uint8_t* qs = reinterpret_cast<const uint8_t*>(wb.qs);
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
#pragma GCC unroll 8
  for (int g = 0; g < 8; g += 2) {
    acc0 = _mm256_add_epi32(acc0, iq2_xxs_group(c, d, g, iq2_xxs_mags<Repacked>(qs, g), q8 + 32 * g));
    acc1 = _mm256_add_epi32(acc1, iq2_xxs_group(c, d, g + 1, iq2_xxs_mags<Repacked>(qs, g + 1), q8 + 32 * g + 32));
  }
  return _mm256_add_epi32(acc0, acc1);
}

template <bool Repacked>
float dot_iq2_xxs_t(const block_iq2_xxs* w, const block_q8_K* x, int64_t n) {
  const Iq2Consts c;
  const int64_t nb = n / QK_K;
  float sum = 0.0f;
  int64_t b = 0;
  const __m256i z = _mm256_setzero_si256();
  for (; b + 2 <= nb; b += 2) {
    const Iq2Block d0 = iq2_xxs_decode<Repacked>(c, w[b]), d1 = iq2_xxs_decode<Repacked>(c, w[b + 1]);
    __m256i s0 = iq2_xxs_block_sum<Repacked>(c, d0, w[b], x[b].qs);
    finish_before_next(s0);
    const __m256i s1 = iq2_xxs_block_sum<Repacked>(c, d1, w[b + 1], x[b + 1].qs);
    alignas(16) float t[4];
    _mm_store_ps(t, _mm_cvtepi32_ps(hsum4_i32(s0, s1, z, z)));
    sum += _cvtsh_ss(w[b].d) * x[b].d * t[0];
    sum += _cvtsh_ss(w[b + 1].d) * x[b + 1].d * t[1];
  }
  if (b < nb) {
    const Iq2Block d0 = iq2_xxs_decode<Repacked>(c, w[b]);
    alignas(16) float t[4];
    _mm_store_ps(t, _mm_cvtepi32_ps(hsum4_i32(iq2_xxs_block_sum<Repacked>(c, d0, w[b], x[b].qs), z, z, z)));
    sum += _cvtsh_ss(w[b].d) * x[b].d * t[0];
  }
  return 0.125f * sum;
}

float dot_iq2_xxs(const block_iq2_xxs* w, const block_q8_K* x, int64_t n) { return dot_iq2_xxs_t<false>(w, x, n); }

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// 32 int32 (4 vectors) -> 32 int8 in element order. Values are within int8 already.
inline __m256i pack_i32_to_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packs_epi32(a, b);  // lane-interleaved int16
  const __m256i cd = _mm256_packs_epi32(c, d);
  const __m256i abcd = _mm256_packs_epi16(ab, cd);
  return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// A function, not a global: a namespace-scope __m256 would run AVX code at load time.
inline __m256 abs_mask() { return _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)); }

}  // namespace

// vcvtps2dq rounds to nearest even under the default MXCSR, as nearest_int does; the
// values are within [-127, 127] so no clamp is needed (matching the scalar clamp).
void detail::quantize_act_q8_0_avx2(const float* x, block_q8_0_act* dst, int64_t n) {
  for (int64_t b = 0; b < n / QK8_0; ++b) {
    const float* xb = x + b * QK8_0;
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(xb + 8 * k);
      amax = _mm256_max_ps(amax, _mm256_and_ps(v[k], abs_mask()));
    }
    const float d = hmax(amax) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    dst[b].d = d;
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], vid));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst[b].qs), pack_i32_to_i8(q[0], q[1], q[2], q[3]));
  }
}

void detail::quantize_act_q8_K_avx2(const float* x, block_q8_K* dst, int64_t n) {
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const float* xb = x + b * QK_K;
    __m256 amax_v = _mm256_setzero_ps();
    for (int k = 0; k < 32; ++k) amax_v = _mm256_max_ps(amax_v, _mm256_and_ps(_mm256_loadu_ps(xb + 8 * k), abs_mask()));
    const float amax = hmax(amax_v);
    block_q8_K& y = dst[b];
    if (amax == 0.0f) {
      std::memset(&y, 0, sizeof(y));
      continue;
    }
    // The scale follows the signed value of the first element of largest magnitude.
    float max = 0.0f;
    for (int k = 0; k < 32; ++k) {
      const __m256 a = _mm256_and_ps(_mm256_loadu_ps(xb + 8 * k), abs_mask());
      const int hit = _mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_set1_ps(amax), _CMP_EQ_OQ));
      if (hit) {
        max = xb[8 * k + __builtin_ctz(static_cast<unsigned>(hit))];
        break;
      }
    }
    const float iscale = -127.0f / max;
    const __m256 vs = _mm256_set1_ps(iscale);
    const __m256i top = _mm256_set1_epi32(127);
    for (int c = 0; c < 8; ++c) {  // 32 values -> 32 bytes and two bsums
      __m256i q[4];
      for (int k = 0; k < 4; ++k) {
        q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 32 * c + 8 * k), vs)), top);
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y.qs + 32 * c), pack_i32_to_i8(q[0], q[1], q[2], q[3]));
      y.bsums[2 * c] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(q[0], q[1])));
      y.bsums[2 * c + 1] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(q[2], q[3])));
    }
    y.d = 1.0f / iscale;
  }
}

// K-quant row tiles. A block of each of four rows is unpacked once into eight 32-value runs of
// unsigned quants with their int16 run scales and the int16 mins; every vector's activation
// block then meets all four rows while it is in L1 (the one-row multi-vector kernels stream
// all vectors' activations from L2 once per row, which bounds them). Per row and vector the
// integer sums and the float terms are the single-vector kernels', in block order.
namespace {

struct KQuantDecoded {
  __m256i quants[8];  // run k: weights 32k..32k+31 as bytes 0..15
  __m256i scales[8];  // their vpmaddwd multipliers (one per 16 values)
  __m256i mins;       // int16, one per 16-value activation sum (bsums)
};

inline void decode_q2_K(const block_q2_K& wb, KQuantDecoded* d) {
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m128i m4 = _mm_set1_epi8(0xF);
  const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb.scales));
  d->mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), m4));
  const __m256i scales = _mm256_broadcastsi128_si256(_mm_and_si128(sc, m4));
  for (int h = 0; h < 2; ++h) {
    const __m256i q = load256(wb.qs + 32 * h);
    for (int j = 0; j < 4; ++j) {
      const int k = 4 * h + j;
      d->quants[k] = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
      d->scales[k] = _mm256_shuffle_epi8(scales, _mm256_set_m128i(_mm_set1_epi16(static_cast<short>(0x8000 | (2 * k + 1))),
                                                                  _mm_set1_epi16(static_cast<short>(0x8000 | (2 * k)))));
    }
  }
}

inline void decode_q4_K(const block_q4_K& wb, KQuantDecoded* d) {
  const __m256i m4 = _mm256_set1_epi8(0xF);
  uint32_t word[3];
  std::memcpy(word, wb.scales, sizeof(word));
  const uint32_t sc_lo = word[0] & 0x3F3F3F3Fu;
  const uint32_t sc_hi = (word[2] & 0x0F0F0F0Fu) | (((word[0] >> 6) & 0x03030303u) << 4);
  const uint32_t mn_lo = word[1] & 0x3F3F3F3Fu;
  const uint32_t mn_hi = ((word[2] >> 4) & 0x0F0F0F0Fu) | (((word[1] >> 6) & 0x03030303u) << 4);
  const __m128i packed = _mm_set_epi32(static_cast<int>(mn_hi), static_cast<int>(mn_lo), static_cast<int>(sc_hi),
                                       static_cast<int>(sc_lo));
  d->mins = _mm256_cvtepu8_epi16(
      _mm_shuffle_epi8(packed, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
  const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(packed));
  for (int c = 0; c < 4; ++c) {
    const __m256i q = load256(wb.qs + 32 * c);
    d->quants[2 * c] = _mm256_and_si256(q, m4);
    d->quants[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
  }
  for (int j = 0; j < 8; ++j) {
    d->scales[j] = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(static_cast<short>((2 * j + 1) << 8 | (2 * j))));
  }
}

template <typename Block, void (*Decode)(const Block&, KQuantDecoded*)>
void kquant_rows(const Block* w, int64_t w_stride, int nr, const block_q8_K* x, int64_t x_stride, int nx, int64_t n,
                 float* out) {
  static_assert(offsetof(Block, dmin) == offsetof(Block, d) + 2);
  constexpr int kRows = 4;
  alignas(32) KQuantDecoded dec[kRows];
  const int64_t nb = n / QK_K;
  for (int r0 = 0; r0 < nr; r0 += kRows) {
    const int rows = nr - r0 < kRows ? nr - r0 : kRows;
    float* o = out + static_cast<int64_t>(r0) * nx;
    for (int i = 0; i < rows * nx; ++i) o[i] = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
      uint32_t dd[kRows];  // each row's (d, dmin) f16 pair
      for (int i = 0; i < kRows; ++i) {
        const Block& wb = w[(r0 + (i < rows ? i : 0)) * w_stride + b];  // missing rows repeat row 0
        prefetch_ahead(&wb);
        Decode(wb, &dec[i]);
        std::memcpy(&dd[i], &wb.d, 4);
      }
      // {d0, dmin0, d1, dmin1 | d2, dmin2, d3, dmin3}
      const __m256 wdd = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dd)));
      for (int v = 0; v < nx; ++v) {
        const block_q8_K& xb = x[v * x_stride + b];
        __m256i xq[8];
        for (int k = 0; k < 8; ++k) xq[k] = load256(xb.qs + 32 * k);
        const __m256i bsums = load256(xb.bsums);
        __m256i isum[kRows], msum[kRows];
#pragma GCC unroll 4
        for (int i = 0; i < kRows; ++i) {
          msum[i] = _mm256_madd_epi16(dec[i].mins, bsums);
          __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
#pragma GCC unroll 8
          for (int k = 0; k < 8; k += 2) {
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(dec[i].quants[k], xq[k]), dec[i].scales[k]));
            a1 = _mm256_add_epi32(
                a1, _mm256_madd_epi16(_mm256_maddubs_epi16(dec[i].quants[k + 1], xq[k + 1]), dec[i].scales[k + 1]));
          }
          isum[i] = _mm256_add_epi32(a0, a1);
        }
        // {isum0, msum0, isum1, msum1 | isum2, msum2, isum3, msum3}, then the single kernels'
        // expressions (xd*d)*isum - (xd*dmin)*msum lane-wise.
        const __m256 totals = _mm256_cvtepi32_ps(
            _mm256_set_m128i(hsum4_i32(isum[2], msum[2], isum[3], msum[3]), hsum4_i32(isum[0], msum[0], isum[1], msum[1])));
        const __m256 t = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(xb.d), wdd), totals);
        alignas(32) float terms[8];
        _mm256_store_ps(terms, _mm256_hsub_ps(t, t));  // row 0, 1 in lane 0; rows 2, 3 in lane 1
        const float term[kRows] = {terms[0], terms[1], terms[4], terms[5]};
        for (int i = 0; i < rows; ++i) o[i * nx + v] += term[i];
      }
    }
  }
}


// One K-quant row against nx vectors: the row's block is decoded once (decode_q2_K /
// decode_q4_K, as the tiles do) and met by every vector, two vectors sharing one reduction;
// per vector the integer sums and the float expression are the single-vector kernel's.
template <typename Block, void (*Decode)(const Block&, KQuantDecoded*)>
void kquant_multi(const Block* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n, float* out) {
  for (int v = 0; v < nx; ++v) out[v] = 0.0f;
  alignas(32) KQuantDecoded dec;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const Block& wb = w[b];
    Decode(wb, &dec);
    const float wd = _cvtsh_ss(wb.d), wdmin = _cvtsh_ss(wb.dmin);
    auto sums = [&](const block_q8_K& xb, __m256i* isum, __m256i* msum) {
      *msum = _mm256_madd_epi16(dec.mins, load256(xb.bsums));
      __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
      for (int k = 0; k < 8; k += 2) {
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(_mm256_maddubs_epi16(dec.quants[k], load256(xb.qs + 32 * k)),
                                                        dec.scales[k]));
        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(_mm256_maddubs_epi16(dec.quants[k + 1], load256(xb.qs + 32 * k + 32)),
                                                        dec.scales[k + 1]));
      }
      *isum = _mm256_add_epi32(acc0, acc1);
    };
    auto term = [&](const block_q8_K& xb, float isum, float min_sum) {
      const float d = xb.d * wd;
      const float dmin = xb.d * wdmin;
      return d * isum - dmin * min_sum;
    };
    int v = 0;
    for (; v + 2 <= nx; v += 2) {
      const block_q8_K& x0 = x[v * x_stride + b];
      const block_q8_K& x1 = x[(v + 1) * x_stride + b];
      __m256i i0, m0, i1, m1;
      sums(x0, &i0, &m0);
      sums(x1, &i1, &m1);
      alignas(16) float t[4];
      _mm_store_ps(t, _mm_cvtepi32_ps(hsum4_i32(i0, m0, i1, m1)));
      out[v] += term(x0, t[0], t[1]);
      out[v + 1] += term(x1, t[2], t[3]);
    }
    if (v < nx) {
      const block_q8_K& x0 = x[v * x_stride + b];
      __m256i i0, m0;
      sums(x0, &i0, &m0);
      const __m256i z = _mm256_setzero_si256();
      alignas(16) float t[4];
      _mm_store_ps(t, _mm_cvtepi32_ps(hsum4_i32(i0, m0, z, z)));
      out[v] += term(x0, t[0], t[1]);
    }
  }
}

}  // namespace

void detail::dot_q2_K_multi_avx2(const block_q2_K* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n,
                                 float* out) {
  kquant_multi<block_q2_K, decode_q2_K>(w, x, x_stride, nx, n, out);
}

void detail::dot_q4_K_multi_avx2(const block_q4_K* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n,
                                 float* out) {
  kquant_multi<block_q4_K, decode_q4_K>(w, x, x_stride, nx, n, out);
}

// Each block is decoded once (magnitudes, +-1 signs for vpsignb, scales) and then multiplied
// with four vectors at a time, group by group, so a group's three decoded registers serve
// four vectors before the next group is loaded.
template <bool Repacked>
void iq2_xxs_multi(const block_iq2_xxs* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n, float* out) {
  const Iq2Consts c;
  const __m256i one8 = _mm256_set1_epi8(1);
  for (int v = 0; v < nx; ++v) out[v] = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const Iq2Block d = iq2_xxs_decode<Repacked>(c, w[b]);
    const uint8_t* qs = reinterpret_cast<const uint8_t*>(w[b].qs);
    __m256i mags[8], signs[8], scales[8];
    for (int g = 0; g < 8; ++g) {
      mags[g] = iq2_xxs_mags<Repacked>(qs, g);
      const __m256i neg = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(d.signs, c.bcast_signs[g]), c.bit), c.bit);
      signs[g] = _mm256_or_si256(neg, one8);
      scales[g] = _mm256_shuffle_epi8(d.scales, c.bcast_scale[g]);
    }
    const float dw = _cvtsh_ss(w[b].d);
    for (int v0 = 0; v0 < nx; v0 += 4) {
      const int nv = nx - v0 < 4 ? nx - v0 : 4;
      const int8_t* q8[4];
      for (int k = 0; k < 4; ++k) q8[k] = x[(v0 + (k < nv ? k : 0)) * x_stride + b].qs;
      __m256i acc[4];
      for (int k = 0; k < 4; ++k) acc[k] = _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int g = 0; g < 8; ++g) {
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          const __m256i xs = _mm256_sign_epi8(load256(q8[k] + 32 * g), signs[g]);
          acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(_mm256_maddubs_epi16(mags[g], xs), scales[g]));
        }
      }
      alignas(16) float t[4];
      _mm_store_ps(t, _mm_cvtepi32_ps(hsum4_i32(acc[0], acc[1], acc[2], acc[3])));
      for (int k = 0; k < nv; ++k) out[v0 + k] += dw * x[(v0 + k) * x_stride + b].d * t[k];
    }
  }
  for (int v = 0; v < nx; ++v) out[v] *= 0.125f;
}

void detail::dot_iq2_xxs_multi_avx2(const block_iq2_xxs* w, const block_q8_K* x, int64_t x_stride, int nx,
                                    int64_t n, float* out) {
  iq2_xxs_multi<false>(w, x, x_stride, nx, n, out);
}
void detail::dot_iq2_xxs_r_multi_avx2(const block_iq2_xxs* w, const block_q8_K* x, int64_t x_stride, int nx,
                                      int64_t n, float* out) {
  iq2_xxs_multi<true>(w, x, x_stride, nx, n, out);
}

// The prefill tile: up to four rows at a time, blocks in order. Each row's block is decoded
// into signed weights w (|w| <= 43) and int16 scales; the activations enter vpmaddubsw as
// unsigned u = x + 128 (x ^ 0x80, formed once per block and vector for all four rows), so no
// per-row sign step is needed: sum(u*w*s) = sum(x*w*s) + 128*sum(w*s), and each row-block's
// accumulator starts at -128*sum(w*s) (pairs 2*255*43 < 2^15: no saturation; all sums
// exact). One activation block (256 bytes) then serves four rows from L1 instead of being
// streamed from L2 once per row, the limit of the one-row multi-vector kernel.
template <bool Repacked>
void iq2_xxs_rows(const block_iq2_xxs* w, int64_t w_stride, int nr, const block_q8_K* x, int64_t x_stride, int nx,
                  int64_t n, float* out) {
  const Iq2Consts c;
  const __m256i one8 = _mm256_set1_epi8(1), bias = _mm256_set1_epi8(static_cast<char>(0x80));
  const int64_t nb = n / QK_K;
  constexpr int kRows = 4;
  struct Decoded {
    __m256i weights[8], scales[8];
    __m256i start;  // -128 * sum(w*s), as 8 int32 lanes
  };
  alignas(32) Decoded dec[kRows];
  for (int r0 = 0; r0 < nr; r0 += kRows) {
    const int rows = nr - r0 < kRows ? nr - r0 : kRows;
    float* o = out + static_cast<int64_t>(r0) * nx;
    for (int i = 0; i < rows * nx; ++i) o[i] = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
      float dw[kRows];
      for (int i = 0; i < kRows; ++i) {
        // Missing rows repeat the first one (their results are dropped).
        const block_iq2_xxs& wb = w[(r0 + (i < rows ? i : 0)) * w_stride + b];
        const Iq2Block d = iq2_xxs_decode<Repacked>(c, wb);
        const uint8_t* qs = reinterpret_cast<const uint8_t*>(wb.qs);
        __m256i corr = _mm256_setzero_si256();
        for (int g = 0; g < 8; ++g) {
          const __m256i neg =
              _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(d.signs, c.bcast_signs[g]), c.bit), c.bit);
          const __m256i wg = _mm256_sign_epi8(iq2_xxs_mags<Repacked>(qs, g), _mm256_or_si256(neg, one8));
          const __m256i sg = _mm256_shuffle_epi8(d.scales, c.bcast_scale[g]);
          dec[i].weights[g] = wg;
          dec[i].scales[g] = sg;
          corr = _mm256_add_epi32(corr, _mm256_madd_epi16(_mm256_maddubs_epi16(one8, wg), sg));
        }
        dec[i].start = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 7));
        dw[i] = _cvtsh_ss(wb.d);
      }
      for (int v = 0; v < nx; ++v) {
        const block_q8_K& xb = x[v * x_stride + b];
        __m256i u[8];
        for (int g = 0; g < 8; ++g) u[g] = _mm256_xor_si256(load256(xb.qs + 32 * g), bias);
        __m256i acc[kRows];
#pragma GCC unroll 4
        for (int i = 0; i < kRows; ++i) {
          __m256i a0 = dec[i].start, a1 = _mm256_setzero_si256();
#pragma GCC unroll 8
          for (int g = 0; g < 8; g += 2) {
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(u[g], dec[i].weights[g]), dec[i].scales[g]));
            a1 = _mm256_add_epi32(
                a1, _mm256_madd_epi16(_mm256_maddubs_epi16(u[g + 1], dec[i].weights[g + 1]), dec[i].scales[g + 1]));
          }
          acc[i] = _mm256_add_epi32(a0, a1);
        }
        alignas(16) float t[4];
        _mm_store_ps(t, _mm_cvtepi32_ps(hsum4_i32(acc[0], acc[1], acc[2], acc[3])));
        for (int i = 0; i < rows; ++i) o[i * nx + v] += dw[i] * xb.d * t[i];
      }
    }
    for (int i = 0; i < rows * nx; ++i) o[i] *= 0.125f;
  }
}

void detail::dot_iq2_xxs_rows_avx2(const block_iq2_xxs* w, int64_t w_stride, int nr, const block_q8_K* x,
                                   int64_t x_stride, int nx, int64_t n, float* out) {
  iq2_xxs_rows<false>(w, w_stride, nr, x, x_stride, nx, n, out);
}
void detail::dot_iq2_xxs_r_rows_avx2(const block_iq2_xxs* w, int64_t w_stride, int nr, const block_q8_K* x,
                                     int64_t x_stride, int nx, int64_t n, float* out) {
  iq2_xxs_rows<true>(w, w_stride, nr, x, x_stride, nx, n, out);
}
float detail::dot_iq2_xxs_r_avx2(const block_iq2_xxs* w, const block_q8_K* x, int64_t n) {
  return dot_iq2_xxs_t<true>(w, x, n);
}

void detail::dot_q2_K_rows_avx2(const block_q2_K* w, int64_t w_stride, int nr, const block_q8_K* x, int64_t x_stride,
                                int nx, int64_t n, float* out) {
  kquant_rows<block_q2_K, decode_q2_K>(w, w_stride, nr, x, x_stride, nx, n, out);
}

void detail::dot_q4_K_rows_avx2(const block_q4_K* w, int64_t w_stride, int nr, const block_q8_K* x, int64_t x_stride,
                                int nx, int64_t n, float* out) {
  kquant_rows<block_q4_K, decode_q4_K>(w, w_stride, nr, x, x_stride, nx, n, out);
}

namespace {
const Kernels kTable = {"avx2",   dot_f32,  dot_f16,  dot_bf16,
                        dot_q8_0, dot_q2_K, dot_q4_K, dot_iq2_xxs,
                        detail::quantize_act_q8_0_avx2, detail::quantize_act_q8_K_avx2,
                        detail::dot_iq2_xxs_multi_avx2, dot_q8_0_multi,
                        detail::dot_q2_K_multi_avx2, detail::dot_q4_K_multi_avx2,
                        detail::dot_iq2_xxs_rows_avx2, detail::dot_q2_K_rows_avx2,
                        detail::dot_q4_K_rows_avx2,
                        detail::dot_iq2_xxs_r_avx2, detail::dot_iq2_xxs_r_multi_avx2,
                        detail::dot_iq2_xxs_r_rows_avx2, dot_q8_0_rows};
}  // namespace

const Kernels* detail::avx2_kernels() { return &kTable; }

}  // namespace ds4::quant
