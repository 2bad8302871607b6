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

// Shared driver for the float-weight dots: Load(i) gives 8 widened weights at i.
template <typename Load, typename Scalar>
inline float dot_float_rows(Load load, Scalar scalar_at, const float* x, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
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
                        [w](int64_t i) { return w[i]; }, x, n);
}

float dot_f16(const uint16_t* w, const float* x, int64_t n) {
  return dot_float_rows(
      [w](int64_t i) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i))); },
      [w](int64_t i) { return f16_to_f32(w[i]); }, x, n);
}

float dot_bf16(const uint16_t* w, const float* x, int64_t n) {
  return dot_float_rows(
      [w](int64_t i) {
        const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
      },
      [w](int64_t i) { return bf16_to_f32(w[i]); }, x, n);
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

float dot_q2_K(const block_q2_K* w, const block_q8_K* x, int64_t n) {
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m128i m4 = _mm_set1_epi8(0xF);
  // Shuffle controls that spread scale bytes 2k (low lane) and 2k+1 (high lane) over
  // 8 int16 lanes each: lanes 0-7 of a vpmaddubsw result cover elements 0-15 of a
  // 32-value run, lanes 8-15 elements 16-31, and those halves have separate scales.
  __m256i spread[8];
  for (int k = 0; k < 8; ++k) {
    spread[k] = _mm256_set_m128i(_mm_set1_epi16(static_cast<short>(0x8000 | (2 * k + 1))),
                                 _mm_set1_epi16(static_cast<short>(0x8000 | (2 * k))));
  }
  float sum = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const block_q2_K& wb = w[b];
    const block_q8_K& xb = x[b];
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb.scales));
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), m4));
    const int32_t min_sum = hsum_i32(_mm256_madd_epi16(mins16, load256(xb.bsums)));
    const __m256i scales = _mm256_broadcastsi128_si256(_mm_and_si128(sc, m4));

    __m256i acc = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i q = load256(wb.qs + 32 * h);
      for (int j = 0; j < 4; ++j) {
        const __m256i qj = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
        const __m256i p16 = _mm256_maddubs_epi16(qj, load256(xb.qs + 128 * h + 32 * j));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_shuffle_epi8(scales, spread[4 * h + j])));
      }
    }
    const int32_t isum = hsum_i32(acc);
    const float dall = xb.d * _cvtsh_ss(wb.d);
    const float dmin = xb.d * _cvtsh_ss(wb.dmin);
    sum += dall * static_cast<float>(isum) - dmin * static_cast<float>(min_sum);
  }
  return sum;
}

float dot_q4_K(const block_q4_K* w, const block_q8_K* x, int64_t n) {
  const __m256i m4 = _mm256_set1_epi8(0xF);
  // Control k picks int16 lane k of a 128-bit lane into all 8 int16 lanes.
  __m256i pick[8];
  for (int k = 0; k < 8; ++k) pick[k] = _mm256_set1_epi16(static_cast<short>((2 * k + 1) << 8 | (2 * k)));
  float sum = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const block_q4_K& wb = w[b];
    const block_q8_K& xb = x[b];
    // Unpack the 12 scale bytes branch-free (same values as detail::q4k_scale_min):
    // bytes 0-7 of `packed` are the 8 scales, bytes 8-15 the 8 mins.
    uint32_t word[3];
    std::memcpy(word, wb.scales, sizeof(word));
    const uint32_t sc_lo = word[0] & 0x3F3F3F3Fu;
    const uint32_t sc_hi = (word[2] & 0x0F0F0F0Fu) | (((word[0] >> 6) & 0x03030303u) << 4);
    const uint32_t mn_lo = word[1] & 0x3F3F3F3Fu;
    const uint32_t mn_hi = ((word[2] >> 4) & 0x0F0F0F0Fu) | (((word[1] >> 6) & 0x03030303u) << 4);
    const __m256i packed16 = _mm256_cvtepu8_epi16(_mm_set_epi32(static_cast<int>(mn_hi), static_cast<int>(mn_lo),
                                                                static_cast<int>(sc_hi), static_cast<int>(sc_lo)));
    // Each min covers two 16-value bsums.
    const __m256i bsums = load256(xb.bsums);
    const __m128i bsum_pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
    __m128i mins = _mm_madd_epi16(_mm256_extracti128_si256(packed16, 1), bsum_pairs);
    mins = _mm_add_epi32(mins, _mm_shuffle_epi32(mins, 0x4E));
    mins = _mm_add_epi32(mins, _mm_shuffle_epi32(mins, 0xB1));
    const int32_t min_sum = _mm_cvtsi128_si32(mins);
    const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(packed16));

    __m256i acc = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = load256(wb.qs + 32 * c);
      const __m256i lo = _mm256_and_si256(q, m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      const __m256i p_lo = _mm256_maddubs_epi16(lo, load256(xb.qs + 64 * c));
      const __m256i p_hi = _mm256_maddubs_epi16(hi, load256(xb.qs + 64 * c + 32));
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p_lo, _mm256_shuffle_epi8(scales, pick[2 * c])));
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p_hi, _mm256_shuffle_epi8(scales, pick[2 * c + 1])));
    }
    const int32_t isum = hsum_i32(acc);
    const float d = xb.d * _cvtsh_ss(wb.d);
    const float dmin = xb.d * _cvtsh_ss(wb.dmin);
    sum += d * static_cast<float>(isum) - dmin * static_cast<float>(min_sum);
  }
  return sum;
}

float dot_iq2_xxs(const block_iq2_xxs* w, const block_q8_K* x, int64_t n) {
  const uint64_t* grid = tables::kIq2xxsGrid;
  const uint64_t* sign_bytes = tables::iq2_sign_bytes();
  float sum = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const int8_t* q8 = x[b].qs;
    __m256i acc = _mm256_setzero_si256();
    for (int g = 0; g < 8; ++g) {
      uint32_t words[2];
      std::memcpy(words, w[b].qs + 4 * g, sizeof(words));
      const uint32_t a = words[0], s = words[1];
      const __m256i mags = _mm256_set_epi64x(static_cast<long long>(grid[a >> 24]),
                                             static_cast<long long>(grid[(a >> 16) & 0xFF]),
                                             static_cast<long long>(grid[(a >> 8) & 0xFF]),
                                             static_cast<long long>(grid[a & 0xFF]));
      const __m256i signs = _mm256_set_epi64x(static_cast<long long>(sign_bytes[(s >> 21) & 127]),
                                              static_cast<long long>(sign_bytes[(s >> 14) & 127]),
                                              static_cast<long long>(sign_bytes[(s >> 7) & 127]),
                                              static_cast<long long>(sign_bytes[s & 127]));
      const __m256i xs = _mm256_sign_epi8(load256(q8 + 32 * g), signs);
      const __m256i p16 = _mm256_maddubs_epi16(mags, xs);
      const short group_scale = static_cast<short>(2 * (s >> 28) + 1);
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(group_scale)));
    }
    sum += _cvtsh_ss(w[b].d) * x[b].d * static_cast<float>(hsum_i32(acc));
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
    for (int v = 0; v < nx; ++v) {
      const block_q8_K& xb = x[v * x_stride + b];
      const int32_t min_sum = hsum_i32(_mm256_madd_epi16(mins16, load256(xb.bsums)));
      __m256i acc = _mm256_setzero_si256();
      for (int k = 0; k < 8; ++k) {
        const __m256i p16 = _mm256_maddubs_epi16(quants[k], load256(xb.qs + 32 * k));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, run_scales[k]));
      }
      const float dall = xb.d * wd;
      const float dmin = xb.d * wdmin;
      out[v] += dall * static_cast<float>(hsum_i32(acc)) - dmin * static_cast<float>(min_sum);
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
    const __m256i packed16 = _mm256_cvtepu8_epi16(_mm_set_epi32(static_cast<int>(mn_hi), static_cast<int>(mn_lo),
                                                                static_cast<int>(sc_hi), static_cast<int>(sc_lo)));
    const __m128i mins16 = _mm256_extracti128_si256(packed16, 1);
    const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(packed16));
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
    for (int v = 0; v < nx; ++v) {
      const block_q8_K& xb = x[v * x_stride + b];
      const __m256i bsums = load256(xb.bsums);
      const __m128i bsum_pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
      __m128i mins = _mm_madd_epi16(mins16, bsum_pairs);
      mins = _mm_add_epi32(mins, _mm_shuffle_epi32(mins, 0x4E));
      mins = _mm_add_epi32(mins, _mm_shuffle_epi32(mins, 0xB1));
      __m256i acc = _mm256_setzero_si256();
      for (int j = 0; j < 8; ++j) {
        const __m256i p16 = _mm256_maddubs_epi16(nibbles[j], load256(xb.qs + 32 * j));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, sub_scales[j]));
      }
      const float d = xb.d * wd;
      const float dmin = xb.d * wdmin;
      out[v] += d * static_cast<float>(hsum_i32(acc)) - dmin * static_cast<float>(_mm_cvtsi128_si32(mins));
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
    for (int v = 0; v < nx; ++v) {
      const block_q8_K& xb = x[v * x_stride + b];
      __m256i acc = _mm256_setzero_si256();
      for (int g = 0; g < 8; ++g) {
        const __m256i xs = _mm256_sign_epi8(load256(xb.qs + 32 * g), signs[g]);
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(mags[g], xs), scales[g]));
      }
      out[v] += dw * xb.d * static_cast<float>(hsum_i32(acc));
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
