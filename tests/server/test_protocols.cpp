// Anthropic Messages and OpenAI Responses without a model: request -> prompt conversion and
// the streaming event grammar of each protocol (docs/server.md).
#include <gtest/gtest.h>

#include "real_tokenizer.h"
#include "server/anthropic.h"
#include "server/responses.h"
#include "text/hf_tokenizer.h"

namespace ds4::server {
namespace {

using OJ = nlohmann::ordered_json;

const text::Tokenizer& tokenizer() { return test::real_tokenizer(); }

struct Protocols : ::testing::Test {
  ServerOptions options;
  ToolReplay replay{100};
  ServerContext ctx() { return ServerContext{options, tokenizer(), 4096, &replay}; }
  GenerationSpec messages(const OJ& body) {
    RequestInfo info;
    return build_messages_spec(body, ctx(), info);
  }
  GenerationSpec responses(const OJ& body, ResponsesRequest* rr_out = nullptr) {
    RequestInfo info;
    ResponsesRequest rr;
    auto spec = build_responses_spec(body, ctx(), info, rr);
    if (rr_out) *rr_out = rr;
    return spec;
  }
};

const std::string kBos = "<｜begin▁of▁sentence｜>";
const std::string kUser = "<｜User｜>";
const std::string kAssistant = "<｜Assistant｜>";
const std::string kEos = "<｜end▁of▁sentence｜>";

TEST_F(Protocols, AnthropicSystemBlocksDropBillingLine) {
  auto spec = messages(OJ::parse(R"({"model":"claude","max_tokens":-5,
      "system":[{"type":"text","text":"x-anthropic-billing-header: cc=1"},{"type":"text","text":"A."},"B."],
      "thinking":{"type":"disabled"},"stop_sequences":["", "END"],
      "messages":[{"role":"user","content":"hi"}]})"));
  EXPECT_EQ(spec.rendered, kBos + "A.\nB." + kUser + "hi" + kAssistant + "</think>");
  EXPECT_EQ(spec.max_tokens, 0);
  EXPECT_EQ(spec.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(spec.tool_id_prefix, "toolu_");
  EXPECT_FALSE(spec.thinking);
}

TEST_F(Protocols, AnthropicThinkingModes) {
  auto with = [&](const char* extra) {
    OJ body = OJ::parse(R"({"messages":[{"role":"user","content":"x"}]})");
    body.update(OJ::parse(extra));
    return messages(body).thinking;
  };
  EXPECT_TRUE(with("{}"));  // default: thinking on
  EXPECT_TRUE(with(R"({"thinking":{"type":"adaptive","display":"omitted"}})"));
  EXPECT_TRUE(with(R"({"model":"deepseek-chat","thinking":{"type":"enabled","budget_tokens":100}})"));
  EXPECT_FALSE(with(R"({"thinking":{"type":"disabled"}})"));
  EXPECT_FALSE(with(R"({"model":"deepseek-chat"})"));
  EXPECT_FALSE(with(R"({"output_config":{"effort":"none"}})"));
  EXPECT_THROW(with(R"({"thinking":{"type":"maybe"}})"), ApiError);
  EXPECT_THROW(with(R"({"output_config":{"effort":"huge"}})"), ApiError);
}

TEST_F(Protocols, AnthropicBlocksRenderInPlace) {
  // Calls become DSML, results and the text after them share one user turn.
  auto spec = messages(OJ::parse(R"({"thinking":{"type":"disabled"},
      "tools":[{"name":"f","input_schema":{"type":"object"}},{"type":"web_search_20250305","name":"web_search"}],
      "messages":[{"role":"user","content":"go"},
        {"role":"assistant","content":[{"type":"text","text":"ok"},{"type":"tool_use","id":"toolu_1","name":"f","input":{"q":"a"}}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"R"}]},
                                  {"type":"text","text":"next"}]}]})"));
  EXPECT_TRUE(spec.parse_tools);
  EXPECT_EQ(spec.rendered.find("web_search"), std::string::npos);  // server tools are left out
  const std::string tail =
      kAssistant + "</think>ok\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"q\" "
      "string=\"true\">a</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>" + kEos + kUser +
      "<tool_result>R</tool_result>\n\nnext" + kAssistant + "</think>";
  ASSERT_GE(spec.rendered.size(), tail.size());
  EXPECT_EQ(spec.rendered.substr(spec.rendered.size() - tail.size()), tail);

  // With the id remembered, the sampled bytes are rendered instead.
  replay.insert("toolu_1", "\n\n<｜DSML｜tool_calls>SAMPLED</｜DSML｜tool_calls>");
  auto replayed = messages(OJ::parse(R"({"thinking":{"type":"disabled"},"tools":[{"name":"f","input_schema":{}}],
      "messages":[{"role":"user","content":"go"},
        {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{"q":"a"}}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"R"}]}]})"));
  EXPECT_NE(replayed.rendered.find("</think>\n\n<｜DSML｜tool_calls>SAMPLED</｜DSML｜tool_calls>" + kEos),
            std::string::npos);

  // tool_choice none hides the tools.
  auto hidden = messages(OJ::parse(R"({"tool_choice":{"type":"none"},"tools":[{"name":"f","input_schema":{}}],
      "messages":[{"role":"user","content":"go"}]})"));
  EXPECT_FALSE(hidden.parse_tools);
  EXPECT_EQ(hidden.rendered.find("## Tools"), std::string::npos);
}

std::vector<std::string> names(const std::vector<NamedEvent>& evs) {
  std::vector<std::string> out;
  for (const auto& [name, data] : evs) {
    EXPECT_EQ(data["type"], name);
    out.push_back(name);
  }
  return out;
}

GenEvent ev(GenEvent::Kind k, std::string text = {}) {
  GenEvent e(k);
  e.text = std::move(text);
  return e;
}

TEST_F(Protocols, AnthropicStreamGrammar) {
  AnthropicFormatter f("msg_1", "m");
  std::vector<NamedEvent> out;
  GenEvent started(GenEvent::Kind::Started);
  started.usage = {10, 4, 0};
  f.stream_event(started, out);
  f.stream_event(ev(GenEvent::Kind::Reasoning, "r"), out);
  f.stream_event(ev(GenEvent::Kind::Content, "t"), out);
  GenEvent call(GenEvent::Kind::ToolCallStart);
  call.id = "toolu_x";
  call.name = "f";
  f.stream_event(call, out);
  f.stream_event(ev(GenEvent::Kind::ToolCallArgs, "{\"a\":"), out);
  f.stream_event(ev(GenEvent::Kind::ToolCallArgs, "1}"), out);
  GenEvent done(GenEvent::Kind::Done);
  done.finish_reason = "tool_calls";
  done.usage = {10, 4, 7};
  done.tool_calls = {{"toolu_x", "f", "{\"a\":1}"}, {"toolu_y", "g", "{}"}};  // g never streamed
  f.stream_event(done, out);
  EXPECT_EQ(names(out), (std::vector<std::string>{
                            "message_start", "content_block_start", "content_block_delta",
                            "content_block_delta", "content_block_stop", "content_block_start",
                            "content_block_delta", "content_block_stop", "content_block_start",
                            "content_block_delta", "content_block_delta", "content_block_stop",
                            "content_block_start", "content_block_delta", "content_block_stop",
                            "message_delta", "message_stop"}));
  EXPECT_EQ(out[0].second["message"]["usage"], OJ::parse(R"({"input_tokens":0,"output_tokens":0,
      "cache_read_input_tokens":4,"cache_creation_input_tokens":6})"));
  EXPECT_EQ(out[3].second["delta"], OJ::parse(R"({"type":"signature_delta","signature":"msg_1"})"));
  EXPECT_EQ(out[8].second["index"], 2);
  EXPECT_EQ(out[8].second["content_block"], OJ::parse(R"({"type":"tool_use","id":"toolu_x","name":"f","input":{}})"));
  EXPECT_EQ(out[12].second["index"], 3);
  EXPECT_EQ(out[13].second["delta"]["partial_json"], "{}");
  EXPECT_EQ(out[15].second["delta"]["stop_reason"], "tool_use");
  EXPECT_EQ(out[15].second["usage"]["output_tokens"], 7);

  // Thinking only: an empty text block follows; stop sequence reported.
  AnthropicFormatter g("msg_2", "m");
  out.clear();
  g.stream_event(started, out);
  g.stream_event(ev(GenEvent::Kind::Reasoning, "r"), out);
  GenEvent stop(GenEvent::Kind::Done);
  stop.finish_reason = "stop";
  stop.stop_sequence = "##";
  g.stream_event(stop, out);
  EXPECT_EQ(out[5].second["content_block"], OJ::parse(R"({"type":"text","text":""})"));
  EXPECT_EQ(out[7].second["delta"], OJ::parse(R"({"stop_reason":"stop_sequence","stop_sequence":"##"})"));
  g.collect(ev(GenEvent::Kind::Reasoning, "r"));
  g.collect(stop);
  EXPECT_EQ(g.final_response()["content"],
            OJ::parse(R"([{"type":"thinking","thinking":"r","signature":"msg_2"},{"type":"text","text":""}])"));
}

TEST_F(Protocols, InterruptedGenerationsEndAsErrors) {
  GenEvent started(GenEvent::Kind::Started);
  GenEvent cut(GenEvent::Kind::Done);
  cut.finish_reason = "error";
  AnthropicFormatter a("msg_1", "m");
  std::vector<NamedEvent> out;
  a.stream_event(started, out);
  a.stream_event(ev(GenEvent::Kind::Content, "partial"), out);
  a.stream_event(cut, out);
  EXPECT_EQ(out.back().first, "error");
  EXPECT_EQ(out.back().second["error"]["type"], "overloaded_error");
  for (const auto& [name, data] : out) EXPECT_NE(name, "message_stop");

  ResponsesRequest rr;
  rr.id = "resp_1";
  ResponsesFormatter r(rr, 0);
  std::vector<OJ> events;
  r.stream_event(started, events);
  r.stream_event(ev(GenEvent::Kind::Content, "partial"), events);
  r.stream_event(cut, events);
  EXPECT_EQ(events.back()["type"], "response.failed");
  EXPECT_EQ(events.back()["response"]["status"], "failed");
  EXPECT_EQ(events.back()["response"]["error"]["code"], "server_error");
  EXPECT_EQ(events.back()["response"]["output"][0]["status"], "incomplete");
  // A failure before any output (prefill error after the headers) still opens the stream.
  ResponsesFormatter early(rr, 0);
  events.clear();
  early.stream_failure(ApiError(500, "prefill failed: boom", "server_error"), events);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["type"], "response.created");
  EXPECT_EQ(events[1]["type"], "response.failed");
  EXPECT_EQ(events[1]["response"]["error"]["message"], "prefill failed: boom");
  EXPECT_EQ(events[1]["sequence_number"], 1);
}

TEST_F(Protocols, ResponsesInputItems) {
  ResponsesRequest rr;
  auto spec = responses(OJ::parse(R"({"model":"codex","instructions":"Sys.","reasoning":{"effort":"high","summary":"auto"},
      "tools":[{"type":"function","name":"f","parameters":{"type":"object"}},{"type":"web_search"},
               {"type":"custom","name":"apply_patch"},
               {"type":"namespace","name":"ns__","tools":[{"type":"function","name":"g"}]}],
      "input":[{"role":"user","content":"go"},
               {"type":"reasoning","summary":[{"type":"summary_text","text":"think"}]},
               {"type":"function_call","call_id":"call_1","name":"f","arguments":"{\"q\":1}"},
               {"type":"function_call_output","call_id":"call_1","output":"R"},
               {"type":"compaction","encrypted_content":"zzz"}]})"), &rr);
  EXPECT_TRUE(rr.summary);
  EXPECT_TRUE(rr.custom_tools.count("apply_patch"));
  ASSERT_TRUE(rr.namespaced.count("ns__g"));
  EXPECT_EQ(rr.namespaced["ns__g"].second, "g");
  EXPECT_EQ(spec.rendered.find("web_search"), std::string::npos);
  EXPECT_NE(spec.rendered.find("\"name\": \"ns__g\""), std::string::npos);
  EXPECT_TRUE(spec.rendered.starts_with(kBos + "Sys.\n\n## Tools"));
  // Tools declared: the replayed reasoning stays with its call.
  const std::string tail =
      kUser + "go" + kAssistant + "<think>think</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n"
      "<｜DSML｜parameter name=\"q\" string=\"false\">1</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>" +
      kEos + kUser + "<tool_result>R</tool_result>" + kAssistant + "<think>";
  ASSERT_GE(spec.rendered.size(), tail.size());
  EXPECT_EQ(spec.rendered.substr(spec.rendered.size() - tail.size()), tail);
  EXPECT_EQ(spec.tool_id_prefix, "call_");

  auto rejected = [&](const char* body) {
    try {
      responses(OJ::parse(body));
    } catch (const ApiError& e) {
      return e.status == 400 ? std::string(e.what()) : std::string("status");
    }
    return std::string("accepted");
  };
  EXPECT_EQ(rejected(R"({"input":"x","previous_response_id":"resp_1"})"),
            "previous_response_id is not supported; replay full input instead");
  EXPECT_EQ(rejected(R"({"input":"x","tool_choice":"required"})"), "tool_choice=required not supported");
  EXPECT_EQ(rejected(R"({"input":"x","tool_choice":{"type":"function","name":"f"}})"), "forced tool_choice not supported");
  EXPECT_EQ(rejected(R"({"model":"x"})"), "missing input");
  EXPECT_NE(rejected(R"({"input":[{"type":"message","role":"user","content":"x","status":"incomplete"}]})"), "accepted");
}

TEST_F(Protocols, ResponsesStreamGrammar) {
  ResponsesRequest rr;
  rr.id = "resp_1";
  rr.model = "m";
  rr.summary = true;
  ResponsesFormatter f(rr, 0);
  std::vector<OJ> out;
  GenEvent started(GenEvent::Kind::Started);
  f.stream_event(started, out);
  f.stream_event(ev(GenEvent::Kind::Reasoning, "r"), out);
  f.stream_event(ev(GenEvent::Kind::Content, "t"), out);
  GenEvent call(GenEvent::Kind::ToolCallStart);
  call.id = "call_x";
  call.name = "f";
  f.stream_event(call, out);
  f.stream_event(ev(GenEvent::Kind::ToolCallArgs, "{}"), out);
  GenEvent done(GenEvent::Kind::Done);
  done.finish_reason = "tool_calls";
  done.usage = {5, 2, 3};
  done.tool_calls = {{"call_x", "f", "{}"}};
  f.stream_event(done, out);
  std::vector<std::string> types;
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i]["sequence_number"], i);
    types.push_back(out[i]["type"]);
  }
  EXPECT_EQ(types, (std::vector<std::string>{
                       "response.created", "response.in_progress", "response.output_item.added",
                       "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
                       "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
                       "response.output_item.done", "response.output_item.added",
                       "response.content_part.added", "response.output_text.delta",
                       "response.output_text.done", "response.content_part.done",
                       "response.output_item.done", "response.output_item.added",
                       "response.function_call_arguments.delta",
                       "response.function_call_arguments.done", "response.output_item.done",
                       "response.completed"}));
  const OJ& final = out.back()["response"];
  ASSERT_EQ(final["output"].size(), 3u);
  EXPECT_EQ(final["output"][2]["call_id"], "call_x");
  EXPECT_EQ(out[14]["output_index"], 2);
  EXPECT_EQ(final["usage"], OJ::parse(R"({"input_tokens":5,"input_tokens_details":{"cached_tokens":2,
      "cache_write_tokens":3},"output_tokens":3,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":8})"));

  ResponsesFormatter cut(rr, 0);
  out.clear();
  cut.stream_event(started, out);
  cut.stream_event(ev(GenEvent::Kind::Content, "t"), out);
  GenEvent length(GenEvent::Kind::Done);
  length.finish_reason = "length";
  cut.stream_event(length, out);
  EXPECT_EQ(out.back()["type"], "response.incomplete");
  EXPECT_EQ(out.back()["response"]["incomplete_details"]["reason"], "max_tokens");
  EXPECT_EQ(out.back()["response"]["output"][0]["status"], "incomplete");
}

}  // namespace
}  // namespace ds4::server
