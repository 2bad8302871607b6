// Structured output: the request fields that constrain an answer to a grammar, per
// protocol, and their compilation for the token sampler (src/grammar).
//   chat / completions: response_format {json_object | json_schema{schema, strict}}, and
//                       llama-server's `json_schema` (a schema) and `grammar` (GBNF text)
//   responses:          text.format {json_object | json_schema{schema, strict}}
//   messages:           output_format / output_config.format {json_schema{schema}}
// At most one of them per request. The worker applies the grammar to the visible answer:
// after </think> in thinking mode, from the first token otherwise.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "server/job.h"
#include "server/openai.h"

namespace ds4::server {

struct OutputFormat {
  std::string gbnf;                      // empty: unconstrained
  nlohmann::ordered_json prompt_schema;  // for the prompt's "Response Format" section (null: none)
  std::string param;                     // the request field it came from (for errors)
};

OutputFormat openai_output_format(const nlohmann::ordered_json& body);
OutputFormat responses_output_format(const nlohmann::ordered_json& body);
OutputFormat anthropic_output_format(const nlohmann::ordered_json& body);

// Prepares the grammar for the tokenizer's vocabulary into spec.grammar; a bad schema or
// grammar is a 400 naming the field (and the unsupported keyword).
void apply_output_format(const OutputFormat& format, const ServerContext& ctx,
                         GenerationSpec& spec);

}  // namespace ds4::server
