// Row dequantizers for the GGUF block formats ds4 computes with.
#include <cstring>
#include <stdexcept>
#include <string>

#include "quant/internal.h"
#include "quant/quant.h"
#include "quant/tables.h"

namespace ds4::quant {
namespace {

void dequant_q8_0(const block_q8_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < QK8_0; ++j) y[i * QK8_0 + j] = d * static_cast<float>(b[i].qs[j]);
  }
}

void dequant_q8_K(const block_q8_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    for (int j = 0; j < QK_K; ++j) y[i * QK_K + j] = b[i].d * static_cast<float>(b[i].qs[j]);
  }
}

void dequant_q2_K(const block_q2_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    float* out = y + i * QK_K;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* q = b[i].qs + 32 * h;
      for (int j = 0; j < 4; ++j) {  // bit pair j of each byte = elements 128h + 32j + l
        for (int l = 0; l < 32; ++l) {
          const uint8_t sc = b[i].scales[8 * h + 2 * j + (l >= 16)];
          const int q2 = (q[l] >> (2 * j)) & 3;
          out[128 * h + 32 * j + l] = d * static_cast<float>(sc & 0xF) * static_cast<float>(q2) -
                                      dmin * static_cast<float>(sc >> 4);
        }
      }
    }
  }
}

void dequant_q4_K(const block_q4_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    float* out = y + i * QK_K;
    for (int c = 0; c < 4; ++c) {  // 64-element chunk: low nibbles then high nibbles
      uint8_t sc_lo, m_lo, sc_hi, m_hi;
      detail::q4k_scale_min(2 * c, b[i].scales, &sc_lo, &m_lo);
      detail::q4k_scale_min(2 * c + 1, b[i].scales, &sc_hi, &m_hi);
      const float d_lo = d * sc_lo, min_lo = dmin * m_lo;
      const float d_hi = d * sc_hi, min_hi = dmin * m_hi;
      const uint8_t* q = b[i].qs + 32 * c;
      for (int l = 0; l < 32; ++l) {
        out[64 * c + l] = d_lo * static_cast<float>(q[l] & 0xF) - min_lo;
        out[64 * c + 32 + l] = d_hi * static_cast<float>(q[l] >> 4) - min_hi;
      }
    }
  }
}

void dequant_iq2_xxs(const block_iq2_xxs* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int g = 0; g < QK_K / 32; ++g) {
      uint32_t words[2];
      std::memcpy(words, b[i].qs + 4 * g, sizeof(words));
      const float group_scale = d * (0.5f + static_cast<float>(words[1] >> 28)) * 0.25f;
      for (int k = 0; k < 4; ++k) {
        const uint64_t grid = tables::kIq2xxsGrid[(words[0] >> (8 * k)) & 0xFF];
        const uint8_t signs = tables::kIq2Signs[(words[1] >> (7 * k)) & 127];
        for (int j = 0; j < 8; ++j) {
          const float mag = static_cast<float>((grid >> (8 * j)) & 0xFF);
          y[i * QK_K + 32 * g + 8 * k + j] = group_scale * mag * ((signs >> j) & 1 ? -1.0f : 1.0f);
        }
      }
    }
  }
}

}  // namespace

void dequantize_row(Type t, const void* src, float* dst, int64_t n) {
  const auto info = type_info(static_cast<uint32_t>(t));
  if (!info || n < 0 || n % info->block_elems != 0) {
    throw std::invalid_argument("dequantize_row: " + std::string(type_name(t)) + " row of " +
                                std::to_string(n) + " values is not a whole number of blocks");
  }
  const int64_t nb = n / info->block_elems;
  switch (t) {
    case Type::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case Type::F16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(h[i]);
      return;
    }
    case Type::BF16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(h[i]);
      return;
    }
    case Type::Q8_0: return dequant_q8_0(static_cast<const block_q8_0*>(src), dst, nb);
    case Type::Q8_K: return dequant_q8_K(static_cast<const block_q8_K*>(src), dst, nb);
    case Type::Q2_K: return dequant_q2_K(static_cast<const block_q2_K*>(src), dst, nb);
    case Type::Q4_K: return dequant_q4_K(static_cast<const block_q4_K*>(src), dst, nb);
    case Type::IQ2_XXS: return dequant_iq2_xxs(static_cast<const block_iq2_xxs*>(src), dst, nb);
    default:
      throw std::invalid_argument("dequantize_row: type " + std::string(type_name(t)) +
                                  " is not supported by ds4");
  }
}

}  // namespace ds4::quant
