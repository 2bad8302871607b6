#include "convert/vocab.h"

#include <set>
#include <unordered_set>

#include "convert/safetensors.h"
#include "gguf/gguf.h"
#include "text/hf_tokenizer.h"
#include "text/unicode.h"

namespace ds4::convert {

namespace {

constexpr int32_t kNormal = 1;
constexpr int32_t kControl = 3;

}  // namespace

std::string byte_token(uint8_t b) {
  return text::unicode::utf8_encode(text::unicode::byte_to_codepoint(b));
}

const std::vector<SpecialToken>& ds4_special_tokens() {
  static const std::vector<SpecialToken> k = {
      {"<｜begin▁of▁sentence｜>", 0}, {"<｜end▁of▁sentence｜>", 1}, {"<｜User｜>", 128803},
      {"<｜Assistant｜>", 128804},     {"<think>", 128821},            {"</think>", 128822},
      {"｜DSML｜", 128825},           {"<｜latest_reminder｜>", 128828},
  };
  return k;
}

Vocab make_synthetic_vocab(uint32_t vocab_size) {
  const auto& specials = ds4_special_tokens();
  const uint32_t minimum = static_cast<uint32_t>(specials.size()) + 256;
  if (vocab_size < minimum)
    throw ConvertError("vocab_size " + std::to_string(vocab_size) + " is too small for a byte-level vocabulary (" +
                       std::to_string(specials.size()) + " control tokens + 256 bytes = " + std::to_string(minimum) + ")");
  Vocab v;
  v.tokens.assign(vocab_size, {});
  v.token_types.assign(vocab_size, kNormal);
  const bool real_ids = vocab_size > 128828;
  for (size_t i = 0; i < specials.size(); ++i) {
    const uint32_t id = real_ids ? specials[i].v4_id : static_cast<uint32_t>(i);
    v.tokens[id] = specials[i].text;
    v.token_types[id] = kControl;
  }
  // Merge alphabet: space (as Ġ) and frequent letters first so that English text merges.
  const std::string order = " etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,'-!?\"():;";
  std::vector<std::string> alphabet;
  std::set<char> seen;
  for (char ch : order)
    if (seen.insert(ch).second) alphabet.push_back(byte_token(static_cast<uint8_t>(ch)));
  for (int ch = 0x21; ch <= 0x7E; ++ch)
    if (seen.insert(static_cast<char>(ch)).second) alphabet.push_back(byte_token(static_cast<uint8_t>(ch)));

  std::vector<std::string> normal;
  normal.reserve(vocab_size);
  for (int b = 0; b < 256; ++b) normal.push_back(byte_token(static_cast<uint8_t>(b)));
  const size_t want = vocab_size - specials.size();
  std::vector<std::string> level1;
  const std::string space = byte_token(' ');
  for (const auto& a : alphabet)
    for (const auto& b : alphabet) {
      if (normal.size() >= want) break;
      if (b == space) continue;  // words start with a space, they do not end with one
      v.merges.push_back(a + " " + b);
      normal.push_back(a + b);
      level1.push_back(a + b);
    }
  for (const auto& ab : level1)
    for (const auto& c : alphabet) {
      if (normal.size() >= want) break;
      if (c == space) continue;
      v.merges.push_back(ab + " " + c);
      normal.push_back(ab + c);
    }
  if (normal.size() < want)
    throw ConvertError("vocab_size " + std::to_string(vocab_size) + " is larger than the synthetic vocabulary supports");
  size_t next = 0;
  for (uint32_t id = 0; id < vocab_size; ++id)
    if (v.tokens[id].empty()) v.tokens[id] = normal[next++];
  v.bos_id = 0;
  v.eos_id = 1;
  return v;
}

Vocab load_tokenizer_vocab(const std::string& path, uint32_t vocab_size) {
  text::HfTokenizer tok;
  try {
    tok = text::load_hf_tokenizer(path);
    if (tok.tokens.size() > vocab_size)
      throw ConvertError(path + ": tokenizer has " + std::to_string(tok.tokens.size()) +
                         " ids, more than the model's vocab_size " + std::to_string(vocab_size));
    text::add_v4_special_tokens(tok, vocab_size);
  } catch (const text::HfTokenizerError& e) {
    throw ConvertError(std::string("tokenizer: ") + e.what());
  }
  if (tok.tokens.size() != vocab_size)
    throw ConvertError(path + ": tokenizer does not fit the model's vocab_size " + std::to_string(vocab_size));
  std::unordered_set<std::string> texts;
  for (size_t id = 0; id < tok.tokens.size(); ++id) {
    if (tok.tokens[id].empty()) throw ConvertError(path + ": token id " + std::to_string(id) + " is undefined");
    if (!texts.insert(tok.tokens[id]).second)
      throw ConvertError(path + ": token text of id " + std::to_string(id) + " is duplicated");
  }
  for (const auto& s : ds4_special_tokens())
    if (!texts.count(s.text)) throw ConvertError(path + ": tokenizer lacks control token " + std::string(s.text));
  Vocab v;
  v.tokens = std::move(tok.tokens);
  v.merges = std::move(tok.merges);
  v.token_types = std::move(tok.token_types);
  v.bos_id = tok.bos_id >= 0 ? static_cast<uint32_t>(tok.bos_id) : 0;
  v.eos_id = tok.eos_id >= 0 ? static_cast<uint32_t>(tok.eos_id) : 1;
  return v;
}

void write_vocab(const Vocab& v, gguf::Writer& w) {
  using gguf::Value;
  w.set("tokenizer.ggml.model", Value::make_string("gpt2"));
  w.set("tokenizer.ggml.pre", Value::make_string("deepseek-v3"));
  w.set("tokenizer.ggml.tokens", Value::make_string_array(v.tokens));
  w.set("tokenizer.ggml.token_type", Value::make_i32_array(v.token_types));
  w.set("tokenizer.ggml.merges", Value::make_string_array(v.merges));
  w.set("tokenizer.ggml.bos_token_id", Value::make_u32(v.bos_id));
  w.set("tokenizer.ggml.eos_token_id", Value::make_u32(v.eos_id));
  w.set("tokenizer.ggml.add_bos_token", Value::make_bool(true));
  w.set("tokenizer.ggml.add_eos_token", Value::make_bool(false));
}

}  // namespace ds4::convert
