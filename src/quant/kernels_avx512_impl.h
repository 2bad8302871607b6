// AVX-512 kernels, included by kernels_avx512.cpp (F+BW+VL) and kernels_avx512_vnni.cpp
// (+VNNI) with DS4_AVX512_VNNI set to 0 or 1. Structure mirrors the AVX2 kernels, two
// 256-bit halves per register; the block sums stay exact integers and are combined in the
// scalar order, so K-quant and IQ2_XXS results equal the scalar reference bit for bit.
// Activations must lie in [-127, 127] (as every ds4 activation quantizer produces).
// GCC 12 warns inside its own AVX-512 headers (_mm256_undefined_si256 passed through the
// 256/512-bit insert/extract builtins); the values are never read, so silence it here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "quant/internal.h"
#include "quant/quant.h"
#include "quant/tables.h"

#ifndef DS4_AVX512_VNNI
#error "define DS4_AVX512_VNNI before including kernels_avx512_impl.h"
#endif

namespace ds4::quant {
namespace {

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
inline __m512i join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

// Software prefetch of the streamed weight rows, as in the AVX2 kernels (4 KiB ahead; there
// it recovered 10-25% of the streaming rate). Not measured on an AVX-512 machine.
inline void prefetch_ahead(const void* p) { _mm_prefetch(static_cast<const char*>(p) + 4096, _MM_HINT_T0); }

inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// Per-16-byte-run multipliers a, b, c, d for scaled_dot, in the lane width it needs.
inline __m512i run_scales(int a, int b, int c, int d) {
#if DS4_AVX512_VNNI
  return join(_mm256_set_m128i(_mm_set1_epi32(b), _mm_set1_epi32(a)),
              _mm256_set_m128i(_mm_set1_epi32(d), _mm_set1_epi32(c)));
#else
  return join(_mm256_set_m128i(_mm_set1_epi16(static_cast<short>(b)), _mm_set1_epi16(static_cast<short>(a))),
              _mm256_set_m128i(_mm_set1_epi16(static_cast<short>(d)), _mm_set1_epi16(static_cast<short>(c))));
#endif
}

// 16 int32 lanes: lane i = (sum of u*s over bytes 4i..4i+3) * scale of its 16-byte run.
// u is unsigned (<= 128), s signed in [-127, 127]: vpmaddubsw cannot saturate there.
inline __m512i scaled_dot(__m512i u, __m512i s, __m512i scales) {
#if DS4_AVX512_VNNI
  return _mm512_mullo_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s), scales);
#else
  return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), scales);
#endif
}

// Plain 4-byte dot (no scale), for Q8_0.
inline __m512i dot4(__m512i u, __m512i s) {
#if DS4_AVX512_VNNI
  return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
#else
  return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
#endif
}

template <typename Load>
inline float dot_float_rows(Load load, const float* x, int64_t n, const void* w = nullptr, int w_elem_bytes = 0) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  int64_t i = 0;
  const __mmask16 all = 0xFFFF;
  for (; i + 64 <= n; i += 64) {
    if (w) {
      for (int off = 0; off < 64 * w_elem_bytes; off += 64) prefetch_ahead(static_cast<const char*>(w) + i * w_elem_bytes + off);
    }
    acc0 = _mm512_fmadd_ps(load(i, all), _mm512_loadu_ps(x + i), acc0);
    acc1 = _mm512_fmadd_ps(load(i + 16, all), _mm512_loadu_ps(x + i + 16), acc1);
    acc2 = _mm512_fmadd_ps(load(i + 32, all), _mm512_loadu_ps(x + i + 32), acc2);
    acc3 = _mm512_fmadd_ps(load(i + 48, all), _mm512_loadu_ps(x + i + 48), acc3);
  }
  for (; i + 16 <= n; i += 16) acc0 = _mm512_fmadd_ps(load(i, all), _mm512_loadu_ps(x + i), acc0);
  if (i < n) {  // masked tail: lanes past n load as zero
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    acc1 = _mm512_fmadd_ps(load(i, m), _mm512_maskz_loadu_ps(m, x + i), acc1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

float dot_f32(const float* w, const float* x, int64_t n) {
  return dot_float_rows([w](int64_t i, __mmask16 m) { return _mm512_maskz_loadu_ps(m, w + i); }, x, n, w, 4);
}

float dot_f16(const uint16_t* w, const float* x, int64_t n) {
  return dot_float_rows(
      [w](int64_t i, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + i)); }, x, n, w, 2);
}

float dot_bf16(const uint16_t* w, const float* x, int64_t n) {
  return dot_float_rows(
      [w](int64_t i, __mmask16 m) {
        const __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
      },
      x, n, w, 2);
}

// |w| as unsigned bytes and the activation with w's sign: the u8 x s8 form of w*x.
inline __m512i dot_q8_pair(__m512i w, __m512i x) {
  const __mmask64 neg = _mm512_movepi8_mask(w);
  const __m512i sx = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
  return dot4(_mm512_abs_epi8(w), sx);
}

inline __m512 two_scales(float lo, float hi) {
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(lo)),
                                             _mm256_castps_pd(_mm256_set1_ps(hi)), 1));
}

float dot_q8_0(const block_q8_0* w, const block_q8_0_act* x, int64_t n) {
  const int64_t nb = n / QK8_0;
  __m512 acc = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    prefetch_ahead(w + b);
    prefetch_ahead(w + b + 1);
    const __m512i p = dot_q8_pair(join(load256(w[b].qs), load256(w[b + 1].qs)),
                                  join(load256(x[b].qs), load256(x[b + 1].qs)));
    const __m512 s = two_scales(_cvtsh_ss(w[b].d) * x[b].d, _cvtsh_ss(w[b + 1].d) * x[b + 1].d);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc);
  }
  if (b < nb) {
    const __m512i p = dot_q8_pair(join(load256(w[b].qs), _mm256_setzero_si256()),
                                  join(load256(x[b].qs), _mm256_setzero_si256()));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), two_scales(_cvtsh_ss(w[b].d) * x[b].d, 0.0f), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// Multi-vector form for this table: must equal this table's dot_q8_0 bit for bit, whose
// accumulation order differs from AVX2's, so it simply loops.
void dot_q8_0_multi(const block_q8_0* w, const block_q8_0_act* x, int64_t x_stride, int nx, int64_t n,
                    float* out) {
  for (int v = 0; v < nx; ++v) out[v] = dot_q8_0(w, x + v * x_stride, n);
}

void dot_q8_0_rows(const block_q8_0* w, int64_t w_stride, int nr, const block_q8_0_act* x, int64_t x_stride, int nx,
                   int64_t n, float* out) {
  for (int r = 0; r < nr; ++r) dot_q8_0_multi(w + r * w_stride, x, x_stride, nx, n, out + r * nx);
}

float dot_q2_K(const block_q2_K* w, const block_q8_K* x, int64_t n) {
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m128i m4 = _mm_set1_epi8(0xF);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const block_q2_K& wb = w[b];
    const block_q8_K& xb = x[b];
    prefetch_ahead(&wb);
    prefetch_ahead(reinterpret_cast<const uint8_t*>(&wb) + 64);
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb.scales));
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), m4));
    const int32_t min_sum = hsum_i32(_mm256_madd_epi16(mins16, load256(xb.bsums)));

    __m512i acc = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m256i q = load256(wb.qs + 32 * h);
      for (int jj = 0; jj < 2; ++jj) {
        const int j0 = 2 * jj;  // bit pairs j0 and j0+1 cover 64 consecutive elements
        const __m256i q0 = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j0), m3);
        const __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j0 + 2), m3);
        const int s = 8 * h + 2 * j0;
        const __m512i scales = run_scales(wb.scales[s] & 0xF, wb.scales[s + 1] & 0xF, wb.scales[s + 2] & 0xF,
                                          wb.scales[s + 3] & 0xF);
        acc = _mm512_add_epi32(acc, scaled_dot(join(q0, q1), load512(xb.qs + 128 * h + 32 * j0), scales));
      }
    }
    const int32_t isum = _mm512_reduce_add_epi32(acc);
    const float dall = xb.d * _cvtsh_ss(wb.d);
    const float dmin = xb.d * _cvtsh_ss(wb.dmin);
    sum += dall * static_cast<float>(isum) - dmin * static_cast<float>(min_sum);
  }
  return sum;
}

float dot_q4_K(const block_q4_K* w, const block_q8_K* x, int64_t n) {
  const __m256i m4 = _mm256_set1_epi8(0xF);
  float sum = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const block_q4_K& wb = w[b];
    const block_q8_K& xb = x[b];
    prefetch_ahead(&wb);
    prefetch_ahead(reinterpret_cast<const uint8_t*>(&wb) + 64);
    prefetch_ahead(reinterpret_cast<const uint8_t*>(&wb) + 128);
    uint8_t sc[8];
    alignas(16) uint8_t mins_pairs[16];
    for (int j = 0; j < 8; ++j) {
      uint8_t m;
      detail::q4k_scale_min(j, wb.scales, &sc[j], &m);
      mins_pairs[2 * j] = mins_pairs[2 * j + 1] = m;
    }
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(mins_pairs)));
    const int32_t min_sum = hsum_i32(_mm256_madd_epi16(mins16, load256(xb.bsums)));

    __m512i acc = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = load256(wb.qs + 32 * c);
      const __m512i nibbles = join(_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
      const __m512i scales = run_scales(sc[2 * c], sc[2 * c], sc[2 * c + 1], sc[2 * c + 1]);
      acc = _mm512_add_epi32(acc, scaled_dot(nibbles, load512(xb.qs + 64 * c), scales));
    }
    const int32_t isum = _mm512_reduce_add_epi32(acc);
    const float d = xb.d * _cvtsh_ss(wb.d);
    const float dmin = xb.d * _cvtsh_ss(wb.dmin);
    sum += d * static_cast<float>(isum) - dmin * static_cast<float>(min_sum);
  }
  return sum;
}

float dot_iq2_xxs(const block_iq2_xxs* w, const block_q8_K* x, int64_t n) {
  const uint64_t* grid = tables::kIq2xxsGrid;
  const uint8_t* signs = tables::kIq2Signs;
  float sum = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const int8_t* q8 = x[b].qs;
    prefetch_ahead(w + b);
    prefetch_ahead(reinterpret_cast<const uint8_t*>(w + b) + 64);
    __m512i acc = _mm512_setzero_si512();
    for (int g = 0; g < 8; g += 2) {  // two 32-value groups per register
      uint32_t words[4];
      std::memcpy(words, w[b].qs + 4 * g, sizeof(words));
      const uint32_t a0 = words[0], s0 = words[1], a1 = words[2], s1 = words[3];
      const __m512i mags = _mm512_set_epi64(
          static_cast<long long>(grid[a1 >> 24]), static_cast<long long>(grid[(a1 >> 16) & 0xFF]),
          static_cast<long long>(grid[(a1 >> 8) & 0xFF]), static_cast<long long>(grid[a1 & 0xFF]),
          static_cast<long long>(grid[a0 >> 24]), static_cast<long long>(grid[(a0 >> 16) & 0xFF]),
          static_cast<long long>(grid[(a0 >> 8) & 0xFF]), static_cast<long long>(grid[a0 & 0xFF]));
      // Sign table bytes are bit masks already (bit j = weight j negative).
      uint64_t neg = 0;
      for (int k = 0; k < 4; ++k) {
        neg |= static_cast<uint64_t>(signs[(s0 >> (7 * k)) & 127]) << (8 * k);
        neg |= static_cast<uint64_t>(signs[(s1 >> (7 * k)) & 127]) << (32 + 8 * k);
      }
      const __m512i xv = load512(q8 + 32 * g);
      const __m512i xs = _mm512_mask_sub_epi8(xv, static_cast<__mmask64>(neg), _mm512_setzero_si512(), xv);
      const int ls0 = static_cast<int>(2 * (s0 >> 28) + 1), ls1 = static_cast<int>(2 * (s1 >> 28) + 1);
      acc = _mm512_add_epi32(acc, scaled_dot(mags, xs, run_scales(ls0, ls0, ls1, ls1)));
    }
    sum += _cvtsh_ss(w[b].d) * x[b].d * static_cast<float>(_mm512_reduce_add_epi32(acc));
  }
  return 0.125f * sum;
}

}  // namespace
}  // namespace ds4::quant
