// Request parsing shared by the endpoints (chat, completions, messages, responses): typed
// field access with 400 errors, thinking mode resolution, sampling, stop lists, test hooks.
#pragma once

#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "server/job.h"
#include "server/openai.h"
#include "text/chat.h"

namespace ds4::server {

// The value of `key`, or nullptr when absent or JSON null (null means "not given").
const nlohmann::ordered_json* field(const nlohmann::ordered_json& body, const char* key);
// Typed getters: nullopt when absent/null, ApiError 400 naming the key when mistyped.
std::optional<double> get_number(const nlohmann::ordered_json& body, const char* key, double lo,
                                 double hi);
std::optional<int64_t> get_int(const nlohmann::ordered_json& body, const char* key);
std::optional<bool> get_bool(const nlohmann::ordered_json& body, const char* key);
std::optional<std::string> get_string(const nlohmann::ordered_json& body, const char* key);

// Content as one string: a string, null, or an array of strings and text parts
// ({"type": T, "text": "..."} with T one of `text_types`; a part without "type" has type
// `untyped`), concatenated; anything else is a 400 naming `where`, for the parameter `param`.
std::string join_text_parts(const nlohmann::ordered_json& content, const std::string& where,
                            const char* param, std::initializer_list<std::string_view> text_types,
                            const char* untyped);
// Chat message content: text and input_text parts, untyped parts are text (param "messages").
std::string flatten_content(const nlohmann::ordered_json& content, const std::string& where);
// `tools` must be an array of objects (400s for "tools"); calls visit(tool, "tools[i]") on each.
void for_each_tool(const nlohmann::ordered_json& tools,
                   const std::function<void(const nlohmann::ordered_json& tool, const std::string& where)>& visit);

struct Thinking {
  bool enabled = true;
  text::ReasoningEffort effort = text::ReasoningEffort::Default;
};
// Thinking (docs/server.md): an explicit on/off wins, then the model alias (deepseek-chat off,
// deepseek-reasoner on), then the effort string (none = off; 400 for unknown strings).
Thinking resolve_thinking_mode(std::optional<bool> explicit_on,
                               const std::optional<std::string>& effort, const char* effort_param,
                               const std::string& model);

// System text inside the renderer's message list (`role` "system", string content), placed
// so that prompts stay prefix-stable turn after turn: the leading ones form the system prompt
// (joined by "\n\n"); a later one renders in place as the official template does (no role
// token), except that one right after a user or tool message, or ending the list, becomes a
// text block of that user turn, which then still ends with the assistant transition
// (Anthropic mid-conversation system messages, OpenAI system/developer messages).
void place_system_messages(nlohmann::ordered_json& messages);

// temperature, top_p, top_k, min_p, seed (client knobs ignored in thinking mode).
void parse_sampling(const nlohmann::ordered_json& body, bool thinking, GenerationSpec& spec);
// Stop sequences from `body[key]` (string or array; empties dropped; limits enforced).
void parse_stop(const nlohmann::ordered_json& body, const ServerOptions& o, GenerationSpec& spec,
                const char* key = "stop");
// ds4_test_output / ds4_test_output_tokens / ds4_test_delay_ms (only with --test-hooks).
void parse_test_hooks(const nlohmann::ordered_json& body, const ServerContext& ctx,
                      GenerationSpec& spec);
// 400 context_length_exceeded when the prompt does not fit.
void check_context(const GenerationSpec& spec, const ServerContext& ctx, const char* param);
// The longest byte string of any one token of `tok` (specials included).
size_t max_token_bytes(const text::Tokenizer& tok);
// Before tokenizing: 400 context_length_exceeded when `control_tokens` control tokens plus
// `text_bytes` bytes of text need more tokens than the context holds even if every token
// were as long as the longest (ctx.max_token_bytes; no check when it is 0).
void check_context_bound(size_t control_tokens, size_t text_bytes, const ServerContext& ctx,
                         const char* param);
// OpenAI function tools validated and normalised to {"type":"function","function":{...}}.
nlohmann::ordered_json validate_tools(const nlohmann::ordered_json& tools);
// Render options every endpoint starts from: thinking mode and effort, the context size and
// this server's exact-replay hook (empty when replay is off).
text::RenderOptions base_render_options(const Thinking& th, const ServerContext& ctx);
// Renders `messages` with `ro` into spec.segments / rendered / tokens and sets spec.thinking;
// a renderer error is a 400 "invalid <param>: ..." naming `param`.
void render_into_spec(const nlohmann::ordered_json& messages, const text::RenderOptions& ro,
                      const Thinking& th, const ServerContext& ctx, GenerationSpec& spec,
                      const char* param);

}  // namespace ds4::server
