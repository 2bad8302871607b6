// A context-free grammar over bytes, compiled from GBNF text (llama.cpp's grammar format).
//
// Characters in GBNF are Unicode code points; compilation lowers every character class to
// UTF-8 byte sequences, so everything downstream (matcher, token masks) works on bytes and a
// token that ends inside a multi-byte character simply leaves the matcher mid-sequence.
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ds4::grammar {

struct GrammarError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// 256-bit byte set.
struct ByteSet {
  std::array<uint64_t, 4> w{};
  void set(uint8_t b) { w[b >> 6] |= uint64_t(1) << (b & 63); }
  bool test(uint8_t b) const { return (w[b >> 6] >> (b & 63)) & 1; }
  void set_range(uint8_t lo, uint8_t hi) {
    for (unsigned b = lo; b <= hi; ++b) set(static_cast<uint8_t>(b));
  }
  ByteSet& operator|=(const ByteSet& o) {
    for (int i = 0; i < 4; ++i) w[i] |= o.w[i];
    return *this;
  }
  bool operator==(const ByteSet& o) const { return w == o.w; }
  bool empty() const { return !(w[0] | w[1] | w[2] | w[3]); }
};

// Compiled grammar. Every rule is a list of alternatives; an alternative is a run of
// elements in `elems` ending in an End element. Positions are indices into `elems`.
struct Grammar {
  enum class Op : uint8_t { End, Bytes, Rule };
  struct Element {
    Op op;
    uint32_t arg;  // Bytes: index into `sets`; Rule: rule id
  };
  std::vector<Element> elems;
  std::vector<ByteSet> sets;
  std::vector<std::vector<uint32_t>> alts;  // rule id -> alternative start positions
  std::vector<std::string> names;           // rule id -> name (generated rules: name_N)
  std::vector<uint32_t> owner;              // position -> rule id of its alternative
  uint32_t root = 0;
};

// Parses GBNF: `name ::= alternatives` rules, "literals" and [classes] with \n \t \r \\ \"
// \xHH \uHHHH \UHHHHHHHH escapes, [^...] negation, `.` (any character), ( ) groups,
// * + ? {m} {m,} {m,n} repetition, # comments. The start rule is `root`. Throws
// GrammarError naming the line and column, an undefined or left-recursive rule.
Grammar parse_gbnf(std::string_view text);

}  // namespace ds4::grammar
