// Tokenizer metadata for converted and synthetic models.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ds4::gguf {
class Writer;
}

namespace ds4::convert {

struct Vocab {
  std::vector<std::string> tokens;   // index = id
  std::vector<std::string> merges;   // "LEFT RIGHT", rank = index
  std::vector<int32_t> token_types;  // GGUF token_type numbering (1 normal, 3 control)
  uint32_t bos_id = 0;
  uint32_t eos_id = 1;
};

// GPT-2 byte-level form of one byte (the unicode character it is written as, UTF-8).
std::string byte_token(uint8_t b);

// The DS4 control tokens a synthetic vocabulary carries, by text.
struct SpecialToken {
  const char* text;
  uint32_t v4_id;  // id in the real V4 vocabulary
};
const std::vector<SpecialToken>& ds4_special_tokens();

// A byte-level BPE vocabulary of exactly vocab_size ids: BOS=0, EOS=1, the other DS4 control
// tokens (at their real V4 ids when the vocabulary is large enough, else right after EOS), the
// 256 byte tokens, and merges of printable ASCII filling the rest. Throws if too small.
Vocab make_synthetic_vocab(uint32_t vocab_size);

// A Hugging Face tokenizer.json, with the V4 control tokens added and unused ids padded with
// placeholders up to vocab_size. Throws ConvertError if it does not fit.
Vocab load_tokenizer_vocab(const std::string& tokenizer_json, uint32_t vocab_size);

// tokenizer.ggml.* keys.
void write_vocab(const Vocab& v, gguf::Writer& w);

}  // namespace ds4::convert
