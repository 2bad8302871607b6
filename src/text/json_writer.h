// The one way JSON goes out to clients and files (server responses and events, the CLI's
// --dump-logprobs): nlohmann::json's writer, compact, with invalid UTF-8 from the model replaced
// by U+FFFD per maximal invalid subpart (the policy of text::unicode::utf8_append_sanitized)
// instead of throwing. The chat template's Python-style json.dumps is a rendering concern and
// lives in chat_json.h.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace ds4::text {

inline std::string dump_json(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace ds4::text
