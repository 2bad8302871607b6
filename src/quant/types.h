// GGML tensor type ids and block layouts, exactly as GGUF files store them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ds4::quant {

// Type ids as written in the GGUF tensor directory (ggml_type).
enum class Type : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
};

struct TypeInfo {
  std::string_view name;
  uint32_t block_elems;  // values per block (1 for plain types)
  uint32_t block_bytes;  // bytes per block
  bool engine_supported; // ds4 can dequantize / dot it
};

// Layout facts for every type id ggml defines; nullopt for ids GGUF never had.
// Sizes of types ds4 does not compute with are still known so that a file can be
// validated (and rejected with a clear message) rather than misread.
std::optional<TypeInfo> type_info(uint32_t type_id);
std::string_view type_name(Type t);

// Bytes of one row of n values; nullopt if n is not a whole number of blocks or on overflow.
std::optional<uint64_t> row_bytes(Type t, uint64_t n);

inline constexpr int QK8_0 = 32;
inline constexpr int QK_K = 256;

// ggml block structs (bit-identical). f16 fields are raw IEEE binary16 bits.
struct block_q8_0 {
  uint16_t d;
  int8_t qs[QK8_0];
};
static_assert(sizeof(block_q8_0) == 34);

// Activation-side Q8_0: ds4 keeps the block scale as f32 (never stored in files).
struct block_q8_0_act {
  float d;
  int8_t qs[QK8_0];
};
static_assert(sizeof(block_q8_0_act) == 36);

struct block_q8_K {
  float d;
  int8_t qs[QK_K];
  int16_t bsums[QK_K / 16];
};
static_assert(sizeof(block_q8_K) == 292);

struct block_q2_K {
  uint8_t scales[QK_K / 16];  // low nibble scale, high nibble min
  uint8_t qs[QK_K / 4];
  uint16_t d;
  uint16_t dmin;
};
static_assert(sizeof(block_q2_K) == 84);

struct block_q4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_q4_K) == 144);

struct block_iq2_xxs {
  uint16_t d;
  uint16_t qs[QK_K / 8];
};
static_assert(sizeof(block_iq2_xxs) == 66);

}  // namespace ds4::quant
