// JSON Schema -> GBNF. The supported keywords and the regex subset of `pattern` are listed
// in docs/grammar.md; any other keyword is an error naming it (never silently ignored).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "grammar/grammar.h"

namespace ds4::grammar {

struct SchemaError : GrammarError {
  SchemaError(std::string keyword, const std::string& what)
      : GrammarError(what), keyword(std::move(keyword)) {}
  std::string keyword;  // the offending keyword ("" when not about one)
};

// The GBNF text of a grammar whose sentences are the JSON texts valid against `schema`
// (compact layout: at most one space or one line break plus indentation between tokens).
std::string json_schema_to_gbnf(const nlohmann::ordered_json& schema);
// Any JSON object, and its schema.
std::string json_object_gbnf();
nlohmann::ordered_json json_object_schema();

// ---- Tool calls. The model writes calls as a DSML block (docs/grammar.md, "Tool calls"):
// "\n\n<｜DSML｜tool_calls>\n" invokes "\n</｜DSML｜tool_calls>". A grammar over a whole
// answer that may hold one; its vocabulary must include the DSML marker token.
struct DsmlTool {
  std::string name;
  nlohmann::ordered_json parameters;  // JSON Schema of the arguments (an object)
  bool strict = false;                // arguments constrained to `parameters`
};
struct ToolCallGrammar {
  std::vector<DsmlTool> tools;
  // The answer must be a tool-call block (tool_choice "required" or a named tool).
  bool required = false;
  std::string only;  // non-empty: only this tool may be called
  bool parallel = true;  // more than one call per block
  // Without `required`: the other answer allowed instead of a block (a response format);
  // null: free text (without "DSML｜"), optionally followed by a block.
  const nlohmann::ordered_json* answer = nullptr;
};
// Strict tools get their parameters in declaration order, each value constrained by its
// schema (string="true" raw text when the schema admits only strings, else string="false"
// JSON); other tools get any parameters. Throws SchemaError (message naming the tool).
std::string tool_calls_gbnf(const ToolCallGrammar& spec);

}  // namespace ds4::grammar
