#include "server/openai.h"

#include <algorithm>

#include "server/request_fields.h"
#include "server/structured_output.h"
#include "server/worker.h"
#include "text/chat.h"

namespace ds4::server {

using OJ = nlohmann::ordered_json;
using json = nlohmann::ordered_json;

const std::vector<std::string>& model_ids() {
  static const std::vector<std::string> kIds = {kModelId, "deepseek-chat", "deepseek-reasoner"};
  return kIds;
}

json model_object(const std::string& id, int ctx, int64_t default_max_tokens) {
  return json{{"id", id},
              {"object", "model"},
              {"created", 1767225600},
              {"owned_by", "ds4"},
              {"name", "DeepSeek V4 Flash"},
              {"context_length", ctx},
              // Anthropic's model object: clients size their context from these.
              {"type", "model"},
              {"display_name", "DeepSeek V4 Flash"},
              {"created_at", "2026-01-01T00:00:00Z"},
              {"max_input_tokens", ctx},
              {"max_tokens", std::min<int64_t>(default_max_tokens, ctx)},
              {"top_provider",
               {{"context_length", ctx},
                {"max_completion_tokens", std::min<int64_t>(default_max_tokens, ctx)},
                {"is_moderated", false}}},
              {"supported_parameters",
               {"tools", "tool_choice", "max_tokens", "temperature", "top_p", "top_k", "min_p",
                "stop", "seed", "stream", "reasoning_effort", "logprobs", "top_logprobs",
                "response_format", "structured_outputs", "json_schema", "grammar"}}};
}

bool json_depth_ok(std::string_view body, int max_depth) {
  int depth = 0;
  bool in_string = false, escape = false;
  for (char c : body) {
    if (in_string) {
      if (escape) escape = false;
      else if (c == '\\') escape = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

json usage_json(const Usage& u) {
  return json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", u.prompt_tokens + u.completion_tokens},
              {"prompt_tokens_details",
               {{"cached_tokens", u.cached_tokens},
                {"cache_write_tokens", u.prompt_tokens - u.cached_tokens}}}};
}

namespace {

// The last chunk of a stream that asked for stream_options.include_usage: no choices, the usage.
json usage_chunk(const std::string& id, const char* object, int64_t created, const std::string& model,
                 const Usage& u) {
  return json{{"id", id},       {"object", object},         {"created", created},
              {"model", model}, {"choices", json::array()}, {"usage", usage_json(u)}};
}

}  // namespace

namespace {

// Thinking (docs/server.md): explicit control, then the model alias, then the effort.
Thinking resolve_thinking(const OJ& body, const std::string& model) {
  std::optional<bool> explicit_on;
  if (const OJ* th = field(body, "thinking")) {
    if (th->is_boolean()) {
      explicit_on = th->get<bool>();
    } else if (th->is_object()) {
      auto type = th->find("type");
      if (type != th->end() && type->is_string()) {
        if (*type == "enabled") explicit_on = true;
        else if (*type == "disabled") explicit_on = false;
      }
    } else {
      throw bad_request("'thinking' must be a boolean or an object", "thinking");
    }
  }
  if (!explicit_on) explicit_on = get_bool(body, "think");
  return resolve_thinking_mode(explicit_on, get_string(body, "reasoning_effort"),
                               "reasoning_effort", model);
}

}  // namespace

namespace {

void parse_common(const OJ& body, const ServerContext& ctx, GenerationSpec& spec,
                  RequestInfo& info, bool chat) {
  if (auto model = get_string(body, "model")) info.model = *model;
  else info.model = kModelId;
  info.stream = get_bool(body, "stream").value_or(false);
  if (const OJ* so = field(body, "stream_options")) {
    if (!so->is_object()) throw bad_request("'stream_options' must be an object", "stream_options");
    info.include_usage = get_bool(*so, "include_usage").value_or(false);
  }
  if (auto n = get_int(body, "n"); n && *n != 1) {
    throw bad_request("only n=1 is supported", "n");
  }
  std::optional<int64_t> max_tokens = get_int(body, "max_tokens");
  if (chat) {
    if (auto mct = get_int(body, "max_completion_tokens")) max_tokens = mct;
  }
  spec.max_tokens = max_tokens ? std::max<int64_t>(0, *max_tokens)
                               : ctx.options.default_max_tokens;
  parse_stop(body, ctx.options, spec);
  parse_test_hooks(body, ctx, spec);
}

}  // namespace

namespace {

bool has_tool_calls(const OJ& m) {
  const OJ* calls = field(m, "tool_calls");
  if (calls && calls->is_array() && !calls->empty()) return true;
  const OJ* legacy = field(m, "function_call");
  return legacy && legacy->is_object();
}

// OpenAI messages -> the renderer's message list (strings only, tool calls validated).
OJ normalize_messages(const OJ& messages, const ServerOptions& o) {
  if (!messages.is_array()) throw bad_request("'messages' must be an array", "messages");
  if (messages.empty()) throw bad_request("'messages' must not be empty", "messages");
  if (messages.size() > o.max_messages) throw bad_request("too many messages", "messages");
  OJ out = OJ::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const OJ& m = messages[i];
    std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw bad_request(where + " must be an object", "messages");
    std::string role = "user";
    if (auto r = field(m, "role")) {
      if (!r->is_string()) throw bad_request(where + ": 'role' must be a string", "messages");
      role = r->get<std::string>();
    }
    if (role == "function") role = "tool";
    // OpenAI's `developer` is its newer name for system instructions (not the official
    // template's internal developer turn).
    if (role == "developer") role = "system";
    OJ n = OJ::object();
    n["role"] = role;
    const OJ* content = field(m, "content");
    if (!content && !(role == "assistant" && has_tool_calls(m))) {
      // As the OpenAI API: only an assistant message carrying tool calls may omit it.
      throw bad_request("Missing required parameter: '" + where + ".content'", where + ".content");
    }
    std::string text = content ? flatten_content(*content, where) : std::string();
    if (role == "system" || role == "user") {
      n["content"] = text;
    } else if (role == "assistant") {
      n["content"] = text;
      if (auto rc = field(m, "reasoning_content")) {
        if (!rc->is_string()) {
          throw bad_request(where + ": 'reasoning_content' must be a string", "messages");
        }
        n["reasoning_content"] = *rc;
      }
      if (auto calls = field(m, "tool_calls")) {
        if (!calls->is_array()) throw bad_request(where + ": 'tool_calls' must be an array", "messages");
        OJ norm = OJ::array();
        for (const auto& c : *calls) {
          if (!c.is_object()) throw bad_request(where + ": tool call must be an object", "messages");
          const OJ* fn = field(c, "function");
          if (!fn || !fn->is_object() || !field(*fn, "name") || !(*fn)["name"].is_string()) {
            throw bad_request(where + ": tool call needs function.name", "messages");
          }
          OJ nc = {{"type", "function"},
                   {"function", {{"name", (*fn)["name"]}, {"arguments", "{}"}}}};
          if (auto id = field(c, "id"); id && id->is_string()) nc["id"] = *id;
          if (const OJ* args = field(*fn, "arguments")) {
            // Arguments are a JSON string on the wire; some clients send the object itself.
            nc["function"]["arguments"] = args->is_string() ? *args : OJ(args->dump());
          }
          norm.push_back(std::move(nc));
        }
        if (!norm.empty()) n["tool_calls"] = std::move(norm);
      }
    } else if (role == "tool") {
      n["content"] = text;
      if (auto id = field(m, "tool_call_id"); id && id->is_string()) n["tool_call_id"] = *id;
    } else {
      throw bad_request(where + ": unsupported role '" + role + "'", "messages");
    }
    out.push_back(std::move(n));
  }
  place_system_messages(out);
  return out;
}

}  // namespace

namespace {

// Renders messages with the request's tools, thinking mode and response format; returns
// what constrains tool calls (strict tools, a forced tool choice).
ToolConstraint render_chat_prompt(const OJ& body, const ServerContext& ctx, const std::string& model,
                                  GenerationSpec& spec) {
  const OJ* messages = field(body, "messages");
  if (!messages) throw bad_request("missing messages", "messages");
  OJ msgs = normalize_messages(*messages, ctx.options);

  Thinking th = resolve_thinking(body, model);
  text::RenderOptions ro = base_render_options(th, ctx);

  bool tools_hidden = false, required = false;
  std::string named;
  if (const OJ* choice = field(body, "tool_choice")) {
    if (choice->is_string()) {
      const std::string& c = choice->get_ref<const std::string&>();
      if (c == "none") tools_hidden = true;
      else if (c == "required") required = true;
      else if (c != "auto") {
        throw bad_request("'tool_choice' must be none, auto, required or a function object",
                          "tool_choice");
      }
    } else if (choice->is_object()) {
      const OJ* fn = field(*choice, "function");
      const OJ* name = fn && fn->is_object() ? field(*fn, "name") : nullptr;
      if (!name || !name->is_string() || name->get_ref<const std::string&>().empty()) {
        throw bad_request("'tool_choice' object needs function.name", "tool_choice");
      }
      named = name->get<std::string>();
      required = true;
    } else {
      throw bad_request("'tool_choice' must be a string or an object", "tool_choice");
    }
  }
  ToolConstraint constraint;
  if (const OJ* tools = field(body, "tools")) {
    OJ valid = validate_tools(*tools);
    if (!tools_hidden && !valid.empty()) {
      std::set<std::string> strict;
      for (const auto& t : valid) {
        const OJ& fn = t["function"];
        if (const OJ* st = field(fn, "strict"); st && st->is_boolean() && st->get<bool>()) {
          strict.insert(fn["name"].get<std::string>());
        }
      }
      constraint = tool_constraint(valid, strict);
      ro.tools = std::move(valid);
      spec.parse_tools = true;
    }
  }
  if (!constraint.tools.empty()) {
    constraint.required = required;
    constraint.only = named;
    if (auto par = get_bool(body, "parallel_tool_calls")) constraint.parallel = *par;
    if (!named.empty()) {
      bool known = false;
      for (const auto& t : constraint.tools) known = known || t.name == named;
      if (!known) throw bad_request("tool_choice names '" + named + "', which is not among the tools", "tool_choice");
    }
  } else if (required && !tools_hidden) {
    throw bad_request("tool_choice '" + std::string(named.empty() ? "required" : named) +
                          "' needs tools", "tool_choice");
  }
  // The schema is also written into the prompt (the official encoder's "## Response
  // Format" section); the worker enforces the grammar (structured_output.h).
  const OutputFormat format = openai_output_format(body);
  if (!format.prompt_schema.is_null()) ro.response_format = format.prompt_schema;
  render_into_spec(msgs, ro, th, ctx, spec, "messages");
  return constraint;
}

}  // namespace

GenerationSpec build_chat_spec(const OJ& body, const ServerContext& ctx, RequestInfo& info) {
  if (!body.is_object()) throw bad_request("request body must be a JSON object");
  GenerationSpec spec;
  spec.log_tag = "chat";
  parse_common(body, ctx, spec, info, /*chat=*/true);
  const ToolConstraint tools = render_chat_prompt(body, ctx, info.model, spec);
  apply_output_format(openai_output_format(body), ctx, spec, tools);
  parse_sampling(body, spec.thinking, spec);
  bool logprobs = get_bool(body, "logprobs").value_or(false);
  auto top = get_int(body, "top_logprobs");
  if (top && (*top < 0 || *top > ctx.options.max_top_logprobs)) {
    throw bad_request("'top_logprobs' must be in [0, " +
                          std::to_string(ctx.options.max_top_logprobs) + "]",
                      "top_logprobs");
  }
  if (top && !logprobs) throw bad_request("'top_logprobs' requires 'logprobs': true", "top_logprobs");
  if (logprobs) spec.top_logprobs = static_cast<int>(top.value_or(0));
  info.logprobs = logprobs;
  check_context(spec, ctx, "messages");
  return spec;
}

GenerationSpec build_template_spec(const OJ& body, const ServerContext& ctx) {
  if (!body.is_object()) throw bad_request("request body must be a JSON object");
  GenerationSpec spec;
  std::string model = kModelId;
  if (auto m = get_string(body, "model")) model = *m;
  render_chat_prompt(body, ctx, model, spec);
  return spec;
}

GenerationSpec build_completion_spec(const OJ& body, const ServerContext& ctx,
                                     RequestInfo& info) {
  if (!body.is_object()) throw bad_request("request body must be a JSON object");
  GenerationSpec spec;
  spec.log_tag = "completion";
  spec.raw_output = true;
  parse_common(body, ctx, spec, info, /*chat=*/false);
  const OJ* prompt = field(body, "prompt");
  if (!prompt) throw bad_request("missing prompt", "prompt");
  std::vector<int32_t> tokens;
  const int bos = ctx.tok.bos_id();
  if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number_integer()) {
    // A pre-tokenized prompt (llama.cpp accepts this too).
    for (const auto& t : *prompt) {
      if (!t.is_number_integer()) throw bad_request("token prompt must hold integers", "prompt");
      int64_t id = t.get<int64_t>();
      if (id < 0 || id >= static_cast<int64_t>(ctx.tok.vocab_size())) {
        throw bad_request("token id " + t.dump() + " out of range", "prompt");
      }
      tokens.push_back(static_cast<int32_t>(id));
    }
  } else {
    std::string text;
    if (prompt->is_string()) {
      text = prompt->get<std::string>();
    } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
      text = (*prompt)[0].get<std::string>();
    } else if (prompt->is_array() && prompt->size() > 1) {
      throw bad_request("only one prompt per request is supported", "prompt");
    } else {
      throw bad_request("'prompt' must be a string, a one-string array or a token array", "prompt");
    }
    check_context_bound(0, text.size(), ctx, "prompt");
    auto ids = ctx.tok.encode(text, /*parse_special=*/true);
    tokens.assign(ids.begin(), ids.end());
  }
  if (tokens.empty() || tokens[0] != bos) tokens.insert(tokens.begin(), bos);
  spec.tokens = std::move(tokens);
  parse_sampling(body, /*thinking=*/false, spec);
  apply_output_format(openai_output_format(body), ctx, spec);
  // Legacy logprobs: an integer count of alternatives.
  if (const OJ* lp = field(body, "logprobs")) {
    if (lp->is_boolean()) {
      if (lp->get<bool>()) spec.top_logprobs = 0;
    } else {
      auto n = get_int(body, "logprobs");
      if (*n < 0 || *n > ctx.options.max_top_logprobs) {
        throw bad_request("'logprobs' must be in [0, " +
                              std::to_string(ctx.options.max_top_logprobs) + "]",
                          "logprobs");
      }
      spec.top_logprobs = static_cast<int>(*n);
    }
    info.logprobs = spec.top_logprobs >= 0;
  }
  if (get_bool(body, "echo").value_or(false)) throw bad_request("'echo' is not supported", "echo");
  if (auto suffix = get_string(body, "suffix"); suffix && !suffix->empty()) {
    throw bad_request("'suffix' is not supported", "suffix");
  }
  if (auto best_of = get_int(body, "best_of"); best_of && *best_of != 1) {
    throw bad_request("only best_of=1 is supported", "best_of");
  }
  check_context(spec, ctx, "prompt");
  return spec;
}

// ------------------------------------------------------------------ chat formatting

json ChatFormatter::chunk(json delta, const json& finish) const {
  json choice = {{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", finish}};
  if (info_.logprobs) choice["logprobs"] = nullptr;
  return json{{"id", id_},
              {"object", "chat.completion.chunk"},
              {"created", created_},
              {"model", model_},
              {"choices", json::array({std::move(choice)})}};
}

json ChatFormatter::logprob_json(const TokenLogprob& lp) const {
  auto bytes_of = [](const std::string& s) {
    json b = json::array();
    for (unsigned char c : s) b.push_back(int(c));
    return b;
  };
  json top = json::array();
  for (const auto& [bytes, logprob] : lp.top) {
    top.push_back({{"token", bytes}, {"logprob", logprob}, {"bytes", bytes_of(bytes)}});
  }
  return json{{"token", lp.bytes},
              {"logprob", lp.logprob},
              {"bytes", bytes_of(lp.bytes)},
              {"top_logprobs", std::move(top)}};
}

void ChatFormatter::stream_event(const GenEvent& ev, std::vector<json>& out) {
  auto with_logprobs = [&](json c) {
    if (info_.logprobs && !pending_logprobs_.empty()) {
      c["choices"][0]["logprobs"] = {{"content", pending_logprobs_}};
      pending_logprobs_ = json::array();
    }
    return c;
  };
  switch (ev.kind) {
    case GenEvent::Kind::Started:
      if (!role_sent_) {
        role_sent_ = true;
        out.push_back(chunk({{"role", "assistant"}, {"content", ""}}));
      }
      break;
    case GenEvent::Kind::Reasoning:
      out.push_back(with_logprobs(chunk({{"reasoning_content", ev.text}})));
      break;
    case GenEvent::Kind::Content:
      out.push_back(with_logprobs(chunk({{"content", ev.text}})));
      break;
    case GenEvent::Kind::ToolCallStart:
      streamed_calls_ = std::max(streamed_calls_, ev.index + 1);
      out.push_back(chunk(
          {{"tool_calls",
            json::array({{{"index", ev.index},
                          {"id", ev.id},
                          {"type", "function"},
                          {"function", {{"name", ev.name}, {"arguments", ""}}}}})}}));
      break;
    case GenEvent::Kind::ToolCallArgs:
      out.push_back(chunk({{"tool_calls", json::array({{{"index", ev.index},
                                                         {"function", {{"arguments", ev.text}}}}})}}));
      break;
    case GenEvent::Kind::Logprob:
      pending_logprobs_.push_back(logprob_json(ev.logprob));
      break;
    case GenEvent::Kind::Done: {
      // Calls the parser confirmed but never streamed go out whole.
      for (size_t i = streamed_calls_; i < ev.tool_calls.size(); ++i) {
        const auto& c = ev.tool_calls[i];
        out.push_back(chunk({{"tool_calls", json::array({{{"index", i},
                                                          {"id", c.id},
                                                          {"type", "function"},
                                                          {"function",
                                                           {{"name", c.name},
                                                            {"arguments", c.arguments}}}}})}}));
      }
      out.push_back(with_logprobs(chunk(json::object(), ev.finish_reason)));
      if (info_.include_usage) {
        out.push_back(usage_chunk(id_, "chat.completion.chunk", created_, model_, ev.usage));
      }
      break;
    }
    default:
      break;
  }
}

void ChatFormatter::collect(const GenEvent& ev) {
  switch (ev.kind) {
    case GenEvent::Kind::Reasoning: reasoning_ += ev.text; break;
    case GenEvent::Kind::Content: content_ += ev.text; break;
    case GenEvent::Kind::Logprob: all_logprobs_.push_back(logprob_json(ev.logprob)); break;
    case GenEvent::Kind::Done: done_ = ev; break;
    default: break;
  }
}

json ChatFormatter::final_response() const {
  json message = {{"role", "assistant"}, {"content", content_}};
  if (!reasoning_.empty()) message["reasoning_content"] = reasoning_;
  if (!done_.tool_calls.empty()) {
    json calls = json::array();
    for (const auto& c : done_.tool_calls) {
      calls.push_back({{"id", c.id},
                       {"type", "function"},
                       {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
    }
    message["tool_calls"] = std::move(calls);
  }
  json choice = {{"index", 0}, {"message", std::move(message)},
                 {"finish_reason", done_.finish_reason}};
  choice["logprobs"] = info_.logprobs ? json{{"content", all_logprobs_}} : json(nullptr);
  return json{{"id", id_},
              {"object", "chat.completion"},
              {"created", created_},
              {"model", model_},
              {"choices", json::array({std::move(choice)})},
              {"usage", usage_json(done_.usage)}};
}

// ------------------------------------------------------------------ completions formatting

json CompletionFormatter::logprobs_json(const std::vector<TokenLogprob>& lps,
                                        size_t offset) const {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  for (const auto& lp : lps) {
    tokens.push_back(lp.bytes);
    token_logprobs.push_back(lp.logprob);
    json alts = json::object();
    for (const auto& [bytes, logprob] : lp.top) alts[bytes] = logprob;
    top.push_back(std::move(alts));
    offsets.push_back(offset);
    offset += lp.bytes.size();
  }
  return json{{"tokens", tokens},
              {"token_logprobs", token_logprobs},
              {"top_logprobs", top},
              {"text_offset", offsets}};
}

json CompletionFormatter::chunk(const std::string& text, const json& finish) const {
  json choice = {{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}};
  return json{{"id", id_},
              {"object", "text_completion"},
              {"created", created_},
              {"model", model_},
              {"choices", json::array({std::move(choice)})}};
}

void CompletionFormatter::stream_event(const GenEvent& ev, std::vector<json>& out) {
  auto attach = [&](json c) {
    if (info_.logprobs && !pending_.empty()) {
      c["choices"][0]["logprobs"] = logprobs_json(pending_, text_offset_);
      for (const auto& lp : pending_) text_offset_ += lp.bytes.size();
      pending_.clear();
    }
    return c;
  };
  switch (ev.kind) {
    case GenEvent::Kind::Reasoning:
    case GenEvent::Kind::Content:
      out.push_back(attach(chunk(ev.text, nullptr)));
      break;
    case GenEvent::Kind::Logprob:
      pending_.push_back(ev.logprob);
      break;
    case GenEvent::Kind::Done:
      out.push_back(attach(chunk("", ev.finish_reason)));
      if (info_.include_usage) {
        out.push_back(usage_chunk(id_, "text_completion", created_, model_, ev.usage));
      }
      break;
    default:
      break;
  }
}

void CompletionFormatter::collect(const GenEvent& ev) {
  switch (ev.kind) {
    case GenEvent::Kind::Reasoning:
    case GenEvent::Kind::Content: text_ += ev.text; break;
    case GenEvent::Kind::Logprob: all_.push_back(ev.logprob); break;
    case GenEvent::Kind::Done: done_ = ev; break;
    default: break;
  }
}

json CompletionFormatter::final_response() const {
  json choice = {{"text", text_}, {"index", 0}, {"finish_reason", done_.finish_reason}};
  choice["logprobs"] = info_.logprobs ? logprobs_json(all_, 0) : json(nullptr);
  return json{{"id", id_},
              {"object", "text_completion"},
              {"created", created_},
              {"model", model_},
              {"choices", json::array({std::move(choice)})},
              {"usage", usage_json(done_.usage)}};
}

}  // namespace ds4::server
