// Server pieces without a model: request validation, prompt rendering, the worker's decode
// loop (stop sequences, tool calls, cancellation, prefix reuse) over a fake session.
#include <climits>
#include <gtest/gtest.h>

#include <thread>

#include "fake_session.h"
#include "real_tokenizer.h"
#include "server/openai.h"
#include "server/options.h"
#include "server/request_fields.h"
#include "server/worker.h"
#include "text/hf_tokenizer.h"

namespace ds4::server {
namespace {

using OJ = nlohmann::ordered_json;
using namespace std::chrono_literals;

const text::Tokenizer& tokenizer() { return test::real_tokenizer(); }

struct ServerWorker : ::testing::Test {
  ServerOptions options;
  Metrics metrics;
  FakeSession* session = nullptr;
  std::unique_ptr<Worker> worker;

  void SetUp() override {
    options.test_hooks = true;
    auto s = std::make_unique<FakeSession>(512, static_cast<int>(tokenizer().vocab_size()));
    session = s.get();
    worker = std::make_unique<Worker>(std::move(s), tokenizer(), metrics, false);
  }
  ServerContext ctx() { return ServerContext{options, tokenizer(), 512}; }

  GenerationSpec chat(const std::string& json) {
    RequestInfo info;
    return build_chat_spec(OJ::parse(json), ctx(), info);
  }
  std::vector<GenEvent> run(GenerationSpec spec) {
    auto job = worker->submit(std::move(spec));
    std::vector<GenEvent> all;
    while (all.empty() || (all.back().kind != GenEvent::Kind::Done &&
                           all.back().kind != GenEvent::Kind::Failed)) {
      job->wait_events(all, 1000ms);
    }
    return all;
  }
  static std::string text_of(const std::vector<GenEvent>& evs, GenEvent::Kind kind) {
    std::string s;
    for (const auto& e : evs) if (e.kind == kind) s += e.text;
    return s;
  }
};

TEST(JsonDepth, LimitsNesting) {
  EXPECT_TRUE(json_depth_ok(R"({"a":[[1]]})", 3));
  EXPECT_FALSE(json_depth_ok(R"({"a":[[1]]})", 2));
  EXPECT_TRUE(json_depth_ok(R"({"a":"[[[[[[["})", 2));  // brackets inside strings do not count
  EXPECT_TRUE(json_depth_ok(R"({"a":"\"[[[[["})", 1));
}

TEST(Segments, SuffixAfterOffset) {
  text::PromptSegments segs = {{"<｜User｜>", true}, {"hello world", false}, {"</think>", true}};
  auto rest = segments_after(segs, std::string("<｜User｜>").size() + 6);
  ASSERT_TRUE(rest);
  ASSERT_EQ(rest->size(), 2u);
  EXPECT_EQ((*rest)[0].text, "world");
  EXPECT_FALSE((*rest)[0].special);
  EXPECT_TRUE((*rest)[1].special);
  EXPECT_FALSE(segments_after(segs, 3));  // inside a control token
}

TEST_F(ServerWorker, ThinkingResolution) {
  auto off = chat(R"({"model":"deepseek-chat","messages":[{"role":"user","content":"x"}]})");
  EXPECT_FALSE(off.thinking);
  EXPECT_TRUE(off.rendered.ends_with("<｜Assistant｜></think>"));
  auto on = chat(R"({"model":"deepseek-chat","thinking":{"type":"enabled"},"messages":[{"content":"x"}]})");
  EXPECT_TRUE(on.thinking);
  EXPECT_TRUE(on.rendered.ends_with("<｜Assistant｜><think>"));
  EXPECT_FALSE(chat(R"({"reasoning_effort":"none","messages":[{"content":"x"}]})").thinking);
  EXPECT_TRUE(chat(R"({"messages":[{"content":"x"}]})").thinking);
  // Thinking mode ignores the client's sampling knobs; chat mode honours them.
  auto hot = chat(R"({"temperature":0.2,"top_k":5,"messages":[{"content":"x"}]})");
  EXPECT_FLOAT_EQ(hot.sampling.temperature, 1.0f);
  EXPECT_EQ(hot.sampling.top_k, 0);
  auto cold = chat(R"({"model":"deepseek-chat","temperature":0.2,"top_k":5,"messages":[{"content":"x"}]})");
  EXPECT_FLOAT_EQ(cold.sampling.temperature, 0.2f);
  EXPECT_EQ(cold.sampling.top_k, 5);
}

TEST_F(ServerWorker, ValidationErrors) {
  auto status_of = [&](const std::string& json) {
    try {
      chat(json);
      return 200;
    } catch (const ApiError& e) {
      return e.status;
    }
  };
  EXPECT_EQ(status_of(R"({"messages":[{"content":"x"}]})"), 200);
  EXPECT_EQ(status_of(R"({})"), 400);
  EXPECT_EQ(status_of(R"({"messages":[{"content":"x"}],"top_p":"a"})"), 400);
  EXPECT_EQ(status_of(R"({"messages":[{"content":"x"}],"stream":1})"), 400);
  EXPECT_EQ(status_of(R"({"messages":[{"content":"x"}],"top_logprobs":3})"), 400);
  EXPECT_EQ(status_of(R"({"messages":[{"content":"x"}],"tool_choice":"sometimes"})"), 400);
  EXPECT_EQ(status_of(R"({"messages":[{"role":"tool","content":{}}]})"), 400);
  try {
    RequestInfo info;
    OJ body = OJ::parse(R"({"messages":[{"content":""}]})");
    std::string big;
    for (int i = 0; i < 600; ++i) big += "lorem ipsum ";
    body["messages"][0]["content"] = big;
    build_chat_spec(body, ctx(), info);
    FAIL() << "expected context overflow";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.code, "context_length_exceeded");
    EXPECT_EQ(e.to_json()["error"]["n_ctx"], 512);
  }
}

// Message content as text: strings and the protocol's text parts joined; other parts, a
// part that is not an object and a text part without a string are 400s for the parameter.
TEST(RequestFields, TextPartsJoinedOthersRefused) {
  const OJ parts = OJ::parse(R"(["a", {"type":"input_text","text":"b"}, {"text":"c"}])");
  EXPECT_EQ(flatten_content(parts, "messages[0]"), "abc");  // untyped parts are text in chat
  EXPECT_EQ(flatten_content(OJ(), "m"), "");
  auto error = [](const std::function<void()>& f) -> std::pair<std::string, std::string> {
    try {
      f();
    } catch (const ApiError& e) {
      return {e.param, e.what()};
    }
    return {"", "no error"};
  };
  // Responses: an untyped part is not text; the error names "input".
  const auto untyped = error([&] { join_text_parts(parts, "input[0]", "input", {"input_text", "text"}, ""); });
  EXPECT_EQ(untyped.first, "input");
  EXPECT_NE(untyped.second.find("content part type '' is not supported"), std::string::npos) << untyped.second;
  const auto image = error([] { flatten_content(OJ::parse(R"([{"type":"image_url"}])"), "messages[1]"); });
  EXPECT_EQ(image.first, "messages");
  EXPECT_NE(image.second.find("messages[1]: content part type 'image_url'"), std::string::npos) << image.second;
  EXPECT_EQ(error([] { flatten_content(OJ::parse("[3]"), "m"); }).first, "messages");
  EXPECT_EQ(error([] { flatten_content(OJ::parse(R"([{"type":"text","text":1}])"), "m"); }).first, "messages");
  EXPECT_EQ(error([] { flatten_content(OJ::parse("{}"), "m"); }).first, "messages");
  // Tools: an array of objects, each checked where it stands.
  EXPECT_EQ(validate_tools(OJ::parse(R"([{"function":{"name":"f"}}])")).dump(),
            R"([{"type":"function","function":{"name":"f"}}])");
  EXPECT_NE(error([] { validate_tools(OJ::parse(R"([{"function":{"name":"f"}}, 1])")); }).second.find("tools[1] must be an object"),
            std::string::npos);
  EXPECT_EQ(error([] { validate_tools(OJ::parse("{}")); }).first, "tools");
}

TEST_F(ServerWorker, ForcedOutputStopAndUsage) {
  auto spec = chat(R"({"model":"deepseek-chat","messages":[{"content":"hi"}],
                       "ds4_test_output":"alpha beta gamma delta","stop":["gam"]})");
  size_t prompt = spec.tokens.size();
  auto evs = run(std::move(spec));
  EXPECT_EQ(text_of(evs, GenEvent::Kind::Content), "alpha beta ");
  ASSERT_EQ(evs.back().kind, GenEvent::Kind::Done);
  EXPECT_EQ(evs.back().finish_reason, "stop");
  EXPECT_EQ(evs.back().usage.prompt_tokens, static_cast<int64_t>(prompt));
  EXPECT_EQ(evs.back().usage.cached_tokens, 0);
}

TEST_F(ServerWorker, ToolCallAndPrefixReuse) {
  const std::string call =
      "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" "
      "string=\"true\">cd /tmp && ls 2>/dev/null</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  OJ body = OJ::parse(R"({"model":"deepseek-chat","messages":[{"content":"go"}],
      "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]})");
  body["ds4_test_output"] = "Calling." + call + " trailing junk";
  RequestInfo info;
  auto spec = build_chat_spec(body, ctx(), info);
  auto evs = run(std::move(spec));
  ASSERT_EQ(evs.back().kind, GenEvent::Kind::Done);
  const GenEvent& done = evs.back();
  EXPECT_EQ(done.finish_reason, "tool_calls");
  ASSERT_EQ(done.tool_calls.size(), 1u);
  EXPECT_EQ(done.tool_calls[0].name, "f");
  EXPECT_EQ(OJ::parse(done.tool_calls[0].arguments), OJ::parse(R"({"a":"cd /tmp && ls 2>/dev/null"})"));
  EXPECT_EQ(text_of(evs, GenEvent::Kind::Content), "Calling.");
  std::string args = text_of(evs, GenEvent::Kind::ToolCallArgs);
  EXPECT_EQ(args, done.tool_calls[0].arguments);
  const int64_t live = done.usage.prompt_tokens + done.usage.completion_tokens;

  // The follow-up extends the live session byte for byte: all of it is reused.
  OJ next = body;
  next.erase("ds4_test_output");
  next["messages"].push_back({{"role", "assistant"}, {"content", "Calling."},
                              {"tool_calls", {{{"id", done.tool_calls[0].id}, {"type", "function"},
                                               {"function", {{"name", "f"}, {"arguments", args}}}}}}});
  next["messages"].push_back({{"role", "tool"}, {"tool_call_id", done.tool_calls[0].id}, {"content", "ok"}});
  next["ds4_test_output"] = "Done.";
  auto evs2 = run(build_chat_spec(next, ctx(), info));
  ASSERT_EQ(evs2.back().kind, GenEvent::Kind::Done);
  EXPECT_EQ(evs2.back().usage.cached_tokens, live);
  EXPECT_EQ(text_of(evs2, GenEvent::Kind::Content), "Done.");
}

TEST_F(ServerWorker, ExactReplayOfSampledDsmlSurvivesReorderedArguments) {
  // Sampled with an unusual spacing and parameter order; a client sends the arguments back
  // as JSON with the keys swapped. Canonical rendering would change the bytes; the replay
  // memory restores exactly what the session holds.
  ToolReplay replay(100);
  worker->set_tool_replay(&replay);
  const std::string block =
      "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"b\" "
      "string=\"false\">[1,  2]</｜DSML｜parameter>\n<｜DSML｜parameter name=\"a\" "
      "string=\"true\">x</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  OJ body = OJ::parse(R"({"model":"deepseek-chat","messages":[{"content":"go"}],
      "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]})");
  body["ds4_test_output"] = block;
  RequestInfo info;
  ServerContext c{options, tokenizer(), 512, &replay};
  auto evs = run(build_chat_spec(body, c, info));
  const GenEvent& done = evs.back();
  ASSERT_EQ(done.finish_reason, "tool_calls");
  ASSERT_EQ(done.tool_calls.size(), 1u);
  const std::string id = done.tool_calls[0].id;
  EXPECT_EQ(replay.lookup(id), block);  // stored before the final event went out
  const int64_t live = done.usage.prompt_tokens + done.usage.completion_tokens;

  OJ next = body;
  next["messages"].push_back({{"role", "assistant"}, {"content", ""},
                              {"tool_calls", {{{"id", id}, {"type", "function"},
                                               {"function", {{"name", "f"}, {"arguments", R"({"a":"x","b":[1,2]})"}}}}}}});
  next["messages"].push_back({{"role", "tool"}, {"tool_call_id", id}, {"content", "ok"}});
  next["ds4_test_output"] = "Done.";
  auto replayed = build_chat_spec(next, c, info);
  EXPECT_NE(replayed.rendered.find(block + "<｜end▁of▁sentence｜>"), std::string::npos);
  auto evs2 = run(std::move(replayed));
  EXPECT_EQ(evs2.back().usage.cached_tokens, live);

  // Without the mapping the call renders canonically (client order, minified JSON); the
  // session then reuses only the common prefix and still answers.
  ServerContext plain{options, tokenizer(), 512, nullptr};
  auto canonical = build_chat_spec(next, plain, info);
  EXPECT_EQ(canonical.rendered.find(block), std::string::npos);
  EXPECT_NE(canonical.rendered.find("<｜DSML｜parameter name=\"a\" string=\"true\">x</｜DSML｜parameter>\n"
                                    "<｜DSML｜parameter name=\"b\" string=\"false\">[1, 2]</｜DSML｜parameter>"),
            std::string::npos);
  auto evs3 = run(std::move(canonical));
  ASSERT_EQ(evs3.back().kind, GenEvent::Kind::Done);
  EXPECT_EQ(text_of(evs3, GenEvent::Kind::Content), "Done.");
  EXPECT_GT(evs3.back().usage.cached_tokens, 0);
  EXPECT_LT(evs3.back().usage.cached_tokens, live);
  worker->set_tool_replay(nullptr);
}

TEST_F(ServerWorker, ThinkingTurnDroppedFromHistoryStillHitsLiveCache) {
  // Without tools the renderer drops the reasoning of earlier turns ("</think>" + answer),
  // while the live state holds "<think>" + reasoning + "</think>" + answer: the remembered
  // visible transcript bridges the two, so every live token is kept.
  auto first = chat(R"({"messages":[{"content":"q1"}],"ds4_test_output":"Plan it.</think>Answer one."})");
  auto evs = run(std::move(first));
  ASSERT_EQ(evs.back().finish_reason, "stop");
  const auto& u = evs.back().usage;
  const int64_t live = u.prompt_tokens + u.completion_tokens;
  auto second = chat(R"({"messages":[{"content":"q1"},
      {"role":"assistant","content":"Answer one.","reasoning_content":"Plan it."},
      {"content":"q2"}],"ds4_test_output":"More.</think>Answer two."})");
  EXPECT_NE(second.rendered.find("<｜Assistant｜></think>Answer one.<｜end▁of▁sentence｜><｜User｜>q2"),
            std::string::npos);
  auto evs2 = run(std::move(second));
  EXPECT_EQ(evs2.back().usage.cached_tokens, live);
  EXPECT_EQ(text_of(evs2, GenEvent::Kind::Content), "Answer two.");

  // A different history is no match: only the common prefix is reused.
  auto other = chat(R"({"messages":[{"content":"q1"},
      {"role":"assistant","content":"Another answer."},{"content":"q2"}],"ds4_test_output":"x"})");
  auto evs3 = run(std::move(other));
  EXPECT_LT(evs3.back().usage.cached_tokens, evs2.back().usage.prompt_tokens);
}

TEST_F(ServerWorker, LengthAndCancellation) {
  auto spec = chat(R"({"model":"deepseek-chat","messages":[{"content":"hi"}],"max_tokens":5})");
  auto evs = run(std::move(spec));
  EXPECT_EQ(evs.back().finish_reason, "length");
  EXPECT_EQ(evs.back().usage.completion_tokens, 5);

  auto slow = chat(R"({"model":"deepseek-chat","messages":[{"content":"hi"}],"max_tokens":1000,
                       "ds4_test_delay_ms":20})");
  auto job = worker->submit(std::move(slow));
  std::this_thread::sleep_for(100ms);
  job->cancelled = true;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<GenEvent> all;
  while (all.empty() || (all.back().kind != GenEvent::Kind::Done &&
                         all.back().kind != GenEvent::Kind::Failed)) {
    job->wait_events(all, 1000ms);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(all.back().finish_reason, "cancelled");
  EXPECT_LT(all.back().usage.completion_tokens, 1000);
  EXPECT_EQ(metrics.cancelled_jobs.load(), 1u);
}

TEST_F(ServerWorker, QueueDepthIsExactWhenTheAnswerArrives) {
  // The worker evaluates the closing token after the final event; the gauge must not wait
  // for that (a client reading /metrics right after its answer sees 0).
  for (int i = 0; i < 20; ++i) {
    auto evs = run(chat(R"({"model":"deepseek-chat","messages":[{"content":"hi"}],
                            "ds4_test_output":"ok"})"));
    ASSERT_EQ(evs.back().finish_reason, "stop");
    EXPECT_EQ(metrics.queue_depth.load(), 0);
  }
}

TEST_F(ServerWorker, StopAnswersQueuedJobs503AndCutsTheRunningOneShort) {
  auto slow = chat(R"({"model":"deepseek-chat","messages":[{"content":"hi"}],"max_tokens":1000,
                       "ds4_test_delay_ms":20})");
  auto running = worker->submit(slow);
  auto queued1 = worker->submit(slow);
  auto queued2 = worker->submit(slow);
  std::this_thread::sleep_for(100ms);
  worker->stop();
  auto last = [](Job& job) {
    std::vector<GenEvent> all;
    while (all.empty() || (all.back().kind != GenEvent::Kind::Done &&
                           all.back().kind != GenEvent::Kind::Failed)) {
      job.wait_events(all, 1000ms);
    }
    return all.back();
  };
  const GenEvent r = last(*running);
  EXPECT_EQ(r.kind, GenEvent::Kind::Done);
  EXPECT_EQ(r.finish_reason, "error");
  for (auto* q : {queued1.get(), queued2.get()}) {
    const GenEvent e = last(*q);
    ASSERT_EQ(e.kind, GenEvent::Kind::Failed);
    EXPECT_EQ(e.error->status, 503);
    EXPECT_GT(e.error->retry_after_s, 0);
  }
  EXPECT_EQ(metrics.queue_depth.load(), 0);
  try {
    worker->submit(slow);
    ADD_FAILURE() << "submit after stop";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 503);
  }
}

TEST(ServerOptionsTest, HybridMoeFlags) {
  ServerOptions o;
  ASSERT_FALSE(parse_server_args({}, o).done());
  EXPECT_EQ(o.cpu_moe_layers, 0);
  ASSERT_FALSE(parse_server_args({"--cpu-moe"}, o).done());
  EXPECT_EQ(o.cpu_moe_layers, INT_MAX);
  ASSERT_FALSE(parse_server_args({"--n-cpu-moe", "4"}, o).done());
  EXPECT_EQ(o.cpu_moe_layers, 4);
  EXPECT_EQ(parse_server_args({"--n-cpu-moe", "-1"}, o).exit_code, 2);
}

TEST(ServerOptionsTest, ConnectionFlags) {
  ServerOptions o;
  ASSERT_FALSE(parse_server_args({"--max-connections", "100", "--max-client-connections", "0",
                                  "--header-timeout", "3", "--keep-alive-timeout", "4",
                                  "--io-timeout", "5", "--listen-backlog", "1024"},
                                 o)
                   .done());
  EXPECT_EQ(o.max_connections, 100);
  EXPECT_EQ(o.max_client_connections, 0);
  EXPECT_EQ(o.header_timeout_s, 3);
  EXPECT_EQ(o.keep_alive_timeout_s, 4);
  EXPECT_EQ(o.io_timeout_s, 5);
  EXPECT_EQ(o.listen_backlog, 1024);
  ASSERT_FALSE(parse_server_args({"--http-threads", "7"}, o).done());
  EXPECT_EQ(o.max_connections, 7);
  EXPECT_EQ(parse_server_args({"--header-timeout", "0"}, o).exit_code, 2);
  EXPECT_EQ(parse_server_args({"--max-connections", "5000"}, o).exit_code, 2);
  const std::string usage = server_usage();
  for (const char* flag : {"--max-connections", "--max-client-connections", "--header-timeout",
                           "--keep-alive-timeout", "--io-timeout", "--listen-backlog"}) {
    EXPECT_NE(usage.find(flag), std::string::npos) << flag;
  }
}

TEST(ServerOptionsTest, EveryKindOfFlag) {
  ServerOptions o;
  ASSERT_FALSE(parse_server_args({}, o).done());
  EXPECT_EQ(o.model_path, "ds4flash.gguf");
  EXPECT_EQ(o.parallel, 1);
  EXPECT_EQ(o.port, 8000);
  const args::Outcome r = parse_server_args(
      {"-m", "m.gguf", "-np", "3", "--mtp-draft", "2", "-b", "cpu", "--device", "1", "--host", "localhost",
       "--port", "0", "--no-tool-replay", "--tool-replay-max", "9", "--kv-disk-dir", "/tmp/x",
       "--kv-cache-min-tokens", "600", "--kv-cache-cold-max-tokens", "700", "--cors", "--quiet"},
      o);
  ASSERT_FALSE(r.done()) << r.err;
  EXPECT_EQ(o.model_path, "m.gguf");
  EXPECT_EQ(o.parallel, 3);
  EXPECT_EQ(o.mtp_draft, 2);
  EXPECT_EQ(o.backend, ds4::Backend::Cpu);
  EXPECT_EQ(o.device, 1);
  EXPECT_EQ(o.host, "127.0.0.1");
  EXPECT_EQ(o.port, 0);
  EXPECT_TRUE(o.disable_exact_dsml_tool_replay);
  EXPECT_EQ(o.tool_memory_max_ids, 9u);
  EXPECT_EQ(o.kv.dir, "/tmp/x");
  EXPECT_EQ(o.kv.min_tokens, 600);
  EXPECT_EQ(o.kv.cold_max_tokens, 700);
  EXPECT_TRUE(o.cors);
  EXPECT_TRUE(o.quiet);
  EXPECT_EQ(parse_server_args({"--parallel", "257"}, o).exit_code, 2);
  EXPECT_EQ(parse_server_args({"--mtp-draft", "5"}, o).exit_code, 2);
  const args::Outcome bad = parse_server_args({"--backend", "metal"}, o);
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("unknown backend 'metal'"), std::string::npos) << bad.err;
  // The disk cache's own consistency check: cold saves shorter than the minimum.
  EXPECT_EQ(parse_server_args({"--kv-cache-min-tokens", "600", "--kv-cache-cold-max-tokens", "500"}, o).exit_code, 2);
  const args::Outcome help = parse_server_args({"--help"}, o);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_EQ(help.out, server_usage());
  EXPECT_NE(help.out.find("  -np, --parallel N"), std::string::npos);
}

TEST_F(ServerWorker, ChatFormatterStreamsAndCollects) {
  RequestInfo info;
  info.include_usage = true;
  ChatFormatter f("chatcmpl-1", "m", 1, info);
  std::vector<nlohmann::ordered_json> out;
  GenEvent started(GenEvent::Kind::Started);
  f.stream_event(started, out);
  GenEvent r(GenEvent::Kind::Reasoning);
  r.text = "think";
  f.stream_event(r, out);
  GenEvent done(GenEvent::Kind::Done);
  done.finish_reason = "tool_calls";
  done.tool_calls.push_back({"call_1", "f", "{\"a\":1}"});
  done.usage = {10, 4, 3};
  f.stream_event(done, out);
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(out[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(out[1]["choices"][0]["delta"]["reasoning_content"], "think");
  // A call never streamed live goes out whole before the finish chunk.
  EXPECT_EQ(out[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
  EXPECT_EQ(out[3]["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_TRUE(out[4]["choices"].empty());
  EXPECT_EQ(out[4]["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
  EXPECT_EQ(out[4]["usage"]["prompt_tokens_details"]["cache_write_tokens"], 6);
  EXPECT_EQ(out[4]["usage"]["total_tokens"], 13);
}

}  // namespace
}  // namespace ds4::server

namespace ds4::server {
namespace {

TEST_F(ServerWorker, TextPrefixReuseAcrossBpeSplits) {
  // The "model" spells its answer in pieces a fresh tokenization merges; the next prompt
  // carries the same bytes, so only the new suffix is tokenized and every live token is kept.
  const auto& tok = tokenizer();
  std::vector<int> pieces = tok.encode("Hel");
  for (int id : tok.encode("lo")) pieces.push_back(id);
  for (int id : tok.encode(" world")) pieces.push_back(id);
  ASSERT_NE(tok.encode("Hello world"), std::vector<int>(pieces.begin(), pieces.end()));
  OJ body = OJ::parse(R"({"model":"deepseek-chat","messages":[{"content":"greet"}]})");
  body["ds4_test_output_tokens"] = pieces;
  RequestInfo info;
  auto evs = run(build_chat_spec(body, ctx(), info));
  ASSERT_EQ(evs.back().kind, GenEvent::Kind::Done);
  EXPECT_EQ(text_of(evs, GenEvent::Kind::Content), "Hello world");
  const auto& u = evs.back().usage;
  const int64_t live = u.prompt_tokens + u.completion_tokens;  // prompt, pieces and EOS

  OJ next = OJ::parse(R"({"model":"deepseek-chat","messages":[{"content":"greet"},
      {"role":"assistant","content":"Hello world"},{"content":"again"}],"ds4_test_output":"ok"})");
  auto spec = build_chat_spec(next, ctx(), info);
  auto fresh = spec.tokens;
  auto evs2 = run(std::move(spec));
  ASSERT_EQ(evs2.back().kind, GenEvent::Kind::Done);
  EXPECT_EQ(evs2.back().usage.cached_tokens, live);
  // The prompt as synced keeps the sampled split, so it is longer than a fresh tokenization.
  EXPECT_EQ(evs2.back().usage.prompt_tokens,
            static_cast<int64_t>(fresh.size() + pieces.size() - tok.encode("Hello world").size()));
}

}  // namespace
}  // namespace ds4::server
