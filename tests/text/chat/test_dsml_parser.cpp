// DSML parser: ds4's parser cases, round trips through the official renderings,
// streaming holdback, chunking independence, sampler positions, malformed input.
#include <chrono>

#include <gtest/gtest.h>

#include "dsml_test_util.h"
#include "golden_fixture.h"
#include "text/chat.h"
#include "text/dsml.h"
#include "test_seed.h"

namespace ds4::text {
namespace {

using Json = nlohmann::ordered_json;
using dsmltest::counting_ids;
using dsmltest::describe;
using dsmltest::merged;
using dsmltest::run_chunks;
using dsmltest::run_whole;

const std::string kBashBlock =
    "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n"
    "<｜DSML｜parameter name=\"command\" string=\"true\">pwd</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

// ---- ds4's parser cases

TEST(DsmlParse, ReasoningThenCall) {
  ParsedCompletion p = parse_completion("<think>need a shell check</think>" + kBashBlock, counting_ids());
  ASSERT_FALSE(p.error);
  EXPECT_EQ(p.reasoning, "need a shell check");
  EXPECT_EQ(p.content, "");
  ASSERT_EQ(p.tool_calls.size(), 1u);
  EXPECT_EQ(p.tool_calls[0].name, "bash");
  EXPECT_EQ(p.tool_calls[0].id, "call_0");
  EXPECT_EQ(p.tool_calls[0].arguments, Json::parse(R"({"command": "pwd"})"));
  EXPECT_EQ(p.tool_calls[0].arguments_json, R"({"command": "pwd"})");
  EXPECT_EQ(p.tool_calls[0].block_raw, kBashBlock);
  EXPECT_EQ(p.tool_calls[0].invoke_raw,
            "<｜DSML｜invoke name=\"bash\">\n<｜DSML｜parameter name=\"command\" "
            "string=\"true\">pwd</｜DSML｜parameter>\n</｜DSML｜invoke>");
}

TEST(DsmlParse, PromptOpenedThinking) {
  // The prompt ended with "<think>", so the output starts inside reasoning.
  ParsedCompletion p = parse_completion("need a shell check</think>" + kBashBlock, counting_ids(true));
  EXPECT_EQ(p.reasoning, "need a shell check");
  EXPECT_EQ(p.tool_calls.size(), 1u);
}

TEST(DsmlParse, TrailingNewlinesBeforeBlockAreTrimmed) {
  ParsedCompletion p = parse_completion("I will inspect the files.\n\n\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n"
                                        "<｜DSML｜parameter name=\"command\" string=\"true\">ls</｜DSML｜parameter>\n"
                                        "</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
                                        counting_ids());
  EXPECT_EQ(p.content, "I will inspect the files.");
  ASSERT_EQ(p.tool_calls.size(), 1u);
  EXPECT_TRUE(p.tool_calls[0].block_raw.starts_with("\n\n\n\n<｜DSML｜tool_calls>"));
}

TEST(DsmlParse, BlockInsideClosedReasoningIsReasoning) {
  std::string text = "<think>Maybe:" + kBashBlock + "\nno, not needed.</think>Final answer.";
  ParsedCompletion p = parse_completion(text, counting_ids());
  EXPECT_FALSE(p.error);
  EXPECT_TRUE(p.tool_calls.empty());
  EXPECT_EQ(p.reasoning, "Maybe:" + kBashBlock + "\nno, not needed.");
  EXPECT_EQ(p.content, "Final answer.");
}

TEST(DsmlParse, UnclosedReasoningFollowedByBlockYieldsTheCall) {
  ParsedCompletion p = parse_completion("I need the directory." + kBashBlock, counting_ids(true));
  EXPECT_FALSE(p.error);
  EXPECT_EQ(p.reasoning, "I need the directory.");
  ASSERT_EQ(p.tool_calls.size(), 1u);
  EXPECT_EQ(p.tool_calls[0].arguments["command"], "pwd");
  // Trailing whitespace after the block still counts as "ended after the block".
  p = parse_completion("I need the directory." + kBashBlock + "\n", counting_ids(true));
  EXPECT_EQ(p.tool_calls.size(), 1u);
}

TEST(DsmlParse, InvokeWithoutNameFailsAndReturnsRawText) {
  std::string text = "Sure." + std::string("\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke>\n"
                                          "<｜DSML｜parameter name=\"command\" string=\"true\">pwd</｜DSML｜parameter>\n"
                                          "</｜DSML｜invoke>\n</｜DSML｜tool_calls>");
  ParsedCompletion p = parse_completion(text, counting_ids());
  ASSERT_TRUE(p.error);
  EXPECT_NE(p.error->find("without name"), std::string::npos);
  EXPECT_TRUE(p.tool_calls.empty());
  EXPECT_EQ(p.content, text);
}

TEST(DsmlParse, TruncatedBlockIsAnErrorWithRawText) {
  std::string text = "On it." + kBashBlock.substr(0, kBashBlock.size() - 12);
  ParsedCompletion p = parse_completion(text, counting_ids());
  ASSERT_TRUE(p.error);
  EXPECT_TRUE(p.tool_calls.empty());
  EXPECT_EQ(p.content, text);
  // Every truncation point of a valid block: no crash, either text or an error, never a call.
  for (size_t cut = 0; cut < kBashBlock.size(); ++cut) {
    ParsedCompletion q = parse_completion(std::string("x").append(kBashBlock, 0, cut), counting_ids());
    EXPECT_TRUE(q.tool_calls.empty()) << cut;
    EXPECT_EQ(q.content, std::string("x").append(kBashBlock, 0, cut)) << cut;
  }
}

TEST(DsmlParse, OfficialCaseOneAssistantSpan) {
  // Parsing the first assistant span of the official test 1 gives content "" and
  // one get_weather call.
  const std::string expected = golden::golden_case("OFFICIAL_1_thinking_tools")["expected"].get<std::string>();
  std::string open = "<｜Assistant｜><think>";
  size_t start = expected.find(open) + open.size();
  size_t end = expected.find("<｜end▁of▁sentence｜>", start);
  ParsedCompletion p = parse_completion(std::string_view(expected).substr(start, end - start), counting_ids(true));
  ASSERT_FALSE(p.error);
  EXPECT_EQ(p.reasoning, "The user wants to know the weather in Beijing. I should use the get_weather tool.");
  EXPECT_EQ(p.content, "");
  ASSERT_EQ(p.tool_calls.size(), 1u);
  EXPECT_EQ(p.tool_calls[0].name, "get_weather");
  EXPECT_EQ(p.tool_calls[0].arguments, Json::parse(R"({"location": "Beijing", "unit": "celsius"})"));
}

// Every assistant turn with tool calls in the official renderings parses back to its message.
TEST(DsmlParse, RoundTripsEveryGoldenToolTurn) {
  size_t checked = 0;
  for (const Json& c : golden::golden_cases()) {
    SCOPED_TRACE(c["id"].get<std::string>());
    std::vector<const Json*> callers;
    for (const Json& m : c["messages"])
      if (m["role"] == "assistant" && m.contains("tool_calls") && !m["tool_calls"].empty()) callers.push_back(&m);
    const std::string expected = c["expected"].get<std::string>();
    size_t pos = 0, turn = 0;
    while (true) {
      size_t a = expected.find("<｜Assistant｜>", pos);
      if (a == std::string::npos) break;
      size_t body = a + std::string_view("<｜Assistant｜>").size();
      size_t end = expected.find("<｜end▁of▁sentence｜>", body);
      if (end == std::string::npos) break;
      pos = end;
      std::string_view span = std::string_view(expected).substr(body, end - body);
      if (span.find("<｜DSML｜tool_calls>") == std::string_view::npos) continue;
      ASSERT_LT(turn, callers.size());
      const Json& msg = *callers[turn++];
      bool thinking = span.starts_with("<think>");
      if (thinking) span.remove_prefix(7);
      bool chat_close = !thinking && span.starts_with("</think>");
      if (chat_close) span.remove_prefix(8);
      ParsedCompletion p = parse_completion(span, counting_ids(thinking));
      if (c["id"] == "E15_literal_special_token_text") {
        // A string value holding the closing parameter tag cannot survive the official format.
        EXPECT_TRUE(p.error);
        EXPECT_EQ(p.content, std::string(span));
        continue;
      }
      ASSERT_FALSE(p.error) << *p.error;
      EXPECT_EQ(p.content, msg.value("content", ""));
      if (thinking) {
        EXPECT_EQ(p.reasoning, msg.value("reasoning_content", ""));
      }
      const Json& calls = msg["tool_calls"];
      ASSERT_EQ(p.tool_calls.size(), calls.size());
      for (size_t i = 0; i < calls.size(); ++i) {
        const Json& fn = calls[i]["function"];
        EXPECT_EQ(p.tool_calls[i].name, fn["name"]);
        Json want;
        std::string args = fn["arguments"].get<std::string>();
        if (Json::accept(args)) {
          want = Json::parse(args);
        } else {
          want = Json{{"arguments", args}};
        }
        EXPECT_EQ(p.tool_calls[i].arguments, want) << p.tool_calls[i].arguments_json;
        EXPECT_EQ(Json::parse(p.tool_calls[i].arguments_json), p.tool_calls[i].arguments);
      }
      // Content plus the raw block is the generated text after the reasoning, byte for byte.
      std::string after = std::string(span.substr(thinking ? span.find("</think>") + 8 : 0));
      EXPECT_EQ(p.content + p.tool_calls[0].block_raw, after);
      ++checked;
    }
    EXPECT_EQ(turn, callers.size());
  }
  EXPECT_GE(checked, 12u);
}

// ---- argument JSON

TEST(DsmlParse, StringValuesAreJsonEscapedAndNonStringsKept) {
  std::string text =
      "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n"
      "<｜DSML｜parameter name=\"s\" string=\"true\">a \"q\" \\ \t\n\x01 é 😀 &amp;</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"n\" string=\"false\">12345678901234567890</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"o\" string=\"false\">{\"k\": [1, 2.5, null, \"</x>\"]}</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"bad\" string=\"false\">not json</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"empty\" string=\"false\"></｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"plain\">no string attribute</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"k\\\"ey\" string=\"true\"></｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  ParsedCompletion p = parse_completion(text, counting_ids());
  ASSERT_FALSE(p.error) << *p.error;
  ASSERT_EQ(p.tool_calls.size(), 1u);
  const Json& a = p.tool_calls[0].arguments;
  EXPECT_EQ(a["s"], "a \"q\" \\ \t\n\x01 é 😀 &amp;");  // raw, no entity decoding (official)
  EXPECT_EQ(a["n"].get<uint64_t>(), 12345678901234567890ull);
  EXPECT_EQ(a["o"], Json::parse(R"({"k": [1, 2.5, null, "</x>"]})"));
  EXPECT_EQ(a["bad"], "not json");
  EXPECT_EQ(a["empty"], "");
  EXPECT_EQ(a["plain"], "no string attribute");
  EXPECT_TRUE(p.tool_calls[0].arguments_json.starts_with(
      "{\"s\": \"a \\\"q\\\" \\\\ \\t\\n\\u0001 é 😀 &amp;\", \"n\": 12345678901234567890, "));
}

TEST(DsmlParse, ArgumentFragmentsConcatenateToFinalJson) {
  std::string text = "Two calls." + render_dsml_block({{"a", R"({"x": "1", "y": [1, {"z": "w"}]})"}, {"b", "{}"}});
  DsmlStreamParser parser(counting_ids());
  std::vector<DsmlEvent> events;
  for (char c : text) parser.feed(std::string_view(&c, 1), events);
  parser.finish(events);
  std::vector<std::string> args(2);
  std::vector<std::string> finals(2);
  size_t starts = 0, ends = 0, blocks = 0;
  for (const auto& ev : events) {
    if (ev.kind == DsmlEventKind::ToolCallStart) {
      EXPECT_EQ(ev.index, starts);
      EXPECT_EQ(ev.id, "call_" + std::to_string(starts));
      EXPECT_EQ(ev.name, starts == 0 ? "a" : "b");
      ++starts;
    }
    if (ev.kind == DsmlEventKind::ToolCallArgs) args.at(ev.index) += ev.text;
    if (ev.kind == DsmlEventKind::ToolCallEnd) {
      finals.at(ev.index) = ev.text;
      EXPECT_EQ(Json::parse(ev.text), ev.arguments);
      ++ends;
    }
    if (ev.kind == DsmlEventKind::BlockEnd) ++blocks;
  }
  EXPECT_EQ(starts, 2u);
  EXPECT_EQ(ends, 2u);
  EXPECT_EQ(blocks, 1u);
  EXPECT_EQ(args[0], finals[0]);
  EXPECT_EQ(args[1], finals[1]);
  EXPECT_EQ(args[0], R"({"x": "1", "y": [1, {"z": "w"}]})");
  EXPECT_EQ(args[1], "{}");
  EXPECT_TRUE(parser.tool_calls_done());
}

TEST(DsmlParse, BarMissingSpellingIsAccepted) {
  std::string text =
      "ok\n\n<DSML｜tool_calls>\n<DSML｜invoke name=\"f\">\n<DSML｜parameter name=\"a\" "
      "string=\"true\">b</DSML｜parameter>\n</DSML｜invoke>\n</DSML｜tool_calls>";
  ParsedCompletion p = parse_completion(text, counting_ids());
  ASSERT_FALSE(p.error);
  EXPECT_EQ(p.content, "ok");
  ASSERT_EQ(p.tool_calls.size(), 1u);
  EXPECT_EQ(p.tool_calls[0].arguments, Json::parse(R"({"a": "b"})"));
  // Mixed spellings inside one block are a structural error.
  std::string mixed =
      "ok\n\n<DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>\n</DSML｜tool_calls>";
  EXPECT_TRUE(parse_completion(mixed, counting_ids()).error);
}

TEST(DsmlParse, BytesAfterBlockAreIgnored) {
  ParsedCompletion p = parse_completion("a" + kBashBlock + "<｜end▁of▁sentence｜>trailing junk", counting_ids());
  EXPECT_EQ(p.content, "a");
  EXPECT_EQ(p.tool_calls.size(), 1u);
}

TEST(DsmlParse, ToolParsingOffIsAllText) {
  DsmlParserOptions opt = counting_ids();
  opt.parse_tool_calls = false;
  ParsedCompletion p = parse_completion("a" + kBashBlock, opt);
  EXPECT_EQ(p.content, "a" + kBashBlock);
  EXPECT_TRUE(p.tool_calls.empty());
}

TEST(DsmlParse, DefaultIdsAreRandomHex) {
  ParsedCompletion p = parse_completion("<think></think>" + kBashBlock + kBashBlock);
  ASSERT_EQ(p.tool_calls.size(), 1u);
  const std::string& id = p.tool_calls[0].id;
  ASSERT_EQ(id.size(), 5u + 32u);
  EXPECT_TRUE(id.starts_with("call_"));
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef", 5), std::string::npos);
  ParsedCompletion q = parse_completion(kBashBlock);
  EXPECT_NE(q.tool_calls.at(0).id, id);
}

TEST(DsmlParse, InvalidUtf8InValuesIsReplacedAndJsonStaysValid) {
  std::string text =
      "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">x\xff\xe4\xb8y"
      "\xe4\xb8\xad</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  ParsedCompletion p = parse_completion(text, counting_ids());
  ASSERT_EQ(p.tool_calls.size(), 1u);
  EXPECT_EQ(p.tool_calls[0].arguments["a"], "x\xEF\xBF\xBD\xEF\xBF\xBDy中");
}

// ---- streaming holdback

TEST(DsmlStream, EmitsEarlyAndHoldsOnlyPossibleMarkers) {
  DsmlStreamParser parser(counting_ids());
  std::vector<DsmlEvent> ev;
  parser.feed("Hello", ev);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].text, "Hello");
  ev.clear();
  parser.feed(" world\n\n", ev);  // trailing whitespace could precede a block
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].text, " world");
  ev.clear();
  parser.feed("<｜DS", ev);
  EXPECT_TRUE(ev.empty());
  parser.feed("x", ev);  // no longer a possible start tag
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].text, "\n\n<｜DSx");
  ev.clear();
  parser.finish(ev);
  EXPECT_TRUE(ev.empty());
}

TEST(DsmlStream, HoldsPartialThinkClose) {
  DsmlStreamParser parser(counting_ids(true));
  std::vector<DsmlEvent> ev;
  parser.feed("step one</th", ev);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, DsmlEventKind::Reasoning);
  EXPECT_EQ(ev[0].text, "step one");
  EXPECT_TRUE(parser.in_reasoning());
  ev.clear();
  parser.feed("ink>Answer", ev);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, DsmlEventKind::Text);
  EXPECT_EQ(ev[0].text, "Answer");
  EXPECT_FALSE(parser.in_reasoning());
}

TEST(DsmlStream, LeadingThinkTagIsDropped) {
  auto events = run_whole("<think>r</think>c", counting_ids());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, DsmlEventKind::Reasoning);
  EXPECT_EQ(events[0].text, "r");
  EXPECT_EQ(events[1].text, "c");
  // A prefix of "<think>" that turns out to be something else is text.
  events = run_chunks("<thin", {2}, counting_ids());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, DsmlEventKind::Text);
  EXPECT_EQ(events[0].text, "<thin");
}

TEST(DsmlStream, StringValueStreamsBeforeItEnds) {
  DsmlStreamParser parser(counting_ids());
  std::vector<DsmlEvent> ev;
  parser.feed("<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"w\">\n<｜DSML｜parameter name=\"text\" string=\"true\">hello wor", ev);
  std::string args;
  for (const auto& e : ev)
    if (e.kind == DsmlEventKind::ToolCallArgs) args += e.text;
  EXPECT_EQ(args, "{\"text\": \"hello wor");
  EXPECT_EQ(parser.position(), DsmlPosition::StringBody);
  EXPECT_FALSE(parser.in_dsml_syntax());
}

// ---- holding calls until the block closes (the server's streaming mode)

DsmlParserOptions holding_ids(bool thinking = false) {
  DsmlParserOptions opt = counting_ids(thinking);
  opt.hold_calls_until_block_end = true;
  return opt;
}

bool has_call_event(const std::vector<DsmlEvent>& events) {
  return std::any_of(events.begin(), events.end(), [](const DsmlEvent& e) {
    return e.kind == DsmlEventKind::ToolCallStart || e.kind == DsmlEventKind::ToolCallArgs ||
           e.kind == DsmlEventKind::ToolCallEnd;
  });
}

TEST(DsmlHold, NoCallEventBeforeTheClosingTag) {
  const std::string text = "Sure." + kBashBlock;
  const std::string closing = "</｜DSML｜tool_calls>";
  DsmlStreamParser parser(holding_ids());
  std::vector<DsmlEvent> ev;
  // Every byte but the last of the closing tag: the invoke is complete, nothing is out yet.
  parser.feed(std::string_view(text).substr(0, text.size() - 1), ev);
  EXPECT_FALSE(has_call_event(ev)) << describe(ev);
  parser.feed(std::string_view(text).substr(text.size() - 1), ev);
  parser.finish(ev);
  // The same events as a streaming parser's, only later.
  EXPECT_EQ(describe(merged(ev)), describe(run_whole(text, counting_ids())));
  EXPECT_TRUE(text.ends_with(closing));
}

TEST(DsmlHold, CompleteInvokeThenInvalidTagEmitsNoCall) {
  // One whole invoke, then a tag that is not an invoke: the block is rejected as a whole.
  const std::string text = "Sure.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n"
                           "<｜DSML｜parameter name=\"command\" string=\"true\">touch x</｜DSML｜parameter>\n"
                           "</｜DSML｜invoke>\n<｜DSML｜bogus>\n</｜DSML｜tool_calls>";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    std::vector<DsmlEvent> events = run_chunks(text, {cut}, holding_ids());
    ASSERT_FALSE(has_call_event(events)) << cut << "\n" << describe(events);
    std::string shown;
    bool error = false;
    for (const auto& e : events) {
      if (e.kind == DsmlEventKind::Text) shown += e.text;
      error = error || e.kind == DsmlEventKind::Error;
    }
    EXPECT_TRUE(error) << cut;
    EXPECT_EQ(shown, text) << cut;
  }
  // Without holding, the first call has streamed before the error: what the server must avoid.
  EXPECT_TRUE(has_call_event(run_whole(text, counting_ids())));
  ParsedCompletion whole = parse_completion(text, counting_ids());
  EXPECT_TRUE(whole.error);
  EXPECT_TRUE(whole.tool_calls.empty());
}

TEST(DsmlHold, TruncatedBlockEmitsNoCall) {
  const std::string text = "On it." + kBashBlock;
  for (size_t cut = 0; cut < text.size(); ++cut) {
    EXPECT_FALSE(has_call_event(run_whole(text.substr(0, cut), holding_ids()))) << cut;
  }
}

TEST(DsmlHold, ChunkingDoesNotChangeEvents) {
  const std::string text = "<think>plan</think>Two calls." + std::string(
      "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"a\">\n"
      "<｜DSML｜parameter name=\"x\" string=\"false\">{\"k\": [1, 2]}</｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n<｜DSML｜invoke name=\"b\">\n"
      "<｜DSML｜parameter name=\"y\" string=\"true\">v</｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n</｜DSML｜tool_calls>");
  const std::string whole = describe(run_whole(text, holding_ids()));
  EXPECT_EQ(whole, describe(run_whole(text, counting_ids())));
  for (size_t cut = 1; cut < text.size(); ++cut) {
    ASSERT_EQ(describe(run_chunks(text, {cut}, holding_ids())), whole) << cut;
  }
}

// ---- sampler positions

TEST(DsmlPositionTest, TracksSyntaxAndPayload) {
  DsmlStreamParser parser(counting_ids());
  std::vector<DsmlEvent> ev;
  auto at = [&](std::string_view more) {
    parser.feed(more, ev);
    return parser.position();
  };
  EXPECT_EQ(at("Let me check"), DsmlPosition::Outside);
  EXPECT_EQ(at("\n\n<"), DsmlPosition::Outside);
  EXPECT_EQ(at("｜DSML｜"), DsmlPosition::Structural);  // the start tag is now committed
  EXPECT_EQ(at("tool_calls>\n<｜DSML｜invoke name=\"f\">\n"), DsmlPosition::Structural);
  EXPECT_EQ(at("<｜DSML｜parameter name=\"cmd\" string=\"true\">"), DsmlPosition::StringBody);
  EXPECT_EQ(at("ls <dir>"), DsmlPosition::StringBody);
  EXPECT_EQ(at("<"), DsmlPosition::StringBody);  // one byte of a possible closing tag
  EXPECT_EQ(at("/"), DsmlPosition::Structural);  // "</": let the closing tag complete greedily
  EXPECT_EQ(at("x"), DsmlPosition::StringBody);  // it was "</x", payload again
  EXPECT_EQ(at("</｜DSML｜parameter>"), DsmlPosition::Structural);
  EXPECT_EQ(at("\n<｜DSML｜parameter name=\"o\" string=\"false\">"), DsmlPosition::JsonStructural);
  EXPECT_EQ(at("{\"k\": "), DsmlPosition::JsonStructural);
  EXPECT_EQ(at("\"v \\\""), DsmlPosition::JsonString);  // escaped quote keeps the string open
  EXPECT_EQ(at("\""), DsmlPosition::JsonStructural);
  EXPECT_TRUE(parser.in_dsml_syntax());
  EXPECT_EQ(at("}</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>"), DsmlPosition::Outside);
  EXPECT_TRUE(parser.tool_calls_done());
  EXPECT_FALSE(parser.in_dsml_syntax());
}

TEST(DsmlPositionTest, TentativeBlockInReasoningIsSyntaxToo) {
  DsmlStreamParser parser(counting_ids(true));
  std::vector<DsmlEvent> ev;
  parser.feed("thinking\n\n<｜DSML｜tool_calls>\n", ev);
  EXPECT_EQ(parser.position(), DsmlPosition::Structural);
  EXPECT_TRUE(parser.in_reasoning());
}

// ---- chunking independence

std::vector<std::string> chunking_corpus() {
  std::string two_calls = render_dsml_block({{"a", R"({"x": "1 & 2 < 3", "y": [1, {"z": "w\"}"}]})"}, {"b", "{}"}});
  return {
      "<think>need a shell check</think>" + kBashBlock,
      "I will inspect the files.\n\n\n\n" + kBashBlock.substr(2),
      "<think>Maybe:" + kBashBlock + "\nno.</think>Final answer.",
      "reasoning only, forgot the close" + kBashBlock + "  \n",
      "reason</think>Visible text with < and </ and </think> and ｜DSML｜ and \n\n trailing\n\n",
      "</think>" + two_calls,
      "é😀 中文</think>内容" + two_calls + "ignored",
      "x\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>after",
      std::string("x").append(kBashBlock, 0, 60),
      "x\n\n<DSML｜tool_calls>\n<DSML｜invoke name=\"q\">\n<DSML｜parameter name=\"v\" string=\"false\">[1, \"]\"]</DSML｜parameter>\n</DSML｜invoke>\n</DSML｜tool_calls>",
      "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">x\xff\xe4\xb8y\xe4\xb8\xad</"
      "｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
      "<thin",
      "",
      "\n\n\n",
  };
}

TEST(DsmlChunking, EverySplitPointGivesTheSameEvents) {
  for (bool thinking : {false, true}) {
    for (const std::string& text : chunking_corpus()) {
      auto whole = run_whole(text, counting_ids(thinking));
      for (size_t cut = 1; cut < text.size(); ++cut) {
        auto split = run_chunks(text, {cut}, counting_ids(thinking));
        ASSERT_EQ(describe(split), describe(whole)) << "cut " << cut << " of " << nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      }
    }
  }
}

TEST(DsmlChunking, ByteByByteAndRandomMultiSplits) {
  std::mt19937 rng(ds4::testdata::test_seed(1234));
  for (bool thinking : {false, true}) {
    for (const std::string& text : chunking_corpus()) {
      auto whole = run_whole(text, counting_ids(thinking));
      std::vector<size_t> every;
      for (size_t i = 1; i < text.size(); ++i) every.push_back(i);
      ASSERT_EQ(describe(run_chunks(text, every, counting_ids(thinking))), describe(whole));
      for (int trial = 0; trial < 50; ++trial) {
        auto cuts = dsmltest::random_cuts(rng, text.size(), 1 + trial % 12);
        ASSERT_EQ(describe(run_chunks(text, cuts, counting_ids(thinking))), describe(whole));
      }
    }
  }
}

// ---- hostile input

TEST(DsmlHostile, HugeTagOrValueIsBoundedError) {
  DsmlParserOptions opt = counting_ids();
  opt.max_tag_bytes = 100;
  std::string text = "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"" + std::string(1000, 'a');
  ParsedCompletion p = parse_completion(text, opt);
  ASSERT_TRUE(p.error);
  EXPECT_EQ(p.content, text);

  opt.max_json_value_bytes = 1000;
  text = "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"v\" string=\"false\">" +
         std::string(5000, '1');
  p = parse_completion(text, opt);
  ASSERT_TRUE(p.error);
  EXPECT_EQ(p.content, text);
}

TEST(DsmlHostile, LongInputsStayLinear) {
  // Many near-markers and a whitespace flood; must finish quickly in any chunking.
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "<｜DSML｜tool_call \n\t";
  text += std::string(200000, ' ');
  text += "<think></thi";
  auto t0 = std::chrono::steady_clock::now();
  DsmlStreamParser parser(counting_ids());
  std::vector<DsmlEvent> ev;
  for (size_t i = 0; i < text.size(); i += 7) parser.feed(std::string_view(text).substr(i, 7), ev);
  parser.finish(ev);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 5.0);
  std::string all;
  for (const auto& e : ev) all += e.text;
  EXPECT_EQ(all, text);
}

}  // namespace
}  // namespace ds4::text
