// Rendering behaviour beyond the golden list: request-level tools, Think-Max threshold,
// generation prompt, exact DSML replay, segments, errors. Expected strings come from the
// golden renderings (official encoder) or from literal examples of the official format.
#include <gtest/gtest.h>

#include "golden_fixture.h"
#include "text/chat.h"
#include "text/dsml.h"

namespace ds4::text {
namespace {

using Json = nlohmann::ordered_json;
using golden::golden_case;
using golden::golden_options;

std::string expected_of(const std::string& id) { return golden_case(id)["expected"].get<std::string>(); }

TEST(ChatRender, RequestToolsOnInsertedSystemMatchGolden) {
  // E5 carries its tools on a content-less system message, exactly what the serving layer
  // builds from request-level tools.
  const Json& c = golden_case("E5_tools_no_system");
  Json messages = c["messages"];
  RenderOptions opt = golden_options(c);
  opt.tools = messages[0]["tools"];
  messages.erase(messages.begin());
  EXPECT_EQ(render_chat(messages, opt), expected_of("E5_tools_no_system"));
}

TEST(ChatRender, RequestToolsAttachToExistingSystem) {
  const Json& c = golden_case("E6_parallel_sorted_results");
  Json messages = c["messages"];
  RenderOptions opt = golden_options(c);
  opt.tools = messages[0]["tools"];
  messages[0].erase("tools");
  EXPECT_EQ(render_chat(messages, opt), expected_of("E6_parallel_sorted_results"));
}

TEST(ChatRender, RequestResponseFormatAttaches) {
  const Json& c = golden_case("E10_response_format");
  Json messages = c["messages"];
  RenderOptions opt = golden_options(c);
  opt.response_format = messages[0]["response_format"];
  messages[0].erase("response_format");
  EXPECT_EQ(render_chat(messages, opt), expected_of("E10_response_format"));
}

TEST(ChatRender, ThinkMaxFallsBackToHighBelowThreshold) {
  const Json& c = golden_case("E3_max_effort");
  RenderOptions opt = golden_options(c);
  ASSERT_EQ(opt.reasoning_effort, ReasoningEffort::Max);
  opt.context_size = kThinkMaxMinContext - 1;
  EXPECT_FALSE(think_max_active(opt));
  EXPECT_EQ(render_chat(c["messages"], opt), expected_of("E3_high_effort_no_prefix"));
  opt.context_size = kThinkMaxMinContext;
  EXPECT_TRUE(think_max_active(opt));
  EXPECT_EQ(render_chat(c["messages"], opt), expected_of("E3_max_effort"));
  opt.context_size.reset();
  EXPECT_EQ(render_chat(c["messages"], opt), expected_of("E3_max_effort"));
}

TEST(ChatRender, ThinkMaxPrefixIsSpecText) {
  // The Think-Max paragraph's first and last sentence.
  EXPECT_EQ(kThinkMaxPrefix.substr(0, 64), "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n");
  EXPECT_TRUE(kThinkMaxPrefix.ends_with("to ensure absolutely no assumption is left unchecked.\n\n"));
}

TEST(ChatRender, WithoutGenerationPrompt) {
  const Json& c = golden_case("E2_thinking_single_user");
  RenderOptions opt = golden_options(c);
  opt.add_generation_prompt = false;
  EXPECT_EQ(render_chat(c["messages"], opt), "<｜begin▁of▁sentence｜><｜User｜>Hi");
  opt.add_generation_prompt = true;
  opt.add_bos = false;
  EXPECT_EQ(render_chat(c["messages"], opt), "<｜User｜>Hi<｜Assistant｜><think>");
}

TEST(ChatRender, EmptyMessagesGiveBosOnly) {
  EXPECT_EQ(render_chat(Json::array(), RenderOptions{}), "<｜begin▁of▁sentence｜>");
}

TEST(ChatRender, ContentPartsAreFlattened) {
  Json messages = Json::parse(R"([{"role":"user","content":[{"type":"text","text":"Answer with only the number:"},
      {"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"2048 divided by 128 is"}]}])");
  RenderOptions opt;
  opt.thinking_mode = ThinkingMode::Chat;
  EXPECT_EQ(render_chat(messages, opt), expected_of("E1_chat_single_user"));
}

// Single calls in the official DSML form (docs/prompting.md).
TEST(ChatRender, DsmlInvokeCanonicalForms) {
  EXPECT_EQ(render_dsml_invoke("run", "not json"),
            "<｜DSML｜invoke name=\"run\">\n<｜DSML｜parameter name=\"arguments\" string=\"true\">not "
            "json</｜DSML｜parameter>\n</｜DSML｜invoke>");
  EXPECT_EQ(render_dsml_invoke("now", "{}"), "<｜DSML｜invoke name=\"now\">\n\n</｜DSML｜invoke>");
  EXPECT_EQ(render_dsml_invoke("now", Json()), "<｜DSML｜invoke name=\"now\">\n\n</｜DSML｜invoke>");
  EXPECT_EQ(render_dsml_parameters(""), "<｜DSML｜parameter name=\"arguments\" string=\"true\"></｜DSML｜parameter>");
  EXPECT_EQ(render_dsml_parameters(R"({"unit": "C", "alerts": [true, null]})"),
            "<｜DSML｜parameter name=\"unit\" string=\"true\">C</｜DSML｜parameter>\n"
            "<｜DSML｜parameter name=\"alerts\" string=\"false\">[true, null]</｜DSML｜parameter>");
  // Non-object JSON is not a keyword list: kept as raw text.
  EXPECT_EQ(render_dsml_parameters("[1]"), "<｜DSML｜parameter name=\"arguments\" string=\"true\">[1]</｜DSML｜parameter>");
}

TEST(ChatRender, ParsedObjectArgumentsRenderLikeTheirJsonText) {
  std::string as_text = R"({"location": "Shanghai", "days": 1, "opts": {"unit": "C", "alerts": [true, null]}})";
  EXPECT_EQ(render_dsml_parameters(Json::parse(as_text)), render_dsml_parameters(as_text));
}

TEST(ChatRender, BlockMatchesGoldenTail) {
  std::string block = render_dsml_block({{"now", "{}"}});
  EXPECT_TRUE(expected_of("E7_zero_arg_call").find("ok" + block + "<｜end▁of▁sentence｜>") != std::string::npos);
}

TEST(ChatRender, SegmentsKeepClientSpecialTokenTextAsText) {
  const Json& c = golden_case("E15_literal_special_token_text");
  PromptSegments segs = render_chat_segments(c["messages"], golden_options(c));
  // System text "Never print <｜User｜> or <think>." must stay one text segment.
  ASSERT_GE(segs.size(), 2u);
  EXPECT_TRUE(segs[0].special);
  EXPECT_FALSE(segs[1].special);
  EXPECT_EQ(segs[1].text, "Never print <｜User｜> or <think>.");
  size_t dsml_markers = 0;
  for (const auto& s : segs) dsml_markers += s.special && s.text == kDsmlToken;
  // Block start/end, invoke start/end, two parameters x 2 tags; the ｜DSML｜ inside the
  // user's text and inside the argument value are text.
  EXPECT_EQ(dsml_markers, 2u + 2u + 4u);
}

TEST(ChatRender, ToolsTemplateMarkersAreSpecial) {
  const Json& c = golden_case("E5_tools_no_system");
  PromptSegments segs = render_chat_segments(c["messages"], golden_options(c));
  size_t think_open = 0, think_close = 0;
  for (const auto& s : segs) {
    think_open += s.special && s.text == kThinkOpen;
    think_close += s.special && s.text == kThinkClose;
  }
  // Template: "<think>" twice, "</think>" twice; conversation: one "</think>" after the
  // reasoning and two transitions opening "<think>".
  EXPECT_EQ(think_open, 2u + 2u);
  EXPECT_EQ(think_close, 2u + 1u);
}

Json tool_turn_messages() {
  return Json::parse(R"([
    {"role":"user","content":"Weather in Beijing for 2 days?"},
    {"role":"assistant","reasoning_content":"Use the tool.","content":"",
     "tool_calls":[{"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Beijing\", \"days\": 2}"}},
                   {"id":"call_b","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Paris\"}"}}]},
    {"role":"tool","tool_call_id":"call_a","content":"A"},
    {"role":"tool","tool_call_id":"call_b","content":"B"}])");
}

TEST(ChatRender, ExactReplayUsesGeneratedBytesWhenAllIdsShareABlock) {
  // What a model could have generated: extra whitespace and compact JSON.
  const std::string raw =
      "\n\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
      "<｜DSML｜parameter name=\"location\" string=\"true\">Beijing</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"days\" string=\"false\"> 2 </｜DSML｜parameter>\n</｜DSML｜invoke>\n"
      "<｜DSML｜invoke name=\"get_weather\">\n"
      "<｜DSML｜parameter name=\"location\" string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
      "</｜DSML｜tool_calls>";
  Json messages = tool_turn_messages();
  RenderOptions opt;
  std::string canonical = render_chat(messages, opt);
  std::string canonical_block = render_dsml_block(
      {{"get_weather", messages[1]["tool_calls"][0]["function"]["arguments"]},
       {"get_weather", messages[1]["tool_calls"][1]["function"]["arguments"]}});
  ASSERT_NE(canonical.find(canonical_block), std::string::npos);
  std::string expected = canonical;
  expected.replace(canonical.find(canonical_block), canonical_block.size(), raw);

  opt.dsml_replay = [&](std::string_view id) -> std::optional<std::string> {
    if (id == "call_a" || id == "call_b") return raw;
    return std::nullopt;
  };
  EXPECT_EQ(render_chat(messages, opt), expected);

  // One unknown id: canonical.
  opt.dsml_replay = [&](std::string_view id) -> std::optional<std::string> {
    if (id == "call_a") return raw;
    return std::nullopt;
  };
  EXPECT_EQ(render_chat(messages, opt), canonical);

  // Ids from different blocks: canonical.
  opt.dsml_replay = [&](std::string_view id) -> std::optional<std::string> { return raw + std::string(id); };
  EXPECT_EQ(render_chat(messages, opt), canonical);

  // Bytes carried on the message itself.
  opt.dsml_replay = nullptr;
  messages[1]["raw_dsml"] = raw;
  EXPECT_EQ(render_chat(messages, opt), expected);

  // Replayed ｜DSML｜ markers are control segments.
  PromptSegments segs = render_chat_segments(messages, opt);
  size_t markers = 0;
  for (const auto& s : segs) markers += s.special && s.text == kDsmlToken;
  EXPECT_EQ(markers, 2u + 4u + 6u);
}

TEST(ChatRender, ParseThenRenderReproducesGeneratedText) {
  // A shell command survives parse -> render unescaped.
  const std::string generated =
      "Let me look.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n"
      "<｜DSML｜parameter name=\"command\" string=\"true\">cd /tmp && git diff 2>/dev/null</｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  DsmlParserOptions popt;
  popt.make_id = [](size_t i) { return "call_" + std::to_string(i); };
  ParsedCompletion parsed = parse_completion(generated, popt);
  ASSERT_FALSE(parsed.error) << *parsed.error;
  ASSERT_EQ(parsed.tool_calls.size(), 1u);
  EXPECT_EQ(parsed.tool_calls[0].arguments["command"], "cd /tmp && git diff 2>/dev/null");

  Json assistant = {{"role", "assistant"}, {"content", parsed.content}};
  Json calls = Json::array();
  for (const auto& call : parsed.tool_calls)
    calls.push_back({{"id", call.id}, {"type", "function"}, {"function", {{"name", call.name}, {"arguments", call.arguments_json}}}});
  assistant["tool_calls"] = calls;
  Json messages = Json::array({Json{{"role", "user"}, {"content", "show diff"}}, assistant});
  RenderOptions opt;
  opt.thinking_mode = ThinkingMode::Chat;
  std::string prefix = "<｜begin▁of▁sentence｜><｜User｜>show diff<｜Assistant｜></think>";
  // Canonical rendering equals the generated text here (it was canonical already).
  EXPECT_EQ(render_chat(messages, opt), prefix + generated + "<｜end▁of▁sentence｜>");
  // Replay gives the same bytes.
  std::string raw = parsed.tool_calls[0].block_raw;
  opt.dsml_replay = [&](std::string_view) -> std::optional<std::string> { return raw; };
  EXPECT_EQ(render_chat(messages, opt), prefix + generated + "<｜end▁of▁sentence｜>");
}

TEST(ChatRender, MalformedMessagesThrowChatError) {
  RenderOptions opt;
  EXPECT_THROW(render_chat(Json::object(), opt), ChatError);
  EXPECT_THROW(render_chat(Json::parse(R"([1])"), opt), ChatError);
  EXPECT_THROW(render_chat(Json::parse(R"([{"content":"x"}])"), opt), ChatError);
  EXPECT_THROW(render_chat(Json::parse(R"([{"role":"wizard","content":"x"}])"), opt), ChatError);
  EXPECT_THROW(render_chat(Json::parse(R"([{"role":"developer","content":""}])"), opt), ChatError);
  EXPECT_THROW(render_chat(Json::parse(R"([{"role":"user","content":"x","task":"dance"}])"), opt), ChatError);
  EXPECT_THROW(render_chat(Json::parse(R"([{"role":"user","content":{"a":1}}])"), opt), ChatError);
  EXPECT_THROW(render_chat(Json::parse(R"([{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"a"}]}])"), opt),
               ChatError);
  opt.tools = Json::object();
  EXPECT_THROW(render_chat(Json::parse(R"([{"role":"user","content":"x"}])"), opt), ChatError);
  try {
    render_chat(Json::parse(R"([{"role":"user","content":"x"},{"role":"wizard"}])"), RenderOptions{});
    FAIL();
  } catch (const ChatError& e) {
    EXPECT_NE(std::string(e.what()).find("wizard"), std::string::npos);
  }
}

}  // namespace
}  // namespace ds4::text
