// Loader for a Hugging Face `tokenizer.json` (byte-level BPE, as shipped with DeepSeek V3),
// plus the extra V4 control tokens that the V3 file lacks (docs/prompting.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ds4::text {

// Token types, numbered as llama.cpp / GGUF `tokenizer.ggml.token_type` number them.
enum TokenType : int32_t {
  kTokenNormal = 1,
  kTokenUnknown = 2,
  kTokenControl = 3,
  kTokenUserDefined = 4,
  kTokenUnused = 5,
  kTokenByte = 6,
};

struct HfTokenizerError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct HfTokenizer {
  // index = id. Normal tokens in GPT-2 byte-unicode form exactly as in the json vocab;
  // added tokens by their content. An empty string marks an id the file does not define
  // (add_v4_special_tokens fills those).
  std::vector<std::string> tokens;
  // BPE merges "LEFT RIGHT", rank = index.
  std::vector<std::string> merges;
  // Same length as tokens: kTokenNormal for vocab entries, kTokenControl for added tokens
  // marked special, kTokenUserDefined for other added tokens (e.g. <｜User｜> in V3).
  std::vector<int32_t> token_types;
  int bos_id = -1;
  int eos_id = -1;
};

// Parses tokenizer.json text. Throws HfTokenizerError on malformed input (not JSON, missing
// model.vocab/merges, non-BPE model, negative/duplicate ids).
HfTokenizer parse_hf_tokenizer_json(std::string_view json_text);
// Reads and parses a file. Throws HfTokenizerError (message names the path).
HfTokenizer load_hf_tokenizer(const std::string& path);

// The V4 control tokens missing from the V3 tokenizer.json, with their V4 ids.
struct V4SpecialToken {
  int32_t id;
  const char* text;
};
const std::vector<V4SpecialToken>& v4_special_tokens();

// Grows `tok` to vocab_size ids, places the V4 control tokens (kTokenControl) at their ids
// and gives every other still-undefined id a unique placeholder
// "<｜place▁holder▁no▁N｜>" with N = id - 128000 (the V3 naming scheme), typed kTokenControl.
// Throws HfTokenizerError if a V4 id is already taken by a different text, if vocab_size is
// smaller than the existing table, or if a placeholder name would collide with a real token.
void add_v4_special_tokens(HfTokenizer& tok, size_t vocab_size);

}  // namespace ds4::text
