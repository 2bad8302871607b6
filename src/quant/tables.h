// IQ2_XXS format constants (grid, sign table) and derived lookup tables.
#pragma once

#include <cstdint>

namespace ds4::quant::tables {

extern const uint64_t kIq2xxsGrid[256];  // byte j = magnitude of weight j
extern const uint8_t kIq2Signs[128];      // bit j set = weight j negative

// 128 entries of 8 bytes, each +1 (0x01) or -1 (0xFF): kIq2Signs expanded for SIMD use.
const uint64_t* iq2_sign_bytes();

}  // namespace ds4::quant::tables
