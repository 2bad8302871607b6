// Chat prompt rendering for DeepSeek V4 Flash, byte-exact to the official encoder
// (encoding_dsv4.py encode_messages; docs/prompting.md, golden cases in
// tests/data/vectors/prompting-golden/examples.json).
//
// Messages are OpenAI-style objects; parse requests with nlohmann::ordered_json so that tool
// schema key order (which is part of the prompt) survives. Roles: system, developer, user,
// assistant (content, reasoning_content, tool_calls, wo_eos, task), tool (tool_call_id,
// content string or parts list), latest_reminder. Optional fields as in the official encoder:
// tools / response_format on system or developer messages, task on user/assistant messages.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "text/chat_segments.h"
#include "text/dsml.h"

namespace ds4::text {

inline constexpr std::string_view kBosToken = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEosToken = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kUserToken = "<｜User｜>";
inline constexpr std::string_view kAssistantToken = "<｜Assistant｜>";
inline constexpr std::string_view kLatestReminderToken = "<｜latest_reminder｜>";

// Think-Max needs a context window of at least this many tokens (model card: 384K);
// below it a Max request renders as High.
inline constexpr uint64_t kThinkMaxMinContext = 393216;

// The exact prefix written right after BOS in Think-Max mode.
extern const std::string_view kThinkMaxPrefix;

enum class ThinkingMode {
  Chat,      // non-thinking: generation prompt "<｜Assistant｜></think>"
  Thinking,  // generation prompt "<｜Assistant｜><think>"
};

enum class ReasoningEffort {
  Default,  // same as High for the original V4 Flash
  High,
  Max,      // Thinking mode only: Think-Max prefix after BOS
};

// Returns the bytes of a previously generated DSML block (DsmlToolCall::block_raw) for a
// tool call id, or nullopt when unknown.
using DsmlReplayLookup = std::function<std::optional<std::string>(std::string_view call_id)>;

struct RenderOptions {
  ThinkingMode thinking_mode = ThinkingMode::Thinking;
  ReasoningEffort reasoning_effort = ReasoningEffort::Default;
  // Context window of the session, for the Think-Max threshold (unset: no fallback).
  std::optional<uint64_t> context_size;
  // Request-level tools (OpenAI array of {"type":"function","function":{...}}). Attached as the
  // serving layer does: to message 0 when it is system/developer, else to a content-less
  // system message inserted at 0 (prompt then starts BOS + "\n\n## Tools").
  nlohmann::ordered_json tools;
  // Request-level response_format schema, attached like tools.
  nlohmann::ordered_json response_format;
  bool add_bos = true;
  // Official drop rule: in Thinking mode, assistants before the last user/developer message
  // lose their reasoning and earlier developer messages are removed. Forced off when any
  // message carries tools.
  bool drop_thinking = true;
  // Off: the transition after the last message (e.g. "<｜Assistant｜><think>") is omitted.
  bool add_generation_prompt = true;
  // Exact DSML replay: an assistant message whose call ids all map to the same block bytes
  // is rendered with those bytes instead of the canonical block. (An assistant message may
  // also carry the bytes itself in a string field "raw_dsml".)
  DsmlReplayLookup dsml_replay;
};

// Malformed messages (unknown role, developer without content, bad task, non-object message,
// tool call without function name...). what() names the message index.
struct ChatError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Render to segments (control markers vs client text), for the tokenizer.
PromptSegments render_chat_segments(const nlohmann::ordered_json& messages, const RenderOptions& options);
// The same as one string.
std::string render_chat(const nlohmann::ordered_json& messages, const RenderOptions& options);

// Whether options select the Think-Max prefix (Thinking + Max + context large enough).
bool think_max_active(const RenderOptions& options);

// The "## Tools ..." block for a list of OpenAI tools (ends with one "\n").
std::string render_tools_block(const nlohmann::ordered_json& tools);

}  // namespace ds4::text
