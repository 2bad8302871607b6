// Fuzz-like test: random mutations of valid DSML completions. The parser must never crash or
// hang, must give the same events for any chunking, and every call it reports must carry a
// JSON object whose text equals its streamed fragments.
#include <chrono>
#include <map>
#include <random>

#include <gtest/gtest.h>

#include "dsml_test_util.h"
#include "text/chat.h"
#include "text/dsml.h"
#include "test_seed.h"

namespace ds4::text {
namespace {

using Json = nlohmann::ordered_json;

std::vector<std::string> seeds() {
  return {
      "<think>need a shell check</think>" +
          render_dsml_block({{"bash", R"({"command": "cd /tmp && ls -la | grep \"x\" > out.txt"})"}}),
      "Checking both." + render_dsml_block({{"get_weather", R"({"location": "Beijing"})"},
                                            {"get_weather", R"({"location": "Shanghai", "days": 1, "opts": {"unit": "C", "alerts": [true, null]}})"}}),
      "thinking without close" + render_dsml_block({{"now", "{}"}}),
      "</think>ok" + render_dsml_block({{"f", R"({"n": 1.5e300, "s": "é😀\n\t", "a": [[], {}, "", "\\"]})"}}),
      "plain answer with <b>tags</b> and </think> and ｜DSML｜ pieces",
  };
}

// Fragments a mutation may splice in, to reach deep parser states often.
const std::vector<std::string>& fragments() {
  static const std::vector<std::string> f = {
      "<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>", "<｜DSML｜invoke name=\"", "</｜DSML｜invoke>",
      "<｜DSML｜parameter name=\"", "\" string=\"false\">", "\" string=\"true\">", "</｜DSML｜parameter>",
      "<DSML｜", "</think>", "<think>", "\n\n", "\"", ">", "<", "｜", "\\", "{", "}", "[", "]", "\xff", "\xe4\xb8",
  };
  return f;
}

std::string mutate(std::string s, std::mt19937& rng) {
  std::uniform_int_distribution<int> op_dist(0, 5);
  int ops = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < ops; ++i) {
    size_t pos = s.empty() ? 0 : rng() % (s.size() + 1);
    switch (op_dist(rng)) {
      case 0:  // delete a short range
        if (!s.empty() && pos < s.size()) s.erase(pos, 1 + rng() % 8);
        break;
      case 1:  // insert a random byte
        s.insert(pos, 1, static_cast<char>(rng() & 0xFF));
        break;
      case 2:  // overwrite a byte
        if (pos < s.size()) s[pos] = static_cast<char>(rng() & 0xFF);
        break;
      case 3:  // splice a marker fragment
        s.insert(pos, fragments()[rng() % fragments().size()]);
        break;
      case 4:  // truncate
        s.resize(pos);
        break;
      case 5: {  // duplicate a range
        if (s.empty()) break;
        size_t from = rng() % s.size();
        size_t len = std::min<size_t>(1 + rng() % 40, s.size() - from);
        s.insert(pos, s.substr(from, len));
        break;
      }
    }
  }
  return s;
}

void check_event_invariants(const std::vector<DsmlEvent>& events, const std::string& input) {
  std::map<size_t, std::string> args;
  std::map<size_t, bool> open;
  for (const auto& ev : events) {
    switch (ev.kind) {
      case DsmlEventKind::ToolCallStart:
        ASSERT_FALSE(open[ev.index]) << input;
        open[ev.index] = true;
        break;
      case DsmlEventKind::ToolCallArgs:
        ASSERT_TRUE(open[ev.index]) << input;
        args[ev.index] += ev.text;
        break;
      case DsmlEventKind::ToolCallEnd: {
        ASSERT_TRUE(open[ev.index]) << input;
        open[ev.index] = false;
        ASSERT_EQ(args[ev.index], ev.text);
        ASSERT_TRUE(ev.arguments.is_object());
        Json reparsed = Json::parse(ev.text);  // throws (fails the test) if not JSON
        ASSERT_EQ(reparsed, ev.arguments);
        break;
      }
      default:
        break;
    }
  }
}

TEST(DsmlFuzz, RandomMutationsNeverCrashAndAreChunkingIndependent) {
  std::mt19937 rng(ds4::testdata::test_seed(20260221));
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> base = seeds();
  size_t with_calls = 0, with_errors = 0;
  for (int iter = 0; iter < 10000; ++iter) {
    std::string input = mutate(base[iter % base.size()], rng);
    bool thinking = (iter / 5) % 2 == 1;
    auto opt = dsmltest::counting_ids(thinking);
    DsmlStreamParser whole_parser(opt);
    std::vector<DsmlEvent> whole;
    whole_parser.feed(input, whole);
    whole_parser.finish(whole);
    check_event_invariants(whole, input);
    if (HasFatalFailure()) return;
    with_calls += !whole_parser.tool_calls().empty();
    with_errors += whole_parser.had_error();
    // Calls reported by the accessor are complete and consistent.
    for (const auto& call : whole_parser.tool_calls()) {
      ASSERT_EQ(Json::parse(call.arguments_json), call.arguments);
      ASSERT_NE(call.block_raw.find(call.invoke_raw), std::string::npos);
    }
    auto cuts = dsmltest::random_cuts(rng, input.size(), 1 + rng() % 16);
    ASSERT_EQ(dsmltest::describe(dsmltest::run_chunks(input, cuts, opt)), dsmltest::describe(dsmltest::merged(whole)))
        << nlohmann::json(input).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    // The whole-completion parse never throws and never reports calls next to an error.
    ParsedCompletion p = parse_completion(input, opt);
    if (p.error) {
      ASSERT_TRUE(p.tool_calls.empty());
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 60.0);
  // The mutations must keep reaching both outcomes, or the test has stopped testing.
  EXPECT_GT(with_calls, 500u);
  EXPECT_GT(with_errors, 500u);
}

}  // namespace
}  // namespace ds4::text
