#include "server/openai.h"

#include <algorithm>
#include <cmath>
#include <limits>

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

// ------------------------------------------------------------------ field access

// The value of `key`, or nullptr when absent or JSON null (null means "not given").
const OJ* field(const OJ& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<double> get_number(const OJ& body, const char* key, double lo, double hi) {
  const OJ* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw bad_request(std::string("'") + key + "' must be a number", key);
  double d = v->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi) {
    throw bad_request(std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "]",
                      key);
  }
  return d;
}

std::optional<int64_t> get_int(const OJ& body, const char* key) {
  const OJ* v = field(body, key);
  if (!v) return std::nullopt;
  // An unsigned value above INT64_MAX (2^64-1) would wrap to a negative count.
  if (v->is_number_unsigned() &&
      v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    throw bad_request(std::string("'") + key + "' is out of range: " + v->dump(), key);
  }
  if (v->is_number_integer()) return v->get<int64_t>();
  if (v->is_number_float()) {
    double d = v->get<double>();
    if (std::isfinite(d) && d == std::floor(d)) {
      if (std::fabs(d) < 9e18) return int64_t(d);
      throw bad_request(std::string("'") + key + "' is out of range: " + v->dump(), key);
    }
  }
  throw bad_request(std::string("'") + key + "' must be an integer", key);
}

std::optional<bool> get_bool(const OJ& body, const char* key) {
  const OJ* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw bad_request(std::string("'") + key + "' must be a boolean", key);
  return v->get<bool>();
}

std::optional<std::string> get_string(const OJ& body, const char* key) {
  const OJ* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw bad_request(std::string("'") + key + "' must be a string", key);
  return v->get<std::string>();
}

// Content as one string: a string, null, or an array of text parts (concatenated).
std::string flatten_content(const OJ& content, const std::string& where) {
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) {
    throw bad_request(where + ": 'content' must be a string, null or an array of parts",
                      "messages");
  }
  std::string out;
  for (const auto& part : content) {
    if (part.is_string()) {
      out += part.get<std::string>();
      continue;
    }
    if (!part.is_object()) throw bad_request(where + ": content part must be an object", "messages");
    std::string type = part.value("type", std::string("text"));
    if (type == "text" || type == "input_text") {
      auto t = part.find("text");
      if (t == part.end() || !t->is_string()) {
        throw bad_request(where + ": text part without a string 'text'", "messages");
      }
      out += t->get<std::string>();
    } else {
      throw bad_request(where + ": content part type '" + type +
                            "' is not supported (text only)",
                        "messages");
    }
  }
  return out;
}

Thinking resolve_thinking_mode(std::optional<bool> explicit_on,
                               const std::optional<std::string>& effort, const char* effort_param,
                               const std::string& model) {
  Thinking t;
  std::optional<bool> effort_on;
  if (effort) {
    const std::string& e = *effort;
    if (e == "max") {
      t.effort = text::ReasoningEffort::Max;
      effort_on = true;
    } else if (e == "xhigh" || e == "high" || e == "medium" || e == "low" || e == "minimal") {
      t.effort = text::ReasoningEffort::High;
      effort_on = true;
    } else if (e == "none") {
      effort_on = false;
    } else {
      throw bad_request(std::string("'") + effort_param +
                            "' must be one of none, minimal, low, medium, high, xhigh, max",
                        effort_param);
    }
  }
  if (explicit_on) t.enabled = *explicit_on;
  else if (model == "deepseek-chat") t.enabled = false;
  else if (model == "deepseek-reasoner") t.enabled = true;
  else if (effort_on) t.enabled = *effort_on;
  return t;
}

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

void parse_sampling(const OJ& body, bool thinking, GenerationSpec& spec) {
  sample::Params p;  // defaults: temperature 1, top_p 1, min_p 0.05, top_k 0
  auto temperature = get_number(body, "temperature", 0.0, 2.0);
  auto top_p = get_number(body, "top_p", 0.0, 1.0);
  auto min_p = get_number(body, "min_p", 0.0, 1.0);
  auto top_k = get_int(body, "top_k");
  if (top_k && *top_k < 0) throw bad_request("'top_k' must be >= 0", "top_k");
  // Thinking mode ignores the client's distribution knobs (docs/server.md, "Thinking").
  if (!thinking) {
    if (temperature) p.temperature = static_cast<float>(*temperature);
    if (top_p) p.top_p = *top_p > 0.0 ? static_cast<float>(*top_p) : 1.0f;
    if (min_p) p.min_p = static_cast<float>(*min_p);
    if (top_k) p.top_k = static_cast<int>(std::min<int64_t>(*top_k, 1024));
  }
  if (auto seed = get_int(body, "seed")) {
    // The sampler reads 0 as "seed from the clock"; a client's 0 must stay deterministic.
    p.seed = *seed == 0 ? 0x9E3779B97F4A7C15ull : static_cast<uint64_t>(*seed);
  }
  spec.sampling = p;
}

void parse_stop(const OJ& body, const ServerOptions& o, GenerationSpec& spec, const char* key) {
  const std::string k = key;
  const OJ* v = field(body, key);
  if (!v) return;
  std::vector<std::string> stops;
  if (v->is_string()) {
    stops.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (const auto& s : *v) {
      if (!s.is_string()) throw bad_request("'" + k + "' entries must be strings", key);
      stops.push_back(s.get<std::string>());
    }
  } else {
    throw bad_request("'" + k + "' must be a string or an array of strings", key);
  }
  for (auto& s : stops) {
    if (s.empty()) continue;
    if (s.size() > o.max_stop_bytes) {
      throw bad_request("stop sequence longer than " + std::to_string(o.max_stop_bytes) +
                            " bytes",
                        key);
    }
    spec.stop.push_back(std::move(s));
  }
  if (spec.stop.size() > o.max_stop_sequences) {
    throw bad_request("at most " + std::to_string(o.max_stop_sequences) + " stop sequences",
                      key);
  }
}

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

void parse_test_hooks(const OJ& body, const ServerContext& ctx, GenerationSpec& spec) {
  if (ctx.options.test_hooks) {
    if (auto forced = get_string(body, "ds4_test_output")) {
      auto ids = ctx.tok.encode(*forced, /*parse_special=*/true);
      spec.forced_tokens = std::vector<int32_t>(ids.begin(), ids.end());
    }
    auto token_ids = [&](const char* name) -> std::optional<std::vector<int32_t>> {
      const OJ* ids = field(body, name);
      if (!ids) return std::nullopt;
      if (!ids->is_array()) throw bad_request(std::string("'") + name + "' must be an array");
      std::vector<int32_t> out;
      for (const auto& t : *ids) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
            t.get<int64_t>() >= static_cast<int64_t>(ctx.tok.vocab_size())) {
          throw bad_request(std::string("'") + name + "' must hold token ids");
        }
        out.push_back(t.get<int32_t>());
      }
      return out;
    };
    // Exact token ids, e.g. a BPE split a fresh tokenization would not produce.
    if (auto ids = token_ids("ds4_test_output_tokens")) spec.forced_tokens = std::move(ids);
    spec.drafts = token_ids("ds4_test_drafts");
    if (auto prefix = get_string(body, "ds4_test_output_prefix")) {
      // Forced first tokens, then normal sampling (e.g. reasoning ending in </think>).
      auto ids = ctx.tok.encode(*prefix, /*parse_special=*/true);
      spec.forced_tokens = std::vector<int32_t>(ids.begin(), ids.end());
      spec.forced_then_sample = true;
    }
    if (auto delay = get_int(body, "ds4_test_delay_ms")) {
      spec.test_delay_ms = static_cast<int>(std::clamp<int64_t>(*delay, 0, 10000));
    }
  }
}

void check_context(const GenerationSpec& spec, const ServerContext& ctx, const char* param) {
  if (spec.tokens.size() >= static_cast<size_t>(ctx.ctx)) {
    throw context_length_error(spec.tokens.size(), ctx.ctx, param);
  }
}

size_t max_token_bytes(const text::Tokenizer& tok) {
  size_t longest = 0;
  for (size_t id = 0; id < tok.vocab_size(); ++id) {
    longest = std::max(longest, tok.token_bytes(static_cast<int>(id)).size());
  }
  return longest;
}

void check_context_bound(size_t control_tokens, size_t text_bytes, const ServerContext& ctx,
                         const char* param) {
  if (ctx.max_token_bytes == 0) return;
  const size_t at_least =
      control_tokens + (text_bytes + ctx.max_token_bytes - 1) / ctx.max_token_bytes;
  if (at_least < static_cast<size_t>(ctx.ctx)) return;
  // context_length_error's shape and phrases (clients match them to compact), with the
  // count given as the bound it is.
  const ApiError exact = context_length_error(at_least, ctx.ctx, param);
  ApiError e(400, "Prompt has at least " + std::to_string(at_least) + " tokens (" +
                      std::to_string(text_bytes) +
                      " bytes of text), but the configured context size is " +
                      std::to_string(ctx.ctx) + " tokens: the request exceeds the context window");
  e.param = exact.param;
  e.code = exact.code;
  e.extra = exact.extra;
  throw e;
}

text::RenderOptions base_render_options(const Thinking& th, const ServerContext& ctx) {
  text::RenderOptions ro;
  ro.thinking_mode = th.enabled ? text::ThinkingMode::Thinking : text::ThinkingMode::Chat;
  ro.reasoning_effort = th.effort;
  ro.context_size = static_cast<uint64_t>(ctx.ctx);
  if (ToolReplay* replay = ctx.tool_replay; replay && replay->enabled())
    ro.dsml_replay = [replay](std::string_view id) { return replay->lookup(id); };
  return ro;
}

void render_into_spec(const OJ& messages, const text::RenderOptions& ro, const Thinking& th,
                      const ServerContext& ctx, GenerationSpec& spec, const char* param) {
  try {
    spec.segments = text::render_chat_segments(messages, ro);
  } catch (const std::invalid_argument& e) {  // includes text::ChatError
    throw bad_request(std::string("invalid ") + param + ": " + e.what(), param);
  }
  spec.rendered = text::join_segments(spec.segments);
  spec.thinking = th.enabled;
  size_t controls = 0, text_bytes = 0;
  for (const auto& seg : spec.segments) {
    if (seg.special) ++controls;
    else text_bytes += seg.text.size();
  }
  // A prompt far beyond the context is refused without tokenizing megabytes of it.
  check_context_bound(controls, text_bytes, ctx, param);
  spec.tokens = tokenize_segments(ctx.tok, spec.segments);
}

void place_system_messages(OJ& messages) {
  OJ out = OJ::array();
  bool leading = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    OJ& m = messages[i];
    if (m.value("role", std::string()) != "system") {
      leading = false;
      out.push_back(std::move(m));
      continue;
    }
    std::string text = m.value("content", std::string());
    if (leading) {
      if (out.empty()) {
        out.push_back(std::move(m));
      } else if (!text.empty()) {
        std::string& host = out.back()["content"].get_ref<std::string&>();
        host += host.empty() ? text : "\n\n" + text;
      }
      continue;
    }
    if (text.empty()) continue;  // nothing to render
    const std::string prev = out.back().value("role", std::string());
    if (prev == "user" || prev == "tool" || i + 1 == messages.size()) {
      // Inside a user turn (or ending the conversation): a text block of that turn, so the
      // turn still ends with the assistant transition.
      out.push_back({{"role", "user"}, {"content", std::move(text)}});
    } else {
      out.push_back(std::move(m));  // between an answer and the next user turn: in place
    }
  }
  messages = std::move(out);
}

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

OJ validate_tools(const OJ& tools) {
  if (!tools.is_array()) throw bad_request("'tools' must be an array", "tools");
  OJ out = OJ::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    const OJ& t = tools[i];
    std::string where = "tools[" + std::to_string(i) + "]";
    if (!t.is_object()) throw bad_request(where + " must be an object", "tools");
    std::string type = t.value("type", std::string("function"));
    if (type != "function") {
      throw bad_request(where + ": tool type '" + type + "' is not supported", "tools");
    }
    const OJ* fn = field(t, "function");
    if (!fn || !fn->is_object()) throw bad_request(where + ": missing 'function' object", "tools");
    const OJ* name = field(*fn, "name");
    if (!name || !name->is_string() || name->get<std::string>().empty()) {
      throw bad_request(where + ": function.name must be a non-empty string", "tools");
    }
    out.push_back({{"type", "function"}, {"function", *fn}});
  }
  return out;
}

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
        out.push_back(json{{"id", id_},
                           {"object", "chat.completion.chunk"},
                           {"created", created_},
                           {"model", model_},
                           {"choices", json::array()},
                           {"usage", usage_json(ev.usage)}});
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
        out.push_back(json{{"id", id_},
                           {"object", "text_completion"},
                           {"created", created_},
                           {"model", model_},
                           {"choices", json::array()},
                           {"usage", usage_json(ev.usage)}});
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
