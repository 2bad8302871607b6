// Request parsing shared by the protocols (OpenAI chat and completions, Anthropic messages,
// Responses): declared in request_fields.h.
#include "server/request_fields.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "server/structured_output.h"
#include "server/worker.h"
#include "text/chat.h"

namespace ds4::server {

using OJ = nlohmann::ordered_json;
using json = nlohmann::ordered_json;

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

std::string join_text_parts(const OJ& content, const std::string& where, const char* param,
                            std::initializer_list<std::string_view> text_types, const char* untyped) {
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) {
    throw bad_request(where + ": 'content' must be a string, null or an array of parts", param);
  }
  std::string out;
  for (const auto& part : content) {
    if (part.is_string()) {
      out += part.get<std::string>();
      continue;
    }
    if (!part.is_object()) throw bad_request(where + ": content part must be an object", param);
    const std::string type = part.value("type", std::string(untyped));
    if (std::find(text_types.begin(), text_types.end(), type) == text_types.end()) {
      throw bad_request(where + ": content part type '" + type + "' is not supported (text only)", param);
    }
    const OJ* t = field(part, "text");
    if (!t || !t->is_string()) throw bad_request(where + ": text part without a string 'text'", param);
    out += t->get<std::string>();
  }
  return out;
}

std::string flatten_content(const OJ& content, const std::string& where) {
  return join_text_parts(content, where, "messages", {"text", "input_text"}, "text");
}

void for_each_tool(const OJ& tools, const std::function<void(const OJ& tool, const std::string& where)>& visit) {
  if (!tools.is_array()) throw bad_request("'tools' must be an array", "tools");
  for (size_t i = 0; i < tools.size(); ++i) {
    const std::string where = "tools[" + std::to_string(i) + "]";
    if (!tools[i].is_object()) throw bad_request(where + " must be an object", "tools");
    visit(tools[i], where);
  }
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

OJ validate_tools(const OJ& tools) {
  OJ out = OJ::array();
  for_each_tool(tools, [&out](const OJ& t, const std::string& where) {
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
  });
  return out;
}

}  // namespace ds4::server
