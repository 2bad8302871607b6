// Dequantization of hand-built blocks. Each test writes the bytes by following the layout
// description in docs/quant.md and checks values computed from it.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <set>
#include <vector>

#include "quant/quant.h"
#include "quant/tables.h"

namespace ds4::quant {
namespace {

TEST(Dequant, PlainFloatRows) {
  const float f[3] = {1.5f, -2.0f, 0.0f};
  const uint16_t h[3] = {0x3E00, 0xC000, 0x0001};
  const uint16_t b[3] = {0x3FC0, 0xC000, 0x8000};
  float out[3];
  dequantize_row(Type::F32, f, out, 3);
  EXPECT_EQ(out[0], 1.5f);
  EXPECT_EQ(out[1], -2.0f);
  dequantize_row(Type::F16, h, out, 3);
  EXPECT_EQ(out[0], 1.5f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], std::ldexp(1.0f, -24));
  dequantize_row(Type::BF16, b, out, 3);
  EXPECT_EQ(out[0], 1.5f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_TRUE(std::signbit(out[2]));
}

TEST(Dequant, Q8_0) {
  block_q8_0 blk[2];
  blk[0].d = 0x3800;  // 0.5
  blk[1].d = 0xC400;  // -4
  for (int i = 0; i < 32; ++i) {
    blk[0].qs[i] = static_cast<int8_t>(i - 16);
    blk[1].qs[i] = static_cast<int8_t>(i == 0 ? -128 : 127 - i);
  }
  float out[64];
  dequantize_row(Type::Q8_0, blk, out, 64);
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(out[i], 0.5f * (i - 16));
    EXPECT_EQ(out[32 + i], -4.0f * (i == 0 ? -128 : 127 - i));
  }
}

TEST(Dequant, Q8_K) {
  block_q8_K blk{};
  blk.d = 0.25f;
  for (int i = 0; i < 256; ++i) blk.qs[i] = static_cast<int8_t>((i * 7) % 255 - 127);
  std::vector<float> out(256);
  dequantize_row(Type::Q8_K, &blk, out.data(), 256);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(out[i], 0.25f * ((i * 7) % 255 - 127));
}

TEST(Dequant, Q2_K) {
  block_q2_K blk{};
  blk.d = 0x3400;     // 0.25
  blk.dmin = 0x3000;  // 0.125
  int level[256];
  for (int e = 0; e < 256; ++e) level[e] = (e * 5 + e / 7) % 4;
  for (int s = 0; s < 16; ++s) blk.scales[s] = static_cast<uint8_t>(((s * 3) % 16) | (((15 - s) % 16) << 4));
  // Half h, byte l holds elements 128h+l, +32, +64, +96 at bit offsets 0, 2, 4, 6.
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      uint8_t byte = 0;
      for (int j = 0; j < 4; ++j) byte |= static_cast<uint8_t>(level[128 * h + 32 * j + l] << (2 * j));
      blk.qs[32 * h + l] = byte;
    }
  }
  std::vector<float> out(256);
  dequantize_row(Type::Q2_K, &blk, out.data(), 256);
  for (int h = 0; h < 2; ++h) {
    for (int j = 0; j < 4; ++j) {
      for (int l = 0; l < 32; ++l) {
        const int e = 128 * h + 32 * j + l;
        const int sub = 8 * h + 2 * j + (l >= 16);  // sub-block of 16 = e / 16
        ASSERT_EQ(sub, e / 16);
        const int sc = (sub * 3) % 16, mn = (15 - sub) % 16;
        EXPECT_EQ(out[e], 0.25f * sc * level[e] - 0.125f * mn) << e;
      }
    }
  }
}

TEST(Dequant, Q4_K) {
  block_q4_K blk{};
  blk.d = 0x3C00;     // 1
  blk.dmin = 0x3800;  // 0.5
  const uint8_t scale[8] = {1, 63, 17, 32, 5, 48, 62, 33};
  const uint8_t min[8] = {0, 2, 63, 40, 31, 16, 1, 50};
  // Pack 6-bit values: j<4 in the low 6 bits of bytes j / j+4; j>=4 low nibbles in byte
  // j+4 and their top two bits in bits 6-7 of bytes j-4 (scale) and j (min).
  for (int j = 0; j < 4; ++j) {
    blk.scales[j] = scale[j];
    blk.scales[j + 4] = min[j];
  }
  for (int j = 4; j < 8; ++j) {
    blk.scales[j + 4] = static_cast<uint8_t>((scale[j] & 15) | ((min[j] & 15) << 4));
    blk.scales[j - 4] |= static_cast<uint8_t>((scale[j] >> 4) << 6);
    blk.scales[j] |= static_cast<uint8_t>((min[j] >> 4) << 6);
  }
  int level[256];
  for (int e = 0; e < 256; ++e) level[e] = (e * 11 + 3) % 16;
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      blk.qs[32 * c + l] = static_cast<uint8_t>(level[64 * c + l] | (level[64 * c + 32 + l] << 4));
    }
  }
  std::vector<float> out(256);
  dequantize_row(Type::Q4_K, &blk, out.data(), 256);
  for (int e = 0; e < 256; ++e) {
    const int sub = e / 32;
    EXPECT_EQ(out[e], 1.0f * scale[sub] * level[e] - 0.5f * min[sub]) << e;
  }
}

TEST(Iq2Tables, GridStructure) {
  // Literal spot checks against ggml's table.
  EXPECT_EQ(tables::kIq2xxsGrid[0], 0x0808080808080808ull);
  EXPECT_EQ(tables::kIq2xxsGrid[1], 0x080808080808082bull);
  EXPECT_EQ(tables::kIq2xxsGrid[100], 0x08192b0808081908ull);
  EXPECT_EQ(tables::kIq2xxsGrid[255], 0x2b2b2b1908081908ull);
  // Every byte is one of the three magnitudes, entries are distinct, and the level codes
  // (2 bits per weight, weight 0 lowest) increase strictly: the grid is the sorted list of
  // allowed 3-level patterns.
  std::set<uint64_t> seen;
  int previous_code = -1;
  for (int g = 0; g < 256; ++g) {
    int code = 0;
    for (int j = 0; j < 8; ++j) {
      const uint8_t b = static_cast<uint8_t>(tables::kIq2xxsGrid[g] >> (8 * j));
      ASSERT_TRUE(b == 0x08 || b == 0x19 || b == 0x2b) << g;
      code |= (b == 0x08 ? 0 : b == 0x19 ? 1 : 2) << (2 * j);
    }
    EXPECT_GT(code, previous_code) << g;
    previous_code = code;
    seen.insert(tables::kIq2xxsGrid[g]);
  }
  EXPECT_EQ(seen.size(), 256u);
  EXPECT_EQ(previous_code, 43268);  // ggml kgrid_2bit_256's last entry
}

TEST(Iq2Tables, SignsHaveEvenParity) {
  for (int s = 0; s < 128; ++s) {
    EXPECT_EQ(tables::kIq2Signs[s] & 127, s);
    EXPECT_EQ(std::popcount(static_cast<unsigned>(tables::kIq2Signs[s])) % 2, 0) << s;
    const uint64_t bytes = tables::iq2_sign_bytes()[s];
    for (int j = 0; j < 8; ++j) {
      const uint8_t b = static_cast<uint8_t>(bytes >> (8 * j));
      EXPECT_EQ(b, ((tables::kIq2Signs[s] >> j) & 1) ? 0xFF : 0x01);
    }
  }
}

TEST(Dequant, IQ2_XXS) {
  block_iq2_xxs blk{};
  blk.d = 0x4000;  // 2
  // Group g: grid indices (g*4+k)*7 % 256, sign indices (g*4+k)*29 % 128, scale nibble g*2+1.
  for (int g = 0; g < 8; ++g) {
    uint32_t a = 0, b = 0;
    for (int k = 0; k < 4; ++k) {
      a |= static_cast<uint32_t>(((g * 4 + k) * 7) % 256) << (8 * k);
      b |= static_cast<uint32_t>(((g * 4 + k) * 29) % 128) << (7 * k);
    }
    b |= static_cast<uint32_t>((g * 2 + 1) % 16) << 28;
    std::memcpy(blk.qs + 4 * g, &a, 4);
    std::memcpy(blk.qs + 4 * g + 2, &b, 4);
  }
  std::vector<float> out(256);
  dequantize_row(Type::IQ2_XXS, &blk, out.data(), 256);
  for (int g = 0; g < 8; ++g) {
    const float group_scale = 2.0f * (0.5f + (g * 2 + 1) % 16) * 0.25f;
    for (int k = 0; k < 4; ++k) {
      const uint64_t grid = tables::kIq2xxsGrid[((g * 4 + k) * 7) % 256];
      const int s7 = ((g * 4 + k) * 29) % 128;
      const int signs = s7 | ((std::popcount(static_cast<unsigned>(s7)) & 1) << 7);
      for (int j = 0; j < 8; ++j) {
        const float mag = static_cast<float>((grid >> (8 * j)) & 0xFF);
        const float expect = group_scale * mag * (((signs >> j) & 1) ? -1.0f : 1.0f);
        EXPECT_EQ(out[32 * g + 8 * k + j], expect) << g << "," << k << "," << j;
      }
    }
  }
}

TEST(Dequant, RejectsBadRows) {
  std::vector<uint8_t> buf(1024);
  std::vector<float> out(512);
  EXPECT_THROW(dequantize_row(Type::Q8_0, buf.data(), out.data(), 33), std::invalid_argument);
  EXPECT_THROW(dequantize_row(Type::Q4_K, buf.data(), out.data(), 128), std::invalid_argument);
  EXPECT_THROW(dequantize_row(Type::Q6_K, buf.data(), out.data(), 256), std::invalid_argument);
  EXPECT_THROW(dequantize_row(static_cast<Type>(4), buf.data(), out.data(), 32), std::invalid_argument);
  EXPECT_THROW(dequantize_row(Type::F32, buf.data(), out.data(), -1), std::invalid_argument);
}

}  // namespace
}  // namespace ds4::quant
