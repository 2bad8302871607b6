#include "grammar/grammar.h"

#include <algorithm>
#include <map>
#include <unordered_map>
#include <utility>

#include "grammar/code_points.h"
#include "text/unicode.h"

namespace ds4::grammar {
namespace {

using Range = CodePointRange;
using Ranges = CodePointSet;

// A symbol of the parsed (code point level) grammar.
struct Sym {
  bool is_ref = false;
  uint32_t rule = 0;
  Ranges chars;  // sorted, merged, non-empty
};
using Seq = std::vector<Sym>;

class Parser {
 public:
  explicit Parser(std::string_view text) : src_(text) {}

  Grammar run() {
    skip_space(true);
    while (pos_ < src_.size()) {
      parse_rule();
      skip_space(true);
    }
    auto root = ids_.find("root");
    if (root == ids_.end() || !defined_[root->second]) fail_at(0, "grammar has no 'root' rule");
    for (size_t r = 0; r < rules_.size(); ++r) {
      if (!defined_[r]) {
        throw GrammarError("grammar: rule '" + names_[r] + "' is used but not defined");
      }
    }
    return lower(root->second);
  }

 private:
  std::string_view src_;
  size_t pos_ = 0;
  std::map<std::string, uint32_t, std::less<>> ids_;
  std::vector<std::string> names_;
  std::vector<std::vector<Seq>> rules_;
  std::vector<bool> defined_;

  [[noreturn]] void fail_at(size_t at, const std::string& what) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < src_.size(); ++i) {
      if (src_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    throw GrammarError("grammar: " + what + " at line " + std::to_string(line) + ", column " +
                       std::to_string(col));
  }
  [[noreturn]] void fail(const std::string& what) const { fail_at(pos_, what); }

  bool at_end() const { return pos_ >= src_.size(); }
  char cur() const { return at_end() ? '\0' : src_[pos_]; }

  void skip_space(bool newline_ok) {
    while (!at_end()) {
      char c = src_[pos_];
      if (c == '#') {
        while (!at_end() && src_[pos_] != '\n') ++pos_;
      } else if (c == ' ' || c == '\t' || (newline_ok && (c == '\n' || c == '\r'))) {
        ++pos_;
      } else {
        break;
      }
    }
  }

  static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
  }

  std::string parse_name() {
    size_t start = pos_;
    while (!at_end() && is_name_char(src_[pos_])) ++pos_;
    if (pos_ == start) fail("expected a rule name");
    return std::string(src_.substr(start, pos_ - start));
  }

  uint32_t rule_id(const std::string& name) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    uint32_t id = static_cast<uint32_t>(rules_.size());
    ids_.emplace(name, id);
    names_.push_back(name);
    rules_.emplace_back();
    defined_.push_back(false);
    return id;
  }

  uint32_t new_rule(const std::string& base, std::vector<Seq> alts) {
    std::string name;
    for (int n = static_cast<int>(rules_.size());; ++n) {
      name = base + "_" + std::to_string(n);
      if (!ids_.count(name)) break;
    }
    uint32_t id = rule_id(name);
    rules_[id] = std::move(alts);
    defined_[id] = true;
    return id;
  }

  void parse_rule() {
    size_t start = pos_;
    std::string name = parse_name();
    skip_space(false);
    if (src_.substr(pos_, 3) != "::=") fail("expected '::=' after rule name '" + name + "'");
    pos_ += 3;
    skip_space(true);
    uint32_t id = rule_id(name);
    if (defined_[id]) fail_at(start, "rule '" + name + "' is defined twice");
    defined_[id] = true;  // before the body: repetitions add rules
    auto alts = parse_alternates(name, false);
    rules_[id] = std::move(alts);
    if (!at_end() && cur() != '\n' && cur() != '\r') fail("expected the end of the line");
  }

  std::vector<Seq> parse_alternates(const std::string& name, bool nested) {
    std::vector<Seq> alts;
    alts.push_back(parse_sequence(name, nested));
    while (cur() == '|') {
      ++pos_;
      skip_space(true);
      alts.push_back(parse_sequence(name, nested));
    }
    return alts;
  }

  // At the top level a newline ends the rule unless the next line continues it with '|'.
  bool continues_on_next_line() {
    size_t p = pos_;
    while (p < src_.size()) {
      char c = src_[p];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        ++p;
      } else if (c == '#') {
        while (p < src_.size() && src_[p] != '\n') ++p;
      } else {
        break;
      }
    }
    if (p < src_.size() && src_[p] == '|') {
      pos_ = p;
      return true;
    }
    return false;
  }

  uint32_t parse_hex(int digits) {
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i) {
      char c = cur();
      int d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else fail("expected " + std::to_string(digits) + " hex digits");
      v = v * 16 + static_cast<uint32_t>(d);
      ++pos_;
    }
    return v;
  }

  // One (possibly escaped) character of a literal or class, as a code point.
  uint32_t parse_char() {
    if (at_end()) fail("unexpected end of grammar");
    unsigned char c = static_cast<unsigned char>(src_[pos_]);
    if (c == '\\') {
      ++pos_;
      char e = cur();
      ++pos_;
      switch (e) {
        case 'n': return '\n';
        case 't': return '\t';
        case 'r': return '\r';
        case '\\': return '\\';
        case '"': return '"';
        case '\'': return '\'';
        case '[': return '[';
        case ']': return ']';
        case '-': return '-';
        case '^': return '^';
        case '/': return '/';
        case 'x': return parse_hex(2);
        case 'u': return parse_hex(4);
        case 'U': return parse_hex(8);
        default: --pos_; fail(std::string("unknown escape '\\") + e + "'");
      }
    }
    // A UTF-8 sequence in the grammar text is one character.
    const auto cp = text::unicode::utf8_next(src_, pos_);
    if (!cp) fail("invalid UTF-8 in grammar");
    return *cp;
  }

  static Sym chars(Ranges r) {
    Sym s;
    s.chars = without_surrogates(normalize(std::move(r)));
    return s;
  }
  static Sym ref(uint32_t rule) {
    Sym s;
    s.is_ref = true;
    s.rule = rule;
    return s;
  }

  int parse_int() {
    size_t start = pos_;
    long v = 0;
    while (cur() >= '0' && cur() <= '9') {
      v = v * 10 + (cur() - '0');
      if (v > 100000) fail("repetition count too large");
      ++pos_;
    }
    if (pos_ == start) fail("expected a number");
    return static_cast<int>(v);
  }

  Seq parse_sequence(const std::string& name, bool nested) {
    Seq seq;
    size_t last_start = 0;  // first symbol of the last item (repetition applies to it)
    bool have_item = false;
    while (true) {
      skip_space(nested);
      if (at_end()) break;
      char c = cur();
      if (!nested && (c == '\n' || c == '\r')) {
        if (continues_on_next_line()) break;
        break;
      }
      if (c == '"') {
        ++pos_;
        last_start = seq.size();
        while (cur() != '"') {
          if (at_end() || cur() == '\n') fail("unterminated string literal");
          uint32_t cp = parse_char();
          seq.push_back(chars({{cp, cp}}));
        }
        ++pos_;
        have_item = true;
        if (seq.size() == last_start) {  // "" is the empty sequence
          have_item = false;
        }
      } else if (c == '[') {
        ++pos_;
        bool negate = false;
        if (cur() == '^') {
          negate = true;
          ++pos_;
        }
        Ranges r;
        while (cur() != ']') {
          if (at_end()) fail("unterminated character class");
          uint32_t lo = parse_char();
          uint32_t hi = lo;
          if (cur() == '-' && pos_ + 1 < src_.size() && src_[pos_ + 1] != ']') {
            ++pos_;
            hi = parse_char();
            if (hi < lo) fail("character range out of order");
          }
          r.emplace_back(lo, hi);
        }
        ++pos_;
        r = normalize(std::move(r));
        if (negate) r = complement(r);
        Sym s = chars(std::move(r));
        if (s.chars.empty()) fail("character class matches nothing");
        last_start = seq.size();
        seq.push_back(std::move(s));
        have_item = true;
      } else if (c == '.') {
        ++pos_;
        last_start = seq.size();
        seq.push_back(chars({{0, kMaxCodePoint}}));
        have_item = true;
      } else if (is_name_char(c)) {
        std::string n = parse_name();
        last_start = seq.size();
        seq.push_back(ref(rule_id(n)));
        have_item = true;
      } else if (c == '(') {
        ++pos_;
        skip_space(true);
        auto alts = parse_alternates(name, true);
        if (cur() != ')') fail("expected ')'");
        ++pos_;
        last_start = seq.size();
        seq.push_back(ref(new_rule(name, std::move(alts))));
        have_item = true;
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (!have_item) fail(std::string("'") + c + "' has nothing to repeat");
        int min = 0, max = -1;  // -1: unbounded
        ++pos_;
        if (c == '+') min = 1;
        if (c == '?') max = 1;
        if (c == '{') {
          skip_space(true);
          min = parse_int();
          skip_space(true);
          if (cur() == ',') {
            ++pos_;
            skip_space(true);
            max = cur() == '}' ? -1 : parse_int();
            skip_space(true);
          } else {
            max = min;
          }
          if (cur() != '}') fail("expected '}'");
          ++pos_;
          if (max >= 0 && max < min) fail("repetition {m,n} with n < m");
        }
        Seq item(seq.begin() + static_cast<long>(last_start), seq.end());
        seq.resize(last_start);
        repeat(name, std::move(item), min, max, seq);
        have_item = false;  // "x**" is an error, as in llama.cpp
      } else {
        break;
      }
    }
    return seq;
  }

  // Appends item{min,max} to seq.
  void repeat(const std::string& name, Seq item, int min, int max, Seq& seq) {
    Sym one = item.size() == 1 ? item[0] : ref(new_rule(name, {item}));
    for (int i = 0; i < min; ++i) seq.push_back(one);
    if (max < 0) {
      // star ::= item star | ""
      uint32_t star = new_rule(name, {});
      rules_[star] = {Seq{one, ref(star)}, Seq{}};
      seq.push_back(ref(star));
      return;
    }
    if (max == min) return;
    // (item (item (...)?)?)? nested: max - min optional copies.
    uint32_t rest = new_rule(name, {Seq{one}, Seq{}});
    for (int i = 1; i < max - min; ++i) rest = new_rule(name, {Seq{one, ref(rest)}, Seq{}});
    seq.push_back(ref(rest));
  }

  // ---- lowering to bytes

  Grammar lower(uint32_t root) {
    Grammar g;
    g.root = root;
    g.names = names_;
    g.alts.resize(rules_.size());
    std::map<Ranges, uint32_t> class_rules;  // multi-byte classes -> generated rule
    std::unordered_map<std::string, uint32_t> set_ids;
    auto set_id = [&](const ByteSet& s) {
      std::string key(reinterpret_cast<const char*>(s.w.data()), sizeof(s.w));
      auto it = set_ids.find(key);
      if (it != set_ids.end()) return it->second;
      uint32_t id = static_cast<uint32_t>(g.sets.size());
      g.sets.push_back(s);
      set_ids.emplace(std::move(key), id);
      return id;
    };
    // Rules to emit: the parsed ones, then class rules created on the way.
    std::vector<std::vector<std::vector<Grammar::Element>>> bodies(rules_.size());
    auto class_rule = [&](const Ranges& r) -> uint32_t {
      auto it = class_rules.find(r);
      if (it != class_rules.end()) return it->second;
      std::vector<text::unicode::Utf8ByteRanges> seqs;
      for (auto [lo, hi] : r) text::unicode::utf8_range_sequences(lo, hi, seqs);
      std::vector<std::vector<Grammar::Element>> alts;
      // Merge sequences that differ only in their first byte range: fewer alternatives.
      for (const auto& s : seqs) {
        std::vector<Grammar::Element> alt;
        for (auto [a, b] : s) {
          ByteSet bs;
          bs.set_range(a, b);
          alt.push_back({Grammar::Op::Bytes, set_id(bs)});
        }
        alts.push_back(std::move(alt));
      }
      uint32_t id = static_cast<uint32_t>(bodies.size());
      bodies.push_back(std::move(alts));
      g.names.push_back("char_" + std::to_string(id));
      class_rules.emplace(r, id);
      return id;
    };
    for (size_t r = 0; r < rules_.size(); ++r) {
      for (const Seq& seq : rules_[r]) {
        std::vector<Grammar::Element> alt;
        for (const Sym& s : seq) {
          if (s.is_ref) {
            alt.push_back({Grammar::Op::Rule, s.rule});
          } else if (s.chars.back().second < 0x80) {
            ByteSet bs;
            for (auto [lo, hi] : s.chars) {
              bs.set_range(static_cast<uint8_t>(lo), static_cast<uint8_t>(hi));
            }
            alt.push_back({Grammar::Op::Bytes, set_id(bs)});
          } else if (s.chars.size() == 1 && s.chars[0].first == s.chars[0].second) {
            std::string enc;
            text::unicode::utf8_append(enc, s.chars[0].first);
            for (char byte : enc) {
              ByteSet bs;
              bs.set(static_cast<uint8_t>(byte));
              alt.push_back({Grammar::Op::Bytes, set_id(bs)});
            }
          } else {
            alt.push_back({Grammar::Op::Rule, class_rule(s.chars)});
          }
        }
        bodies[r].push_back(std::move(alt));
      }
    }
    g.alts.resize(bodies.size());
    for (size_t r = 0; r < bodies.size(); ++r) {
      for (auto& alt : bodies[r]) {
        g.alts[r].push_back(static_cast<uint32_t>(g.elems.size()));
        for (auto& e : alt) {
          g.elems.push_back(e);
          g.owner.push_back(static_cast<uint32_t>(r));
        }
        g.elems.push_back({Grammar::Op::End, 0});
        g.owner.push_back(static_cast<uint32_t>(r));
      }
    }
    check_left_recursion(g);
    return g;
  }

  // The matcher expands rule references depth first; a rule that can reach itself without
  // consuming a byte would expand forever.
  static void check_left_recursion(const Grammar& g) {
    const size_t n = g.alts.size();
    std::vector<bool> nullable(n, false);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < n; ++r) {
        if (nullable[r]) continue;
        for (uint32_t p : g.alts[r]) {
          bool all = true;
          for (; g.elems[p].op != Grammar::Op::End; ++p) {
            const auto& e = g.elems[p];
            if (e.op == Grammar::Op::Bytes || !nullable[e.arg]) {
              all = false;
              break;
            }
          }
          if (all) {
            nullable[r] = true;
            changed = true;
            break;
          }
        }
      }
    }
    std::vector<std::vector<uint32_t>> starts(n);  // rules a rule can begin with
    for (size_t r = 0; r < n; ++r) {
      for (uint32_t p : g.alts[r]) {
        for (; g.elems[p].op == Grammar::Op::Rule; ++p) {
          starts[r].push_back(g.elems[p].arg);
          if (!nullable[g.elems[p].arg]) break;
        }
      }
    }
    std::vector<int> color(n, 0);  // 0 new, 1 on the path, 2 done
    for (size_t s = 0; s < n; ++s) {
      if (color[s]) continue;
      std::vector<std::pair<uint32_t, size_t>> path{{static_cast<uint32_t>(s), 0}};
      color[s] = 1;
      while (!path.empty()) {
        auto& [r, i] = path.back();
        if (i < starts[r].size()) {
          uint32_t next = starts[r][i++];
          if (color[next] == 1) {
            throw GrammarError("grammar: rule '" + g.names[next] +
                               "' is left-recursive (it can reach itself without consuming "
                               "input)");
          }
          if (color[next] == 0) {
            color[next] = 1;
            path.emplace_back(next, 0);
          }
        } else {
          color[r] = 2;
          path.pop_back();
        }
      }
    }
  }
};

}  // namespace

Grammar parse_gbnf(std::string_view text) { return Parser(text).run(); }

}  // namespace ds4::grammar
