// Row quantizers: Q8_0, Q8_K, Q2_K, Q4_K (ggml-style importance-weighted scale search),
// the plain float types, and ds4's activation quantizers. IQ2_XXS is in iq2_quantize.cpp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "quant/internal.h"
#include "quant/quant.h"

namespace ds4::quant {

void quantize_row_iq2_xxs(const float* x, block_iq2_xxs* y, int64_t nb, const float* importance);

namespace {

using detail::fit_scale_positive;
using detail::nearest_int;

// Fit x ~ scale*L + min with L in [0, nmax] (min <= 0), weighted by w; tries nstep+1
// stretched inverse scales around nmax/(max-min) and keeps the weighted least-squares fit
// with the smallest error (absolute error if use_abs). Returns scale, stores -min.
// weights == nullptr means w = x^2 (ggml's qkx3 convention); qkx2 always passes weights.
float fit_scale_min(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                    float* neg_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                    bool use_abs, bool max_le_min_is_empty) {
  auto weight = [&](int i) { return weights ? weights[i] : x[i] * x[i]; };
  float min = x[0], max = x[0];
  float sum_w = weight(0);
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    min = std::min(min, x[i]);
    max = std::max(max, x[i]);
    const float w = weight(i);
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max_le_min_is_empty ? max <= min : max == min) {
    std::memset(L, 0, static_cast<size_t>(n));
    *neg_min = -min;
    return 0.0f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    float diff = scale * L[i] + min - x[i];
    diff = use_abs ? std::fabs(diff) : diff * diff;
    best_error += weight(i) * diff;
  }
  if (nstep < 1) {
    *neg_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::max(0, std::min(nmax, nearest_int(iscale * (x[i] - min))));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weight(i);
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float err = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_abs ? std::fabs(diff) : diff * diff;
        err += weight(i) * diff;
      }
      if (err < best_error) {
        std::memcpy(L, Laux, static_cast<size_t>(n));
        best_error = err;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *neg_min = -min;
  return scale;
}

void quantize_q8_0(const float* x, block_q8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float* xb = x + i * QK8_0;
    float amax = 0.0f;
    for (int j = 0; j < QK8_0; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < QK8_0; ++j) {
      // |x*id| <= 127 for finite rows; the range test also keeps NaN (from inf/NaN input)
      // away from an undefined float->int conversion.
      const float r = std::round(xb[j] * id);
      y[i].qs[j] = static_cast<int8_t>(r >= -128.0f && r <= 127.0f ? r : 0.0f);
    }
  }
}

void pack_q4_K_scales(const uint8_t* ls, const uint8_t* lm, uint8_t* out) {
  std::memset(out, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      out[j] = ls[j];
      out[j + 4] = lm[j];
    } else {
      out[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      out[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      out[j] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
}

// With the final f16 d/dmin and 6-bit scales fixed, requantize every value against them.
// A sub-block whose scale is zero keeps the levels of the search (they decode alike; ggml
// does the same, so the bytes match its files).
void q4_K_requantize_and_pack(const float* x, block_q4_K* y, uint8_t* L) {
  const float d = f16_to_f32(y->d), dmin = f16_to_f32(y->dmin);
  for (int j = 0; j < QK_K / 32; ++j) {
    uint8_t sc, m;
    detail::q4k_scale_min(j, y->scales, &sc, &m);
    const float dd = d * sc;
    if (dd == 0.0f) continue;
    const float dm = dmin * m;
    for (int i = 0; i < 32; ++i) {
      L[32 * j + i] = static_cast<uint8_t>(std::max(0, std::min(15, nearest_int((x[32 * j + i] + dm) / dd))));
    }
  }
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      y->qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
  }
}

void quantize_q4_K_block(const float* x, block_q4_K* y, const float* importance) {
  uint8_t L[QK_K], Laux[32], ls[8], lm[8];
  float weights[32], mins[8], scales[8];
  if (!importance) {
    // ggml's reference path: weights |x| + rms of the sub-block, min/max scale search.
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      const float* xs = x + 32 * j;
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
      scales[j] = fit_scale_min(32, 15, xs, weights, L + 32 * j, &mins[j], Laux, -1.0f, 0.1f, 20,
                                false, false);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < 8; ++j) {
      ls[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_scale * scales[j])));
      lm[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_min * mins[j])));
    }
    pack_q4_K_scales(ls, lm, y->scales);
    y->d = f32_to_f16(max_scale / 63.0f);
    y->dmin = f32_to_f16(max_min / 63.0f);
  } else {
    // Importance path: weights imp*sqrt(sigma^2 + x^2), finer scale search, and the
    // 6-bit sub-block scales themselves fitted by weighted least squares.
    float sum_x2 = 0;
    for (int l = 0; l < QK_K; ++l) sum_x2 += x[l] * x[l];
    const float sigma2 = 2 * sum_x2 / QK_K;
    float sw[8];
    for (int j = 0; j < 8; ++j) {
      const float* xs = x + 32 * j;
      const float* qw = importance + 32 * j;
      for (int l = 0; l < 32; ++l) weights[l] = qw[l] * std::sqrt(sigma2 + xs[l] * xs[l]);
      float sumw = 0;
      for (int l = 0; l < 32; ++l) sumw += weights[l];
      sw[j] = sumw;
      scales[j] = fit_scale_min(32, 15, xs, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36,
                                false, true);
    }
    const float d_block = fit_scale_positive(8, 63, scales, ls, sw);
    const float m_block = fit_scale_positive(8, 63, mins, lm, sw);
    pack_q4_K_scales(ls, lm, y->scales);
    y->d = f32_to_f16(d_block);
    y->dmin = f32_to_f16(m_block);
  }
  q4_K_requantize_and_pack(x, y, L);
}

void q2_K_requantize_and_pack(const float* x, block_q2_K* y, uint8_t* L) {
  const float d = f16_to_f32(y->d), dmin = f16_to_f32(y->dmin);
  for (int j = 0; j < 16; ++j) {
    const float dd = d * (y->scales[j] & 0xF);
    if (dd == 0.0f) continue;
    const float m = dmin * (y->scales[j] >> 4);
    for (int i = 0; i < 16; ++i) {
      L[16 * j + i] = static_cast<uint8_t>(std::max(0, std::min(3, nearest_int((x[16 * j + i] + m) / dd))));
    }
  }
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t* Lh = L + 128 * h;
      y->qs[32 * h + l] =
          static_cast<uint8_t>(Lh[l] | (Lh[l + 32] << 2) | (Lh[l + 64] << 4) | (Lh[l + 96] << 6));
    }
  }
}

void quantize_q2_K_block(const float* x, block_q2_K* y, const float* importance) {
  uint8_t L[QK_K], Laux[16];
  float weights[16], mins[16], scales[16];
  if (!importance) {
    // ggml's reference path: |x| weights and absolute-error search.
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = fit_scale_min(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15,
                                true, false);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    if (max_scale > 0) {
      const float iscale = 15.0f / max_scale;
      for (int j = 0; j < 16; ++j) y->scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
      y->d = f32_to_f16(max_scale / 15.0f);
    } else {
      std::memset(y->scales, 0, 16);
      y->d = f32_to_f16(0.0f);
    }
    if (max_min > 0) {
      const float iscale = 15.0f / max_min;
      for (int j = 0; j < 16; ++j) y->scales[j] |= static_cast<uint8_t>(nearest_int(iscale * mins[j]) << 4);
      y->dmin = f32_to_f16(max_min / 15.0f);
    } else {
      y->dmin = f32_to_f16(0.0f);
    }
  } else {
    float sumx2 = 0;
    for (int j = 0; j < QK_K; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = sumx2 / QK_K;
    float sw[16];
    uint8_t ls[16], lm[16];
    for (int j = 0; j < 16; ++j) {
      const float* qw = importance + 16 * j;
      for (int l = 0; l < 16; ++l) weights[l] = qw[l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      float sumw = 0;
      for (int l = 0; l < 16; ++l) sumw += weights[l];
      sw[j] = sumw;
      scales[j] = fit_scale_min(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36,
                                false, true);
    }
    const float d_block = fit_scale_positive(16, 15, scales, ls, sw);
    const float m_block = fit_scale_positive(16, 15, mins, lm, sw);
    y->d = f32_to_f16(d_block);
    y->dmin = f32_to_f16(m_block);
    for (int j = 0; j < 16; ++j) y->scales[j] = static_cast<uint8_t>(ls[j] | (lm[j] << 4));
  }
  q2_K_requantize_and_pack(x, y, L);
}

void quantize_q8_K_blocks(const float* x, block_q8_K* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * QK_K;
    float max = 0.0f, amax = 0.0f;
    for (int j = 0; j < QK_K; ++j) {
      const float ax = std::fabs(xb[j]);
      if (ax > amax) {
        amax = ax;
        max = xb[j];
      }
    }
    if (amax == 0.0f) {
      std::memset(&y[b], 0, sizeof(block_q8_K));
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < QK_K; ++j) {
      y[b].qs[j] = static_cast<int8_t>(std::max(-128, std::min(127, nearest_int(iscale * xb[j]))));
    }
    for (int j = 0; j < QK_K / 16; ++j) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += y[b].qs[16 * j + i];
      y[b].bsums[j] = static_cast<int16_t>(sum);
    }
    y[b].d = 1.0f / iscale;
  }
}

[[noreturn]] void bad_length(const char* what, int64_t n, int block) {
  throw std::invalid_argument(std::string(what) + ": length " + std::to_string(n) +
                              " is not a multiple of " + std::to_string(block));
}

}  // namespace

// Quantize non-negative x to L in [0, nmax] with a single weighted scale: a coarse search
// over the inverse scale, then coordinate passes that move single L values while the
// weighted correlation sumlx^2/suml2 improves. Used for the K-quant super-block scales.
float detail::fit_scale_positive(int n, int nmax, const float* x, uint8_t* L, const float* w) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < 1e-15f) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.0f;
  }
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * L[i];
    best_mse += w[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + nmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * l;
      mse += w[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<uint8_t>(l);
    sumlx += w[i] * x[i] * l;
    suml2 += w[i] * l * l;
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      float slx = sumlx - w[i] * x[i] * L[i];
      float sl2 = suml2 - w[i] * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += w[i] * x[i] * new_l;
          sl2 += w[i] * new_l * new_l;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

void quantize_row(Type t, const float* src, void* dst, int64_t n, const float* importance) {
  const auto info = type_info(static_cast<uint32_t>(t));
  if (!info || !info->engine_supported) {
    throw std::invalid_argument("quantize_row: type " + std::string(type_name(t)) + " is not supported by ds4");
  }
  if (n < 0 || n % info->block_elems != 0) bad_length("quantize_row", n, static_cast<int>(info->block_elems));
  const int64_t nb = n / info->block_elems;
  switch (t) {
    case Type::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case Type::F16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = f32_to_f16(src[i]);
      return;
    }
    case Type::BF16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(src[i]);
      return;
    }
    case Type::Q8_0: return quantize_q8_0(src, static_cast<block_q8_0*>(dst), nb);
    case Type::Q8_K: return quantize_q8_K_blocks(src, static_cast<block_q8_K*>(dst), nb);
    case Type::Q2_K:
      for (int64_t i = 0; i < nb; ++i) {
        quantize_q2_K_block(src + i * QK_K, static_cast<block_q2_K*>(dst) + i,
                            importance ? importance + i * QK_K : nullptr);
      }
      return;
    case Type::Q4_K:
      for (int64_t i = 0; i < nb; ++i) {
        quantize_q4_K_block(src + i * QK_K, static_cast<block_q4_K*>(dst) + i,
                            importance ? importance + i * QK_K : nullptr);
      }
      return;
    case Type::IQ2_XXS:
      return quantize_row_iq2_xxs(src, static_cast<block_iq2_xxs*>(dst), nb, importance);
    default:
      throw std::invalid_argument("quantize_row: unsupported type");
  }
}

void detail::quantize_act_q8_0_scalar(const float* x, block_q8_0_act* dst, int64_t n) {
  for (int64_t b = 0; b < n / QK8_0; ++b) {
    const float* xb = x + b * QK8_0;
    float amax = 0.0f;
    for (int j = 0; j < QK8_0; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    dst[b].d = d;
    for (int j = 0; j < QK8_0; ++j) {
      dst[b].qs[j] = static_cast<int8_t>(std::max(-128, std::min(127, nearest_int(xb[j] * id))));
    }
  }
}

void detail::quantize_act_q8_K_scalar(const float* x, block_q8_K* dst, int64_t n) {
  quantize_q8_K_blocks(x, dst, n / QK_K);
}

void quantize_act_q8_0(const float* x, block_q8_0_act* dst, int64_t n) {
  if (n < 0 || n % QK8_0 != 0) bad_length("quantize_act_q8_0", n, QK8_0);
  kernels().quantize_act_q8_0(x, dst, n);
}

void quantize_act_q8_K(const float* x, block_q8_K* dst, int64_t n) {
  if (n < 0 || n % QK_K != 0) bad_length("quantize_act_q8_K", n, QK_K);
  kernels().quantize_act_q8_K(x, dst, n);
}

ActType activation_type(Type weight_type) {
  switch (weight_type) {
    case Type::F32:
    case Type::F16:
    case Type::BF16: return ActType::F32;
    case Type::Q8_0: return ActType::Q8_0;
    case Type::Q2_K:
    case Type::Q4_K:
    case Type::IQ2_XXS: return ActType::Q8_K;
    default:
      throw std::invalid_argument("activation_type: no dot product for weight type " +
                                  std::string(type_name(weight_type)));
  }
}

size_t activation_bytes(ActType a, int64_t n) {
  if (n < 0) throw std::invalid_argument("activation_bytes: negative length");
  const auto un = static_cast<size_t>(n);
  switch (a) {
    case ActType::F32: return un * sizeof(float);
    case ActType::Q8_0: return (un + QK8_0 - 1) / QK8_0 * sizeof(block_q8_0_act);
    case ActType::Q8_K: return (un + QK_K - 1) / QK_K * sizeof(block_q8_K);
  }
  return 0;
}

void quantize_activations(Type weight_type, const float* x, void* dst, int64_t n) {
  switch (activation_type(weight_type)) {
    case ActType::F32:
      if (n < 0) bad_length("quantize_activations", n, 1);
      std::memcpy(dst, x, static_cast<size_t>(n) * sizeof(float));
      return;
    case ActType::Q8_0: return quantize_act_q8_0(x, static_cast<block_q8_0_act*>(dst), n);
    case ActType::Q8_K: return quantize_act_q8_K(x, static_cast<block_q8_K*>(dst), n);
  }
}

}  // namespace ds4::quant
