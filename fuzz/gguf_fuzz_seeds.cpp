// Writes a small seed corpus of valid GGUF files (via the Writer) for fuzz_gguf: together
// they use every value type, nested and empty arrays, several tensor types and alignments.
#include <cstdio>
#include <string>
#include <vector>

#include "gguf/gguf.h"

using ds4::gguf::Value;
using ds4::gguf::ValueType;
using ds4::gguf::Writer;
using ds4::quant::Type;

namespace {

std::vector<uint8_t> fill(size_t n, uint8_t seed) {
  std::vector<uint8_t> d(n);
  for (size_t k = 0; k < n; ++k) d[k] = static_cast<uint8_t>(seed + 13 * k);
  return d;
}

Writer scalars() {
  Writer w;
  w.set("general.architecture", Value::make_string("deepseek4"));
  w.set("u8", Value::make_u8(1));
  w.set("i8", Value::make_i8(-1));
  w.set("u16", Value::make_u16(2));
  w.set("i16", Value::make_i16(-2));
  w.set("deepseek4.block_count", Value::make_u32(43));
  w.set("i32", Value::make_i32(-3));
  w.set("u64", Value::make_u64(65536));
  w.set("i64", Value::make_i64(-4));
  w.set("deepseek4.rope.freq_base", Value::make_f32(10000.0f));
  w.set("f64", Value::make_f64(1e-6));
  w.set("deepseek4.expert_weights_norm", Value::make_bool(true));
  return w;
}

Writer arrays() {
  Writer w;
  w.set("tokenizer.ggml.tokens", Value::make_string_array({"<s>", "</s>", "a", ""}));
  w.set("deepseek4.attention.compress_ratios", Value::make_u32_array({0, 0, 4, 128}));
  w.set("deepseek4.swiglu_clamp_exp", Value::make_f32_array({10.0f, 10.0f}));
  w.set("i32s", Value::make_i32_array({-1, 2}));
  w.set("empty", Value::make_u32_array({}));
  w.set("nested", Value::make_array(ValueType::ARRAY, {Value::make_string_array({"x"}),
                                                       Value::make_u32_array({})}));
  w.set("bools", Value::make_array(ValueType::BOOL, {Value::make_bool(false)}));
  w.set("f64s", Value::make_array(ValueType::FLOAT64, {Value::make_f64(0.5)}));
  return w;
}

Writer tensors(uint32_t alignment) {
  Writer w;
  w.set("general.name", Value::make_string("seed"));
  w.set_alignment(alignment);
  w.add_tensor("token_embd.weight", Type::F16, {4, 2}, fill(16, 1));
  w.add_tensor("output_norm.weight", Type::F32, {3}, fill(12, 2));
  w.add_tensor("output.weight", Type::Q8_0, {32, 2}, fill(68, 3));
  w.add_tensor("blk.0.ffn_gate_exps.weight", Type::IQ2_XXS, {256, 1, 1}, fill(66, 4));
  w.add_tensor("blk.0.ffn_down_exps.weight", Type::Q2_K, {256}, fill(84, 5));
  w.add_tensor("blk.0.ffn_up_exps.weight", Type::Q4_K, {256}, fill(144, 6));
  w.add_tensor("blk.0.ffn_gate_tid2eid.weight", Type::I32, {2, 2}, fill(16, 7));
  w.add_tensor("empty", Type::BF16, {0, 3}, {});
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  try {
    scalars().write(dir + "/scalars.gguf");
    arrays().write(dir + "/arrays.gguf");
    tensors(32).write(dir + "/tensors32.gguf");
    tensors(8).write(dir + "/tensors8.gguf");
    tensors(64).write(dir + "/tensors64.gguf");
    Writer().write(dir + "/empty.gguf");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
