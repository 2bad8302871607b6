// Layout table for every ggml type id, so GGUF files can be sized and validated.
#include "quant/types.h"

#include <array>
#include <limits>

namespace ds4::quant {
namespace {

struct Entry {
  bool defined;
  TypeInfo info;
};

// Indexed by ggml_type id. Ids 4/5 (Q4_2/Q4_3) and 31..33, 36..38 were removed from
// ggml and must never appear in a file. Ids above 30 that still exist (TQ1_0, TQ2_0,
// MXFP4) are listed so that such files get a precise "unsupported type" message.
constexpr std::array<Entry, 40> kTable = {{
    {true, {"F32", 1, 4, true}},
    {true, {"F16", 1, 2, true}},
    {true, {"Q4_0", 32, 18, false}},
    {true, {"Q4_1", 32, 20, false}},
    {false, {}},
    {false, {}},
    {true, {"Q5_0", 32, 22, false}},
    {true, {"Q5_1", 32, 24, false}},
    {true, {"Q8_0", 32, 34, true}},
    {true, {"Q8_1", 32, 36, false}},
    {true, {"Q2_K", 256, 84, true}},
    {true, {"Q3_K", 256, 110, false}},
    {true, {"Q4_K", 256, 144, true}},
    {true, {"Q5_K", 256, 176, false}},
    {true, {"Q6_K", 256, 210, false}},
    {true, {"Q8_K", 256, 292, true}},
    {true, {"IQ2_XXS", 256, 66, true}},
    {true, {"IQ2_XS", 256, 74, false}},
    {true, {"IQ3_XXS", 256, 98, false}},
    {true, {"IQ1_S", 256, 50, false}},
    {true, {"IQ4_NL", 32, 18, false}},
    {true, {"IQ3_S", 256, 110, false}},
    {true, {"IQ2_S", 256, 82, false}},
    {true, {"IQ4_XS", 256, 136, false}},
    {true, {"I8", 1, 1, false}},
    {true, {"I16", 1, 2, false}},
    {true, {"I32", 1, 4, false}},
    {true, {"I64", 1, 8, false}},
    {true, {"F64", 1, 8, false}},
    {true, {"IQ1_M", 256, 56, false}},
    {true, {"BF16", 1, 2, true}},
    {false, {}},
    {false, {}},
    {false, {}},
    {true, {"TQ1_0", 256, 54, false}},
    {true, {"TQ2_0", 256, 66, false}},
    {false, {}},
    {false, {}},
    {false, {}},
    {true, {"MXFP4", 32, 17, false}},
}};

}  // namespace

std::optional<TypeInfo> type_info(uint32_t type_id) {
  if (type_id >= kTable.size() || !kTable[type_id].defined) return std::nullopt;
  return kTable[type_id].info;
}

std::string_view type_name(Type t) {
  auto info = type_info(static_cast<uint32_t>(t));
  return info ? info->name : std::string_view("unknown");
}

std::optional<uint64_t> row_bytes(Type t, uint64_t n) {
  auto info = type_info(static_cast<uint32_t>(t));
  if (!info) return std::nullopt;
  if (n % info->block_elems != 0) return std::nullopt;
  const uint64_t blocks = n / info->block_elems;
  if (blocks > std::numeric_limits<uint64_t>::max() / info->block_bytes) return std::nullopt;
  return blocks * info->block_bytes;
}

}  // namespace ds4::quant
