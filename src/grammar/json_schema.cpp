#include "grammar/json_schema.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "grammar/code_points.h"
#include "text/unicode.h"

namespace ds4::grammar {
namespace {

using Json = nlohmann::ordered_json;
using Ranges = CodePointSet;

// Rules every converted grammar may use. Strings exclude unpaired surrogate escapes, so
// every output parses in strict JSON parsers; numbers are bounded (16 digits) so a sampler
// cannot loop in them forever.
const char* const kPrimitives[][2] = {
    {"ws", "| \" \" | \"\\n\" [ \\t]{0,20}"},
    {"hex", "[0-9a-fA-F]"},
    {"char", "[^\"\\\\\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" ([0-9a-cA-Ce-fE-F] hex hex hex | [dD] [0-7] hex hex))"},
    {"string", "\"\\\"\" char* \"\\\"\""},
    {"integer", "\"-\"? (\"0\" | [1-9] [0-9]{0,15})"},
    {"number", "\"-\"? (\"0\" | [1-9] [0-9]{0,15}) (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,2})?"},
    {"boolean", "\"true\" | \"false\""},
    {"null", "\"null\""},
    {"value", "object | array | string | number | boolean | null"},
    {"object", "\"{\" ws (member ws (\",\" ws member ws)*)? \"}\""},
    {"member", "string ws \":\" ws value"},
    {"array", "\"[\" ws (value ws (\",\" ws value ws)*)? \"]\""},
    {"date", "[0-9]{4} \"-\" ((\"0\" [13578] | \"1\" [02]) \"-\" (\"0\" [1-9] | [12] [0-9] | \"3\" [01]) | (\"0\" [469] | \"11\") \"-\" (\"0\" [1-9] | [12] [0-9] | \"30\") | \"02-\" (\"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8]))"},
    {"time", "([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9] \":\" [0-5] [0-9] (\".\" [0-9]{1,6})? (\"Z\" | [+-] ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9])"},
    {"uuid", "[0-9a-f]{8} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{12}"},
    {"email-atom", "[a-zA-Z0-9_+-]{1,16}"},
    {"email-label", "[a-zA-Z0-9] ([a-zA-Z0-9-]{0,30} [a-zA-Z0-9])?"},
    {"email", "email-atom (\".\" email-atom){0,3} \"@\" (email-label \".\"){1,3} [a-zA-Z]{2,6}"},
    {"raw-char", "[^\\uFF5C]"},  // a character of a raw DSML string value
};

// Rules each primitive needs.
const std::map<std::string, std::vector<std::string>> kDeps = {
    {"char", {"hex"}},
    {"string", {"char"}},
    {"value", {"object", "array", "string", "number", "boolean", "null"}},
    {"object", {"ws", "member"}},
    {"member", {"string", "ws", "value"}},
    {"array", {"ws", "value"}},
    {"email", {"email-atom", "email-label"}},
};

// Keywords with no effect on which values are valid.
const std::set<std::string> kAnnotations = {
    "$schema", "$id", "id", "title", "description", "default", "examples", "$comment",
    "readOnly", "writeOnly", "deprecated", "contentMediaType", "contentEncoding", "$anchor"};
const std::set<std::string> kSupported = {
    "type", "properties", "required", "additionalProperties", "enum", "const", "items",
    "prefixItems", "additionalItems", "minItems", "maxItems", "anyOf", "oneOf", "allOf",
    "$ref", "$defs", "definitions", "minLength", "maxLength", "pattern", "format", "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "uniqueItems"};

std::string gbnf_literal(const std::string& bytes) {
  std::string out = "\"";
  for (unsigned char c : bytes) {
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string class_char(uint32_t cp) {
  if (cp == ']' || cp == '\\' || cp == '^' || cp == '-' || cp == '[') {
    return std::string("\\") + static_cast<char>(cp);
  }
  char buf[16];
  if (cp < 0x20 || cp == 0x7F) {
    std::snprintf(buf, sizeof buf, "\\x%02X", cp);
  } else if (cp < 0x80) {
    buf[0] = static_cast<char>(cp);
    buf[1] = 0;
  } else if (cp <= 0xFFFF) {
    std::snprintf(buf, sizeof buf, "\\u%04X", cp);
  } else {
    std::snprintf(buf, sizeof buf, "\\U%08X", cp);
  }
  return buf;
}

// U+FF5C FULLWIDTH VERTICAL LINE, the bar of DSML's marker "｜DSML｜": inside a tool call a
// written value never holds it raw, so no value can contain a DSML tag (a JSON string can
// still hold it as the escape \uff5c).
constexpr uint32_t kDsmlBar = 0xFF5C;

Ranges without(const Ranges& set, uint32_t cp) {
  Ranges out;
  for (auto [lo, hi] : set) {
    if (cp < lo || cp > hi) {
      out.emplace_back(lo, hi);
      continue;
    }
    if (lo < cp) out.emplace_back(lo, cp - 1);
    if (cp < hi) out.emplace_back(cp + 1, hi);
  }
  return out;
}

// How string characters are written: inside a JSON string (escaped), or raw (a DSML
// string="true" parameter value); `dsml` keeps the DSML bar out of raw characters.
struct CharMode {
  bool raw = false;
  bool dsml = false;
};

// The GBNF of one character (as written) whose decoded value is in `set`. JSON: plain
// characters as a class, '"', '\' and control characters escaped. Raw: a class.
std::string char_set(const Ranges& set_in, CharMode mode) {
  Ranges set = normalize(set_in);
  if (mode.raw) {
    std::string cls;
    for (auto [a, b] : without_surrogates(without(set, kDsmlBar))) {
      cls += class_char(a);
      if (b > a) cls += "-" + class_char(b);
    }
    return cls.empty() ? "" : "[" + cls + "]";
  }
  std::vector<std::string> alts;
  std::string cls;
  for (auto [lo, hi] : set) {
    for (uint32_t special : {0x22u, 0x5Cu}) {
      if (lo <= special && special <= hi) {
        alts.push_back(special == 0x22 ? "\"\\\\\\\"\"" : "\"\\\\\\\\\"");
      }
    }
    for (uint32_t c = lo; c <= std::min(hi, 0x1Fu); ++c) {
      if (c == '\n') alts.push_back("\"\\\\n\"");
      else if (c == '\t') alts.push_back("\"\\\\t\"");
      else if (c == '\r') alts.push_back("\"\\\\r\"");
      else {
        char buf[24];
        std::snprintf(buf, sizeof buf, "\"\\\\u%04x\"", c);
        alts.push_back(buf);
      }
    }
    // Plain part: [lo, hi] minus controls, '"', '\' and surrogates.
    Ranges plain{{std::max(lo, 0x20u), hi}};
    Ranges cut;
    for (auto [a, b] : plain) {
      if (a > b) continue;
      uint32_t s = a;
      for (uint32_t x : {0x22u, 0x5Cu}) {
        if (x >= s && x <= b) {
          if (x > s) cut.emplace_back(s, x - 1);
          s = x + 1;
        }
      }
      if (s <= b) cut.emplace_back(s, b);
    }
    for (auto [a, b] : without_surrogates(mode.dsml ? without(cut, kDsmlBar) : cut)) {
      cls += class_char(a);
      if (b > a) cls += "-" + class_char(b);
    }
  }
  if (!cls.empty()) alts.insert(alts.begin(), "[" + cls + "]");
  if (alts.empty()) return "";
  if (alts.size() == 1) return alts[0];
  std::string out = "(";
  for (size_t i = 0; i < alts.size(); ++i) out += (i ? " | " : "") + alts[i];
  return out + ")";
}

// ---- ECMAScript regex subset -> GBNF over JSON string content.
class RegexConverter {
 public:
  RegexConverter(const std::string& re, CharMode mode) : re_(re), mode_(mode) {}

  std::string run() {
    bool anchored_start = false, anchored_end = false;
    if (!re_.empty() && re_[0] == '^') {
      anchored_start = true;
      pos_ = 1;
    }
    std::string body = alternation(/*top=*/true, anchored_end);
    if (pos_ != re_.size()) fail("unexpected ')'");
    const std::string any = mode_.raw ? "raw-char" : "char";
    std::string out;
    if (!anchored_start) out += any + "* ";
    out += "(" + body + ")";
    if (!anchored_end) out += " " + any + "*";
    return out;
  }

 private:
  const std::string& re_;
  CharMode mode_;
  std::string written_char(const Ranges& set) const { return char_set(set, mode_); }
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw SchemaError("pattern", "unsupported 'pattern' /" + re_ + "/: " + what +
                                     " (see docs/grammar.md for the supported regex subset)");
  }
  bool at_end() const { return pos_ >= re_.size(); }
  char cur() const { return at_end() ? '\0' : re_[pos_]; }

  std::string alternation(bool top, bool& anchored_end) {
    std::vector<std::string> alts{sequence(top, anchored_end)};
    while (cur() == '|') {
      ++pos_;
      alts.push_back(sequence(top, anchored_end));
    }
    std::string out;
    for (size_t i = 0; i < alts.size(); ++i) out += (i ? " | " : "") + alts[i];
    return out;
  }

  std::string sequence(bool top, bool& anchored_end) {
    std::string out;
    while (!at_end() && cur() != '|' && cur() != ')') {
      if (cur() == '$') {
        if (!top || pos_ + 1 != re_.size()) fail("'$' is only supported at the end");
        anchored_end = true;
        ++pos_;
        break;
      }
      if (cur() == '^') fail("'^' is only supported at the start");
      std::string atom_text = atom();
      out += (out.empty() ? "" : " ") + quantified(atom_text);
    }
    return out.empty() ? "\"\"" : out;
  }

  std::string quantified(const std::string& atom_text) {
    std::string q;
    char c = cur();
    if (c == '*' || c == '+' || c == '?') {
      q = c;
      ++pos_;
    } else if (c == '{') {
      size_t close = re_.find('}', pos_);
      if (close == std::string::npos) fail("unterminated '{'");
      std::string inner = re_.substr(pos_ + 1, close - pos_ - 1);
      for (char ch : inner) {
        if (!(ch >= '0' && ch <= '9') && ch != ',') fail("bad quantifier {" + inner + "}");
      }
      if (inner.empty() || inner[0] == ',') fail("bad quantifier {" + inner + "}");
      q = "{" + inner + "}";
      pos_ = close + 1;
    } else {
      return atom_text;
    }
    if (cur() == '?') ++pos_;  // lazy: the same language
    if (cur() == '*' || cur() == '+' || cur() == '?' || cur() == '{') fail("nested quantifier");
    return "(" + atom_text + ")" + q;
  }

  uint32_t hex(int n) {
    uint32_t v = 0;
    for (int i = 0; i < n; ++i) {
      char c = cur();
      int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
      if (d < 0) fail("bad hex escape");
      v = v * 16 + static_cast<uint32_t>(d);
      ++pos_;
    }
    return v;
  }

  uint32_t utf8_char() {
    const auto cp = text::unicode::utf8_next(re_, pos_);
    if (!cp) fail("invalid UTF-8");
    return *cp;
  }

  static Ranges digit() { return {{'0', '9'}}; }
  static Ranges word() { return normalize({{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}); }
  static Ranges space() {
    return normalize({{'\t', '\r'}, {' ', ' '}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
                      {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
                      {0xFEFF, 0xFEFF}});
  }

  // After a backslash: a class escape (\d...) as ranges, or one character.
  Ranges escape() {
    if (at_end()) fail("trailing backslash");
    char e = cur();
    ++pos_;
    switch (e) {
      case 'd': return digit();
      case 'D': return complement(digit());
      case 'w': return word();
      case 'W': return complement(word());
      case 's': return space();
      case 'S': return complement(space());
      case 'n': return {{'\n', '\n'}};
      case 't': return {{'\t', '\t'}};
      case 'r': return {{'\r', '\r'}};
      case 'f': return {{'\f', '\f'}};
      case 'v': return {{'\v', '\v'}};
      case '0': return {{0, 0}};
      case 'x': {
        uint32_t v = hex(2);
        return {{v, v}};
      }
      case 'u': {
        uint32_t v = hex(4);
        return {{v, v}};
      }
      default:
        if ((e >= '1' && e <= '9') || e == 'k') fail("backreferences are not supported");
        if (e == 'b' || e == 'B') fail("word boundaries are not supported");
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) {
          fail(std::string("unknown escape \\") + e);
        }
        return {{static_cast<unsigned char>(e), static_cast<unsigned char>(e)}};
    }
  }

  std::string atom() {
    char c = cur();
    if (c == '(') {
      ++pos_;
      if (cur() == '?') {
        if (re_.compare(pos_, 2, "?:") == 0) {
          pos_ += 2;
        } else {
          fail("lookaround and named groups are not supported");
        }
      }
      bool dummy = false;
      std::string inner = alternation(false, dummy);
      if (cur() != ')') fail("missing ')'");
      ++pos_;
      return "(" + inner + ")";
    }
    if (c == '[') return written_char(char_class());
    if (c == '.') {
      ++pos_;
      return written_char(complement({{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}}));
    }
    if (c == '\\') {
      ++pos_;
      return written_char(escape());
    }
    if (c == '*' || c == '+' || c == '?' || c == '{') fail("quantifier without an atom");
    uint32_t cp = utf8_char();
    return written_char({{cp, cp}});
  }

  Ranges char_class() {
    ++pos_;  // '['
    bool negate = false;
    if (cur() == '^') {
      negate = true;
      ++pos_;
    }
    Ranges r;
    bool first = true;
    while (at_end() || cur() != ']' || (first && false)) {
      if (at_end()) fail("unterminated '['");
      first = false;
      Ranges lo_set;
      if (cur() == '\\') {
        ++pos_;
        lo_set = escape();
      } else {
        uint32_t cp = utf8_char();
        lo_set = {{cp, cp}};
      }
      if (cur() == '-' && pos_ + 1 < re_.size() && re_[pos_ + 1] != ']' && lo_set.size() == 1 &&
          lo_set[0].first == lo_set[0].second) {
        ++pos_;
        uint32_t hi;
        if (cur() == '\\') {
          ++pos_;
          Ranges h = escape();
          if (h.size() != 1 || h[0].first != h[0].second) fail("bad class range");
          hi = h[0].first;
        } else {
          hi = utf8_char();
        }
        if (hi < lo_set[0].first) fail("class range out of order");
        r.emplace_back(lo_set[0].first, hi);
      } else {
        r.insert(r.end(), lo_set.begin(), lo_set.end());
      }
    }
    ++pos_;
    r = normalize(r);
    return negate ? complement(r) : r;
  }
};

// ---- integer ranges

std::string digits_class(char lo, char hi) {
  if (lo == hi) return std::string("\"") + lo + "\"";
  if (lo == '0' && hi == '9') return "[0-9]";
  return std::string("[") + lo + "-" + hi + "]";
}

// Alternatives for the decimal strings of [lo, hi], both of the same length n.
void same_length(const std::string& lo, const std::string& hi, std::vector<std::string>& out,
                 const std::string& prefix) {
  const size_t n = lo.size();
  if (n == 0) {
    out.push_back(prefix.empty() ? "\"\"" : prefix);
    return;
  }
  auto join = [](const std::string& a, const std::string& b) { return a.empty() ? b : a + " " + b; };
  if (lo[0] == hi[0]) {
    same_length(lo.substr(1), hi.substr(1), out, join(prefix, digits_class(lo[0], lo[0])));
    return;
  }
  const std::string rest_lo = lo.substr(1), rest_hi = hi.substr(1);
  const bool lo_zeros = rest_lo.find_first_not_of('0') == std::string::npos;
  const bool hi_nines = rest_hi.find_first_not_of('9') == std::string::npos;
  char mid_lo = lo_zeros ? lo[0] : static_cast<char>(lo[0] + 1);
  char mid_hi = hi_nines ? hi[0] : static_cast<char>(hi[0] - 1);
  if (!lo_zeros) same_length(rest_lo, std::string(n - 1, '9'), out, join(prefix, digits_class(lo[0], lo[0])));
  if (mid_lo <= mid_hi) {
    std::string s = join(prefix, digits_class(mid_lo, mid_hi));
    if (n > 1) s += " [0-9]{" + std::to_string(n - 1) + "}";
    out.push_back(s);
  }
  if (!hi_nines) same_length(std::string(n - 1, '0'), rest_hi, out, join(prefix, digits_class(hi[0], hi[0])));
}

// Alternatives for the canonical decimal forms of the integers in [lo, hi], 0 <= lo <= hi.
void nonneg_range(int64_t lo, int64_t hi, std::vector<std::string>& out) {
  int64_t start = lo;
  for (int64_t p = 10; start <= hi; p = p > INT64_MAX / 10 ? INT64_MAX : p * 10) {
    const int64_t end = std::min(hi, p - 1);
    if (start <= end) same_length(std::to_string(start), std::to_string(end), out, "");
    start = std::max(start, p);
    if (p == INT64_MAX) break;
  }
}

class Converter {
 public:
  // `dsml`: the grammar covers tool calls (the DSML marker token is in its vocabulary), so
  // no written string may hold the DSML bar raw.
  explicit Converter(bool dsml = false) : dsml_(dsml) {}

  // The rule body for the values valid against `schema`, a document of its own (its $refs
  // resolve within it).
  std::string convert(const Json& schema, const std::string& hint) {
    root_ = &schema;
    refs_.clear();  // rule names stay unique across documents (the counter)
    return visit(schema, hint);
  }

  // The whole grammar with `top` as the root rule's body.
  std::string emit(const std::string& top) {
    std::string out = "root ::= " + top + "\n";
    for (const auto& [name, body] : rules_) out += name + " ::= " + body + "\n";
    for (const auto& p : kPrimitives) {
      if (!used_.count(p[0])) continue;
      const bool dsml_char = dsml_ && std::string(p[0]) == "char";
      out += std::string(p[0]) + " ::= " + (dsml_char ? kDsmlChar : p[1]) + "\n";
    }
    return out;
  }

  std::string new_rule(const std::string& hint, const std::string& body) {
    std::string name = sanitize(hint) + "-" + std::to_string(++counter_);
    rules_[name] = body;
    return name;
  }

  // ---- DSML tool calls. A call is written as
  //   <｜DSML｜invoke name="NAME">\n PARAM ("\n" PARAM)* \n</｜DSML｜invoke>
  //   PARAM: <｜DSML｜parameter name="KEY" string="true|false">VALUE</｜DSML｜parameter>
  // (docs/grammar.md). A value is raw text with string="true", JSON with string="false".

  // The parameters of a strict tool, from its parameters schema: the declared properties
  // in order (required ones always, optional ones may be left out), each one's value
  // constrained by its schema: string="true" with raw text when the schema admits only
  // strings, else string="false" with JSON. "" when there are none.
  std::string dsml_parameters(const Json& params_in, const std::string& hint) {
    root_ = &params_in;
    refs_.clear();
    if (params_in.is_boolean() || params_in.is_null()) return "";
    const Json* ps = &deref(params_in);
    Json merged;
    if (ps->is_object() && ps->contains("allOf")) {
      merged = merge_all_of(*ps);
      ps = &merged;
    }
    const Json& s = *ps;
    if (!s.is_object()) invalid("parameters", "must be a JSON Schema object");
    check_keywords(s);
    for (const char* kw : {"anyOf", "oneOf", "enum", "const", "items", "prefixItems"}) {
      if (s.contains(kw)) unsupported(kw, "at the top of a tool's parameters (an object is needed)");
    }
    if (s.contains("type") && s["type"] != Json("object")) {
      unsupported("type", "a tool's parameters must be of type object");
    }
    std::set<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) invalid("required", "must be an array of strings");
      for (const auto& r : s["required"]) {
        if (!r.is_string()) invalid("required", "must be an array of strings");
        required.insert(r.get<std::string>());
      }
    }
    std::vector<std::string> params;
    std::vector<bool> req;
    std::vector<std::string> names;
    auto add = [&](const std::string& key, const Json& value_schema) {
      if (key.empty() || key.find("DSML\xEF\xBD\x9C") != std::string::npos ||
          key.find('\n') != std::string::npos) {
        unsupported("properties", "parameter name '" + key + "' cannot be written in DSML");
      }
      const bool raw = admitted_types(value_schema) == kStr;
      std::string value;
      if (raw) {
        raw_ = true;
        value = visit(value_schema, hint + "-" + key);
        raw_ = false;
      } else {
        value = visit(value_schema, hint + "-" + key);
      }
      params.push_back(gbnf_literal("<\xEF\xBD\x9C" "DSML\xEF\xBD\x9C" "parameter name=\"" + key +
                                    "\" string=\"" + (raw ? "true" : "false") + "\">") +
                       " " + value + " " + gbnf_literal(kDsmlParamClose));
      req.push_back(required.count(key) > 0);
      names.push_back(key);
    };
    if (s.contains("properties")) {
      if (!s["properties"].is_object()) invalid("properties", "must be an object");
      for (auto it = s["properties"].begin(); it != s["properties"].end(); ++it) add(it.key(), it.value());
    }
    for (const auto& r : required) {
      if (std::find(names.begin(), names.end(), r) == names.end()) add(r, Json(true));
    }
    // Optional parameters may be skipped: after[i] = the parameters from i on once one has
    // been written (each preceded by a line break); first[i] = the same before any.
    const size_t n = params.size();
    std::vector<std::string> after(n + 1), first(n + 1);
    for (size_t i = n; i-- > 0;) {
      std::string take = "\"\\n\" " + params[i] + (after[i + 1].empty() ? "" : " " + after[i + 1]);
      after[i] = new_rule(hint + "-params", req[i] ? take : after[i + 1].empty() ? "(" + take + ")?"
                                                           : "(" + take + " | " + after[i + 1] + ")");
      std::string lead = params[i] + (after[i + 1].empty() ? "" : " " + after[i + 1]);
      if (req[i]) {
        first[i] = lead;
      } else {
        first[i] = first[i + 1].empty() ? "(" + lead + ")?" : "(" + lead + " | " + first[i + 1] + ")";
      }
      first[i] = new_rule(hint + "-params", first[i]);
    }
    return first[0];
  }

  // The parameters of a tool without a schema to enforce: any names, any values.
  std::string dsml_free_parameters() {
    const std::string text = dsml_free_text();
    const std::string param = new_rule(
        "free-param", gbnf_literal("<\xEF\xBD\x9C" "DSML\xEF\xBD\x9C" "parameter name=\"") +
                          " [^\"\\n\\uFF5C]+ \"\\\" string=\\\"\" (\"true\" | \"false\") \"\\\">\" " +
                          text + " " + gbnf_literal(kDsmlParamClose));
    return "(" + param + " (\"\\n\" " + param + ")*)?";
  }

  // Any text without "DSML｜" in it: the free answer text before a tool-call block (the DSML
  // parser starts a block at "<｜DSML｜" or "<DSML｜"), and free parameter values. A small
  // automaton: rule i = "the last i characters were the start of DSML｜".
  std::string dsml_free_text() {
    if (!free_text_.empty()) return free_text_;
    const char* const step[] = {"D", "S", "M", "L", "\\uFF5C"};
    std::vector<std::string> names(5);
    for (int i = 0; i < 5; ++i) names[i] = "dsml-free-" + std::to_string(++counter_);
    for (int i = 0; i < 5; ++i) {
      // Any character but 'D' and the next one of the word goes back to the start; 'D'
      // (re)starts the word; the next character advances (the last one is refused).
      std::string other = "[^D" + std::string(i == 0 ? "" : step[i]) + "]";
      std::string body = "\"\" | " + other + " " + names[0] + " | \"D\" " + names[1];
      if (i >= 1 && i <= 3) body += " | \"" + std::string(step[i]) + "\" " + names[i + 1];
      rules_[names[i]] = body;
    }
    free_text_ = names[0];
    return free_text_;
  }

 private:
  static constexpr const char* kDsmlChar =
      "[^\"\\\\\\x00-\\x1F\\uFF5C] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" ([0-9a-cA-Ce-fE-F] hex hex hex | [dD] [0-7] hex hex))";
  static constexpr const char* kDsmlParamClose = "</\xEF\xBD\x9C" "DSML\xEF\xBD\x9C" "parameter>";

  const Json* root_ = nullptr;
  bool dsml_ = false;
  bool raw_ = false;  // writing a raw (DSML string="true") value
  std::string free_text_;
  std::map<std::string, std::string> rules_;  // generated rules
  std::map<std::string, std::string> refs_;   // $ref -> rule name
  std::set<std::string> used_;                // primitives
  int counter_ = 0;

  std::string use(const std::string& prim) {
    if (used_.insert(prim).second) {
      auto it = kDeps.find(prim);
      if (it != kDeps.end()) {
        for (const auto& d : it->second) use(d);
      }
    }
    return prim;
  }

  static std::string sanitize(const std::string& s) {
    std::string out;
    for (char c : s) {
      out += ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) ? c : '-';
      if (out.size() > 24) break;
    }
    return out.empty() ? "r" : out;
  }

  [[noreturn]] static void unsupported(const std::string& kw, const std::string& why = "") {
    throw SchemaError(kw, "unsupported JSON Schema keyword '" + kw + "'" +
                              (why.empty() ? "" : ": " + why) +
                              " (see docs/grammar.md for what is supported)");
  }
  [[noreturn]] static void invalid(const std::string& kw, const std::string& why) {
    throw SchemaError(kw, "invalid JSON Schema: '" + kw + "' " + why);
  }

  static void check_keywords(const Json& s) {
    for (auto it = s.begin(); it != s.end(); ++it) {
      const std::string& k = it.key();
      if (kAnnotations.count(k)) continue;
      if (!kSupported.count(k)) unsupported(k);
    }
    if (s.contains("uniqueItems") && s["uniqueItems"] != Json(false)) {
      unsupported("uniqueItems", "only false is supported");
    }
  }

  const Json& resolve(const std::string& ref) const {
    if (ref == "#") return *root_;
    if (ref.rfind("#/", 0) != 0) unsupported("$ref", "only local references (#/...) are supported");
    const Json* cur = root_;
    size_t pos = 2;
    while (pos <= ref.size()) {
      size_t slash = ref.find('/', pos);
      std::string part = ref.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
      std::string key;
      for (size_t i = 0; i < part.size(); ++i) {  // JSON pointer escapes and %25-style
        if (part[i] == '~' && i + 1 < part.size()) {
          key += part[i + 1] == '1' ? '/' : '~';
          ++i;
        } else if (part[i] == '%' && i + 2 < part.size()) {
          key += static_cast<char>(std::stoi(part.substr(i + 1, 2), nullptr, 16));
          i += 2;
        } else {
          key += part[i];
        }
      }
      if (cur->is_object() && cur->contains(key)) {
        cur = &(*cur)[key];
      } else if (cur->is_array() && !key.empty() &&
                 key.find_first_not_of("0123456789") == std::string::npos &&
                 std::stoul(key) < cur->size()) {
        cur = &(*cur)[std::stoul(key)];
      } else {
        invalid("$ref", "'" + ref + "' does not resolve");
      }
      if (slash == std::string::npos) break;
      pos = slash + 1;
    }
    return *cur;
  }

  std::string literal(const Json& v) {
    if (raw_) {
      if (!v.is_string()) invalid("enum", "a raw string value must be a string");
      const std::string& text = v.get_ref<const std::string&>();
      if (text.find("\xEF\xBD\x9C") != std::string::npos) {
        unsupported("enum", "a string value holding U+FF5C (the DSML bar) in a tool parameter");
      }
      return gbnf_literal(text);
    }
    std::string s = v.dump(-1, ' ', false, nlohmann::detail::error_handler_t::strict);
    if (dsml_ && s.find("\xEF\xBD\x9C") != std::string::npos) {
      s = v.dump(-1, ' ', true, nlohmann::detail::error_handler_t::strict);  // as \uff5c
    }
    return gbnf_literal(s);
  }

  std::string alternatives(const std::vector<std::string>& alts) {
    if (alts.size() == 1) return alts[0];
    std::string out = "(";
    for (size_t i = 0; i < alts.size(); ++i) out += (i ? " | " : "") + alts[i];
    return out + ")";
  }

  // ---- oneOf: exactly one branch must match. A grammar can only offer alternatives, so
  // oneOf is generated like anyOf when no value can match two branches (then "at least one"
  // is "exactly one"), which is checked here from the schemas' meaning (not from what the
  // grammar happens to generate); otherwise the schema is refused.

  // The JSON types a schema admits, as bits.
  static constexpr unsigned kNull = 1, kBool = 2, kInt = 4, kFrac = 8, kStr = 16, kArr = 32,
                            kObj = 64, kAnyType = 127;
  static unsigned type_bit(const Json& v) {
    if (v.is_null()) return kNull;
    if (v.is_boolean()) return kBool;
    if (v.is_number_integer()) return kInt;
    if (v.is_number()) return std::floor(v.get<double>()) == v.get<double>() ? kInt : kFrac;
    if (v.is_string()) return kStr;
    if (v.is_array()) return kArr;
    return kObj;
  }
  static unsigned type_name_bits(const std::string& t) {
    if (t == "null") return kNull;
    if (t == "boolean") return kBool;
    if (t == "integer") return kInt;
    if (t == "number") return kInt | kFrac;
    if (t == "string") return kStr;
    if (t == "array") return kArr;
    if (t == "object") return kObj;
    return 0;
  }
  // Follows $ref chains (bounded: a reference cycle without content admits anything).
  const Json& deref(const Json& s) const {
    const Json* cur = &s;
    for (int i = 0; i < 32 && cur->is_object() && cur->contains("$ref") && (*cur)["$ref"].is_string(); ++i) {
      cur = &resolve((*cur)["$ref"].get<std::string>());
    }
    return *cur;
  }
  // Without "type", "const" or "enum" a schema constrains only values of the types its
  // keywords apply to; every other type passes it (JSON Schema's semantics).
  unsigned admitted_types(const Json& in, int depth = 0) const {
    if (depth > 32) return kAnyType;
    const Json& s = deref(in);
    if (s.is_boolean()) return s.get<bool>() ? kAnyType : 0;
    if (!s.is_object()) return kAnyType;
    unsigned t = kAnyType;
    if (s.contains("const")) t &= type_bit(s["const"]);
    if (s.contains("enum") && s["enum"].is_array()) {
      unsigned e = 0;
      for (const auto& v : s["enum"]) e |= type_bit(v);
      t &= e;
    }
    if (s.contains("type")) {
      unsigned ty = 0;
      if (s["type"].is_string()) ty = type_name_bits(s["type"]);
      else if (s["type"].is_array()) for (const auto& x : s["type"]) if (x.is_string()) ty |= type_name_bits(x);
      t &= ty;
    }
    for (const char* kw : {"anyOf", "oneOf"}) {
      if (!s.contains(kw) || !s[kw].is_array()) continue;
      unsigned u = 0;
      for (const auto& sub : s[kw]) u |= admitted_types(sub, depth + 1);
      t &= u;
    }
    if (s.contains("allOf") && s["allOf"].is_array()) {
      for (const auto& sub : s["allOf"]) t &= admitted_types(sub, depth + 1);
    }
    return t;
  }
  // The finite set of values a schema admits (const / enum), or null when not finite.
  const Json* literal_values(const Json& s, Json& holder) const {
    if (!s.is_object()) return nullptr;
    if (s.contains("const")) {
      holder = Json::array({s["const"]});
      return &holder;
    }
    if (s.contains("enum") && s["enum"].is_array()) return &s["enum"];
    return nullptr;
  }
  // True when no value can satisfy both schemas (a sufficient test: disjoint types, disjoint
  // const/enum sets, or objects that both require a property whose schemas are disjoint or
  // that one forbids).
  bool disjoint(const Json& a_in, const Json& b_in, int depth = 0) const {
    if (depth > 8) return false;
    const Json& a = deref(a_in);
    const Json& b = deref(b_in);
    if ((admitted_types(a) & admitted_types(b)) == 0) return true;
    Json ha, hb;
    const Json* la = literal_values(a, ha);
    const Json* lb = literal_values(b, hb);
    if (la && lb) {
      for (const auto& x : *la) {
        for (const auto& y : *lb) {
          if (x == y) return false;
        }
      }
      return true;
    }
    for (const Json* lit : {la, lb}) {  // literals none of which the other schema's types admit
      if (!lit) continue;
      const unsigned other = admitted_types(lit == la ? b : a);
      bool all_out = true;
      for (const auto& v : *lit) all_out = all_out && !(type_bit(v) & other);
      if (all_out) return true;
    }
    if ((admitted_types(a) | admitted_types(b)) != kObj || !a.is_object() || !b.is_object()) {
      return false;
    }
    auto required = [](const Json& s) {
      std::set<std::string> r;
      if (s.contains("required") && s["required"].is_array()) {
        for (const auto& x : s["required"]) if (x.is_string()) r.insert(x.get<std::string>());
      }
      return r;
    };
    // A property one side requires and the other forbids (closed object without it).
    auto forbids = [](const Json& s, const std::string& key) {
      const bool closed = s.contains("additionalProperties") && s["additionalProperties"] == Json(false);
      return closed && !(s.contains("properties") && s["properties"].is_object() && s["properties"].contains(key));
    };
    const auto ra = required(a), rb = required(b);
    for (const auto& k : ra) if (forbids(b, k)) return true;
    for (const auto& k : rb) if (forbids(a, k)) return true;
    for (const auto& k : ra) {
      if (!rb.count(k)) continue;
      const bool pa = a.contains("properties") && a["properties"].is_object() && a["properties"].contains(k);
      const bool pb = b.contains("properties") && b["properties"].is_object() && b["properties"].contains(k);
      if (pa && pb && disjoint(a["properties"][k], b["properties"][k], depth + 1)) return true;
    }
    return false;
  }
  void check_one_of(const Json& branches) const {
    for (size_t i = 0; i < branches.size(); ++i) {
      for (size_t j = i + 1; j < branches.size(); ++j) {
        if (!disjoint(branches[i], branches[j])) {
          unsupported("oneOf", "branches " + std::to_string(i) + " and " + std::to_string(j) +
                                   " may both match one value, and exactly-one cannot be "
                                   "enforced by a grammar (make the branches exclusive: "
                                   "different types, const/enum values or a required "
                                   "discriminator property; or use anyOf)");
        }
      }
    }
  }

  std::string visit(const Json& s, const std::string& hint) {
    if (s.is_boolean()) {
      if (!s.get<bool>()) invalid("false", "schema matches nothing");
      return use("value");
    }
    if (!s.is_object()) invalid(hint, "a schema must be an object or a boolean");
    check_keywords(s);
    if (s.contains("$ref")) {
      if (!s["$ref"].is_string()) invalid("$ref", "must be a string");
      for (auto it = s.begin(); it != s.end(); ++it) {
        if (it.key() != "$ref" && it.key() != "$defs" && it.key() != "definitions" &&
            !kAnnotations.count(it.key())) {
          unsupported(it.key(), "keywords beside '$ref'");
        }
      }
      const std::string ref = s["$ref"];
      const std::string key = (raw_ ? "raw:" : "") + ref;  // raw and JSON forms differ
      auto it = refs_.find(key);
      if (it != refs_.end()) return it->second;
      std::string name = sanitize(ref.substr(ref.rfind('/') + 1)) + "-" + std::to_string(++counter_);
      refs_[key] = name;
      rules_[name] = "";  // reserved: recursive references see the name
      rules_[name] = visit(resolve(ref), name);
      return name;
    }
    if (s.contains("const")) {
      return literal(s["const"]);
    }
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty()) invalid("enum", "must be a non-empty array");
      std::vector<std::string> alts;
      for (const auto& v : s["enum"]) alts.push_back(literal(v));
      return alternatives(alts);
    }
    for (const char* kw : {"anyOf", "oneOf"}) {
      if (!s.contains(kw)) continue;
      if (!s[kw].is_array() || s[kw].empty()) invalid(kw, "must be a non-empty array");
      for (auto it = s.begin(); it != s.end(); ++it) {
        if (it.key() != kw && it.key() != "$defs" && it.key() != "definitions" &&
            !kAnnotations.count(it.key())) {
          unsupported(it.key(), std::string("keywords beside '") + kw + "'");
        }
      }
      if (std::string(kw) == "oneOf") check_one_of(s[kw]);
      std::vector<std::string> alts;
      for (const auto& sub : s[kw]) {
        if (sub == Json(false)) continue;  // matches nothing: not an alternative
        alts.push_back(visit(sub, hint));
      }
      if (alts.empty()) invalid(kw, "no branch can match (all are false)");
      return alternatives(alts);
    }
    if (s.contains("allOf")) return visit(merge_all_of(s), hint);

    std::vector<std::string> types;
    if (s.contains("type")) {
      const Json& t = s["type"];
      if (t.is_string()) {
        types.push_back(t);
      } else if (t.is_array() && !t.empty()) {
        for (const auto& x : t) {
          if (!x.is_string()) invalid("type", "must be a string or an array of strings");
          types.push_back(x);
        }
      } else {
        invalid("type", "must be a string or an array of strings");
      }
    } else {
      auto has = [&](std::initializer_list<const char*> ks) {
        for (const char* k : ks) {
          if (s.contains(k)) return true;
        }
        return false;
      };
      if (has({"properties", "required", "additionalProperties"})) types.push_back("object");
      if (has({"items", "prefixItems", "minItems", "maxItems", "additionalItems"})) types.push_back("array");
      if (has({"minLength", "maxLength", "pattern", "format"})) types.push_back("string");
      if (has({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})) types.push_back("number");
      if (types.empty()) return use("value");
    }
    std::vector<std::string> alts;
    for (const auto& t : types) alts.push_back(visit_typed(s, t, hint));
    return alternatives(alts);
  }

  Json merge_all_of(const Json& s) {
    if (!s["allOf"].is_array() || s["allOf"].empty()) invalid("allOf", "must be a non-empty array");
    Json merged = Json::object();
    Json props = Json::object();
    Json required = Json::array();
    auto absorb = [&](const Json& part, auto& self) -> void {
      const Json* p = &part;
      while (p->is_object() && p->contains("$ref")) p = &resolve((*p)["$ref"]);
      if (!p->is_object()) unsupported("allOf", "only objects can be combined");
      check_keywords(*p);
      for (auto it = p->begin(); it != p->end(); ++it) {
        const std::string& k = it.key();
        if (k == "allOf") {
          for (const auto& sub : it.value()) self(sub, self);
        } else if (k == "type") {
          if (it.value() != Json("object")) unsupported("allOf", "only objects can be combined");
        } else if (k == "properties") {
          for (auto pi = it.value().begin(); pi != it.value().end(); ++pi) {
            if (props.contains(pi.key())) unsupported("allOf", "property '" + pi.key() + "' defined twice");
            props[pi.key()] = pi.value();
          }
        } else if (k == "required") {
          for (const auto& r : it.value()) required.push_back(r);
        } else if (k == "additionalProperties") {
          if (merged.contains(k) && merged[k] != it.value()) {
            unsupported("allOf", "parts with different 'additionalProperties'");
          }
          merged[k] = it.value();
        } else if (k == "$defs" || k == "definitions" || kAnnotations.count(k)) {
          continue;
        } else {
          unsupported("allOf", "'" + k + "' inside allOf (only object properties merge)");
        }
      }
    };
    absorb(s, absorb);
    merged["type"] = "object";
    merged["properties"] = props;
    merged["required"] = required;
    return merged;
  }

  std::string visit_typed(const Json& s, const std::string& type, const std::string& hint) {
    if (type == "string") return visit_string(s, hint);
    if (raw_) invalid("type", "'" + type + "' in a raw string parameter");
    if (type == "integer") return visit_integer(s, hint);
    if (type == "number") {
      for (const char* kw : {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}) {
        if (s.contains(kw)) unsupported(kw, "bounds are supported for integers only");
      }
      return use("number");
    }
    if (type == "boolean") return use("boolean");
    if (type == "null") return use("null");
    if (type == "object") return visit_object(s, hint);
    if (type == "array") return visit_array(s, hint);
    invalid("type", "unknown type '" + type + "'");
  }

  static int64_t get_count(const Json& s, const char* kw, int64_t dflt) {
    if (!s.contains(kw)) return dflt;
    const Json& v = s[kw];
    if (!v.is_number_integer() && !(v.is_number() && std::floor(v.get<double>()) == v.get<double>())) {
      invalid(kw, "must be a non-negative integer");
    }
    double d = v.get<double>();
    if (d < 0) invalid(kw, "must be a non-negative integer");
    return static_cast<int64_t>(std::min(d, 1e9));
  }

  // A string's content between quotes (JSON) or as it is (a raw DSML value).
  std::string quoted(const std::string& content) const {
    return raw_ ? content : "\"\\\"\" " + content + " \"\\\"\"";
  }

  std::string visit_string(const Json& s, const std::string& hint) {
    const int64_t min = get_count(s, "minLength", 0), max = get_count(s, "maxLength", -1);
    if (max >= 0 && max < min) invalid("maxLength", "is below minLength");
    if (max > 10000) unsupported("maxLength", "at most 10000 is supported");
    if (min > 10000) unsupported("minLength", "at most 10000 is supported");
    const bool has_len = s.contains("minLength") || s.contains("maxLength");
    if (s.contains("format")) {
      if (!s["format"].is_string()) invalid("format", "must be a string");
      const std::string f = s["format"];
      if (has_len || s.contains("pattern")) unsupported("format", "together with length or pattern");
      if (f == "date" || f == "time" || f == "uuid" || f == "email") {
        use(f);
        return quoted(f);
      }
      if (f == "date-time") {
        use("date");
        use("time");
        return quoted("date \"T\" time");
      }
      unsupported("format", "format '" + f + "' (supported: date, time, date-time, uuid, email)");
    }
    if (s.contains("pattern")) {
      if (!s["pattern"].is_string()) invalid("pattern", "must be a string");
      if (has_len) unsupported("pattern", "together with minLength/maxLength");
      use(raw_ ? "raw-char" : "char");
      std::string body = RegexConverter(s["pattern"].get<std::string>(), CharMode{raw_, dsml_}).run();
      return quoted(new_rule(hint + "-pattern", body));
    }
    const std::string ch = use(raw_ ? "raw-char" : "char");
    if (!has_len) return raw_ ? ch + "*" : use("string");
    std::string rep = max < 0 ? "{" + std::to_string(min) + ",}"
                              : "{" + std::to_string(min) + "," + std::to_string(max) + "}";
    return quoted(ch + rep);
  }

  std::string visit_integer(const Json& s, const std::string& hint) {
    constexpr int64_t kBound = 9999999999999999;  // 16 digits, as the plain integer rule
    int64_t lo = -kBound, hi = kBound;
    bool bounded = false;
    auto num = [&](const char* kw) {
      const Json& v = s[kw];
      if (!v.is_number()) {
        invalid(kw, v.is_boolean() ? "as a boolean (draft 4) is not supported" : "must be a number");
      }
      bounded = true;
      return v.get<double>();
    };
    if (s.contains("minimum")) lo = std::max<double>(lo, std::ceil(num("minimum")));
    if (s.contains("exclusiveMinimum")) lo = std::max<double>(lo, std::floor(num("exclusiveMinimum")) + 1);
    if (s.contains("maximum")) hi = std::min<double>(hi, std::floor(num("maximum")));
    if (s.contains("exclusiveMaximum")) hi = std::min<double>(hi, std::ceil(num("exclusiveMaximum")) - 1);
    if (!bounded) return use("integer");
    if (lo > hi) invalid("minimum", "no integer lies between minimum and maximum");
    std::vector<std::string> alts;
    if (lo < 0) {
      std::vector<std::string> neg;
      nonneg_range(std::max<int64_t>(1, hi < 0 ? -hi : 1), -lo, neg);
      for (auto& a : neg) alts.push_back("\"-\" " + a);
    }
    if (hi >= 0) nonneg_range(std::max<int64_t>(0, lo), hi, alts);
    return new_rule(hint + "-int", alternatives(alts));
  }

  // Keys other than `names`. With names to avoid, extra keys use printable ASCII without
  // escapes (a subset of all keys; a name with other characters cannot collide with them).
  std::string key_except(const std::vector<std::string>& names, const std::string& hint) {
    if (names.empty()) return use("string");
    auto printable = [](const std::string& n) {
      for (unsigned char c : n) {
        if (c < 0x20 || c > 0x7E || c == '"' || c == '\\') return false;
      }
      return true;
    };
    struct Node {
      std::map<unsigned char, int> kids;
      bool terminal = false;
    };
    std::vector<Node> trie(1);
    for (const auto& n : names) {
      if (!printable(n)) continue;
      int cur = 0;
      for (unsigned char c : n) {
        auto it = trie[cur].kids.find(c);
        if (it == trie[cur].kids.end()) {
          trie.push_back({});
          const int id = static_cast<int>(trie.size()) - 1;
          trie[cur].kids[c] = id;
          cur = id;
        } else {
          cur = it->second;
        }
      }
      trie[cur].terminal = true;
    }
    const std::string free = new_rule(hint + "-keychars", "[ !#-\\[\\]-~]* \"\\\"\"");
    // At each trie node: end the key (unless a name ends here), take a character no name
    // continues with (then anything), or follow a child.
    std::vector<std::string> node_rule(trie.size());
    for (size_t i = trie.size(); i-- > 0;) {
      std::vector<std::string> alts;
      if (!trie[i].terminal) alts.push_back("\"\\\"\"");
      std::string cls;
      for (unsigned c = 0x20; c <= 0x7E; ++c) {
        if (c == '"' || c == '\\' || trie[i].kids.count(static_cast<unsigned char>(c))) continue;
        cls += class_char(c);
      }
      if (!cls.empty()) alts.push_back("[" + cls + "] " + free);
      for (auto [c, kid] : trie[i].kids) {
        alts.push_back(gbnf_literal(std::string(1, static_cast<char>(c))) + " " +
                       node_rule[static_cast<size_t>(kid)]);
      }
      node_rule[i] = new_rule(hint + "-key", alternatives(alts));
    }
    return "\"\\\"\" " + node_rule[0];
  }

  std::string visit_object(const Json& s, const std::string& hint) {
    use("ws");
    std::vector<std::pair<std::string, std::string>> props;  // (key literal, value rule)
    std::vector<bool> req;
    std::vector<std::string> names;
    std::set<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) invalid("required", "must be an array of strings");
      for (const auto& r : s["required"]) {
        if (!r.is_string()) invalid("required", "must be an array of strings");
        required.insert(r.get<std::string>());
      }
    }
    if (s.contains("properties")) {
      if (!s["properties"].is_object()) invalid("properties", "must be an object");
      for (auto it = s["properties"].begin(); it != s["properties"].end(); ++it) {
        names.push_back(it.key());
        std::string key = gbnf_literal(Json(it.key()).dump(-1, ' ', false, nlohmann::detail::error_handler_t::strict));
        std::string val = visit(it.value(), hint + "-" + it.key());
        props.emplace_back(key + " ws \":\" ws " + val, val);
        req.push_back(required.count(it.key()) > 0);
      }
    }
    for (const auto& r : required) {
      if (std::find(names.begin(), names.end(), r) == names.end()) {
        // Required but not described: any value under that name.
        std::string key = gbnf_literal(Json(r).dump());
        props.emplace_back(key + " ws \":\" ws " + use("value"), "value");
        req.push_back(true);
        names.push_back(r);
      }
    }
    std::string extra;  // one additional member, or empty when none are allowed
    if (s.contains("additionalProperties")) {
      const Json& ap = s["additionalProperties"];
      if (ap.is_boolean()) {
        if (ap.get<bool>()) extra = key_except(names, hint) + " ws \":\" ws " + use("value");
      } else {
        extra = key_except(names, hint) + " ws \":\" ws " + visit(ap, hint + "-additional");
      }
    }
    // Members in declaration order; optional ones may be skipped; extras after them.
    // after[i]: the members from i on when at least one member has been written.
    const size_t n = props.size();
    std::string tail = extra.empty() ? "" : "(\",\" ws " + extra + " ws)*";
    std::vector<std::string> after(n + 1);
    after[n] = tail.empty() ? "" : new_rule(hint + "-rest", tail);
    for (size_t i = n; i-- > 0;) {
      std::string member = "\",\" ws " + props[i].first + " ws";
      std::string body = req[i] ? member : "(" + member + ")?";
      if (!after[i + 1].empty()) body += " " + after[i + 1];
      after[i] = new_rule(hint + "-rest", body);
    }
    // first[i]: the members from i on when none has been written yet.
    std::string first_tail = extra.empty() ? "" : "(" + extra + " ws " + after[n] + ")?";
    std::vector<std::string> first(n + 1);
    first[n] = first_tail;
    for (size_t i = n; i-- > 0;) {
      std::string take = props[i].first + " ws" + (after[i + 1].empty() ? "" : " " + after[i + 1]);
      if (req[i]) {
        first[i] = take;
      } else {
        first[i] = first[i + 1].empty() ? "(" + take + ")?"
                                        : "(" + take + " | " + first[i + 1] + ")";
      }
    }
    std::string body = "\"{\" ws " + (first[0].empty() ? "" : first[0] + " ") + "\"}\"";
    return new_rule(hint + "-obj", body);
  }

  std::string visit_array(const Json& s, const std::string& hint) {
    use("ws");
    std::vector<std::string> prefix;
    std::string item;  // empty: no further items allowed
    bool items_allowed = true;
    const Json* items = s.contains("items") ? &s["items"] : nullptr;
    const Json* prefix_items = s.contains("prefixItems") ? &s["prefixItems"] : nullptr;
    const Json* additional = s.contains("additionalItems") ? &s["additionalItems"] : nullptr;
    if (items && items->is_array()) {  // draft 7 tuple form
      if (prefix_items) invalid("items", "array form together with prefixItems");
      prefix_items = items;
      items = additional;
    } else if (additional) {
      additional = nullptr;  // ignored without a tuple, per the spec
    }
    if (prefix_items) {
      if (!prefix_items->is_array()) invalid("prefixItems", "must be an array");
      size_t i = 0;
      for (const auto& p : *prefix_items) prefix.push_back(visit(p, hint + "-" + std::to_string(i++)));
    }
    if (items) {
      if (items->is_boolean() && !items->get<bool>()) {
        items_allowed = false;
      } else {
        item = visit(*items, hint + "-item");
      }
    } else {
      item = use("value");
    }
    int64_t min = get_count(s, "minItems", 0), max = get_count(s, "maxItems", -1);
    if (max >= 0 && max < min) invalid("maxItems", "is below minItems");
    if (!items_allowed) {
      max = max < 0 ? static_cast<int64_t>(prefix.size()) : std::min<int64_t>(max, static_cast<int64_t>(prefix.size()));
    }
    if (min > static_cast<int64_t>(prefix.size()) + 1000 || max > 1000 + static_cast<int64_t>(prefix.size())) {
      unsupported(min > 1000 ? "minItems" : "maxItems", "at most 1000 items are supported");
    }
    if (min > max && max >= 0) invalid("minItems", "cannot be met (items: false)");
    // Element i (0-based) is prefix[i] or item. Build from the end: seq(i) = the elements
    // from i on, given i elements were written (i > 0: each preceded by a comma).
    const int64_t np = static_cast<int64_t>(prefix.size());
    auto elem = [&](int64_t i) { return i < np ? prefix[static_cast<size_t>(i)] : item; };
    auto sep = [&](int64_t i) { return std::string(i == 0 ? "" : "\",\" ws "); };
    // After the prefix: the item repeated with bounds relative to what is left.
    std::string rest;  // elements from index np on
    {
      const int64_t lo = std::max<int64_t>(0, min - np);
      const int64_t hi = max < 0 ? -1 : std::max<int64_t>(0, max - np);
      if (hi == 0) {
        rest = "";
      } else if (np == 0) {
        // item ("," item){lo-1, hi-1}, optional when lo == 0.
        std::string rep = hi < 0 ? "{" + std::to_string(std::max<int64_t>(0, lo - 1)) + ",}"
                                 : "{" + std::to_string(std::max<int64_t>(0, lo - 1)) + "," +
                                       std::to_string(hi - 1) + "}";
        std::string body = item + " ws (\",\" ws " + item + " ws)" + rep;
        rest = lo == 0 ? "(" + body + ")?" : body;
      } else {
        std::string rep = hi < 0 ? "{" + std::to_string(lo) + ",}"
                                 : "{" + std::to_string(lo) + "," + std::to_string(hi) + "}";
        rest = "(\",\" ws " + item + " ws)" + rep;
      }
    }
    // The prefix elements: element i required when i < min, else optional (and then
    // nothing after it unless it is present).
    std::string seq = rest;
    for (int64_t i = np; i-- > 0;) {
      std::string cur = sep(i) + elem(i) + " ws" + (seq.empty() ? "" : " " + seq);
      seq = i < min ? cur : "(" + cur + ")?";
      seq = new_rule(hint + "-items", seq);
    }
    return new_rule(hint + "-arr", "\"[\" ws " + (seq.empty() ? "" : seq + " ") + "\"]\"");
  }
};

}  // namespace

std::string json_schema_to_gbnf(const nlohmann::ordered_json& schema) {
  Converter c;
  return c.emit(c.convert(schema, "root-value"));
}

std::string tool_calls_gbnf(const ToolCallGrammar& spec) {
  Converter c(/*dsml=*/true);
  std::vector<std::string> invokes;
  for (const auto& tool : spec.tools) {
    if (!spec.only.empty() && tool.name != spec.only) continue;
    if (tool.name.empty() || tool.name.find('"') != std::string::npos ||
        tool.name.find("DSML\xEF\xBD\x9C") != std::string::npos) {
      throw SchemaError("", "tool name '" + tool.name + "' cannot be written in DSML");
    }
    std::string params;
    if (tool.strict) {
      try {
        params = c.dsml_parameters(tool.parameters, "p-" + tool.name);
      } catch (const SchemaError& e) {
        throw SchemaError(e.keyword, "tool '" + tool.name + "' (strict): " + e.what());
      }
    } else {
      params = c.dsml_free_parameters();
    }
    const std::string open = "<\xEF\xBD\x9C" "DSML\xEF\xBD\x9C" "invoke name=\"" + tool.name + "\">\n";
    const std::string close = "\n</\xEF\xBD\x9C" "DSML\xEF\xBD\x9C" "invoke>";
    invokes.push_back(c.new_rule("invoke-" + tool.name, gbnf_literal(open) + " " +
                                                            (params.empty() ? "" : params + " ") +
                                                            gbnf_literal(close)));
  }
  if (invokes.empty()) throw SchemaError("", "tool '" + spec.only + "' is not among the tools");
  std::string invoke = invokes.size() == 1 ? invokes[0] : "(" + [&] {
    std::string alts;
    for (size_t i = 0; i < invokes.size(); ++i) alts += (i ? " | " : "") + invokes[i];
    return alts;
  }() + ")";
  const std::string more = spec.parallel ? " (\"\\n\" " + invoke + ")*" : "";
  const std::string block = c.new_rule(
      "tool-calls", gbnf_literal("<\xEF\xBD\x9C" "DSML\xEF\xBD\x9C" "tool_calls>\n") + " " + invoke + more +
                        " " + gbnf_literal("\n</\xEF\xBD\x9C" "DSML\xEF\xBD\x9C" "tool_calls>"));
  // The official form puts a blank line before the block (also after empty content).
  const std::string lead = gbnf_literal("\n\n");
  if (spec.required) return c.emit(lead + " " + block);
  if (spec.answer) {
    std::string answer;
    try {
      answer = c.convert(*spec.answer, "answer");
    } catch (const SchemaError& e) {
      throw SchemaError(e.keyword, std::string("response format: ") + e.what());
    }
    return c.emit("(" + answer + " | " + lead + " " + block + ")");
  }
  return c.emit(c.dsml_free_text() + " " + block + "?");
}

std::string json_object_gbnf() { return json_schema_to_gbnf(json_object_schema()); }

nlohmann::ordered_json json_object_schema() {
  return nlohmann::ordered_json{{"type", "object"}, {"additionalProperties", true}};
}

}  // namespace ds4::grammar
