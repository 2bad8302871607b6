// Scalar number-format conversions (f16, bf16, FP8 e4m3fn, e8m0, FP4 e2m1) and the
// dequantizers for the official checkpoint's block-scaled FP8/FP4 weights.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "quant/quant.h"

namespace ds4::quant {

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) {  // inf, or NaN made quiet as F16C does
    return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13) | (mant ? 0x400000u : 0u));
  }
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return std::bit_cast<float>(sign);
  // Subnormal half: renormalise so the float gets an implicit leading bit.
  int e = 113;
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    --e;
  }
  return std::bit_cast<float>(sign | (static_cast<uint32_t>(e) << 23) | ((mant & 0x3FFu) << 13));
}

uint16_t f32_to_f16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) {  // NaN: keep the top payload bits, force quiet (as F16C does)
    return static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  }
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520 -> inf
  if (a < 0x38800000u) {  // below 2^-14: half subnormal (or zero)
    const uint32_t e = a >> 23;
    const uint32_t shift = 126u - e;
    if (shift > 24) return sign;
    const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t h = (((a >> 23) - 112u) << 10) | ((a >> 13) & 0x3FFu);
  const uint32_t rem = a & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // carry may bump the exponent
  return static_cast<uint16_t>(sign | h);
}

float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

uint16_t f32_to_bf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

float fp8_e4m3_to_f32(uint8_t code) {
  const float sign = (code & 0x80u) ? -1.0f : 1.0f;
  const int exp = (code >> 3) & 0xF;
  const int mant = code & 0x7;
  if (exp == 0xF && mant == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exp == 0) return sign * std::ldexp(static_cast<float>(mant), -9);
  return sign * std::ldexp(static_cast<float>(8 + mant), exp - 10);
}

uint8_t f32_to_fp8_e4m3(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80u : 0x00u;
  if (std::isnan(f)) return static_cast<uint8_t>(sign | 0x7Fu);
  const float a = std::fabs(f);
  if (a >= 448.0f) return static_cast<uint8_t>(sign | 0x7Eu);
  // Codes are monotone in value and evenly spaced within a binade, so rounding the value
  // in units of its spacing gives the code offset; a round-up into the next binade carries
  // naturally. rint rounds ties to even, and even offsets are even codes.
  int code;
  if (a < 0.015625f) {  // 2^-6: subnormal range, spacing 2^-9
    code = static_cast<int>(std::rint(a * 512.0f));
  } else {
    int e2;
    std::frexp(a, &e2);  // a in [2^(e2-1), 2^e2)
    const int e = e2 - 1;
    const int q = static_cast<int>(std::rint(std::ldexp(a, 3 - e)));  // in [8, 16]
    code = ((e + 7) << 3) + (q - 8);
  }
  if (code > 0x7E) code = 0x7E;
  return static_cast<uint8_t>(sign | code);
}

float e8m0_to_f32(uint8_t code) {
  if (code == 0xFF) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, static_cast<int>(code) - 127);
}

namespace {
constexpr float kFp4Values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
}

float fp4_e2m1_to_f32(uint8_t nibble) {
  const float v = kFp4Values[nibble & 7u];
  return (nibble & 8u) ? -v : v;
}

uint8_t f32_to_fp4_e2m1(float f) {
  const uint8_t sign = std::signbit(f) ? 8u : 0u;
  if (std::isnan(f)) return 0;
  const float a = std::fabs(f);
  // Midpoints between neighbours; at an exact midpoint the even code wins, hence <= on
  // the midpoints just below an even code and < on those just below an odd one.
  uint8_t code;
  if (a <= 0.25f) code = 0;
  else if (a < 0.75f) code = 1;
  else if (a <= 1.25f) code = 2;
  else if (a < 1.75f) code = 3;
  else if (a <= 2.5f) code = 4;
  else if (a < 3.5f) code = 5;
  else if (a <= 5.0f) code = 6;
  else code = 7;
  return static_cast<uint8_t>(sign | code);
}

void dequantize_fp8_weight(const uint8_t* q, const void* scales, ScaleFormat sf, int64_t rows,
                           int64_t cols, float* out) {
  if (rows < 0 || cols < 0) throw std::invalid_argument("dequantize_fp8_weight: negative shape");
  const int64_t scale_cols = (cols + 127) / 128;
  float lut[256];
  for (int c = 0; c < 256; ++c) {
    const float v = fp8_e4m3_to_f32(static_cast<uint8_t>(c));
    lut[c] = std::isnan(v) ? 0.0f : v;  // as ds4's converter: NaN codes carry no weight
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t srow = (r / 128) * scale_cols;
    for (int64_t cb = 0; cb < scale_cols; ++cb) {
      // F32 scales come straight from a safetensors file: not necessarily 4-byte aligned.
      float s;
      if (sf == ScaleFormat::E8M0) {
        s = e8m0_to_f32(static_cast<const uint8_t*>(scales)[srow + cb]);
      } else {
        std::memcpy(&s, static_cast<const uint8_t*>(scales) + (srow + cb) * sizeof(float), sizeof(float));
      }
      const int64_t c_end = std::min<int64_t>(cols, (cb + 1) * 128);
      for (int64_t c = cb * 128; c < c_end; ++c) out[r * cols + c] = lut[q[r * cols + c]] * s;
    }
  }
}

void dequantize_fp4_weight(const uint8_t* packed, const uint8_t* scales_e8m0, int64_t rows,
                           int64_t cols, float* out) {
  if (rows < 0 || cols < 0 || cols % 32 != 0) {
    throw std::invalid_argument("dequantize_fp4_weight: cols must be a non-negative multiple of 32, got " +
                                std::to_string(cols));
  }
  const int64_t groups = cols / 32;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* prow = packed + r * (cols / 2);
    for (int64_t g = 0; g < groups; ++g) {
      const float s = e8m0_to_f32(scales_e8m0[r * groups + g]);
      for (int i = 0; i < 16; ++i) {
        const uint8_t byte = prow[g * 16 + i];
        out[r * cols + g * 32 + 2 * i] = fp4_e2m1_to_f32(byte & 0x0Fu) * s;
        out[r * cols + g * 32 + 2 * i + 1] = fp4_e2m1_to_f32(byte >> 4) * s;
      }
    }
  }
}

}  // namespace ds4::quant
