#include "server/anthropic.h"

#include <map>

#include "server/request_fields.h"
#include "server/structured_output.h"
#include "server/worker.h"
#include "text/chat.h"
#include "text/chat_json.h"

namespace ds4::server {

using OJ = nlohmann::ordered_json;

namespace {

// Claude Code puts a per-request billing line ("x-anthropic-billing-header: ...") into the
// system blocks; it changes every request and would break every prefix match.
bool is_volatile_system_text(const std::string& text) { return text.rfind("x-anthropic-", 0) == 0; }

// System text from a string or text blocks (`cache_control` and other block keys ignored),
// joined by "\n"; `param` names the field in errors.
std::string system_text(const OJ& system, const std::string& param = "system") {
  if (system.is_string()) return system.get<std::string>();
  if (!system.is_array()) throw bad_request("'" + param + "' must be a string or an array of blocks", param);
  std::string out;
  bool first = true;
  for (const auto& block : system) {
    std::string text;
    if (block.is_string()) {
      text = block.get<std::string>();
    } else if (block.is_object()) {
      std::string type = block.value("type", std::string("text"));
      if (type != "text") throw bad_request(param + ": block type '" + type + "' is not supported (text)", param);
      const OJ* t = field(block, "text");
      if (!t || !t->is_string()) throw bad_request(param + ": text block without a string 'text'", param);
      text = t->get<std::string>();
    } else {
      throw bad_request("'" + param + "' blocks must be objects or strings", param);
    }
    if (is_volatile_system_text(text)) continue;
    if (!first) out += "\n";
    first = false;
    out += text;
  }
  return out;
}

// The request's tools as function objects by name ({name, description, parameters}).
using ToolMap = std::map<std::string, OJ>;

// A tool_result's content for the renderer: a string or a list of text parts. A
// `tool_reference` part (Claude Code's ToolSearch loading a deferred tool) becomes the
// referenced tool's definition, written as the tools block writes it, in place: the model
// sees the schema where it was loaded and earlier prompt bytes stay as they were.
OJ tool_result_content(const OJ& block, const std::string& where, const ToolMap& tools) {
  const OJ* content = field(block, "content");
  if (!content) return "";
  if (content->is_string()) return *content;
  if (!content->is_array()) {
    throw bad_request(where + ": tool_result 'content' must be a string or an array of blocks", "messages");
  }
  OJ parts = OJ::array();
  for (const auto& part : *content) {
    if (part.is_string()) {
      parts.push_back({{"type", "text"}, {"text", part}});
      continue;
    }
    if (part.is_object() && part.value("type", std::string()) == "tool_reference") {
      auto name = get_string(part, "tool_name");
      auto it = name ? tools.find(*name) : tools.end();
      if (it == tools.end()) {
        throw bad_request(where + ": tool_reference to '" + name.value_or("") + "', which is not in 'tools'",
                          "messages");
      }
      parts.push_back({{"type", "text"}, {"text", text::pyjson::dumps(it->second)}});
      continue;
    }
    if (!part.is_object() || part.value("type", std::string()) != "text" || !field(part, "text") ||
        !part["text"].is_string()) {
      throw bad_request(where + ": tool_result content supports text and tool_reference blocks only",
                        "messages");
    }
    parts.push_back({{"type", "text"}, {"text", part["text"]}});
  }
  return parts;
}

// Anthropic messages -> the renderer's OpenAI-style list. Blocks keep their order: text and
// tool results of a user turn become consecutive user / tool messages, which the renderer
// merges into one user turn.
OJ convert_messages(const OJ& messages, const ServerOptions& o, const ToolMap& tools) {
  if (!messages.is_array()) throw bad_request("'messages' must be an array", "messages");
  if (messages.empty()) throw bad_request("'messages' must not be empty", "messages");
  if (messages.size() > o.max_messages) throw bad_request("too many messages", "messages");
  OJ out = OJ::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const OJ& m = messages[i];
    std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw bad_request(where + " must be an object", "messages");
    auto role = get_string(m, "role");
    if (!role) throw bad_request(where + ": missing 'role'", "messages");
    if (*role != "user" && *role != "assistant" && *role != "system") {
      throw bad_request(where + ": role must be 'user', 'assistant' or 'system'", "messages");
    }
    const OJ* content = field(m, "content");
    if (!content) throw bad_request("Missing required parameter: '" + where + ".content'", where + ".content");
    if (*role == "system") {
      // A mid-conversation system message (Claude Code's environment block): text blocks,
      // placed by place_system_messages. As in Anthropic's API, it cannot open the list.
      if (i == 0) {
        throw bad_request(where + ": a system message must follow a user turn; the initial system "
                                  "prompt goes in 'system'",
                          "messages");
      }
      out.push_back({{"role", "system"}, {"content", system_text(*content, where + ".content")}});
      continue;
    }
    OJ blocks = OJ::array();
    if (content->is_string()) blocks.push_back({{"type", "text"}, {"text", *content}});
    else if (content->is_array()) blocks = *content;
    else throw bad_request(where + ": 'content' must be a string or an array of blocks", "messages");
    if (*role == "user") {
      bool any = false;
      for (const auto& b : blocks) {
        if (!b.is_object()) throw bad_request(where + ": content blocks must be objects", "messages");
        std::string type = b.value("type", std::string());
        if (type == "text") {
          const OJ* t = field(b, "text");
          if (!t || !t->is_string()) throw bad_request(where + ": text block without a string 'text'", "messages");
          out.push_back({{"role", "user"}, {"content", *t}});
        } else if (type == "tool_result") {
          auto id = get_string(b, "tool_use_id");
          if (!id || id->empty()) throw bad_request(where + ": tool_result needs 'tool_use_id'", "messages");
          out.push_back({{"role", "tool"}, {"tool_call_id", *id}, {"content", tool_result_content(b, where, tools)}});
        } else {
          throw bad_request(where + ": content block type '" + type +
                                "' is not supported in user messages (text, tool_result)",
                            "messages");
        }
        any = true;
      }
      if (!any) out.push_back({{"role", "user"}, {"content", ""}});
      continue;
    }
    // Assistant: reasoning, visible text and calls, in the renderer's fixed order.
    std::string reasoning, text;
    OJ calls = OJ::array();
    for (const auto& b : blocks) {
      if (!b.is_object()) throw bad_request(where + ": content blocks must be objects", "messages");
      std::string type = b.value("type", std::string());
      if (type == "text") {
        const OJ* t = field(b, "text");
        if (!t || !t->is_string()) throw bad_request(where + ": text block without a string 'text'", "messages");
        text += t->get<std::string>();
      } else if (type == "thinking") {
        const OJ* t = field(b, "thinking");
        if (t && !t->is_string()) throw bad_request(where + ": 'thinking' must be a string", "messages");
        if (t) reasoning += t->get<std::string>();
      } else if (type == "redacted_thinking") {
        // Opaque data from another provider: nothing to render.
      } else if (type == "tool_use") {
        auto id = get_string(b, "id");
        auto name = get_string(b, "name");
        if (!id || id->empty() || !name || name->empty()) {
          throw bad_request(where + ": tool_use needs 'id' and 'name'", "messages");
        }
        const OJ* input = field(b, "input");
        if (input && !input->is_object()) throw bad_request(where + ": tool_use 'input' must be an object", "messages");
        calls.push_back({{"id", *id},
                         {"type", "function"},
                         {"function", {{"name", *name}, {"arguments", input ? *input : OJ::object()}}}});
      } else {
        throw bad_request(where + ": content block type '" + type +
                              "' is not supported in assistant messages (text, thinking, "
                              "redacted_thinking, tool_use)",
                          "messages");
      }
    }
    OJ msg = {{"role", "assistant"}, {"content", text}};
    if (!reasoning.empty()) msg["reasoning_content"] = reasoning;
    if (!calls.empty()) msg["tool_calls"] = std::move(calls);
    out.push_back(std::move(msg));
  }
  if (out.empty() || out.back().value("role", std::string()) == "assistant") {
    throw bad_request("the last message must be a user message (assistant prefill is not supported)",
                      "messages");
  }
  return out;
}

// Anthropic tools -> OpenAI function tools. Server-side tools (web search, code execution...)
// have no schema the model could call and are skipped. Tools with `defer_loading: true` stay
// out of the tools block until a tool_reference loads them (so adding one never changes the
// prompt's prefix); every function tool lands in `by_name`.
OJ convert_tools(const OJ& tools, ToolMap& by_name) {
  OJ out = OJ::array();
  for_each_tool(tools, [&](const OJ& t, const std::string& where) {
    std::string type = t.value("type", std::string("custom"));
    const OJ* schema = field(t, "input_schema");
    if (type != "custom" && !schema) return;
    auto name = get_string(t, "name");
    if (!name || name->empty()) throw bad_request(where + ": 'name' must be a non-empty string", "tools");
    if (schema && !schema->is_object()) throw bad_request(where + ": 'input_schema' must be an object", "tools");
    OJ fn = {{"name", *name}};
    if (auto d = get_string(t, "description")) fn["description"] = *d;
    fn["parameters"] = schema ? *schema : OJ{{"type", "object"}, {"properties", OJ::object()}};
    const OJ* deferred = field(t, "defer_loading");
    if (deferred && !deferred->is_boolean()) throw bad_request(where + ": 'defer_loading' must be a boolean", "tools");
    by_name[*name] = fn;
    if (deferred && deferred->get<bool>()) return;
    out.push_back({{"type", "function"}, {"function", std::move(fn)}});
  });
  return out;
}

Thinking messages_thinking(const OJ& body, const std::string& model) {
  std::optional<bool> explicit_on;
  if (const OJ* th = field(body, "thinking")) {
    if (th->is_boolean()) {
      explicit_on = th->get<bool>();
    } else if (th->is_object()) {
      auto type = get_string(*th, "type");
      if (!type) throw bad_request("'thinking.type' is required", "thinking");
      if (*type == "enabled" || *type == "adaptive") explicit_on = true;
      else if (*type == "disabled") explicit_on = false;
      else throw bad_request("'thinking.type' must be enabled, disabled or adaptive", "thinking");
      // The budget cannot be enforced inside a reasoning span; it is validated and ignored.
      if (auto budget = get_int(*th, "budget_tokens"); budget && *budget < 0) {
        throw bad_request("'thinking.budget_tokens' must be >= 0", "thinking");
      }
    } else {
      throw bad_request("'thinking' must be an object", "thinking");
    }
  }
  std::optional<std::string> effort;
  const char* effort_param = "reasoning_effort";
  if (const OJ* oc = field(body, "output_config")) {
    if (!oc->is_object()) throw bad_request("'output_config' must be an object", "output_config");
    effort = get_string(*oc, "effort");
    effort_param = "output_config.effort";
  }
  if (!effort) {
    effort = get_string(body, "reasoning_effort");
    effort_param = "reasoning_effort";
  }
  return resolve_thinking_mode(explicit_on, effort, effort_param, model);
}

// Everything but the output limit: shared by generation and count_tokens.
void render_messages_prompt(const OJ& body, const ServerContext& ctx, const std::string& model,
                            GenerationSpec& spec) {
  const OJ* messages = field(body, "messages");
  if (!messages) throw bad_request("missing messages", "messages");
  ToolMap tool_map;
  OJ tools_block = OJ::array();
  if (const OJ* tools = field(body, "tools")) tools_block = convert_tools(*tools, tool_map);
  OJ msgs = convert_messages(*messages, ctx.options, tool_map);
  if (const OJ* system = field(body, "system")) {
    std::string text = system_text(*system);
    if (!text.empty()) msgs.insert(msgs.begin(), OJ{{"role", "system"}, {"content", text}});
  }
  place_system_messages(msgs);
  Thinking th = messages_thinking(body, model);
  text::RenderOptions ro = base_render_options(th, ctx);

  bool tools_hidden = false, disable_parallel = false;
  std::string type, named;
  if (const OJ* choice = field(body, "tool_choice")) {
    if (choice->is_string()) type = choice->get<std::string>();
    else if (choice->is_object()) type = choice->value("type", std::string());
    else throw bad_request("'tool_choice' must be an object", "tool_choice");
    if (type == "none") tools_hidden = true;
    else if (type != "auto" && type != "any" && type != "tool") {
      throw bad_request("'tool_choice.type' must be auto, any, tool or none", "tool_choice");
    }
    if (type == "tool") {
      auto name = choice->is_object() ? get_string(*choice, "name") : std::nullopt;
      if (!name || name->empty()) throw bad_request("'tool_choice' of type tool needs a 'name'", "tool_choice");
      named = *name;
      if (!tool_map.count(named)) {
        throw bad_request("tool_choice names '" + named + "', which is not among the tools", "tool_choice");
      }
    }
    if (choice->is_object()) {
      if (auto d = get_bool(*choice, "disable_parallel_tool_use")) disable_parallel = *d;
    }
  }
  // Strict tools (arguments constrained to input_schema) and a forced choice: the tool-call
  // grammar covers every tool the model may call, deferred ones included.
  ToolConstraint constraint;
  if (!tools_hidden && !tool_map.empty()) {
    std::set<std::string> strict;
    if (const OJ* tools = field(body, "tools"); tools && tools->is_array()) {
      for (const auto& t : *tools) {
        if (!t.is_object()) continue;
        const OJ* st = field(t, "strict");
        if (st && st->is_boolean() && st->get<bool>() && t.contains("name") && t["name"].is_string()) {
          strict.insert(t["name"].get<std::string>());
        }
      }
    }
    OJ callable = OJ::array();
    for (const auto& [name, fn] : tool_map) callable.push_back({{"type", "function"}, {"function", fn}});
    constraint = tool_constraint(callable, strict);
    constraint.required = type == "any" || type == "tool";
    constraint.only = named;
    constraint.parallel = !disable_parallel;
  }
  if (!tools_hidden && !tool_map.empty()) {
    if (!tools_block.empty()) ro.tools = std::move(tools_block);
    spec.parse_tools = true;  // loaded deferred tools can be called too
  }
  const OutputFormat format = anthropic_output_format(body);
  if (!format.prompt_schema.is_null()) ro.response_format = format.prompt_schema;
  render_into_spec(msgs, ro, th, ctx, spec, "messages");
  apply_output_format(format, ctx, spec, constraint);
}

}  // namespace

GenerationSpec build_messages_spec(const OJ& body, const ServerContext& ctx, RequestInfo& info) {
  if (!body.is_object()) throw bad_request("request body must be a JSON object");
  GenerationSpec spec;
  spec.log_tag = "messages";
  spec.tool_id_prefix = "toolu_";
  info.model = get_string(body, "model").value_or(kModelId);
  info.stream = get_bool(body, "stream").value_or(false);
  auto max_tokens = get_int(body, "max_tokens");
  spec.max_tokens = max_tokens ? std::max<int64_t>(0, *max_tokens) : ctx.options.default_max_tokens;
  parse_stop(body, ctx.options, spec, "stop_sequences");
  parse_test_hooks(body, ctx, spec);
  render_messages_prompt(body, ctx, info.model, spec);
  parse_sampling(body, spec.thinking, spec);
  check_context(spec, ctx, "messages");
  return spec;
}

size_t count_message_tokens(const OJ& body, const ServerContext& ctx) {
  if (!body.is_object()) throw bad_request("request body must be a JSON object");
  GenerationSpec spec;
  render_messages_prompt(body, ctx, get_string(body, "model").value_or(kModelId), spec);
  return spec.tokens.size();
}

OJ anthropic_error_json(const ApiError& e) {
  std::string type = e.type;
  if (e.status == 401) type = "authentication_error";
  else if (e.status == 404) type = "not_found_error";
  else if (e.status == 413) type = "request_too_large";
  else if (e.status == 429) type = "rate_limit_error";
  else if (e.status == 503) type = "overloaded_error";
  else if (e.status >= 500) type = "api_error";
  else type = "invalid_request_error";
  std::string message = e.what();
  if (e.code == "context_length_exceeded" && e.extra.contains("n_prompt_tokens")) {
    // Anthropic's own wording, which Claude Code (and others) match to compact the context.
    message = "prompt is too long: " + e.extra["n_prompt_tokens"].dump() + " tokens > " +
              e.extra["n_ctx"].dump() + " maximum";
  }
  OJ err = {{"type", type}, {"message", message}};
  for (auto it = e.extra.begin(); it != e.extra.end(); ++it) err[it.key()] = it.value();
  return OJ{{"type", "error"}, {"error", std::move(err)}};
}

std::string anthropic_stop_reason(const GenEvent& done) {
  if (done.finish_reason == "length") return "max_tokens";
  if (done.finish_reason == "tool_calls") return "tool_use";
  if (done.finish_reason == "stop" && !done.stop_sequence.empty()) return "stop_sequence";
  return "end_turn";
}

OJ anthropic_usage_json(const Usage& u) {
  // Every prompt token is either read from the live cache or written to it.
  return OJ{{"input_tokens", 0},
            {"output_tokens", u.completion_tokens},
            {"cache_read_input_tokens", u.cached_tokens},
            {"cache_creation_input_tokens", u.prompt_tokens - u.cached_tokens}};
}

// ------------------------------------------------------------------ formatting

OJ AnthropicFormatter::message_object(const OJ& content, const OJ& stop_reason,
                                      const OJ& stop_sequence, const Usage& usage) const {
  return OJ{{"id", id_},
            {"type", "message"},
            {"role", "assistant"},
            {"model", model_},
            {"content", content},
            {"stop_reason", stop_reason},
            {"stop_sequence", stop_sequence},
            {"usage", anthropic_usage_json(usage)}};
}

void AnthropicFormatter::close_block(std::vector<NamedEvent>& out) {
  if (open_ == Open::None) return;
  size_t index = next_index_ - 1;
  if (open_ == Open::Thinking) {
    // The signature lets the client hand the block back; ours is the message id.
    out.push_back({"content_block_delta",
                   {{"type", "content_block_delta"},
                    {"index", index},
                    {"delta", {{"type", "signature_delta"}, {"signature", id_}}}}});
  }
  out.push_back({"content_block_stop", {{"type", "content_block_stop"}, {"index", index}}});
  open_ = Open::None;
}

void AnthropicFormatter::start_block(std::vector<NamedEvent>& out, Open kind, OJ block) {
  close_block(out);
  out.push_back({"content_block_start",
                 {{"type", "content_block_start"}, {"index", next_index_}, {"content_block", std::move(block)}}});
  ++next_index_;
  open_ = kind;
  if (kind == Open::Text) text_block_sent_ = true;
}

void AnthropicFormatter::stream_event(const GenEvent& ev, std::vector<NamedEvent>& out) {
  switch (ev.kind) {
    case GenEvent::Kind::Started: {
      if (started_) break;
      started_ = true;
      usage_ = ev.usage;
      Usage u = ev.usage;
      u.completion_tokens = 0;
      out.push_back({"message_start",
                     {{"type", "message_start"},
                      {"message", message_object(OJ::array(), nullptr, nullptr, u)}}});
      break;
    }
    case GenEvent::Kind::Reasoning:
      if (open_ != Open::Thinking) {
        start_block(out, Open::Thinking, {{"type", "thinking"}, {"thinking", ""}, {"signature", ""}});
      }
      out.push_back({"content_block_delta",
                     {{"type", "content_block_delta"},
                      {"index", next_index_ - 1},
                      {"delta", {{"type", "thinking_delta"}, {"thinking", ev.text}}}}});
      break;
    case GenEvent::Kind::Content:
      if (open_ != Open::Text) start_block(out, Open::Text, {{"type", "text"}, {"text", ""}});
      out.push_back({"content_block_delta",
                     {{"type", "content_block_delta"},
                      {"index", next_index_ - 1},
                      {"delta", {{"type", "text_delta"}, {"text", ev.text}}}}});
      break;
    case GenEvent::Kind::ToolCallStart:
      streamed_calls_ = std::max(streamed_calls_, ev.index + 1);
      start_block(out, Open::Tool,
                  {{"type", "tool_use"}, {"id", ev.id}, {"name", ev.name}, {"input", OJ::object()}});
      break;
    case GenEvent::Kind::ToolCallArgs:
      if (open_ != Open::Tool) break;
      out.push_back({"content_block_delta",
                     {{"type", "content_block_delta"},
                      {"index", next_index_ - 1},
                      {"delta", {{"type", "input_json_delta"}, {"partial_json", ev.text}}}}});
      break;
    case GenEvent::Kind::Done: {
      close_block(out);
      // Calls the parser confirmed only at the end go out whole.
      for (size_t i = streamed_calls_; i < ev.tool_calls.size(); ++i) {
        const auto& c = ev.tool_calls[i];
        start_block(out, Open::Tool,
                    {{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", OJ::object()}});
        out.push_back({"content_block_delta",
                       {{"type", "content_block_delta"},
                        {"index", next_index_ - 1},
                        {"delta", {{"type", "input_json_delta"}, {"partial_json", c.arguments}}}}});
        close_block(out);
      }
      if (!text_block_sent_ && ev.tool_calls.empty()) {
        start_block(out, Open::Text, {{"type", "text"}, {"text", ""}});
        close_block(out);
      }
      if (ev.finish_reason == "error") {
        // Cut short (shutdown): an error event, so the client does not take the partial
        // message for a finished turn and can retry.
        out.push_back({"error", anthropic_error_json(ApiError(
                                    503, "generation interrupted: server shutting down",
                                    "server_error"))});
        break;
      }
      std::string reason = anthropic_stop_reason(ev);
      OJ usage = anthropic_usage_json(ev.usage);
      out.push_back({"message_delta",
                     {{"type", "message_delta"},
                      {"delta",
                       {{"stop_reason", reason},
                        {"stop_sequence", reason == "stop_sequence" ? OJ(ev.stop_sequence) : OJ(nullptr)}}},
                      {"usage", usage}}});
      out.push_back({"message_stop", {{"type", "message_stop"}}});
      break;
    }
    default:
      break;
  }
}

void AnthropicFormatter::collect(const GenEvent& ev) {
  switch (ev.kind) {
    case GenEvent::Kind::Reasoning: reasoning_ += ev.text; break;
    case GenEvent::Kind::Content: content_ += ev.text; break;
    case GenEvent::Kind::Done: done_ = ev; break;
    default: break;
  }
}

OJ AnthropicFormatter::final_response() const {
  OJ content = OJ::array();
  if (!reasoning_.empty()) {
    content.push_back({{"type", "thinking"}, {"thinking", reasoning_}, {"signature", id_}});
  }
  if (!content_.empty()) content.push_back({{"type", "text"}, {"text", content_}});
  for (const auto& c : done_.tool_calls) {
    OJ input = OJ::object();
    try {
      input = OJ::parse(c.arguments);
    } catch (const nlohmann::ordered_json::parse_error&) {
      // The parser only confirms calls whose arguments are valid JSON; keep {} regardless.
    }
    content.push_back({{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", std::move(input)}});
  }
  if (content_.empty() && done_.tool_calls.empty()) content.push_back({{"type", "text"}, {"text", ""}});
  std::string reason = anthropic_stop_reason(done_);
  return message_object(content, reason,
                        reason == "stop_sequence" ? OJ(done_.stop_sequence) : OJ(nullptr), done_.usage);
}

}  // namespace ds4::server
