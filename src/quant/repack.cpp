// The IQ2_XXS load-time repack (docs/quant.md, "IQ2_XXS repacked in memory"): a lossless
// re-encoding of each 66-byte block in place, so the kernels need neither the sign table
// nor the spreading of 7-bit fields out of 32-bit words.
#include <cstring>

#include "quant/quant.h"

namespace ds4::quant {

namespace {

// Seven sign bits s0..s6 -> their prefix xor t_i = s0 ^ ... ^ s_i (and back). The 8th sign
// of a run of 8 (the parity of s0..s6) is then t6, and all 8 signs are t ^ (t << 1).
uint8_t prefix_xor7(uint32_t s) {
  uint32_t t = s;
  t ^= t << 1;
  t ^= t << 2;
  t ^= t << 4;
  return static_cast<uint8_t>(t & 0x7F);
}
uint8_t undo_prefix_xor7(uint32_t t) { return static_cast<uint8_t>((t ^ (t << 1)) & 0x7F); }

}  // namespace

void iq2_xxs_repack(block_iq2_xxs* blocks, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b) {
    uint8_t src[64], dst[64];
    std::memcpy(src, blocks[b].qs, 64);
    for (int g = 0; g < 8; ++g) {
      uint32_t sw;
      std::memcpy(&sw, src + 8 * g + 4, 4);
      const uint32_t scale = sw >> 28;
      for (int k = 0; k < 4; ++k) {
        dst[4 * g + k] = src[8 * g + k];
        dst[32 + 4 * g + k] = static_cast<uint8_t>(prefix_xor7((sw >> (7 * k)) & 0x7F) | (((scale >> k) & 1) << 7));
      }
    }
    std::memcpy(blocks[b].qs, dst, 64);
  }
}

void iq2_xxs_unpack(block_iq2_xxs* blocks, int64_t nblocks) {
  for (int64_t b = 0; b < nblocks; ++b) {
    uint8_t src[64], dst[64];
    std::memcpy(src, blocks[b].qs, 64);
    for (int g = 0; g < 8; ++g) {
      uint32_t sw = 0;
      for (int k = 0; k < 4; ++k) {
        const uint8_t byte = src[32 + 4 * g + k];
        dst[8 * g + k] = src[4 * g + k];
        sw |= static_cast<uint32_t>(undo_prefix_xor7(byte & 0x7F)) << (7 * k);
        sw |= static_cast<uint32_t>(byte >> 7) << (28 + k);
      }
      std::memcpy(dst + 8 * g + 4, &sw, 4);
    }
    std::memcpy(blocks[b].qs, dst, 64);
  }
}

}  // namespace ds4::quant
