// An error answered to the client as an HTTP status and an OpenAI-style error object.
#pragma once

#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "text/json_writer.h"

namespace ds4::server {

struct ApiError : std::runtime_error {
  ApiError(int status, const std::string& message, std::string type = "invalid_request_error")
      : std::runtime_error(message), status(status), type(std::move(type)) {}
  int status;
  std::string type;
  std::string param;  // optional "param"
  std::string code;   // optional "code"
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  // merged into the error object
  int retry_after_s = 0;  // > 0: sent as the Retry-After header (429 busy, 503 shutdown)

  // {"error":{"message","type",["param"],["code"],...extra}}
  nlohmann::ordered_json to_json() const {
    nlohmann::ordered_json e = {{"message", what()}, {"type", type}};
    if (!param.empty()) e["param"] = param;
    if (!code.empty()) e["code"] = code;
    for (auto it = extra.begin(); it != extra.end(); ++it) e[it.key()] = it.value();
    return nlohmann::ordered_json{{"error", e}};
  }
};

inline ApiError bad_request(const std::string& message, const std::string& param = {}) {
  ApiError e(400, message);
  e.param = param;
  return e;
}

// A prompt that does not fit the context. The wording carries phrases clients match to start
// compaction ("exceeds the context window", the code); Anthropic's shape rewrites the message
// (anthropic_error_json).
inline ApiError context_length_error(size_t prompt_tokens, int64_t n_ctx, const std::string& param = {}) {
  ApiError e(400, "Prompt has " + std::to_string(prompt_tokens) +
                      " tokens, but the configured context size is " + std::to_string(n_ctx) +
                      " tokens: the request exceeds the context window");
  e.param = param;
  e.code = "context_length_exceeded";
  e.extra = {{"n_prompt_tokens", prompt_tokens}, {"n_ctx", n_ctx}};
  return e;
}

// Serialises for the wire: invalid UTF-8 from the model becomes U+FFFD instead of throwing.
using text::dump_json;

}  // namespace ds4::server
