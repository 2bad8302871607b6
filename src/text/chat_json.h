// JSON exactly as the official DeepSeek V4 encoder sees it: Python's json.loads / json.dumps
// (ensure_ascii=False). The prompt bytes for tool schemas and past tool-call arguments depend
// on Python's number printing and key handling (docs/prompting.md), which
// nlohmann::json does not reproduce (it loses integer digits beyond 64 bits, prints floats in
// its own style and rejects NaN/Infinity).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ds4::text::pyjson {

// A parsed JSON value. Numbers keep what Python would keep: integers their digit text,
// floats their double value.
struct Value {
  struct Member;
  enum class Kind { Null, Bool, Integer, Float, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  std::string text;  // Integer: canonical digits (Python int), String: decoded UTF-8 bytes
  double number = 0.0;  // Float
  std::vector<Value> items;  // Array
  // Object, in first-occurrence key order; a repeated key overwrites the value in place
  // (Python dict semantics).
  std::vector<Member> members;
};

struct Value::Member {
  std::string key;
  Value value;
};

// Parses like Python's json.loads: accepts NaN, Infinity, -Infinity; rejects raw control
// characters inside strings; surrounding whitespace allowed. nullopt on any syntax error.
std::optional<Value> parse(std::string_view text);

// json.dumps(value, ensure_ascii=False): separators ", " and ": ".
std::string dumps(const Value& value);
// The same serialization of an already-parsed nlohmann value (key order of ordered_json kept).
std::string dumps(const nlohmann::ordered_json& value);
// A JSON string literal with Python's escaping (\" \\ \n \r \t \b \f, other controls \u00xx,
// everything else raw).
std::string dumps_string(std::string_view utf8);
void append_string(std::string& out, std::string_view utf8);
// Python float repr: shortest round-trip digits, exponent form below 1e-4 or from 1e16 on.
std::string repr_float(double value);

}  // namespace ds4::text::pyjson
