// The 34 golden prompts rendered by the official encoder (tests/data/vectors/prompting-golden).
#include <gtest/gtest.h>

#include "golden_fixture.h"
#include "text/chat.h"

namespace ds4::text {
namespace {

using Json = nlohmann::ordered_json;
using golden::golden_cases;

RenderOptions options_for(const Json& c) {
  const Json& effort = c["reasoning_effort"];
  EXPECT_TRUE(effort.is_null() || effort == "high" || effort == "max") << effort;
  return golden::golden_options(c);
}

// Byte offset of the first difference, for readable failures.
std::string first_difference(const std::string& a, const std::string& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  auto around = [&](const std::string& s) { return s.substr(i > 40 ? i - 40 : 0, 120); };
  return "at byte " + std::to_string(i) + "\n  got:      " + Json(around(a)).dump() + "\n  expected: " + Json(around(b)).dump();
}

TEST(ChatGolden, HasAllCases) { EXPECT_EQ(golden_cases().size(), 34u); }

class GoldenCase : public ::testing::TestWithParam<size_t> {};

TEST_P(GoldenCase, RendersByteExact) {
  const Json& c = golden_cases()[GetParam()];
  SCOPED_TRACE(c["id"].get<std::string>());
  std::string got = render_chat(c["messages"], options_for(c));
  std::string expected = c["expected"].get<std::string>();
  EXPECT_EQ(got, expected) << first_difference(got, expected);
}

TEST_P(GoldenCase, SegmentsJoinToTheSameStringAndMarkOnlyControlTokens) {
  const Json& c = golden_cases()[GetParam()];
  PromptSegments segs = render_chat_segments(c["messages"], options_for(c));
  EXPECT_EQ(join_segments(segs), c["expected"].get<std::string>());
  for (size_t i = 0; i < segs.size(); ++i) {
    if (segs[i].special) {
      const std::string& t = segs[i].text;
      bool known = t == kBosToken || t == kEosToken || t == kUserToken || t == kAssistantToken ||
                   t == kThinkOpen || t == kThinkClose || t == kDsmlToken || t == kLatestReminderToken ||
                   (t.rfind("<｜", 0) == 0 && t.size() > 6);
      EXPECT_TRUE(known) << t;
    } else {
      EXPECT_FALSE(segs[i].text.empty());
      if (i > 0) {
        EXPECT_TRUE(segs[i - 1].special) << "adjacent text segments not merged";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Examples, GoldenCase, ::testing::Range<size_t>(0, 34),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return golden_cases()[info.param]["id"].get<std::string>();
                         });

}  // namespace
}  // namespace ds4::text
