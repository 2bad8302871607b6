#include "server/responses.h"

#include "server/request_fields.h"
#include "server/structured_output.h"
#include "server/tool_replay.h"
#include "server/worker.h"
#include "text/chat.h"

namespace ds4::server {

using OJ = nlohmann::ordered_json;

namespace {

std::string item_id(const char* prefix) { return ToolReplay::random_id(prefix).substr(0, std::string(prefix).size() + 24); }

// Text of a message item's content: a string, null, or text-like blocks.
std::string item_text(const OJ& content, const std::string& where) {
  return join_text_parts(content, where, "input",
                         {"input_text", "output_text", "text", "summary_text", "reasoning_text"}, "");
}

// A tool output: a string, or content parts (text only).
std::string output_text(const OJ& item, const std::string& where) {
  for (const char* key : {"output", "result"}) {
    if (const OJ* v = field(item, key)) {
      if (v->is_string()) return v->get<std::string>();
      if (v->is_array()) return item_text(*v, where);
      return v->dump();
    }
  }
  return "";
}

struct Converter {
  OJ out = OJ::array();
  std::string pending_reasoning;
  bool has_pending = false;

  OJ* last_assistant() {
    if (out.empty() || out.back().value("role", std::string()) != "assistant") return nullptr;
    return &out.back();
  }
  OJ& open_assistant() {
    if (OJ* a = last_assistant(); a && !has_pending) return *a;
    out.push_back({{"role", "assistant"}, {"content", ""}});
    take_reasoning(out.back());
    return out.back();
  }
  void take_reasoning(OJ& msg) {
    if (!has_pending) return;
    msg["reasoning_content"] = pending_reasoning;
    pending_reasoning.clear();
    has_pending = false;
  }
  void flush_reasoning() {
    if (!has_pending) return;
    out.push_back({{"role", "assistant"}, {"content", ""}});
    take_reasoning(out.back());
  }
  void add_call(const std::string& call_id, const std::string& name, OJ arguments) {
    OJ& a = open_assistant();
    if (!a.contains("tool_calls")) a["tool_calls"] = OJ::array();
    a["tool_calls"].push_back(
        {{"id", call_id}, {"type", "function"}, {"function", {{"name", name}, {"arguments", std::move(arguments)}}}});
  }

  void item(const OJ& it, size_t i) {
    std::string where = "input[" + std::to_string(i) + "]";
    if (!it.is_object()) throw bad_request(where + " must be an object", "input");
    std::string type = it.value("type", std::string("message"));
    if (auto status = get_string(it, "status"); status && *status != "completed") {
      throw bad_request(where + ": item status '" + *status + "' is not supported (completed only)",
                        "input");
    }
    if (type == "message") {
      std::string role = get_string(it, "role").value_or("user");
      std::string text = it.contains("content") ? item_text(it["content"], where) : std::string();
      if (role == "assistant") {
        OJ msg = {{"role", "assistant"}, {"content", text}};
        take_reasoning(msg);
        out.push_back(std::move(msg));
      } else if (role == "user" || role == "system" || role == "developer") {
        flush_reasoning();
        // `developer` is OpenAI's name for system instructions.
        out.push_back({{"role", role == "user" ? "user" : "system"}, {"content", text}});
      } else {
        throw bad_request(where + ": unsupported role '" + role + "'", "input");
      }
    } else if (type == "reasoning") {
      std::string text;
      for (const char* key : {"summary", "content"}) {
        if (const OJ* parts = field(it, key)) {
          if (!parts->is_array()) throw bad_request(where + ": reasoning '" + key + "' must be an array", "input");
          text += item_text(*parts, where);
        }
      }
      pending_reasoning += text;
      has_pending = true;
    } else if (type == "function_call" || type == "custom_tool_call" || type == "local_shell_call") {
      std::string call_id = get_string(it, "call_id").value_or(get_string(it, "id").value_or(""));
      if (call_id.empty()) throw bad_request(where + ": " + type + " needs 'call_id'", "input");
      std::string name = type == "local_shell_call" ? "local_shell" : get_string(it, "name").value_or("");
      if (name.empty()) throw bad_request(where + ": " + type + " needs 'name'", "input");
      if (auto ns = get_string(it, "namespace")) name = *ns + name;
      OJ arguments = OJ::object();
      if (type == "function_call") {
        if (const OJ* a = field(it, "arguments")) arguments = a->is_string() ? *a : OJ(a->dump());
        else arguments = "{}";
      } else if (type == "custom_tool_call") {
        arguments = OJ{{"input", get_string(it, "input").value_or("")}};
      } else if (const OJ* action = field(it, "action")) {
        arguments = OJ{{"action", *action}};
      }
      add_call(call_id, name, std::move(arguments));
    } else if (type == "function_call_output" || type == "custom_tool_call_output" ||
               type == "local_shell_call_output") {
      flush_reasoning();
      auto call_id = get_string(it, "call_id");
      if (!call_id || call_id->empty()) throw bad_request(where + ": " + type + " needs 'call_id'", "input");
      out.push_back({{"role", "tool"}, {"tool_call_id", *call_id}, {"content", output_text(it, where)}});
    } else if (type == "compaction" || type == "context_compaction") {
      // Opaque server-side state of another provider: nothing to render.
    } else if (type == "item_reference") {
      throw bad_request(where + ": item_reference is not supported; replay full input instead", "input");
    } else {
      throw bad_request(where + ": input item type '" + type + "' is not supported", "input");
    }
  }
};

OJ convert_tools(const OJ& tools, ResponsesRequest& rr) {
  OJ out = OJ::array();
  auto add_function = [&](const OJ& t, const std::string& prefix, const std::string& where) {
    auto name = get_string(t, "name");
    if (!name || name->empty()) throw bad_request(where + ": 'name' must be a non-empty string", "tools");
    OJ fn = {{"name", prefix + *name}};
    if (auto d = get_string(t, "description")) fn["description"] = *d;
    std::string type = t.value("type", std::string("function"));
    if (type == "custom") {
      // A freeform tool takes one string; the model writes it as the "input" parameter.
      rr.custom_tools.insert(prefix + *name);
      fn["parameters"] = {{"type", "object"},
                          {"properties", {{"input", {{"type", "string"}}}}},
                          {"required", {"input"}}};
    } else {
      const OJ* params = field(t, "parameters");
      if (params && !params->is_object()) throw bad_request(where + ": 'parameters' must be an object", "tools");
      fn["parameters"] = params ? *params : OJ{{"type", "object"}, {"properties", OJ::object()}};
    }
    if (!prefix.empty()) rr.namespaced[prefix + *name] = {prefix, *name};
    out.push_back({{"type", "function"}, {"function", std::move(fn)}});
  };
  for_each_tool(tools, [&](const OJ& t, const std::string& where) {
    std::string type = t.value("type", std::string("function"));
    if (type == "function" || type == "custom") {
      add_function(t, "", where);
    } else if (type == "namespace") {
      auto ns = get_string(t, "name");
      const OJ* inner = field(t, "tools");
      if (!ns || ns->empty() || !inner || !inner->is_array()) {
        throw bad_request(where + ": namespace needs 'name' and 'tools'", "tools");
      }
      for (size_t k = 0; k < inner->size(); ++k) {
        const OJ& it = (*inner)[k];
        if (!it.is_object()) throw bad_request(where + ": namespace tools must be objects", "tools");
        add_function(it, *ns, where + ".tools[" + std::to_string(k) + "]");
      }
    }
    // Hosted tools (web_search, file_search, image_generation, ...) run on OpenAI's side; a
    // local model cannot call them, so they are left out of the prompt.
  });
  return out;
}

}  // namespace

GenerationSpec build_responses_spec(const OJ& body, const ServerContext& ctx, RequestInfo& info,
                                    ResponsesRequest& rr) {
  if (!body.is_object()) throw bad_request("request body must be a JSON object");
  for (const char* key : {"previous_response_id", "conversation"}) {
    if (field(body, key)) {
      throw bad_request(std::string(key) + " is not supported; replay full input instead", key);
    }
  }
  GenerationSpec spec;
  spec.log_tag = "responses";
  info.model = get_string(body, "model").value_or(kModelId);
  info.stream = get_bool(body, "stream").value_or(false);
  rr.model = info.model;
  rr.id = item_id("resp_");

  std::optional<int64_t> max_tokens = get_int(body, "max_output_tokens");
  if (!max_tokens) max_tokens = get_int(body, "max_tokens");
  spec.max_tokens = max_tokens ? std::max<int64_t>(0, *max_tokens) : ctx.options.default_max_tokens;
  parse_test_hooks(body, ctx, spec);

  // Thinking: a non-null reasoning.effort is explicit control (docs/server.md, "Thinking").
  std::optional<std::string> effort;
  if (const OJ* reasoning = field(body, "reasoning")) {
    if (!reasoning->is_object()) throw bad_request("'reasoning' must be an object", "reasoning");
    effort = get_string(*reasoning, "effort");
    if (auto summary = get_string(*reasoning, "summary")) {
      if (*summary == "auto" || *summary == "concise" || *summary == "detailed") rr.summary = true;
      else if (*summary != "none") {
        throw bad_request("'reasoning.summary' must be auto, concise, detailed or none", "reasoning");
      }
    }
  }
  std::optional<bool> explicit_on;
  if (effort) explicit_on = *effort != "none";
  Thinking th = resolve_thinking_mode(explicit_on, effort, "reasoning.effort", info.model);

  const OJ* input = field(body, "input");
  if (!input) throw bad_request("missing input", "input");
  Converter conv;
  if (auto instructions = get_string(body, "instructions"); instructions && !instructions->empty()) {
    conv.out.push_back({{"role", "system"}, {"content", *instructions}});
  }
  if (input->is_string()) {
    conv.out.push_back({{"role", "user"}, {"content", *input}});
  } else if (input->is_array()) {
    if (input->size() > ctx.options.max_messages) throw bad_request("too many input items", "input");
    for (size_t i = 0; i < input->size(); ++i) conv.item((*input)[i], i);
    conv.flush_reasoning();
  } else {
    throw bad_request("'input' must be a string or an array of items", "input");
  }
  if (conv.out.empty()) throw bad_request("'input' must not be empty", "input");
  place_system_messages(conv.out);

  text::RenderOptions ro = base_render_options(th, ctx);
  bool tools_hidden = false;
  if (const OJ* choice = field(body, "tool_choice")) {
    if (choice->is_string()) {
      const std::string& c = choice->get_ref<const std::string&>();
      if (c == "none") tools_hidden = true;
      else if (c != "auto") throw bad_request("tool_choice=" + c + " not supported", "tool_choice");
    } else {
      throw bad_request("forced tool_choice not supported", "tool_choice");
    }
  }
  ToolConstraint constraint;
  if (const OJ* tools = field(body, "tools")) {
    OJ valid = convert_tools(*tools, rr);
    if (!tools_hidden && !valid.empty()) {
      // Function tools declared `strict: true` get their arguments constrained (only an
      // explicit true: other tools' schemas may use keywords the converter refuses).
      std::set<std::string> strict;
      if (tools->is_array()) {
        for (const auto& t : *tools) {
          if (!t.is_object() || t.value("type", std::string("function")) != "function") continue;
          const OJ* st = field(t, "strict");
          if (st && st->is_boolean() && st->get<bool>() && t.contains("name") && t["name"].is_string()) {
            strict.insert(t["name"].get<std::string>());
          }
        }
      }
      constraint = tool_constraint(valid, strict);
      if (auto par = get_bool(body, "parallel_tool_calls")) constraint.parallel = *par;
      ro.tools = std::move(valid);
      spec.parse_tools = true;
    }
  }
  const OutputFormat format = responses_output_format(body);
  if (!format.prompt_schema.is_null()) ro.response_format = format.prompt_schema;
  render_into_spec(conv.out, ro, th, ctx, spec, "input");
  apply_output_format(format, ctx, spec, constraint);
  // Only temperature and top_p apply; other knobs are not part of this API.
  OJ knobs = OJ::object();
  for (const char* key : {"temperature", "top_p"}) {
    if (body.contains(key)) knobs[key] = body[key];
  }
  parse_sampling(knobs, spec.thinking, spec);
  check_context(spec, ctx, "input");
  return spec;
}

OJ responses_usage_json(const Usage& u) {
  return OJ{{"input_tokens", u.prompt_tokens},
            {"input_tokens_details",
             {{"cached_tokens", u.cached_tokens}, {"cache_write_tokens", u.prompt_tokens - u.cached_tokens}}},
            {"output_tokens", u.completion_tokens},
            {"output_tokens_details", {{"reasoning_tokens", 0}}},
            {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

// ------------------------------------------------------------------ formatting

ResponsesFormatter::ResponsesFormatter(ResponsesRequest request, int64_t created_at)
    : req_(std::move(request)), created_at_(created_at), reasoning_id_(item_id("rs_")),
      message_id_(item_id("msg_")) {}

OJ ResponsesFormatter::response_object(const std::string& status, const OJ& output,
                                       const Usage* usage) const {
  OJ r = {{"id", req_.id},
          {"object", "response"},
          {"created_at", created_at_},
          {"status", status},
          {"error", nullptr},
          {"incomplete_details", nullptr},
          {"model", req_.model},
          {"output", output},
          {"parallel_tool_calls", true},
          {"tool_choice", "auto"},
          {"tools", OJ::array()},
          {"usage", usage ? responses_usage_json(*usage) : OJ(nullptr)}};
  if (status == "incomplete") r["incomplete_details"] = {{"reason", "max_tokens"}};
  if (status == "failed") r["error"] = {{"code", "server_error"}, {"message", "generation failed"}};
  return r;
}

OJ ResponsesFormatter::reasoning_item(const std::string& status) const {
  OJ summary = OJ::array();
  if (!reasoning_.empty()) summary.push_back({{"type", "summary_text"}, {"text", reasoning_}});
  return OJ{{"id", reasoning_id_}, {"type", "reasoning"}, {"status", status}, {"summary", summary}};
}

OJ ResponsesFormatter::message_item(const std::string& status) const {
  OJ content = OJ::array();
  if (status != "in_progress") {
    content.push_back({{"type", "output_text"}, {"text", text_}, {"annotations", OJ::array()}});
  }
  return OJ{{"id", message_id_}, {"type", "message"}, {"status", status}, {"role", "assistant"},
            {"content", content}};
}

OJ ResponsesFormatter::call_item(const Call& c, const std::string& status) const {
  std::string name = c.name;
  std::string ns;
  if (auto it = req_.namespaced.find(c.name); it != req_.namespaced.end()) {
    ns = it->second.first;
    name = it->second.second;
  }
  OJ item;
  if (req_.custom_tools.count(c.name)) {
    std::string input;
    try {
      OJ args = OJ::parse(c.arguments.empty() ? "{}" : c.arguments);
      if (args.is_object() && args.contains("input") && args["input"].is_string()) input = args["input"];
      else input = c.arguments;
    } catch (const nlohmann::ordered_json::parse_error&) {
      input = c.arguments;
    }
    item = {{"id", c.item_id}, {"type", "custom_tool_call"}, {"status", status}, {"call_id", c.call_id},
            {"name", name}, {"input", input}};
  } else {
    item = {{"id", c.item_id}, {"type", "function_call"}, {"status", status}, {"call_id", c.call_id},
            {"name", name}, {"arguments", c.arguments}};
  }
  if (!ns.empty()) item["namespace"] = ns;
  return item;
}

void ResponsesFormatter::emit(std::vector<OJ>& out, OJ ev) {
  ev["sequence_number"] = seq_++;
  out.push_back(std::move(ev));
}

void ResponsesFormatter::close_reasoning(std::vector<OJ>& out, const std::string& status) {
  if (open_ != Open::Reasoning) return;
  const size_t idx = open_index_;
  OJ part = {{"type", "summary_text"}, {"text", reasoning_}};
  emit(out, {{"type", "response.reasoning_summary_text.done"}, {"item_id", reasoning_id_},
             {"output_index", idx}, {"summary_index", 0}, {"text", reasoning_}});
  emit(out, {{"type", "response.reasoning_summary_part.done"}, {"item_id", reasoning_id_},
             {"output_index", idx}, {"summary_index", 0}, {"part", part}});
  OJ item = reasoning_item(status);
  emit(out, {{"type", "response.output_item.done"}, {"output_index", idx}, {"item", item}});
  done_items_.push_back(std::move(item));
  open_ = Open::None;
}

void ResponsesFormatter::close_message(std::vector<OJ>& out, const std::string& status) {
  if (open_ != Open::Message) return;
  const size_t idx = open_index_;
  OJ part = {{"type", "output_text"}, {"text", text_}, {"annotations", OJ::array()}};
  emit(out, {{"type", "response.output_text.done"}, {"item_id", message_id_}, {"output_index", idx},
             {"content_index", 0}, {"text", text_}});
  emit(out, {{"type", "response.content_part.done"}, {"item_id", message_id_}, {"output_index", idx},
             {"content_index", 0}, {"part", part}});
  OJ item = message_item(status);
  emit(out, {{"type", "response.output_item.done"}, {"output_index", idx}, {"item", item}});
  done_items_.push_back(std::move(item));
  open_ = Open::None;
}

void ResponsesFormatter::start_call(std::vector<OJ>& out, const std::string& call_id,
                                    const std::string& name) {
  close_reasoning(out, "completed");
  close_message(out, "completed");
  close_call(out, "completed");
  call_ = Call{item_id(req_.custom_tools.count(name) ? "ctc_" : "fc_"), call_id, name, ""};
  open_ = Open::Call;
  open_index_ = next_output_++;
  emit(out, {{"type", "response.output_item.added"}, {"output_index", open_index_},
             {"item", call_item(call_, "in_progress")}});
}

void ResponsesFormatter::close_call(std::vector<OJ>& out, const std::string& status) {
  if (open_ != Open::Call) return;
  const size_t idx = open_index_;
  if (req_.custom_tools.count(call_.name)) {
    OJ item = call_item(call_, status);
    emit(out, {{"type", "response.custom_tool_call_input.delta"}, {"item_id", call_.item_id},
               {"output_index", idx}, {"delta", item["input"]}});
    emit(out, {{"type", "response.custom_tool_call_input.done"}, {"item_id", call_.item_id},
               {"output_index", idx}, {"input", item["input"]}});
  } else {
    OJ done = {{"type", "response.function_call_arguments.done"}, {"item_id", call_.item_id},
               {"output_index", idx}, {"name", call_.name}, {"arguments", call_.arguments}};
    if (auto it = req_.namespaced.find(call_.name); it != req_.namespaced.end()) {
      done["name"] = it->second.second;
      done["namespace"] = it->second.first;
    }
    emit(out, std::move(done));
  }
  OJ item = call_item(call_, status);
  emit(out, {{"type", "response.output_item.done"}, {"output_index", idx}, {"item", item}});
  done_items_.push_back(std::move(item));
  open_ = Open::None;
}

void ResponsesFormatter::stream_event(const GenEvent& ev, std::vector<OJ>& out) {
  switch (ev.kind) {
    case GenEvent::Kind::Started:
      if (created_) break;
      created_ = true;
      emit(out, {{"type", "response.created"}, {"response", response_object("in_progress", OJ::array(), nullptr)}});
      emit(out, {{"type", "response.in_progress"}, {"response", response_object("in_progress", OJ::array(), nullptr)}});
      break;
    case GenEvent::Kind::Reasoning:
      // Reasoning surfaces only when the client asked for summaries (reasoning.summary).
      if (!req_.summary || reasoning_closed_) break;
      if (open_ != Open::Reasoning) {
        open_ = Open::Reasoning;
        open_index_ = next_output_++;
        emit(out, {{"type", "response.output_item.added"}, {"output_index", open_index_},
                   {"item", {{"id", reasoning_id_}, {"type", "reasoning"}, {"status", "in_progress"},
                             {"summary", OJ::array()}}}});
        emit(out, {{"type", "response.reasoning_summary_part.added"}, {"item_id", reasoning_id_},
                   {"output_index", open_index_}, {"summary_index", 0},
                   {"part", {{"type", "summary_text"}, {"text", ""}}}});
      }
      reasoning_ += ev.text;
      emit(out, {{"type", "response.reasoning_summary_text.delta"}, {"item_id", reasoning_id_},
                 {"output_index", open_index_}, {"summary_index", 0}, {"delta", ev.text}});
      break;
    case GenEvent::Kind::Content:
      if (open_ == Open::Reasoning) {
        close_reasoning(out, "completed");
        reasoning_closed_ = true;
      }
      if (open_ != Open::Message) {
        close_call(out, "completed");
        text_.clear();
        open_ = Open::Message;
        open_index_ = next_output_++;
        emit(out, {{"type", "response.output_item.added"}, {"output_index", open_index_},
                   {"item", message_item("in_progress")}});
        emit(out, {{"type", "response.content_part.added"}, {"item_id", message_id_},
                   {"output_index", open_index_}, {"content_index", 0},
                   {"part", {{"type", "output_text"}, {"text", ""}, {"annotations", OJ::array()}}}});
      }
      text_ += ev.text;
      emit(out, {{"type", "response.output_text.delta"}, {"item_id", message_id_},
                 {"output_index", open_index_}, {"content_index", 0}, {"delta", ev.text}});
      break;
    case GenEvent::Kind::ToolCallStart:
      if (open_ == Open::Reasoning) reasoning_closed_ = true;
      streamed_calls_ = std::max(streamed_calls_, ev.index + 1);
      start_call(out, ev.id, ev.name);
      break;
    case GenEvent::Kind::ToolCallArgs:
      if (open_ != Open::Call) break;
      call_.arguments += ev.text;
      if (!req_.custom_tools.count(call_.name)) {
        emit(out, {{"type", "response.function_call_arguments.delta"}, {"item_id", call_.item_id},
                   {"output_index", open_index_}, {"delta", ev.text}});
      }
      break;
    case GenEvent::Kind::Done: {
      const bool cut = ev.finish_reason == "length";
      const bool failed = ev.finish_reason == "error" || ev.finish_reason == "cancelled";
      const std::string item_status = cut || failed ? "incomplete" : "completed";
      close_reasoning(out, item_status);
      close_message(out, item_status);
      if (open_ == Open::Call && streamed_calls_ > 0) {
        // The authoritative arguments of the streamed call.
        const auto& c = ev.tool_calls.size() >= streamed_calls_ ? ev.tool_calls[streamed_calls_ - 1]
                                                                : FinalToolCall{};
        if (!c.id.empty()) call_.arguments = c.arguments;
      }
      close_call(out, item_status);
      for (size_t i = streamed_calls_; i < ev.tool_calls.size(); ++i) {
        const auto& c = ev.tool_calls[i];
        start_call(out, c.id, c.name);
        call_.arguments = c.arguments;
        if (!req_.custom_tools.count(c.name)) {
          emit(out, {{"type", "response.function_call_arguments.delta"}, {"item_id", call_.item_id},
                     {"output_index", open_index_}, {"delta", c.arguments}});
        }
        close_call(out, item_status);
      }
      std::string status = failed ? "failed" : cut ? "incomplete" : "completed";
      emit(out, {{"type", "response." + status}, {"response", response_object(status, done_items_, &ev.usage)}});
      break;
    }
    default:
      break;
  }
}

void ResponsesFormatter::stream_failure(const ApiError& e, std::vector<OJ>& out) {
  if (!created_) {
    created_ = true;
    emit(out, {{"type", "response.created"}, {"response", response_object("in_progress", OJ::array(), nullptr)}});
  }
  OJ r = response_object("failed", done_items_, nullptr);
  r["error"] = {{"code", e.code.empty() ? std::string("server_error") : e.code}, {"message", e.what()}};
  emit(out, {{"type", "response.failed"}, {"response", std::move(r)}});
}

void ResponsesFormatter::collect(const GenEvent& ev) {
  switch (ev.kind) {
    case GenEvent::Kind::Reasoning: reasoning_ += ev.text; break;
    case GenEvent::Kind::Content: text_ += ev.text; break;
    case GenEvent::Kind::Done: done_ = ev; break;
    default: break;
  }
}

OJ ResponsesFormatter::final_response() const {
  const bool cut = done_.finish_reason == "length";
  const bool failed = done_.finish_reason == "error" || done_.finish_reason == "cancelled";
  const std::string item_status = cut || failed ? "incomplete" : "completed";
  OJ output = OJ::array();
  if (req_.summary && !reasoning_.empty()) output.push_back(reasoning_item(item_status));
  if (!text_.empty()) output.push_back(message_item(item_status));
  for (const auto& c : done_.tool_calls) {
    Call call{item_id(req_.custom_tools.count(c.name) ? "ctc_" : "fc_"), c.id, c.name, c.arguments};
    output.push_back(call_item(call, item_status));
  }
  return response_object(failed ? "failed" : cut ? "incomplete" : "completed", output, &done_.usage);
}

}  // namespace ds4::server
