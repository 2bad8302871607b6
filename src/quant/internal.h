// Helpers shared by the quant sources; not part of the public API.
#pragma once

#include <bit>
#include <cstdint>

#include "quant/quant.h"

namespace ds4::quant::detail {

// Round to nearest, ties to even, for |v| < 2^22: adding 1.5*2^23 leaves the integer in the
// low mantissa bits (the same trick ggml's quantizers use, so results agree exactly).
inline int nearest_int(float v) {
  const float biased = v + 12582912.0f;
  return static_cast<int>(std::bit_cast<uint32_t>(biased) & 0x007FFFFFu) - 0x00400000;
}

// Q4_K: 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes.
inline void q4k_scale_min(int j, const uint8_t* b, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = b[j] & 63;
    *min = b[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((b[j + 4] & 0xF) | ((b[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((b[j + 4] >> 4) | ((b[j] >> 6) << 4));
  }
}

// Quantize non-negative x[n] to levels L in [0, nmax] under one weighted scale (ggml's
// make_qp_quants); returns the scale. Used for K-quant scales and IQ2_XXS groups.
float fit_scale_positive(int n, int nmax, const float* x, uint8_t* L, const float* w);

// Activation quantizers without argument checks: the scalar references and the AVX2
// versions (the AVX-512 tables reuse the AVX2 ones).
void quantize_act_q8_0_scalar(const float* x, block_q8_0_act* dst, int64_t n);
void quantize_act_q8_K_scalar(const float* x, block_q8_K* dst, int64_t n);
void quantize_act_q8_0_avx2(const float* x, block_q8_0_act* dst, int64_t n);
void quantize_act_q8_K_avx2(const float* x, block_q8_K* dst, int64_t n);
// K-quant kernels give the same float on every ISA, so these serve the AVX-512 tables too.
void dot_q2_K_multi_avx2(const block_q2_K* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n, float* out);
void dot_q4_K_multi_avx2(const block_q4_K* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n, float* out);
void dot_iq2_xxs_multi_avx2(const block_iq2_xxs* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n,
                            float* out);
void dot_iq2_xxs_rows_avx2(const block_iq2_xxs* w, int64_t w_stride, int nr, const block_q8_K* x, int64_t x_stride,
                           int nx, int64_t n, float* out);
void dot_q2_K_rows_avx2(const block_q2_K* w, int64_t w_stride, int nr, const block_q8_K* x, int64_t x_stride, int nx,
                        int64_t n, float* out);
void dot_q4_K_rows_avx2(const block_q4_K* w, int64_t w_stride, int nr, const block_q8_K* x, int64_t x_stride, int nx,
                        int64_t n, float* out);

// IQ2_XXS on repacked rows (iq2_xxs_repack); the AVX-512 tables use these too.
float dot_iq2_xxs_r_avx2(const block_iq2_xxs* w, const block_q8_K* x, int64_t n);
void dot_iq2_xxs_r_multi_avx2(const block_iq2_xxs* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n,
                              float* out);
void dot_iq2_xxs_r_rows_avx2(const block_iq2_xxs* w, int64_t w_stride, int nr, const block_q8_K* x,
                             int64_t x_stride, int nx, int64_t n, float* out);

// Per-ISA kernel tables; each returns nullptr when that ISA was not compiled in.
const Kernels* avx2_kernels();
const Kernels* avx512_kernels();
const Kernels* avx512_vnni_kernels();

}  // namespace ds4::quant::detail
