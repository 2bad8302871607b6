// Layout table: sizes as published by ggml (docs/quant.md).
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

#include "quant/types.h"

namespace ds4::quant {
namespace {

struct Known {
  uint32_t id;
  const char* name;
  uint32_t block_elems, block_bytes;
  bool supported;
};

TEST(QuantTypes, KnownLayouts) {
  const Known known[] = {
      {0, "F32", 1, 4, true},         {1, "F16", 1, 2, true},         {2, "Q4_0", 32, 18, false},
      {3, "Q4_1", 32, 20, false},     {6, "Q5_0", 32, 22, false},     {7, "Q5_1", 32, 24, false},
      {8, "Q8_0", 32, 34, true},      {9, "Q8_1", 32, 36, false},     {10, "Q2_K", 256, 84, true},
      {11, "Q3_K", 256, 110, false},  {12, "Q4_K", 256, 144, true},   {13, "Q5_K", 256, 176, false},
      {14, "Q6_K", 256, 210, false},  {15, "Q8_K", 256, 292, true},   {16, "IQ2_XXS", 256, 66, true},
      {17, "IQ2_XS", 256, 74, false}, {18, "IQ3_XXS", 256, 98, false}, {19, "IQ1_S", 256, 50, false},
      {20, "IQ4_NL", 32, 18, false},  {21, "IQ3_S", 256, 110, false}, {22, "IQ2_S", 256, 82, false},
      {23, "IQ4_XS", 256, 136, false}, {24, "I8", 1, 1, false},        {25, "I16", 1, 2, false},
      {26, "I32", 1, 4, false},       {27, "I64", 1, 8, false},       {28, "F64", 1, 8, false},
      {29, "IQ1_M", 256, 56, false},  {30, "BF16", 1, 2, true},
  };
  for (const auto& k : known) {
    const auto info = type_info(k.id);
    ASSERT_TRUE(info.has_value()) << k.name;
    EXPECT_EQ(info->name, k.name);
    EXPECT_EQ(info->block_elems, k.block_elems) << k.name;
    EXPECT_EQ(info->block_bytes, k.block_bytes) << k.name;
    EXPECT_EQ(info->engine_supported, k.supported) << k.name;
    EXPECT_EQ(type_name(static_cast<Type>(k.id)), k.name);
  }
}

TEST(QuantTypes, RemovedAndUnknownIds) {
  for (uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 40u, 1000u, 0xFFFFFFFFu}) {
    EXPECT_FALSE(type_info(id).has_value()) << id;
  }
  EXPECT_EQ(type_name(static_cast<Type>(4)), "unknown");
}

TEST(QuantTypes, BlockStructsMatchTable) {
  EXPECT_EQ(type_info(8)->block_bytes, sizeof(block_q8_0));
  EXPECT_EQ(type_info(15)->block_bytes, sizeof(block_q8_K));
  EXPECT_EQ(type_info(10)->block_bytes, sizeof(block_q2_K));
  EXPECT_EQ(type_info(12)->block_bytes, sizeof(block_q4_K));
  EXPECT_EQ(type_info(16)->block_bytes, sizeof(block_iq2_xxs));
}

TEST(QuantTypes, RowBytes) {
  EXPECT_EQ(row_bytes(Type::F32, 4096), 16384u);
  EXPECT_EQ(row_bytes(Type::F16, 3), 6u);
  EXPECT_EQ(row_bytes(Type::Q8_0, 4096), 4096u / 32 * 34);
  EXPECT_EQ(row_bytes(Type::Q2_K, 4096), 16u * 84);
  EXPECT_EQ(row_bytes(Type::Q4_K, 2048), 8u * 144);
  EXPECT_EQ(row_bytes(Type::IQ2_XXS, 4096), 16u * 66);
  EXPECT_EQ(row_bytes(Type::Q8_0, 0), 0u);
  EXPECT_FALSE(row_bytes(Type::Q8_0, 33).has_value());
  EXPECT_FALSE(row_bytes(Type::Q4_K, 128).has_value());
  EXPECT_FALSE(row_bytes(static_cast<Type>(5), 32).has_value());
  // Overflow: n/32 blocks * 34 bytes exceeds 2^64.
  const uint64_t huge = (std::numeric_limits<uint64_t>::max() / 32) * 32;
  EXPECT_FALSE(row_bytes(Type::Q8_0, huge).has_value());
  EXPECT_TRUE(row_bytes(Type::I8, std::numeric_limits<uint64_t>::max()).has_value());
}

}  // namespace
}  // namespace ds4::quant
