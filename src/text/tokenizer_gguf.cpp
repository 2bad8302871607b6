// Tokenizer construction from GGUF metadata (kept apart so only this file needs gguf.h).
#include "gguf/gguf.h"
#include "text/tokenizer.h"

namespace ds4::text {

namespace {

std::vector<int32_t> read_token_types(const gguf::File& file, size_t n_tokens) {
  if (!file.has("tokenizer.ggml.token_type")) return {};
  const std::vector<int64_t> raw = file.get_int_array("tokenizer.ggml.token_type");
  if (raw.size() != n_tokens) {
    throw TokenizerError(file.path() + ": tokenizer.ggml.token_type has " +
                         std::to_string(raw.size()) + " entries for " +
                         std::to_string(n_tokens) + " tokens");
  }
  std::vector<int32_t> types(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) types[i] = static_cast<int32_t>(raw[i]);
  return types;
}

}  // namespace

Tokenizer::Tokenizer(const gguf::File& file)
    : Tokenizer(file.get_string_array("tokenizer.ggml.tokens"),
                file.get_string_array("tokenizer.ggml.merges"),
                read_token_types(file, file.require("tokenizer.ggml.tokens").array.size()),
                /*require_control_tokens=*/true) {}

}  // namespace ds4::text
