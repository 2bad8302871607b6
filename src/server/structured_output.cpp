#include "server/structured_output.h"

#include "grammar/constraint.h"
#include "grammar/json_schema.h"
#include "server/request_fields.h"

namespace ds4::server {

using OJ = nlohmann::ordered_json;

namespace {

// Converts a JSON Schema; an unsupported keyword is a 400 naming it.
std::string schema_gbnf(const OJ& schema, const std::string& param) {
  try {
    return grammar::json_schema_to_gbnf(schema);
  } catch (const grammar::SchemaError& e) {
    ApiError err = bad_request(e.what(), param);
    if (!e.keyword.empty()) err.code = "unsupported_schema";
    throw err;
  }
}

// {type: text | json_object | json_schema} as OpenAI's response_format (json_schema nested
// under "json_schema") or as Responses' text.format (schema at the top level).
OutputFormat typed_format(const OJ& f, const std::string& param, bool nested_schema) {
  OutputFormat out;
  out.param = param;
  if (!f.is_object()) throw bad_request("'" + param + "' must be an object", param);
  const std::string type = f.value("type", std::string());
  if (type == "text") return out;
  if (type == "json_object") {
    out.gbnf = grammar::json_object_gbnf();
    out.prompt_schema = f;
    out.schema = grammar::json_object_schema();
    return out;
  }
  if (type == "json_schema") {
    const OJ* holder = nested_schema ? field(f, "json_schema") : &f;
    if (!holder || !holder->is_object() || !field(*holder, "schema") ||
        !((*holder)["schema"].is_object() || (*holder)["schema"].is_boolean())) {
      throw bad_request(param + " json_schema needs a '" +
                            std::string(nested_schema ? "json_schema.schema" : "schema") +
                            "' object",
                        param);
    }
    if (const OJ* strict = field(*holder, "strict"); strict && !strict->is_boolean()) {
      throw bad_request("'strict' must be a boolean", param);
    }
    // Enforced whether or not `strict` is set: a schema is never silently ignored.
    out.prompt_schema = (*holder)["schema"];
    out.schema = (*holder)["schema"];
    out.gbnf = schema_gbnf((*holder)["schema"], param);
    return out;
  }
  throw bad_request(param + " type '" + type + "' is not supported (text, json_object, json_schema)",
                    param);
}

void only_one(const OutputFormat& a, const std::string& b) {
  if (!a.gbnf.empty()) {
    throw bad_request("only one of '" + a.param + "' and '" + b + "' may constrain the output", b);
  }
}

}  // namespace

OutputFormat openai_output_format(const OJ& body) {
  OutputFormat out;
  if (const OJ* rf = field(body, "response_format")) out = typed_format(*rf, "response_format", true);
  if (const OJ* js = field(body, "json_schema")) {
    only_one(out, "json_schema");
    if (!js->is_object() && !js->is_boolean()) {
      throw bad_request("'json_schema' must be a JSON Schema object", "json_schema");
    }
    out.param = "json_schema";
    out.prompt_schema = *js;
    out.schema = *js;
    out.gbnf = schema_gbnf(*js, "json_schema");
  }
  if (const OJ* g = field(body, "grammar")) {
    only_one(out, "grammar");
    if (!g->is_string()) throw bad_request("'grammar' must be a string (GBNF)", "grammar");
    if (!g->get_ref<const std::string&>().empty()) {
      out.param = "grammar";
      out.gbnf = g->get<std::string>();
    }
  }
  return out;
}

OutputFormat responses_output_format(const OJ& body) {
  const OJ* text = field(body, "text");
  if (!text) return {};
  if (!text->is_object()) throw bad_request("'text' must be an object", "text");
  const OJ* format = field(*text, "format");
  if (!format) return {};
  return typed_format(*format, "text.format", false);
}

OutputFormat anthropic_output_format(const OJ& body) {
  OutputFormat out;
  auto take = [&](const OJ& f, const std::string& param) {
    only_one(out, param);
    if (!f.is_object()) throw bad_request("'" + param + "' must be an object", param);
    const std::string type = f.value("type", std::string());
    if (type != "json_schema") {
      throw bad_request(param + ".type must be 'json_schema'", param);
    }
    const OJ* schema = field(f, "schema");
    if (!schema || !(schema->is_object() || schema->is_boolean())) {
      throw bad_request(param + " needs a 'schema' object", param);
    }
    out.param = param;
    out.prompt_schema = *schema;
    out.schema = *schema;
    out.gbnf = schema_gbnf(*schema, param);
  };
  if (const OJ* f = field(body, "output_format")) take(*f, "output_format");
  if (const OJ* oc = field(body, "output_config"); oc && oc->is_object()) {
    if (const OJ* f = field(*oc, "format")) take(*f, "output_config.format");
  }
  return out;
}

ToolConstraint tool_constraint(const OJ& tools, const std::set<std::string>& strict_names) {
  ToolConstraint out;
  if (!tools.is_array()) return out;
  for (const auto& t : tools) {
    const OJ& fn = t.is_object() && t.contains("function") ? t["function"] : t;
    if (!fn.is_object() || !fn.contains("name") || !fn["name"].is_string()) continue;
    grammar::DsmlTool tool;
    tool.name = fn["name"].get<std::string>();
    tool.parameters = fn.contains("parameters") ? fn["parameters"] : OJ::object();
    tool.strict = strict_names.count(tool.name) > 0;
    out.tools.push_back(std::move(tool));
  }
  return out;
}

void apply_output_format(const OutputFormat& format, const ServerContext& ctx,
                         GenerationSpec& spec, const ToolConstraint& tools) {
  bool any_strict = false;
  for (const auto& t : tools.tools) any_strict = any_strict || t.strict;
  const bool tool_grammar = spec.parse_tools && !tools.tools.empty() &&
                            (format.gbnf.empty() || !format.schema.is_null()) &&
                            (any_strict || tools.required || !format.schema.is_null());
  if (tool_grammar) {
    grammar::ToolCallGrammar g;
    g.tools = tools.tools;
    g.required = tools.required;
    g.only = tools.only;
    g.parallel = tools.parallel;
    if (!format.schema.is_null() && !tools.required) g.answer = &format.schema;
    std::string gbnf;
    try {
      gbnf = grammar::tool_calls_gbnf(g);
    } catch (const grammar::SchemaError& e) {
      const bool about_format = std::string(e.what()).rfind("response format:", 0) == 0;
      ApiError err = bad_request(e.what(), about_format ? format.param : tools.param);
      if (!e.keyword.empty()) err.code = "unsupported_schema";
      throw err;
    }
    try {
      spec.grammar = grammar::compile_cached(gbnf, grammar::vocabulary_of(ctx.tok, /*dsml_marker=*/true));
    } catch (const grammar::GrammarError& e) {
      throw bad_request(std::string("invalid tool-call grammar: ") + e.what(), tools.param);
    }
    return;
  }
  if (format.gbnf.empty()) return;
  try {
    spec.grammar = grammar::compile_cached(format.gbnf, grammar::vocabulary_of(ctx.tok));
  } catch (const grammar::GrammarError& e) {
    throw bad_request(std::string("invalid ") + format.param + ": " + e.what(), format.param);
  }
}

}  // namespace ds4::server
