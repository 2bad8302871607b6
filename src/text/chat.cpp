#include "text/chat.h"

#include <algorithm>
#include <map>
#include <vector>

#include "text/chat_json.h"

namespace ds4::text {

using Json = nlohmann::ordered_json;

const std::string_view kThinkMaxPrefix =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, "
    "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left "
    "unchecked.\n\n";

namespace {

// The tools block is training-format data; its literal <think>, </think> and ｜DSML｜ are
// control tokens (docs/prompting.md).
constexpr std::string_view kToolsHead =
    "## Tools\n\n"
    "You have access to a set of tools to help answer the user's question. You can invoke tools "
    "by writing a \"<｜DSML｜tool_calls>\" block like the following:\n\n"
    "<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME\">\n"
    "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>\n\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types "
    "(numbers, booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning "
    "inside <think>...</think> BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n\n"
    "### Available Tool Schemas\n\n";
constexpr std::string_view kToolsTail =
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";
constexpr std::string_view kResponseFormatHead =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

const std::map<std::string, std::string_view, std::less<>>& task_tokens() {
  static const std::map<std::string, std::string_view, std::less<>> kTokens = {
      {"action", "<｜action｜>"}, {"query", "<｜query｜>"},   {"authority", "<｜authority｜>"},
      {"domain", "<｜domain｜>"}, {"title", "<｜title｜>"},   {"read_url", "<｜read_url｜>"},
  };
  return kTokens;
}

[[noreturn]] void fail(size_t index, const std::string& why) {
  throw ChatError("message " + std::to_string(index) + ": " + why);
}

// Writes renderer-authored text, turning each of the three control strings into a segment.
void write_template(SegmentWriter& w, std::string_view text) {
  static constexpr std::string_view kMarkers[] = {"｜DSML｜", "</think>", "<think>"};
  size_t pos = 0;
  while (pos < text.size()) {
    size_t best = std::string_view::npos;
    std::string_view hit;
    for (auto m : kMarkers) {
      size_t p = text.find(m, pos);
      if (p < best) {
        best = p;
        hit = m;
      }
    }
    if (best == std::string_view::npos) {
      w.text(text.substr(pos));
      return;
    }
    w.text(text.substr(pos, best - pos));
    w.special(hit);
    pos = best + hit.size();
  }
}

bool has_field(const Json& msg, const char* key) { return msg.contains(key) && !msg[key].is_null(); }

std::string role_of(const Json& msg) {
  auto it = msg.find("role");
  if (it == msg.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

// Python truthiness of a JSON value (for `if tools:` and friends).
bool truthy(const Json& v) {
  if (v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_string() || v.is_array() || v.is_object()) return !v.empty();
  if (v.is_number_float()) return v.get<double>() != 0.0;
  if (v.is_number()) return v.get<int64_t>() != 0;
  return true;
}

// Message text. Content arrays are flattened as serving layers do (text parts joined by one
// space, other parts dropped); the reference encoder itself only takes strings.
std::string text_of(const Json& msg, const char* key, size_t index) {
  auto it = msg.find(key);
  if (it == msg.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    std::string out;
    bool first = true;
    for (const auto& part : *it) {
      if (!part.is_object() || part.value("type", "") != "text") continue;
      auto t = part.find("text");
      if (t == part.end() || !t->is_string()) continue;
      if (!first) out += " ";
      first = false;
      out += t->get<std::string>();
    }
    return out;
  }
  fail(index, std::string("field '") + key + "' must be a string");
}

void write_tools(SegmentWriter& w, const Json& tools) {
  write_template(w, kToolsHead);
  std::string lines;
  for (size_t i = 0; i < tools.size(); ++i) {
    const Json& tool = tools[i];
    // OpenAI wraps the schema in "function"; a bare schema object is taken as is.
    const Json& fn = tool.is_object() && tool.contains("function") ? tool["function"] : tool;
    if (i) lines += "\n";
    lines += pyjson::dumps(fn);
  }
  w.text(lines);
  w.text(kToolsTail);
}

void write_response_format(SegmentWriter& w, const Json& schema) {
  w.text(kResponseFormatHead);
  w.text(pyjson::dumps(schema));
}

// ---- preprocessing (encoder order: attach tools, merge tool messages, sort results, drop)

std::vector<Json> attach_request_fields(const Json& messages, const RenderOptions& opt) {
  if (!messages.is_array()) throw ChatError("messages must be a JSON array");
  std::vector<Json> out;
  out.reserve(messages.size() + 1);
  for (size_t i = 0; i < messages.size(); ++i) {
    if (!messages[i].is_object()) fail(i, "not a JSON object");
    if (!messages[i].contains("role") || !messages[i]["role"].is_string()) fail(i, "missing string 'role'");
    out.push_back(messages[i]);
  }
  bool want_tools = opt.tools.is_array() && !opt.tools.empty();
  if (!opt.tools.is_null() && !opt.tools.is_array()) throw ChatError("tools must be a JSON array");
  bool want_format = truthy(opt.response_format);
  if (!want_tools && !want_format) return out;
  bool host_first = !out.empty() && (role_of(out[0]) == "system" || role_of(out[0]) == "developer");
  if (!host_first) out.insert(out.begin(), Json{{"role", "system"}});
  Json& host = out[0];
  if (want_tools) {
    if (host.contains("tools") && host["tools"].is_array()) {
      for (const auto& t : opt.tools) host["tools"].push_back(t);
    } else {
      host["tools"] = opt.tools;
    }
  }
  if (want_format && !truthy(host.value("response_format", Json()))) host["response_format"] = opt.response_format;
  return out;
}

bool is_block_user(const Json& m) { return role_of(m) == "user" && m.contains("content_blocks"); }

std::vector<Json> merge_tool_messages(const std::vector<Json>& messages) {
  std::vector<Json> merged;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& msg = messages[i];
    std::string role = role_of(msg);
    if (role == "tool") {
      Json block = {{"type", "tool_result"}, {"tool_use_id", ""}, {"content", ""}};
      if (msg.contains("tool_call_id") && msg["tool_call_id"].is_string()) block["tool_use_id"] = msg["tool_call_id"];
      if (has_field(msg, "content")) block["content"] = msg["content"];
      if (!merged.empty() && is_block_user(merged.back())) {
        merged.back()["content_blocks"].push_back(std::move(block));
      } else {
        merged.push_back(Json{{"role", "user"}, {"content_blocks", Json::array({std::move(block)})}});
      }
    } else if (role == "user") {
      std::string text = text_of(msg, "content", i);
      Json block = {{"type", "text"}, {"text", text}};
      if (!merged.empty() && is_block_user(merged.back()) && !has_field(merged.back(), "task")) {
        merged.back()["content_blocks"].push_back(std::move(block));
      } else {
        Json m = {{"role", "user"}, {"content", text}, {"content_blocks", Json::array({std::move(block)})}};
        for (const char* key : {"task", "wo_eos", "mask"})
          if (msg.contains(key)) m[key] = msg[key];
        merged.push_back(std::move(m));
      }
    } else {
      merged.push_back(msg);
    }
  }
  return merged;
}

std::string call_id_of(const Json& call) {
  if (!call.is_object()) return "";
  if (call.contains("id") && call["id"].is_string() && !call["id"].get_ref<const std::string&>().empty())
    return call["id"].get<std::string>();
  if (call.contains("function") && call["function"].is_object()) {
    const Json& fn = call["function"];
    if (fn.contains("id") && fn["id"].is_string()) return fn["id"].get<std::string>();
  }
  return "";
}

void sort_tool_results(std::vector<Json>& messages) {
  std::map<std::string, size_t> order;
  for (Json& msg : messages) {
    std::string role = role_of(msg);
    if (role == "assistant" && msg.contains("tool_calls") && truthy(msg["tool_calls"]) && msg["tool_calls"].is_array()) {
      order.clear();
      const Json& calls = msg["tool_calls"];
      for (size_t i = 0; i < calls.size(); ++i) {
        std::string id = call_id_of(calls[i]);
        if (!id.empty()) order[id] = i;
      }
    } else if (role == "user" && msg.contains("content_blocks")) {
      Json& blocks = msg["content_blocks"];
      std::vector<Json> results;
      for (const auto& b : blocks)
        if (b.value("type", "") == "tool_result") results.push_back(b);
      if (results.size() < 2 || order.empty()) continue;
      auto rank = [&](const Json& b) {
        auto it = order.find(b.value("tool_use_id", ""));
        return it == order.end() ? size_t{0} : it->second;
      };
      std::stable_sort(results.begin(), results.end(), [&](const Json& a, const Json& b) { return rank(a) < rank(b); });
      size_t next = 0;
      for (auto& b : blocks)
        if (b.value("type", "") == "tool_result") b = results[next++];
    }
  }
}

long last_user_index(const std::vector<Json>& messages) {
  for (size_t i = messages.size(); i-- > 0;) {
    std::string role = role_of(messages[i]);
    if (role == "user" || role == "developer") return static_cast<long>(i);
  }
  return -1;
}

std::vector<Json> drop_thinking_messages(const std::vector<Json>& messages) {
  long last_user = last_user_index(messages);
  std::vector<Json> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    std::string role = role_of(messages[i]);
    bool kept_role = role == "user" || role == "system" || role == "tool" || role == "latest_reminder" ||
                     role == "direct_search_results";
    if (kept_role || static_cast<long>(i) >= last_user) {
      out.push_back(messages[i]);
    } else if (role == "assistant") {
      Json m = messages[i];
      m.erase("reasoning_content");
      out.push_back(std::move(m));
    }
    // Earlier developer (and unknown-role) messages are removed.
  }
  return out;
}

// ---- rendering

struct Renderer {
  const RenderOptions& opt;
  const std::vector<Json>& msgs;
  bool thinking;
  bool drop;
  long last_user;
  SegmentWriter& w;

  void render(size_t index) {
    const Json& msg = msgs[index];
    std::string role = role_of(msg);

    if (index == 0 && think_max_active(opt)) w.text(kThinkMaxPrefix);

    if (role == "system" || role == "developer") {
      std::string content = text_of(msg, "content", index);
      if (role == "developer") {
        if (content.empty()) fail(index, "developer message needs non-empty content");
        w.special(kUserToken);
      }
      w.text(content);
      if (msg.contains("tools") && truthy(msg["tools"])) {
        if (!msg["tools"].is_array()) fail(index, "'tools' must be an array");
        w.text("\n\n");
        write_tools(w, msg["tools"]);
      }
      if (msg.contains("response_format") && truthy(msg["response_format"])) {
        w.text("\n\n");
        write_response_format(w, msg["response_format"]);
      }
    } else if (role == "user") {
      w.special(kUserToken);
      render_user_body(msg, index);
    } else if (role == "latest_reminder") {
      w.special(kLatestReminderToken);
      w.text(text_of(msg, "content", index));
    } else if (role == "assistant") {
      render_assistant(msg, index);
    } else if (role == "tool") {
      fail(index, "tool message was not merged");  // unreachable: merge_tool_messages runs first
    } else {
      fail(index, "unknown role '" + role + "'");
    }

    render_transition(index);
  }

  void render_user_body(const Json& msg, size_t index) {
    if (!msg.contains("content_blocks") || !truthy(msg["content_blocks"])) {
      w.text(text_of(msg, "content", index));
      return;
    }
    bool first = true;
    for (const Json& block : msg["content_blocks"]) {
      if (!first) w.text("\n\n");
      first = false;
      std::string type = block.value("type", "");
      if (type == "text") {
        w.text(text_of(block, "text", index));
      } else if (type == "tool_result") {
        w.text("<tool_result>");
        w.text(tool_result_text(block["content"], index));
        w.text("</tool_result>");
      } else {
        w.text("[Unsupported " + type + "]");
      }
    }
  }

  static std::string tool_result_text(const Json& content, size_t index) {
    if (content.is_null()) return "";
    if (content.is_string()) return content.get<std::string>();
    if (content.is_array()) {
      std::string out;
      for (size_t i = 0; i < content.size(); ++i) {
        if (i) out += "\n\n";
        const Json& part = content[i];
        std::string type = part.is_object() ? part.value("type", "None") : "None";
        if (type == "text") {
          auto t = part.find("text");
          if (t != part.end() && t->is_string()) out += t->get<std::string>();
        } else {
          out += "[Unsupported " + type + "]";
        }
      }
      return out;
    }
    (void)index;
    return pyjson::dumps(content);  // an object result: its JSON text
  }

  void render_assistant(const Json& msg, size_t index) {
    bool prev_has_task = index > 0 && has_field(msgs[index - 1], "task");
    if (thinking && !prev_has_task && (!drop || static_cast<long>(index) > last_user)) {
      w.text(text_of(msg, "reasoning_content", index));
      w.special(kThinkClose);
    }
    w.text(text_of(msg, "content", index));
    render_tool_calls(msg, index);
    if (!(msg.contains("wo_eos") && truthy(msg["wo_eos"]))) w.special(kEosToken);
  }

  void render_tool_calls(const Json& msg, size_t index) {
    if (msg.contains("raw_dsml") && msg["raw_dsml"].is_string()) {
      w.text_with_markers(msg["raw_dsml"].get_ref<const std::string&>(), kDsmlToken);
      return;
    }
    if (!msg.contains("tool_calls") || !truthy(msg["tool_calls"])) return;
    const Json& calls = msg["tool_calls"];
    if (!calls.is_array()) fail(index, "'tool_calls' must be an array");
    std::vector<DsmlCallSpec> specs;
    for (const Json& call : calls) {
      if (!call.is_object() || !call.contains("function") || !call["function"].is_object())
        fail(index, "tool call without 'function' object");
      const Json& fn = call["function"];
      if (!fn.contains("name") || !fn["name"].is_string()) fail(index, "tool call without string 'name'");
      specs.push_back({fn["name"].get<std::string>(), fn.contains("arguments") ? fn["arguments"] : Json()});
    }
    if (std::optional<std::string> raw = replay_bytes(calls)) {
      w.text_with_markers(*raw, kDsmlToken);
      return;
    }
    write_dsml_block(w, specs);
  }

  // The generated bytes, when every call id is known and all name the same block.
  std::optional<std::string> replay_bytes(const Json& calls) const {
    if (!opt.dsml_replay) return std::nullopt;
    std::optional<std::string> bytes;
    for (const Json& call : calls) {
      std::string id = call_id_of(call);
      if (id.empty()) return std::nullopt;
      std::optional<std::string> b = opt.dsml_replay(id);
      if (!b) return std::nullopt;
      if (bytes && *bytes != *b) return std::nullopt;
      bytes = std::move(b);
    }
    return bytes;
  }

  void render_transition(size_t index) {
    if (index + 1 < msgs.size()) {
      std::string next = role_of(msgs[index + 1]);
      if (next != "assistant" && next != "latest_reminder") return;
    } else if (!opt.add_generation_prompt) {
      return;
    }
    const Json& msg = msgs[index];
    std::string role = role_of(msg);
    if (has_field(msg, "task")) {
      if (!msg["task"].is_string()) fail(index, "'task' must be a string");
      const std::string& task = msg["task"].get_ref<const std::string&>();
      auto it = task_tokens().find(task);
      if (it == task_tokens().end()) fail(index, "invalid task '" + task + "'");
      if (task != "action") {
        w.special(it->second);
      } else {
        w.special(kAssistantToken);
        w.special(thinking ? kThinkOpen : kThinkClose);
        w.special(it->second);
      }
    } else if (role == "user" || role == "developer") {
      w.special(kAssistantToken);
      bool open = thinking && (!drop || static_cast<long>(index) >= last_user);
      w.special(open ? kThinkOpen : kThinkClose);
    }
  }
};

}  // namespace

bool think_max_active(const RenderOptions& options) {
  if (options.thinking_mode != ThinkingMode::Thinking) return false;
  if (options.reasoning_effort != ReasoningEffort::Max) return false;
  return !(options.context_size && *options.context_size < kThinkMaxMinContext);
}

std::string render_tools_block(const nlohmann::ordered_json& tools) {
  SegmentWriter w;
  write_tools(w, tools);
  return join_segments(w.segments());
}

PromptSegments render_chat_segments(const nlohmann::ordered_json& messages, const RenderOptions& options) {
  std::vector<Json> msgs = attach_request_fields(messages, options);
  msgs = merge_tool_messages(msgs);
  sort_tool_results(msgs);

  bool thinking = options.thinking_mode == ThinkingMode::Thinking;
  bool drop = options.drop_thinking;
  for (const Json& m : msgs)
    if (m.contains("tools") && truthy(m["tools"])) drop = false;
  if (thinking && drop) msgs = drop_thinking_messages(msgs);

  SegmentWriter w;
  if (options.add_bos) w.special(kBosToken);
  Renderer r{options, msgs, thinking, drop, last_user_index(msgs), w};
  for (size_t i = 0; i < msgs.size(); ++i) r.render(i);
  return w.take();
}

std::string render_chat(const nlohmann::ordered_json& messages, const RenderOptions& options) {
  return join_segments(render_chat_segments(messages, options));
}

}  // namespace ds4::text
