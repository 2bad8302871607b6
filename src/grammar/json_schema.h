// JSON Schema -> GBNF. The supported keywords and the regex subset of `pattern` are listed
// in docs/grammar.md; any other keyword is an error naming it (never silently ignored).
#pragma once

#include <string>

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
// Any JSON object.
std::string json_object_gbnf();

}  // namespace ds4::grammar
