// Structured output: the request fields that constrain an answer to a grammar, per
// protocol, and their compilation for the token sampler (src/grammar).
//   chat / completions: response_format {json_object | json_schema{schema, strict}}, and
//                       llama-server's `json_schema` (a schema) and `grammar` (GBNF text)
//   responses:          text.format {json_object | json_schema{schema, strict}}
//   messages:           output_format / output_config.format {json_schema{schema}}
// At most one of them per request. The worker applies the grammar to the visible answer:
// after </think> in thinking mode, from the first token otherwise.
#pragma once

#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "grammar/json_schema.h"
#include "server/job.h"
#include "server/openai.h"

namespace ds4::server {

struct OutputFormat {
  std::string gbnf;                      // empty: unconstrained
  nlohmann::ordered_json prompt_schema;  // for the prompt's "Response Format" section (null: none)
  nlohmann::ordered_json schema;         // the JSON Schema enforced (null: none, or GBNF text)
  std::string param;                     // the request field it came from (for errors)
};

// The tools a request offers, as far as constraining tool calls goes (docs/grammar.md,
// "Tool calls"): tools declared strict get their arguments constrained to their schema;
// a forced tool choice makes the answer a tool-call block.
struct ToolConstraint {
  std::vector<grammar::DsmlTool> tools;  // the callable tools (empty: none offered)
  bool required = false;                 // tool_choice required / any / a named tool
  std::string only;                      // a named tool
  bool parallel = true;                  // parallel_tool_calls / !disable_parallel_tool_use
  std::string param = "tools";           // the request field blamed for a bad schema
};
// From the normalized tool list ({"type":"function","function":{"name","parameters"}}, as
// rendered into the prompt) and the names of the tools declared strict.
ToolConstraint tool_constraint(const nlohmann::ordered_json& tools,
                               const std::set<std::string>& strict_names);

OutputFormat openai_output_format(const nlohmann::ordered_json& body);
OutputFormat responses_output_format(const nlohmann::ordered_json& body);
OutputFormat anthropic_output_format(const nlohmann::ordered_json& body);

// Prepares the grammar for the tokenizer's vocabulary into spec.grammar; a bad schema or
// grammar is a 400 naming the field (and the unsupported keyword). With tools offered (and
// spec.parse_tools) that are strict or forced, or together with a JSON response format, the
// grammar covers tool calls too: the answer, or a tool-call block whose strict calls follow
// their schemas. A GBNF `grammar` always constrains the whole answer.
void apply_output_format(const OutputFormat& format, const ServerContext& ctx,
                         GenerationSpec& spec, const ToolConstraint& tools = {});

}  // namespace ds4::server
