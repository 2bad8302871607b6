// Scalar reference dot products. The block kernels form each block's sum in integers and
// combine blocks in float in a fixed order; the SIMD versions of the K-quant and IQ2_XXS
// kernels reproduce that order exactly, so their results are bit-identical.
#include <cstring>
#include <vector>

#include "quant/internal.h"
#include "quant/quant.h"
#include "quant/tables.h"

namespace ds4::quant::scalar {
namespace {

float dot_f32(const float* w, const float* x, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += w[i] * x[i];
  return sum;
}

float dot_f16(const uint16_t* w, const float* x, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += f16_to_f32(w[i]) * x[i];
  return sum;
}

float dot_bf16(const uint16_t* w, const float* x, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += bf16_to_f32(w[i]) * x[i];
  return sum;
}

float dot_q8_0(const block_q8_0* w, const block_q8_0_act* x, int64_t n) {
  float sum = 0.0f;
  for (int64_t b = 0; b < n / QK8_0; ++b) {
    int32_t isum = 0;
    for (int j = 0; j < QK8_0; ++j) isum += w[b].qs[j] * x[b].qs[j];
    sum += f16_to_f32(w[b].d) * x[b].d * static_cast<float>(isum);
  }
  return sum;
}

float dot_q2_K(const block_q2_K* w, const block_q8_K* x, int64_t n) {
  float sum = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const block_q2_K& wb = w[b];
    const block_q8_K& xb = x[b];
    int32_t min_sum = 0;
    for (int j = 0; j < 16; ++j) min_sum += xb.bsums[j] * (wb.scales[j] >> 4);
    int32_t isum = 0;
    for (int h = 0; h < 2; ++h) {
      for (int j = 0; j < 4; ++j) {
        for (int part = 0; part < 2; ++part) {
          int32_t sub = 0;
          for (int l = 16 * part; l < 16 * part + 16; ++l) {
            sub += ((wb.qs[32 * h + l] >> (2 * j)) & 3) * xb.qs[128 * h + 32 * j + l];
          }
          isum += sub * (wb.scales[8 * h + 2 * j + part] & 0xF);
        }
      }
    }
    const float dall = xb.d * f16_to_f32(wb.d);
    const float dmin = xb.d * f16_to_f32(wb.dmin);
    sum += dall * static_cast<float>(isum) - dmin * static_cast<float>(min_sum);
  }
  return sum;
}

float dot_q4_K(const block_q4_K* w, const block_q8_K* x, int64_t n) {
  float sum = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const block_q4_K& wb = w[b];
    const block_q8_K& xb = x[b];
    int32_t isum = 0, min_sum = 0;
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      detail::q4k_scale_min(j, wb.scales, &sc, &m);
      const int shift = (j & 1) * 4;  // odd sub-blocks live in the high nibbles
      const uint8_t* q = wb.qs + 32 * (j / 2);
      int32_t sub = 0;
      for (int l = 0; l < 32; ++l) sub += ((q[l] >> shift) & 0xF) * xb.qs[32 * j + l];
      isum += sub * sc;
      min_sum += m * (xb.bsums[2 * j] + xb.bsums[2 * j + 1]);
    }
    const float d = xb.d * f16_to_f32(wb.d);
    const float dmin = xb.d * f16_to_f32(wb.dmin);
    sum += d * static_cast<float>(isum) - dmin * static_cast<float>(min_sum);
  }
  return sum;
}

float dot_iq2_xxs(const block_iq2_xxs* w, const block_q8_K* x, int64_t n) {
  float sum = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const int8_t* q8 = x[b].qs;
    int32_t bsum = 0;
    for (int g = 0; g < 8; ++g) {
      uint32_t words[2];
      std::memcpy(words, w[b].qs + 4 * g, sizeof(words));
      int32_t gsum = 0;
      for (int k = 0; k < 4; ++k) {
        const uint64_t grid = tables::kIq2xxsGrid[(words[0] >> (8 * k)) & 0xFF];
        const uint8_t signs = tables::kIq2Signs[(words[1] >> (7 * k)) & 127];
        for (int j = 0; j < 8; ++j) {
          const int32_t v = static_cast<int32_t>((grid >> (8 * j)) & 0xFF) * q8[32 * g + 8 * k + j];
          gsum += ((signs >> j) & 1) ? -v : v;
        }
      }
      bsum += gsum * static_cast<int32_t>(2 * (words[1] >> 28) + 1);
    }
    sum += f16_to_f32(w[b].d) * x[b].d * static_cast<float>(bsum);
  }
  // value = d*(0.5+s)*0.25*grid = d*(2s+1)*grid/8
  return 0.125f * sum;
}

void dot_iq2_xxs_multi(const block_iq2_xxs* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n,
                       float* out) {
  for (int v = 0; v < nx; ++v) out[v] = dot_iq2_xxs(w, x + v * x_stride, n);
}

void dot_q8_0_multi(const block_q8_0* w, const block_q8_0_act* x, int64_t x_stride, int nx, int64_t n,
                    float* out) {
  for (int v = 0; v < nx; ++v) out[v] = dot_q8_0(w, x + v * x_stride, n);
}

void dot_q2_K_multi(const block_q2_K* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n, float* out) {
  for (int v = 0; v < nx; ++v) out[v] = dot_q2_K(w, x + v * x_stride, n);
}

void dot_q4_K_multi(const block_q4_K* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n, float* out) {
  for (int v = 0; v < nx; ++v) out[v] = dot_q4_K(w, x + v * x_stride, n);
}

void dot_iq2_xxs_rows(const block_iq2_xxs* w, int64_t w_stride, int nr, const block_q8_K* x, int64_t x_stride, int nx,
                      int64_t n, float* out) {
  for (int r = 0; r < nr; ++r) {
    for (int v = 0; v < nx; ++v) out[r * nx + v] = dot_iq2_xxs(w + r * w_stride, x + v * x_stride, n);
  }
}

template <typename Block, float (*Dot)(const Block*, const block_q8_K*, int64_t)>
void rows_of(const Block* w, int64_t w_stride, int nr, const block_q8_K* x, int64_t x_stride, int nx, int64_t n,
             float* out) {
  for (int r = 0; r < nr; ++r) {
    for (int v = 0; v < nx; ++v) out[r * nx + v] = Dot(w + r * w_stride, x + v * x_stride, n);
  }
}

// Repacked rows: the reference unpacks them and runs the plain kernels above.
const block_iq2_xxs* unpacked_rows(const block_iq2_xxs* w, int64_t w_stride, int nr, int64_t nb) {
  thread_local std::vector<block_iq2_xxs> buf;
  buf.resize(static_cast<size_t>(nr * nb));
  for (int r = 0; r < nr; ++r) std::memcpy(&buf[r * nb], w + r * w_stride, sizeof(block_iq2_xxs) * nb);
  iq2_xxs_unpack(buf.data(), nr * nb);
  return buf.data();
}

float dot_iq2_xxs_r(const block_iq2_xxs* w, const block_q8_K* x, int64_t n) {
  return dot_iq2_xxs(unpacked_rows(w, 0, 1, n / QK_K), x, n);
}

void dot_iq2_xxs_r_multi(const block_iq2_xxs* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n,
                         float* out) {
  dot_iq2_xxs_multi(unpacked_rows(w, 0, 1, n / QK_K), x, x_stride, nx, n, out);
}

void dot_iq2_xxs_r_rows(const block_iq2_xxs* w, int64_t w_stride, int nr, const block_q8_K* x, int64_t x_stride,
                        int nx, int64_t n, float* out) {
  dot_iq2_xxs_rows(unpacked_rows(w, w_stride, nr, n / QK_K), n / QK_K, nr, x, x_stride, nx, n, out);
}

void dot_q8_0_rows(const block_q8_0* w, int64_t w_stride, int nr, const block_q8_0_act* x, int64_t x_stride, int nx,
                   int64_t n, float* out) {
  for (int r = 0; r < nr; ++r) dot_q8_0_multi(w + r * w_stride, x, x_stride, nx, n, out + r * nx);
}

const Kernels kTable = {"scalar",    dot_f32,  dot_f16,     dot_bf16,
                        dot_q8_0,    dot_q2_K, dot_q4_K,    dot_iq2_xxs,
                        detail::quantize_act_q8_0_scalar, detail::quantize_act_q8_K_scalar,
                        dot_iq2_xxs_multi, dot_q8_0_multi,
                        dot_q2_K_multi,    dot_q4_K_multi,
                        dot_iq2_xxs_rows,  rows_of<block_q2_K, dot_q2_K>,
                        rows_of<block_q4_K, dot_q4_K>,
                        dot_iq2_xxs_r,     dot_iq2_xxs_r_multi,
                        dot_iq2_xxs_r_rows, dot_q8_0_rows};

}  // namespace

const Kernels& kernels() { return kTable; }

}  // namespace ds4::quant::scalar
