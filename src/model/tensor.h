// Backend-neutral views of the weight matrices as stored in the GGUF (the mmap). Backends
// read them in place (CPU) or copy them into their own memory (GPU).
#pragma once

#include <cstdint>

#include "quant/types.h"

namespace ds4::model {

// A 2-D weight as stored in the GGUF: `out` rows of `in` values, row r at data + r*row_bytes.
struct MatView {
  const uint8_t* data = nullptr;
  quant::Type type = quant::Type::F32;
  int64_t in = 0;
  int64_t out = 0;
  uint64_t row_bytes = 0;
  // Test hook (Backend::use_f32_activations): dot each dequantized weight row with the
  // unrounded f32 activations instead of running the quantized kernels, so a quantized file
  // can be compared with its dequantized f32 twin without activation rounding.
  bool f32_activations = false;
  // IQ2_XXS bytes re-encoded in memory by quant::iq2_xxs_repack (Weights::repack_iq2_xxs).
  bool iq2_repacked = false;

  bool valid() const { return data != nullptr; }
  const uint8_t* row(int64_t r) const { return data + static_cast<uint64_t>(r) * row_bytes; }
  MatView rows(int64_t begin, int64_t count) const {
    MatView v = *this;
    v.data = row(begin);
    v.out = count;
    return v;
  }
  uint64_t bytes() const { return static_cast<uint64_t>(out) * row_bytes; }
};

// Stacked routed experts: expert e is `out` rows of `in` values starting at e*expert_bytes.
struct ExpertsView {
  const uint8_t* data = nullptr;
  quant::Type type = quant::Type::F32;
  int64_t in = 0, out = 0, count = 0;
  uint64_t row_bytes = 0;
  bool f32_activations = false;  // see MatView
  bool iq2_repacked = false;     // see MatView
  MatView expert(int64_t e) const {
    MatView m;
    m.data = data + static_cast<uint64_t>(e) * out * row_bytes;
    m.type = type;
    m.in = in;
    m.out = out;
    m.row_bytes = row_bytes;
    m.f32_activations = f32_activations;
    m.iq2_repacked = iq2_repacked;
    return m;
  }
};

}  // namespace ds4::model
