// AVX2 pair dots: the chains and reduction of the AVX2 dot_f32/dot_f16 (src/quant), two
// outputs at a time.
#include <immintrin.h>

#include "cpu/float_dots.h"

namespace ds4::cpu {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <typename Load>
inline void dot2(Load load, const float* x0, const float* x1, int64_t n, float* out) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256 w0 = load(i), w1 = load(i + 8), w2 = load(i + 16), w3 = load(i + 24);
    a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0 + i), a0);
    b0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x1 + i), b0);
    a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x0 + i + 8), a1);
    b1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x1 + i + 8), b1);
    a2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(x0 + i + 16), a2);
    b2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(x1 + i + 16), b2);
    a3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(x0 + i + 24), a3);
    b3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(x1 + i + 24), b3);
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 w = load(i);
    a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(x0 + i), a0);
    b0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(x1 + i), b0);
  }
  out[0] = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  out[1] = hsum(_mm256_add_ps(_mm256_add_ps(b0, b1), _mm256_add_ps(b2, b3)));
}

void dot2_f32(const float* a, const float* x0, const float* x1, int64_t n, float* out) {
  dot2([a](int64_t i) { return _mm256_loadu_ps(a + i); }, x0, x1, n, out);
}

void dot2_f16(const uint16_t* w, const float* x0, const float* x1, int64_t n, float* out) {
  dot2([w](int64_t i) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i))); }, x0, x1,
       n, out);
}

}  // namespace

extern const FloatDots kFloatDotsAvx2;
const FloatDots kFloatDotsAvx2 = {dot2_f32, dot2_f16};

}  // namespace ds4::cpu
