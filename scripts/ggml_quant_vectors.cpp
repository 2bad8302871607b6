// Writes quantizer test vectors made by ggml itself: fixed seeded input rows, the importance
// column where one applies, and the bytes ggml's quantizer produced for them. Built and run by
// scripts/make_ggml_quant_vectors.sh against a ggml checkout; never part of the project build.
//
// File layout (little-endian):
//   "DS4QGGML" | u32 version 1 | u32 case count | 64-byte NUL-padded ggml commit
//   per case: u32 ggml type id | u32 rows | u32 values per row | u32 has importance
//             | f32 input[rows * n] | f32 importance[n] (if any) | u32 output bytes | bytes
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ggml.h"

// Exported by ggml-base but declared only in its private header.
extern "C" void quantize_row_q8_K_ref(const float* x, void* y, int64_t k);

namespace {

constexpr int kRows = 6;
constexpr int kN = 512;  // two 256-value super-blocks, sixteen Q8_0 blocks

// Rows of different character, so that every branch of the scale searches is taken.
std::vector<float> make_rows(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  std::vector<float> x(static_cast<size_t>(kRows) * kN);
  for (int i = 0; i < kN; ++i) {
    x[0 * kN + i] = normal(rng) * 0.02f;                               // weight-like
    x[1 * kN + i] = normal(rng) * (i % 97 == 0 ? 40.f : 1.f);          // outliers
    x[2 * kN + i] = uni(rng) < -0.5f ? 0.f : std::fabs(normal(rng));   // one-signed, zeros
    x[3 * kN + i] = uni(rng) * 1e-3f + (i / 64 % 2 ? 0.5f : -0.25f);   // offset sub-blocks
    // Exact halves against an integer scale: the first value of each 32 fixes amax = 127,
    // so d = 1 and every x.5 is a rounding tie.
    x[4 * kN + i] = i % 32 == 0 ? 127.f : static_cast<float>(static_cast<int>(rng() % 200) - 100) + 0.5f;
    // A zero super-block, then one of tiny values (f16 subnormal scales).
    x[5 * kN + i] = i < 256 ? 0.f : normal(rng) * 1e-6f;
  }
  return x;
}

std::vector<float> make_importance(uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  std::vector<float> w(kN);
  for (int i = 0; i < kN; ++i) w[i] = uni(rng) * uni(rng) * 10.f + (i % 13 == 0 ? 0.f : 1e-3f);
  return w;
}

void put_u32(std::FILE* f, uint32_t v) { std::fwrite(&v, 4, 1, f); }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s OUT_FILE GGML_COMMIT\n", argv[0]);
    return 2;
  }
  struct Case {
    ggml_type type;
    bool importance;
    uint32_t seed;
  };
  const Case cases[] = {
      {GGML_TYPE_F16, false, 1},      {GGML_TYPE_BF16, false, 2},    {GGML_TYPE_Q8_0, false, 3},
      {GGML_TYPE_Q8_K, false, 4},     {GGML_TYPE_Q2_K, false, 5},    {GGML_TYPE_Q2_K, true, 6},
      {GGML_TYPE_Q4_K, false, 7},     {GGML_TYPE_Q4_K, true, 8},     {GGML_TYPE_IQ2_XXS, true, 9},
      {GGML_TYPE_IQ2_XXS, false, 10},  // importance all ones (ggml demands one for this type)
  };
  std::FILE* f = std::fopen(argv[1], "wb");
  if (!f) {
    std::perror(argv[1]);
    return 1;
  }
  std::fwrite("DS4QGGML", 1, 8, f);
  put_u32(f, 1);
  put_u32(f, sizeof(cases) / sizeof(cases[0]));
  char commit[64] = {};
  std::strncpy(commit, argv[2], sizeof(commit) - 1);
  std::fwrite(commit, 1, sizeof(commit), f);

  for (const Case& c : cases) {
    const std::vector<float> x = make_rows(c.seed);
    std::vector<float> imp = c.importance ? make_importance(c.seed * 7919u) : std::vector<float>();
    const size_t row_size = ggml_row_size(c.type, kN);
    std::vector<uint8_t> out(row_size * kRows);
    if (c.type == GGML_TYPE_Q8_K) {
      for (int r = 0; r < kRows; ++r) quantize_row_q8_K_ref(x.data() + r * kN, out.data() + r * row_size, kN);
    } else {
      ggml_quantize_init(c.type);
      // ggml requires an imatrix for IQ2_XXS; the no-importance case hands it ones.
      std::vector<float> ones;
      const float* w = c.importance ? imp.data() : nullptr;
      if (!w && ggml_quantize_requires_imatrix(c.type)) {
        ones.assign(kN, 1.f);
        w = ones.data();
      }
      const size_t n = ggml_quantize_chunk(c.type, x.data(), out.data(), 0, kRows, kN, w);
      if (n != out.size()) {
        std::fprintf(stderr, "%s: ggml wrote %zu bytes, expected %zu\n", ggml_type_name(c.type), n, out.size());
        return 1;
      }
    }
    put_u32(f, static_cast<uint32_t>(c.type));
    put_u32(f, kRows);
    put_u32(f, kN);
    put_u32(f, c.importance ? 1 : 0);
    std::fwrite(x.data(), sizeof(float), x.size(), f);
    if (c.importance) std::fwrite(imp.data(), sizeof(float), imp.size(), f);
    put_u32(f, static_cast<uint32_t>(out.size()));
    std::fwrite(out.data(), 1, out.size(), f);
    std::fprintf(stderr, "%-8s importance=%d: %zu bytes\n", ggml_type_name(c.type), c.importance ? 1 : 0, out.size());
  }
  if (std::fclose(f) != 0) {
    std::perror(argv[1]);
    return 1;
  }
  return 0;
}
