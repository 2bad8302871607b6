// Tokenizer built from GGUF metadata equals the one built from tokenizer.json.
#include <gtest/gtest.h>

#include "gguf/gguf.h"
#include "text/hf_tokenizer.h"
#include "text/tokenizer.h"
#include "tokenizer_fixture.h"

namespace ds4::text {
namespace {

const HfTokenizer& v4_tables() {
  static const HfTokenizer hf = [] {
    HfTokenizer t = load_hf_tokenizer(testing::tokenizer_json_path());
    add_v4_special_tokens(t, 129280);
    return t;
  }();
  return hf;
}

std::vector<uint8_t> gguf_image(const HfTokenizer& hf, bool with_types, bool with_merges,
                                size_t types_len) {
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::make_string("deepseek4"));
  w.set("tokenizer.ggml.model", gguf::Value::make_string("gpt2"));
  w.set("tokenizer.ggml.tokens", gguf::Value::make_string_array(hf.tokens));
  if (with_merges) w.set("tokenizer.ggml.merges", gguf::Value::make_string_array(hf.merges));
  if (with_types) {
    std::vector<int32_t> types(hf.token_types.begin(),
                               hf.token_types.begin() + static_cast<std::ptrdiff_t>(types_len));
    w.set("tokenizer.ggml.token_type", gguf::Value::make_i32_array(types));
  }
  return w.to_bytes();
}

TEST(TokenizerGguf, MatchesJsonTables) {
  const HfTokenizer& hf = v4_tables();
  const auto bytes = gguf_image(hf, true, true, hf.tokens.size());
  const auto file = gguf::File::from_memory(bytes.data(), bytes.size());
  const Tokenizer from_gguf(*file);
  const Tokenizer& from_json = testing::v4_tokenizer();
  ASSERT_EQ(from_gguf.vocab_size(), 129280u);
  EXPECT_EQ(from_gguf.think_close_id(), 128822);
  const std::string text =
      "<｜begin▁of▁sentence｜><｜User｜>Ciao, 世界! x² + 12345 “ok” 🙂\n\n    int<｜Assistant｜></think>";
  EXPECT_EQ(from_gguf.encode(text, true), from_json.encode(text, true));
  EXPECT_EQ(from_gguf.encode(text), from_json.encode(text));
  for (int id : {0, 1, 2, 19923, 128803, 128821, 128900, 129279}) {
    EXPECT_EQ(from_gguf.is_special(id), from_json.is_special(id)) << id;
    EXPECT_EQ(from_gguf.token_bytes(id), from_json.token_bytes(id)) << id;
  }
}

TEST(TokenizerGguf, WithoutTokenTypesUsesHeuristic) {
  const HfTokenizer& hf = v4_tables();
  const auto bytes = gguf_image(hf, false, true, 0);
  const auto file = gguf::File::from_memory(bytes.data(), bytes.size());
  const Tokenizer tok(*file);
  EXPECT_TRUE(tok.is_special(128803));
  EXPECT_TRUE(tok.is_special(128821));
  EXPECT_FALSE(tok.is_special(19923));
  EXPECT_EQ(tok.encode("<｜User｜>hi<think>", true), testing::v4_tokenizer().encode("<｜User｜>hi<think>", true));
}

TEST(TokenizerGguf, ClearErrors) {
  const HfTokenizer& hf = v4_tables();
  {
    const auto bytes = gguf_image(hf, true, false, hf.tokens.size());
    const auto file = gguf::File::from_memory(bytes.data(), bytes.size());
    EXPECT_THROW(Tokenizer{*file}, gguf::Error);  // no merges key
  }
  {
    const auto bytes = gguf_image(hf, true, true, 10);
    const auto file = gguf::File::from_memory(bytes.data(), bytes.size());
    EXPECT_THROW(Tokenizer{*file}, TokenizerError);  // token_type length mismatch
  }
  {
    gguf::Writer w;
    w.set("tokenizer.ggml.tokens", gguf::Value::make_u32(3));
    w.set("tokenizer.ggml.merges", gguf::Value::make_string_array({}));
    const auto bytes = w.to_bytes();
    const auto file = gguf::File::from_memory(bytes.data(), bytes.size());
    EXPECT_ANY_THROW(Tokenizer{*file});  // tokens is not an array
  }
}

}  // namespace
}  // namespace ds4::text
