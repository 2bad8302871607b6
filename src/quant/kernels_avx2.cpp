// AVX2 + FMA + F16C kernels. Compiled with those flags for this file only and selected at
// run time, so the library still runs on CPUs without them.
//
// Integer products use vpmaddubsw (unsigned x signed bytes): the weight magnitude goes in
// the unsigned operand and its sign is moved onto the activation. That is exact as long as
// activations lie in [-127, 127], which every ds4 activation quantizer guarantees
// (|x|*127/amax never rounds past 127).
#include <immintrin.h>

#include <cstring>

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
      [w](int64_t i) { return f16_to_f32(w[i]); }, [w](int64_t i) { prefetch_ahead(w + i); }, x, n);
}

float dot_bf16(const uint16_t* w, const float* x, int64_t n) {
  return dot_float_rows(
      [w](int64_t i) {
        const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
      },
      [w](int64_t i) { return bf16_to_f32(w[i]); }, [w](int64_t i) { prefetch_ahead(w + i); }, x, n);
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

// Up to 4 vectors per pass over the row; per vector the same two accumulators and block
// order as dot_q8_0, so each result is bit-identical to it.
void dot_q8_0_multi(const block_q8_0* w, const block_q8_0_act* x, int64_t x_stride, int nx, int64_t n,
                    float* out) {
  const int64_t nb = n / QK8_0;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int v0 = 0; v0 < nx; v0 += 4) {
    const int nv = nx - v0 < 4 ? nx - v0 : 4;
    const block_q8_0_act* xv[4];
    for (int v = 0; v < 4; ++v) xv[v] = x + (v0 + (v < nv ? v : 0)) * x_stride;
    __m256 acc0[4], acc1[4];
    for (int v = 0; v < 4; ++v) acc0[v] = acc1[v] = _mm256_setzero_ps();
    auto step = [&](int64_t b, __m256* acc) {
      const __m256i wq = load256(w[b].qs);
      const __m256i wabs = _mm256_sign_epi8(wq, wq);
      const float dw = _cvtsh_ss(w[b].d);
      for (int v = 0; v < 4; ++v) {  // fixed trip count keeps acc in registers
        const __m256i p16 = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(load256(xv[v][b].qs), wq));
        const __m256 s = _mm256_set1_ps(dw * xv[v][b].d);
        acc[v] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones)), acc[v]);
      }
    };
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      step(b, acc0);
      step(b + 1, acc1);
    }
    if (b < nb) step(b, acc0);
    for (int v = 0; v < nv; ++v) out[v0 + v] = hsum(_mm256_add_ps(acc0[v], acc1[v]));
  }
}

// Lane totals of four int32 vectors, {sum(a), sum(b), sum(c), sum(d)}: one reduction for
// several blocks instead of a horizontal sum per block.
inline __m128i hsum4_i32(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
  return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

// The K-quant and IQ2_XXS dots below compute each block's integer sums exactly (two blocks
// per pass, reduced together) and then combine the blocks in float in the scalar order,
// with the scalar expressions, so their results equal the scalar reference bit for bit.

// Q2_K block b: integer dot of the scaled 2-bit quants (isum) and of the mins with the
// activation's 16-value sums (msum), as 8 int32 lanes each.
struct Q2KConsts {
  __m256i m3 = _mm256_set1_epi8(3);
  __m128i m4 = _mm_set1_epi8(0xF);
  // Control k spreads scale bytes 2k (low lane) and 2k+1 (high lane) over 8 int16 lanes
  // each: lanes 0-7 of a vpmaddubsw result cover elements 0-15 of a 32-value run, lanes
  // 8-15 elements 16-31, and those halves have separate scales.
  __m256i spread[8];
  Q2KConsts() {
    for (int k = 0; k < 8; ++k) {
      spread[k] = _mm256_set_m128i(_mm_set1_epi16(static_cast<short>(0x8000 | (2 * k + 1))),
                                   _mm_set1_epi16(static_cast<short>(0x8000 | (2 * k))));
    }
  }
};

inline void q2_K_block_sums(const Q2KConsts& c, const block_q2_K& wb, const block_q8_K& xb, __m256i* isum,
                            __m256i* msum) {
  prefetch_ahead(&wb);
  prefetch_ahead(reinterpret_cast<const uint8_t*>(&wb) + 64);
  const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb.scales));
  *msum = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), c.m4)), load256(xb.bsums));
  const __m256i scales = _mm256_broadcastsi128_si256(_mm_and_si128(sc, c.m4));
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  for (int h = 0; h < 2; ++h) {
    const __m256i q = load256(wb.qs + 32 * h);
    for (int j = 0; j < 4; j += 2) {
      const __m256i q0 = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), c.m3);
      const __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j + 2), c.m3);
      const __m256i p0 = _mm256_maddubs_epi16(q0, load256(xb.qs + 128 * h + 32 * j));
      const __m256i p1 = _mm256_maddubs_epi16(q1, load256(xb.qs + 128 * h + 32 * j + 32));
      acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(p0, _mm256_shuffle_epi8(scales, c.spread[4 * h + j])));
      acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(p1, _mm256_shuffle_epi8(scales, c.spread[4 * h + j + 1])));
    }
  }
  *isum = _mm256_add_epi32(acc0, acc1);
}

inline float q2_K_term(const block_q2_K& wb, const block_q8_K& xb, float isum, float min_sum) {
  const float dall = xb.d * _cvtsh_ss(wb.d);
  const float dmin = xb.d * _cvtsh_ss(wb.dmin);
  return dall * isum - dmin * min_sum;
}

float dot_q2_K(const block_q2_K* w, const block_q8_K* x, int64_t n) {
  const Q2KConsts c;
  const int64_t nb = n / QK_K;
  float sum = 0.0f;
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    __m256i i0, m0, i1, m1;
    q2_K_block_sums(c, w[b], x[b], &i0, &m0);
    q2_K_block_sums(c, w[b + 1], x[b + 1], &i1, &m1);
    alignas(16) float t[4];
    _mm_store_ps(t, _mm_cvtepi32_ps(hsum4_i32(i0, m0, i1, m1)));
    sum += q2_K_term(w[b], x[b], t[0], t[1]);
    sum += q2_K_term(w[b + 1], x[b + 1], t[2], t[3]);
  }
  if (b < nb) {
    __m256i i0, m0;
    q2_K_block_sums(c, w[b], x[b], &i0, &m0);
    const __m256i z = _mm256_setzero_si256();
    alignas(16) float t[4];
    _mm_store_ps(t, _mm_cvtepi32_ps(hsum4_i32(i0, m0, z, z)));
    sum += q2_K_term(w[b], x[b], t[0], t[1]);
  }
  return sum;
}

// Q4_K: same split into an isum and an msum vector per block.
struct Q4KConsts {
  __m256i m4 = _mm256_set1_epi8(0xF);
  // Control k picks int16 lane k of a 128-bit lane into all 8 int16 lanes.
  __m256i pick[8];
  // Duplicates each of bytes 8..15 (the mins) so one min meets both 16-value bsums of its
  // 32-value sub-block.
  __m128i dup_mins = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
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
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb.scales));
  const __m128i low = _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(raw, _MM_SHUFFLE(2, 1, 2, 0)), _mm_set_epi32(4, 0, 0, 0)),
                                    _mm_set_epi32(0x0F0F0F0F, 0x3F3F3F3F, 0x0F0F0F0F, 0x3F3F3F3F));
  const __m128i high = _mm_and_si128(_mm_srli_epi32(_mm_shuffle_epi32(raw, _MM_SHUFFLE(1, 1, 0, 0)), 2),
                                     _mm_set_epi32(0x30303030, 0, 0x30303030, 0));
  const __m128i packed = _mm_or_si128(low, high);
  *msum = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_shuffle_epi8(packed, c.dup_mins)), load256(xb.bsums));
  const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(packed));
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

inline float q4_K_term(const block_q4_K& wb, const block_q8_K& xb, float isum, float min_sum) {
  const float d = xb.d * _cvtsh_ss(wb.d);
  const float dmin = xb.d * _cvtsh_ss(wb.dmin);
  return d * isum - dmin * min_sum;
}

float dot_q4_K(const block_q4_K* w, const block_q8_K* x, int64_t n) {
  const Q4KConsts c;
  const int64_t nb = n / QK_K;
  float sum = 0.0f;
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    __m256i i0, m0, i1, m1;
    q4_K_block_sums(c, w[b], x[b], &i0, &m0);
    q4_K_block_sums(c, w[b + 1], x[b + 1], &i1, &m1);
    alignas(16) float t[4];
    _mm_store_ps(t, _mm_cvtepi32_ps(hsum4_i32(i0, m0, i1, m1)));
    sum += q4_K_term(w[b], x[b], t[0], t[1]);
    sum += q4_K_term(w[b + 1], x[b + 1], t[2], t[3]);
  }
  if (b < nb) {
    __m256i i0, m0;
    q4_K_block_sums(c, w[b], x[b], &i0, &m0);
    const __m256i z = _mm256_setzero_si256();
    alignas(16) float t[4];
    _mm_store_ps(t, _mm_cvtepi32_ps(hsum4_i32(i0, m0, z, z)));
    sum += q4_K_term(w[b], x[b], t[0], t[1]);
  }
  return sum;
}

// IQ2_XXS. Magnitudes come from the grid (four 8-byte lookups per 32 weights); signs are
// decoded in registers instead of through the sign table: each 7-bit sign index is
// shifted out of its word, its parity (the implied 8th sign) is looked up per nibble with
// vpshufb, the byte is broadcast over its 8 weights and tested bit by bit, and the
// activations are negated where a bit is set (x ^ m) - m. The group scale 2s+1 is taken
// from the same words, two copies per dword for vpmaddwd.
struct Iq2Consts {
  __m256i b_pair01 = _mm256_setr_epi32(1, 1, 3, 3, 1, 1, 3, 3);  // B words of groups 0,1 of 4
  __m256i b_pair23 = _mm256_setr_epi32(5, 5, 7, 7, 5, 5, 7, 7);
  __m256i sign_shift = _mm256_setr_epi32(0, 7, 0, 7, 14, 21, 14, 21);
  __m256i m127 = _mm256_set1_epi32(127);
  __m256i m15 = _mm256_set1_epi8(15);
  __m256i parity = _mm256_setr_epi8(0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0,
                                    0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0);
  // Broadcast sign byte of dword 0 / 1 (first group of a pair) or 2 / 3 (second) over 8 bytes.
  __m256i bcast_first = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4,
                                         0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4);
  __m256i bcast_second = _mm256_setr_epi8(8, 8, 8, 8, 8, 8, 8, 8, 12, 12, 12, 12, 12, 12, 12, 12,
                                          8, 8, 8, 8, 8, 8, 8, 8, 12, 12, 12, 12, 12, 12, 12, 12);
  __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
  __m256i one32 = _mm256_set1_epi32(1);
};

inline __m256i iq2_negate_where(__m256i sign_byte_bcast, const Iq2Consts& c, __m256i x) {
  const __m256i neg = _mm256_cmpeq_epi8(_mm256_and_si256(sign_byte_bcast, c.bit), c.bit);
  return _mm256_sub_epi8(_mm256_xor_si256(x, neg), neg);
}

inline __m256i iq2_xxs_block_sum(const Iq2Consts& c, const block_iq2_xxs& wb, const int8_t* q8) {
  const uint64_t* grid = tables::kIq2xxsGrid;
  const uint8_t* qs = reinterpret_cast<const uint8_t*>(wb.qs);
  prefetch_ahead(&wb);
  prefetch_ahead(reinterpret_cast<const uint8_t*>(&wb) + 64);
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  for (int half = 0; half < 2; ++half) {  // groups 4*half .. 4*half+3
    const uint8_t* words = qs + 32 * half;  // A0 B0 A1 B1 A2 B2 A3 B3
    const __m256i q = load256(words);
    __m256i scale = _mm256_or_si256(_mm256_slli_epi32(_mm256_srli_epi32(q, 28), 1), c.one32);
    scale = _mm256_or_si256(scale, _mm256_slli_epi32(scale, 16));  // valid in dwords 1,3,5,7
    for (int pair = 0; pair < 2; ++pair) {
      __m256i s = _mm256_permutevar8x32_epi32(q, pair ? c.b_pair23 : c.b_pair01);
      s = _mm256_and_si256(_mm256_srlv_epi32(s, c.sign_shift), c.m127);
      const __m256i par = _mm256_xor_si256(_mm256_shuffle_epi8(c.parity, _mm256_and_si256(s, c.m15)),
                                           _mm256_shuffle_epi8(c.parity, _mm256_srli_epi32(s, 4)));
      s = _mm256_or_si256(s, _mm256_slli_epi32(par, 7));
      for (int t = 0; t < 2; ++t) {
        const int gi = 2 * pair + t;  // group within this half
        const int g = 4 * half + gi;
        const uint8_t* a = words + 8 * gi;
        // (vpgatherdq measured slower than four scalar loads here.)
        const __m256i mags = _mm256_set_epi64x(static_cast<long long>(grid[a[3]]), static_cast<long long>(grid[a[2]]),
                                               static_cast<long long>(grid[a[1]]), static_cast<long long>(grid[a[0]]));
        const __m256i xs = iq2_negate_where(_mm256_shuffle_epi8(s, t ? c.bcast_second : c.bcast_first), c, load256(q8 + 32 * g));
        const __m256i sc = _mm256_permutevar8x32_epi32(scale, _mm256_set1_epi32(2 * gi + 1));
        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(mags, xs), sc);
        if (t) {
          acc1 = _mm256_add_epi32(acc1, p);
        } else {
          acc0 = _mm256_add_epi32(acc0, p);
        }
      }
    }
  }
  return _mm256_add_epi32(acc0, acc1);
}

float dot_iq2_xxs(const block_iq2_xxs* w, const block_q8_K* x, int64_t n) {
  const Iq2Consts c;
  const int64_t nb = n / QK_K;
  float sum = 0.0f;
  int64_t b = 0;
  const __m256i z = _mm256_setzero_si256();
  for (; b + 2 <= nb; b += 2) {
    const __m256i s0 = iq2_xxs_block_sum(c, w[b], x[b].qs);
    const __m256i s1 = iq2_xxs_block_sum(c, w[b + 1], x[b + 1].qs);
    alignas(16) float t[4];
    _mm_store_ps(t, _mm_cvtepi32_ps(hsum4_i32(s0, s1, z, z)));
    sum += _cvtsh_ss(w[b].d) * x[b].d * t[0];
    sum += _cvtsh_ss(w[b + 1].d) * x[b + 1].d * t[1];
  }
  if (b < nb) {
    alignas(16) float t[4];
    _mm_store_ps(t, _mm_cvtepi32_ps(hsum4_i32(iq2_xxs_block_sum(c, w[b], x[b].qs), z, z, z)));
    sum += _cvtsh_ss(w[b].d) * x[b].d * t[0];
  }
  return 0.125f * sum;
}

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

void detail::dot_q2_K_multi_avx2(const block_q2_K* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n,
                                 float* out) {
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m128i m4 = _mm_set1_epi8(0xF);
  for (int v = 0; v < nx; ++v) out[v] = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const block_q2_K& wb = w[b];
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb.scales));
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), m4));
    const __m256i scales = _mm256_broadcastsi128_si256(_mm_and_si128(sc, m4));
    __m256i quants[8], run_scales[8];  // index 4h+j: bit pair j of half h
    for (int h = 0; h < 2; ++h) {
      const __m256i q = load256(wb.qs + 32 * h);
      for (int j = 0; j < 4; ++j) {
        const int k = 4 * h + j;
        quants[k] = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
        const __m256i spread = _mm256_set_m128i(_mm_set1_epi16(static_cast<short>(0x8000 | (2 * k + 1))),
                                                _mm_set1_epi16(static_cast<short>(0x8000 | (2 * k))));
        run_scales[k] = _mm256_shuffle_epi8(scales, spread);
      }
    }
    const float wd = _cvtsh_ss(wb.d), wdmin = _cvtsh_ss(wb.dmin);
    auto sums = [&](const block_q8_K& xb, __m256i* isum, __m256i* msum) {
      *msum = _mm256_madd_epi16(mins16, load256(xb.bsums));
      __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
      for (int k = 0; k < 8; k += 2) {
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(_mm256_maddubs_epi16(quants[k], load256(xb.qs + 32 * k)),
                                                        run_scales[k]));
        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(_mm256_maddubs_epi16(quants[k + 1], load256(xb.qs + 32 * k + 32)),
                                                        run_scales[k + 1]));
      }
      *isum = _mm256_add_epi32(acc0, acc1);
    };
    auto term = [&](const block_q8_K& xb, float isum, float min_sum) {
      const float dall = xb.d * wd;
      const float dmin = xb.d * wdmin;
      return dall * isum - dmin * min_sum;
    };
    // Two vectors share one reduction of their integer sums.
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

void detail::dot_q4_K_multi_avx2(const block_q4_K* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n,
                                 float* out) {
  const __m256i m4 = _mm256_set1_epi8(0xF);
  for (int v = 0; v < nx; ++v) out[v] = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const block_q4_K& wb = w[b];
    uint32_t word[3];
    std::memcpy(word, wb.scales, sizeof(word));
    const uint32_t sc_lo = word[0] & 0x3F3F3F3Fu;
    const uint32_t sc_hi = (word[2] & 0x0F0F0F0Fu) | (((word[0] >> 6) & 0x03030303u) << 4);
    const uint32_t mn_lo = word[1] & 0x3F3F3F3Fu;
    const uint32_t mn_hi = ((word[2] >> 4) & 0x0F0F0F0Fu) | (((word[1] >> 6) & 0x03030303u) << 4);
    const __m128i packed = _mm_set_epi32(static_cast<int>(mn_hi), static_cast<int>(mn_lo), static_cast<int>(sc_hi),
                                         static_cast<int>(sc_lo));
    // Each min twice, one per 16-value bsum of its 32-value sub-block.
    const __m256i mins_dup = _mm256_cvtepu8_epi16(
        _mm_shuffle_epi8(packed, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
    const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(packed));
    __m256i nibbles[8], sub_scales[8];  // sub-block j: chunk j/2, low (even j) or high nibbles
    for (int c = 0; c < 4; ++c) {
      const __m256i q = load256(wb.qs + 32 * c);
      nibbles[2 * c] = _mm256_and_si256(q, m4);
      nibbles[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    }
    for (int j = 0; j < 8; ++j) {
      sub_scales[j] = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(static_cast<short>((2 * j + 1) << 8 | (2 * j))));
    }
    const float wd = _cvtsh_ss(wb.d), wdmin = _cvtsh_ss(wb.dmin);
    auto sums = [&](const block_q8_K& xb, __m256i* isum, __m256i* msum) {
      *msum = _mm256_madd_epi16(mins_dup, load256(xb.bsums));
      __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
      for (int j = 0; j < 8; j += 2) {
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles[j], load256(xb.qs + 32 * j)),
                                                        sub_scales[j]));
        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles[j + 1], load256(xb.qs + 32 * j + 32)),
                                                        sub_scales[j + 1]));
      }
      *isum = _mm256_add_epi32(acc0, acc1);
    };
    auto term = [&](const block_q8_K& xb, float isum, float min_sum) {
      const float d = xb.d * wd;
      const float dmin = xb.d * wdmin;
      return d * isum - dmin * min_sum;
    };
    // Two vectors share one reduction of their integer sums.
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

void detail::dot_iq2_xxs_multi_avx2(const block_iq2_xxs* w, const block_q8_K* x, int64_t x_stride, int nx,
                                    int64_t n, float* out) {
  const uint64_t* grid = tables::kIq2xxsGrid;
  const uint64_t* sign_bytes = tables::iq2_sign_bytes();
  for (int v = 0; v < nx; ++v) out[v] = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    // Decode the block once: magnitudes, +-1 sign bytes and group scales.
    __m256i mags[8], signs[8], scales[8];
    for (int g = 0; g < 8; ++g) {
      uint32_t words[2];
      std::memcpy(words, w[b].qs + 4 * g, sizeof(words));
      const uint32_t a = words[0], s = words[1];
      mags[g] = _mm256_set_epi64x(static_cast<long long>(grid[a >> 24]), static_cast<long long>(grid[(a >> 16) & 0xFF]),
                                  static_cast<long long>(grid[(a >> 8) & 0xFF]), static_cast<long long>(grid[a & 0xFF]));
      signs[g] = _mm256_set_epi64x(static_cast<long long>(sign_bytes[(s >> 21) & 127]),
                                   static_cast<long long>(sign_bytes[(s >> 14) & 127]),
                                   static_cast<long long>(sign_bytes[(s >> 7) & 127]),
                                   static_cast<long long>(sign_bytes[s & 127]));
      scales[g] = _mm256_set1_epi16(static_cast<short>(2 * (s >> 28) + 1));
    }
    const float dw = _cvtsh_ss(w[b].d);
    auto block_sum = [&](int v) {
      const block_q8_K& xb = x[v * x_stride + b];
      __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
      for (int g = 0; g < 8; g += 2) {
        const __m256i xs0 = _mm256_sign_epi8(load256(xb.qs + 32 * g), signs[g]);
        const __m256i xs1 = _mm256_sign_epi8(load256(xb.qs + 32 * g + 32), signs[g + 1]);
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(_mm256_maddubs_epi16(mags[g], xs0), scales[g]));
        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(_mm256_maddubs_epi16(mags[g + 1], xs1), scales[g + 1]));
      }
      return _mm256_add_epi32(acc0, acc1);
    };
    // Four vectors share one reduction of their integer sums.
    const __m256i z = _mm256_setzero_si256();
    for (int v = 0; v < nx; v += 4) {
      const int nv = nx - v < 4 ? nx - v : 4;
      const __m256i s0 = block_sum(v);
      const __m256i s1 = nv > 1 ? block_sum(v + 1) : z;
      const __m256i s2 = nv > 2 ? block_sum(v + 2) : z;
      const __m256i s3 = nv > 3 ? block_sum(v + 3) : z;
      alignas(16) float t[4];
      _mm_store_ps(t, _mm_cvtepi32_ps(hsum4_i32(s0, s1, s2, s3)));
      for (int k = 0; k < nv; ++k) out[v + k] += dw * x[(v + k) * x_stride + b].d * t[k];
    }
  }
  for (int v = 0; v < nx; ++v) out[v] *= 0.125f;
}

namespace {
const Kernels kTable = {"avx2",   dot_f32,  dot_f16,  dot_bf16,
                        dot_q8_0, dot_q2_K, dot_q4_K, dot_iq2_xxs,
                        detail::quantize_act_q8_0_avx2, detail::quantize_act_q8_K_avx2,
                        detail::dot_iq2_xxs_multi_avx2, dot_q8_0_multi,
                        detail::dot_q2_K_multi_avx2, detail::dot_q4_K_multi_avx2};
}  // namespace

const Kernels* detail::avx2_kernels() { return &kTable; }

}  // namespace ds4::quant
