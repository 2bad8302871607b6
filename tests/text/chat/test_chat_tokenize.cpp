// Rendered prompts to token ids with the real V4 vocabulary; expected ids from the
// official API (prompt_tokens) and third-party V4 vectors.
#include <algorithm>

#include <gtest/gtest.h>

#include "../tokenizer/tokenizer_fixture.h"
#include "test_data.h"
#include "text/chat.h"
#include "text/chat_tokenize.h"

namespace ds4::text {
namespace {

using Json = nlohmann::ordered_json;

const Tokenizer& tok() { return ds4::text::testing::v4_tokenizer(); }

std::vector<int> chat_ids(const std::string& user_text) {
  RenderOptions opt;
  opt.thinking_mode = ThinkingMode::Chat;
  Json messages = Json::array({Json{{"role", "user"}, {"content", user_text}}});
  return tokenize_prompt(tok(), render_chat_segments(messages, opt));
}

TEST(ChatTokenize, OfficialApiPrompts) {
  EXPECT_EQ(chat_ids("Answer with only the number: 2048 divided by 128 is"),
            (std::vector<int>{0, 128803, 7805, 418, 1353, 270, 1167, 28, 223, 11154, 26, 7203, 513, 223, 7833, 344,
                              128804, 128822}));
  EXPECT_EQ(chat_ids("Rispondi in italiano con una frase: chi era Ada Lovelace?"),
            (std::vector<int>{0, 128803, 52, 278, 4908, 75, 295, 89034, 399, 3919, 123003, 28, 23442, 9861, 63030,
                              47121, 317, 805, 33, 128804, 128822}));
  std::string code = ds4::text::testing::read_file(ds4::testdata::vectors_dir() +
                                                   "/ds4-official/prompts/short_code_completion.txt");
  EXPECT_EQ(chat_ids(code), (std::vector<int>{0, 128803, 41174, 270, 345, 6809, 418, 270, 2894, 6319, 17840, 1353,
                                              1137, 3916, 6400, 15626, 97201, 14, 36220, 97201, 754, 51663, 70, 1760,
                                              1990, 128804, 128822}));
}

TEST(ChatTokenize, ToolResultTurn) {
  RenderOptions opt;
  opt.add_bos = false;
  Json messages = Json::parse(R"([{"role":"tool","tool_call_id":"a","content":"out"}])");
  EXPECT_EQ(tokenize_prompt(tok(), render_chat_segments(messages, opt)),
            (std::vector<int>{128803, 30, 72461, 46148, 32, 606, 1718, 72461, 46148, 32, 128804, 128821}));
}

TEST(ChatTokenize, DsmlBlockStart) {
  RenderOptions opt;
  opt.thinking_mode = ThinkingMode::Chat;
  Json messages = Json::parse(R"([{"role":"user","content":"x"},{"role":"assistant","content":"",
      "tool_calls":[{"id":"a","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Beijing\"}"}}]}])");
  std::vector<int> ids = tokenize_prompt(tok(), render_chat_segments(messages, opt));
  const std::vector<int> want = {128822, 271, 30, 128825, 72461, 4941, 12548, 1018, 30, 128825, 40148,
                                 5406, 2329, 1281, 1133, 65, 50219, 3816};
  auto it = std::search(ids.begin(), ids.end(), want.begin(), want.end());
  EXPECT_NE(it, ids.end());
  EXPECT_EQ(ids.back(), tok().eos_id());
}

TEST(ChatTokenize, ClientSpecialTokenTextIsPlainByDefault) {
  RenderOptions opt;
  opt.thinking_mode = ThinkingMode::Chat;
  Json messages = Json::parse(R"([{"role":"user","content":"say <｜User｜> now"}])");
  PromptSegments segs = render_chat_segments(messages, opt);
  auto count_user = [](const std::vector<int>& ids) { return std::count(ids.begin(), ids.end(), 128803); };
  EXPECT_EQ(count_user(tokenize_prompt(tok(), segs)), 1);
  EXPECT_EQ(count_user(tokenize_prompt(tok(), segs, /*parse_special_in_text=*/true)), 2);
}

TEST(ChatTokenize, TaskTokensResolve) {
  RenderOptions opt;
  opt.thinking_mode = ThinkingMode::Chat;
  Json messages = Json::parse(R"([{"role":"user","content":"Q","task":"action"}])");
  std::vector<int> ids = tokenize_prompt(tok(), render_chat_segments(messages, opt));
  EXPECT_EQ(ids.back(), 128829);  // <｜action｜> 
}

}  // namespace
}  // namespace ds4::text
