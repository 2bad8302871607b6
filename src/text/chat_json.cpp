#include "text/chat_json.h"

#include "text/unicode.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>

namespace ds4::text::pyjson {
namespace {

// Nesting deeper than this is rejected so hostile input cannot exhaust the stack.
constexpr int kMaxDepth = 512;

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  std::optional<Value> run() {
    Value v;
    skip_ws();
    if (!value(v, 0)) return std::nullopt;
    skip_ws();
    if (pos_ != s_.size()) return std::nullopt;
    return v;
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;

  bool eof() const { return pos_ >= s_.size(); }
  char peek() const { return s_[pos_]; }
  // Python's json whitespace is exactly these four.
  void skip_ws() {
    while (!eof() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) ++pos_;
  }
  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  bool value(Value& out, int depth) {
    if (eof() || depth > kMaxDepth) return false;
    char c = peek();
    if (c == '{') return object(out, depth);
    if (c == '[') return array(out, depth);
    if (c == '"') {
      out.kind = Value::Kind::String;
      return string(out.text);
    }
    if (literal("null")) {
      out.kind = Value::Kind::Null;
      return true;
    }
    if (literal("true")) {
      out.kind = Value::Kind::Bool;
      out.boolean = true;
      return true;
    }
    if (literal("false")) {
      out.kind = Value::Kind::Bool;
      out.boolean = false;
      return true;
    }
    if (literal("NaN")) {
      out.kind = Value::Kind::Float;
      out.number = std::nan("");
      return true;
    }
    if (literal("Infinity")) {
      out.kind = Value::Kind::Float;
      out.number = HUGE_VAL;
      return true;
    }
    if (literal("-Infinity")) {
      out.kind = Value::Kind::Float;
      out.number = -HUGE_VAL;
      return true;
    }
    return number(out);
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  // Python's NUMBER_RE: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?
  bool number(Value& out) {
    size_t start = pos_;
    bool negative = false;
    if (!eof() && peek() == '-') {
      negative = true;
      ++pos_;
    }
    if (eof() || !is_digit(peek())) return false;
    if (peek() == '0') {
      ++pos_;
    } else {
      while (!eof() && is_digit(peek())) ++pos_;
    }
    size_t int_end = pos_;
    bool is_float = false;
    if (!eof() && peek() == '.' && pos_ + 1 < s_.size() && is_digit(s_[pos_ + 1])) {
      is_float = true;
      ++pos_;
      while (!eof() && is_digit(peek())) ++pos_;
    }
    if (!eof() && (peek() == 'e' || peek() == 'E')) {
      size_t save = pos_;
      ++pos_;
      if (!eof() && (peek() == '+' || peek() == '-')) ++pos_;
      if (!eof() && is_digit(peek())) {
        is_float = true;
        while (!eof() && is_digit(peek())) ++pos_;
      } else {
        pos_ = save;  // the regex stops before a dangling exponent; the caller then fails
      }
    }
    if (is_float) {
      std::string lexeme(s_.substr(start, pos_ - start));
      out.kind = Value::Kind::Float;
      out.number = std::strtod(lexeme.c_str(), nullptr);  // overflow gives ±inf, as Python
      return true;
    }
    std::string_view digits = s_.substr(negative ? start + 1 : start, int_end - (negative ? start + 1 : start));
    out.kind = Value::Kind::Integer;
    // Python int("-0") is 0.
    out.text.clear();
    if (negative && digits != "0") out.text.push_back('-');
    out.text.append(digits);
    return true;
  }

  static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  bool hex4(uint32_t& cp) {
    if (pos_ + 4 > s_.size()) return false;
    cp = 0;
    for (int i = 0; i < 4; ++i) {
      int h = hex_value(s_[pos_ + i]);
      if (h < 0) return false;
      cp = cp * 16 + static_cast<uint32_t>(h);
    }
    pos_ += 4;
    return true;
  }

  bool string(std::string& out) {
    ++pos_;  // opening quote
    out.clear();
    while (true) {
      if (eof()) return false;
      unsigned char c = static_cast<unsigned char>(peek());
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c < 0x20) return false;  // strict mode rejects raw control characters
      if (c != '\\') {
        out.push_back(static_cast<char>(c));
        ++pos_;
        continue;
      }
      ++pos_;
      if (eof()) return false;
      char e = peek();
      ++pos_;
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          uint32_t cp;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF && s_.substr(pos_, 2) == "\\u") {
            size_t save = pos_;
            pos_ += 2;
            uint32_t low;
            if (hex4(low) && low >= 0xDC00 && low <= 0xDFFF) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else {
              pos_ = save;  // Python keeps a lone surrogate and reads the next escape alone
            }
          }
          // Lone surrogates have no UTF-8 form; they become U+FFFD (Python would fail later
          // when encoding the prompt).
          if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
          unicode::utf8_append(out, cp);
          break;
        }
        default:
          return false;
      }
    }
  }

  bool array(Value& out, int depth) {
    ++pos_;
    out.kind = Value::Kind::Array;
    skip_ws();
    if (!eof() && peek() == ']') {
      ++pos_;
      return true;
    }
    while (true) {
      skip_ws();
      Value item;
      if (!value(item, depth + 1)) return false;
      out.items.push_back(std::move(item));
      skip_ws();
      if (eof()) return false;
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return true;
      }
      return false;
    }
  }

  bool object(Value& out, int depth) {
    ++pos_;
    out.kind = Value::Kind::Object;
    skip_ws();
    if (!eof() && peek() == '}') {
      ++pos_;
      return true;
    }
    while (true) {
      skip_ws();
      if (eof() || peek() != '"') return false;
      std::string key;
      if (!string(key)) return false;
      skip_ws();
      if (eof() || peek() != ':') return false;
      ++pos_;
      skip_ws();
      Value item;
      if (!value(item, depth + 1)) return false;
      bool replaced = false;
      for (auto& member : out.members) {
        if (member.key == key) {
          member.value = std::move(item);
          replaced = true;
          break;
        }
      }
      if (!replaced) out.members.push_back({std::move(key), std::move(item)});
      skip_ws();
      if (eof()) return false;
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return true;
      }
      return false;
    }
  }
};

void dump_value(std::string& out, const Value& v) {
  switch (v.kind) {
    case Value::Kind::Null: out += "null"; break;
    case Value::Kind::Bool: out += v.boolean ? "true" : "false"; break;
    case Value::Kind::Integer: out += v.text; break;
    case Value::Kind::Float: out += repr_float(v.number); break;
    case Value::Kind::String: append_string(out, v.text); break;
    case Value::Kind::Array:
      out.push_back('[');
      for (size_t i = 0; i < v.items.size(); ++i) {
        if (i) out += ", ";
        dump_value(out, v.items[i]);
      }
      out.push_back(']');
      break;
    case Value::Kind::Object:
      out.push_back('{');
      for (size_t i = 0; i < v.members.size(); ++i) {
        if (i) out += ", ";
        append_string(out, v.members[i].key);
        out += ": ";
        dump_value(out, v.members[i].value);
      }
      out.push_back('}');
      break;
  }
}

void dump_nlohmann(std::string& out, const nlohmann::ordered_json& v) {
  using T = nlohmann::ordered_json::value_t;
  switch (v.type()) {
    case T::null:
    case T::discarded: out += "null"; break;
    case T::boolean: out += v.get<bool>() ? "true" : "false"; break;
    case T::number_integer: out += std::to_string(v.get<int64_t>()); break;
    case T::number_unsigned: out += std::to_string(v.get<uint64_t>()); break;
    case T::number_float: out += repr_float(v.get<double>()); break;
    case T::string: append_string(out, v.get_ref<const std::string&>()); break;
    case T::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& item : v) {
        if (!first) out += ", ";
        first = false;
        dump_nlohmann(out, item);
      }
      out.push_back(']');
      break;
    }
    case T::object: {
      out.push_back('{');
      bool first = true;
      for (const auto& [key, item] : v.items()) {
        if (!first) out += ", ";
        first = false;
        append_string(out, key);
        out += ": ";
        dump_nlohmann(out, item);
      }
      out.push_back('}');
      break;
    }
    case T::binary: out += "null"; break;  // not representable in Python JSON
  }
}

}  // namespace

std::optional<Value> parse(std::string_view text) { return Parser(text).run(); }

std::string dumps(const Value& value) {
  std::string out;
  dump_value(out, value);
  return out;
}

std::string dumps(const nlohmann::ordered_json& value) {
  std::string out;
  dump_nlohmann(out, value);
  return out;
}

void append_string(std::string& out, std::string_view utf8) {
  static const char* const kHex = "0123456789abcdef";
  out.push_back('"');
  for (char ch : utf8) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 15]);
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
}

std::string dumps_string(std::string_view utf8) {
  std::string out;
  append_string(out, utf8);
  return out;
}

std::string repr_float(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  // Shortest round-trip digits in d.ddde±XX form; reformatted below the way Python does.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  bool negative = !sci.empty() && sci[0] == '-';
  size_t e_pos = sci.find('e');
  std::string mantissa = sci.substr(negative ? 1 : 0, e_pos - (negative ? 1 : 0));
  int exponent = std::atoi(sci.c_str() + e_pos + 1);
  std::string digits;
  for (char c : mantissa)
    if (c != '.') digits.push_back(c);

  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= 16) {
    out.push_back(digits[0]);
    if (digits.size() > 1) {
      out.push_back('.');
      out.append(digits, 1, std::string::npos);
    }
    char exp_buf[16];
    std::snprintf(exp_buf, sizeof exp_buf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += exp_buf;
    return out;
  }
  int point = exponent + 1;  // digits before the decimal point
  if (point <= 0) {
    out += "0.";
    out.append(static_cast<size_t>(-point), '0');
    out += digits;
  } else if (static_cast<size_t>(point) >= digits.size()) {
    out += digits;
    out.append(static_cast<size_t>(point) - digits.size(), '0');
    out += ".0";
  } else {
    out.append(digits, 0, static_cast<size_t>(point));
    out.push_back('.');
    out.append(digits, static_cast<size_t>(point), std::string::npos);
  }
  return out;
}

}  // namespace ds4::text::pyjson
