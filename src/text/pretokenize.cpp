#include "text/pretokenize.h"

#include <stdexcept>

#include "text/unicode.h"

namespace ds4::text {

namespace {

using namespace unicode;

// One code point (or one invalid byte) of the input.
struct Unit {
  uint32_t offset;  // byte offset of its first byte
  uint16_t cls;
  bool is_space_char;  // exactly U+0020, for regex 3's " ?"
};

class Units {
 public:
  std::vector<Unit> u;
  uint32_t end_offset = 0;  // byte offset one past the last unit

  void decode(std::string_view text) {
    u.clear();
    u.reserve(text.size() + 1);
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    size_t i = 0;
    while (i < n) {
      const unsigned char b = s[i];
      if (b < 0x80) {
        u.push_back({static_cast<uint32_t>(i), ascii_class(b), b == ' '});
        ++i;
        continue;
      }
      uint32_t cp = 0;
      const int len = utf8_decode(s + i, n - i, &cp);
      if (len > 0) {
        u.push_back({static_cast<uint32_t>(i), char_class(cp), false});
        i += static_cast<size_t>(len);
      } else {
        // Invalid or truncated: one byte, one unit.
        u.push_back({static_cast<uint32_t>(i), kInvalidByteClass, false});
        ++i;
      }
    }
    end_offset = static_cast<uint32_t>(n);
  }

  uint32_t offset(size_t idx) const { return idx < u.size() ? u[idx].offset : end_offset; }

 private:
  static uint16_t ascii_class(unsigned char b) {
    static const auto table = [] {
      std::vector<uint16_t> t(128);
      for (uint32_t c = 0; c < 128; ++c) t[c] = char_class(c);
      return t;
    }();
    return table[b];
  }
};

// Length in units of the leftmost-first match of regex 3 starting at unit p (segment ends
// at e), or 0 when no alternative matches there.
size_t match_regex3(const std::vector<Unit>& u, size_t p, size_t e) {
  const uint16_t c0 = u[p].cls;
  const bool has_next = p + 1 < e;
  const uint16_t c1 = has_next ? u[p + 1].cls : 0;

  // [ASCII punct][A-Za-z]+
  if ((c0 & kAsciiPunct) && (c1 & kAsciiLetter)) {
    size_t q = p + 2;
    while (q < e && (u[q].cls & kAsciiLetter)) ++q;
    return q - p;
  }
  // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ : the optional char is tried first; without it the
  // run must start at p.
  if (!(c0 & (kCrLf | kLetter | kPunct | kSymbol)) && (c1 & (kLetter | kMark))) {
    size_t q = p + 2;
    while (q < e && (u[q].cls & (kLetter | kMark))) ++q;
    return q - p;
  }
  if (c0 & (kLetter | kMark)) {
    size_t q = p + 1;
    while (q < e && (u[q].cls & (kLetter | kMark))) ++q;
    return q - p;
  }
  //  ?[\p{P}\p{S}]+[\r\n]*
  {
    size_t q = p;
    if (u[p].is_space_char && (c1 & (kPunct | kSymbol))) q = p + 1;
    if (u[q].cls & (kPunct | kSymbol)) {
      ++q;
      while (q < e && (u[q].cls & (kPunct | kSymbol))) ++q;
      while (q < e && (u[q].cls & kCrLf)) ++q;
      return q - p;
    }
  }
  if (c0 & kSpace) {
    size_t q = p + 1;
    size_t last_crlf = (c0 & kCrLf) ? p : e;
    while (q < e && (u[q].cls & kSpace)) {
      if (u[q].cls & kCrLf) last_crlf = q;
      ++q;
    }
    // \s*[\r\n]+ : \s* backs off to the last CR/LF of the whitespace run.
    if (last_crlf != e) return last_crlf + 1 - p;
    // \s+(?!\S) : the whole run at the end of the segment, else all but its last char.
    if (q == e) return q - p;
    if (q - p >= 2) return q - p - 1;
    // \s+
    return 1;
  }
  return 0;
}

void split_regex3(const Units& units, size_t s, size_t e, std::vector<PieceSpan>& out) {
  auto emit = [&](size_t a, size_t b) {
    const uint32_t begin = units.offset(a);
    out.push_back({begin, units.offset(b) - begin});
  };
  size_t gap = s;
  size_t p = s;
  while (p < e) {
    const size_t len = match_regex3(units.u, p, e);
    if (len == 0) {
      ++p;
      continue;
    }
    if (gap < p) emit(gap, p);
    emit(p, p + len);
    p += len;
    gap = p;
  }
  if (gap < e) emit(gap, e);
}

}  // namespace

void pretokenize(std::string_view text, std::vector<PieceSpan>& out) {
  if (text.size() >= 0xFFFFFFFFu) throw std::length_error("pretokenize: input too large");
  thread_local Units units;
  units.decode(text);
  const std::vector<Unit>& u = units.u;
  const size_t n = u.size();
  // Splits 1 and 2 partition the text into digit chunks (runs of \p{N}, cut every three
  // from the left), runs of the CJK/kana ranges, and the rest; regex 3 then splits each
  // segment on its own (its lookahead cannot see past a segment). A digit chunk never
  // matches regex 3 and stays whole.
  size_t i = 0;
  while (i < n) {
    const uint16_t c = u[i].cls;
    size_t j = i + 1;
    if (c & kNumber) {
      while (j < n && j < i + 3 && (u[j].cls & kNumber)) ++j;
      const uint32_t begin = units.offset(i);
      out.push_back({begin, units.offset(j) - begin});
    } else if (c & kCjk) {
      while (j < n && (u[j].cls & kCjk)) ++j;
      split_regex3(units, i, j, out);
    } else {
      while (j < n && !(u[j].cls & (kNumber | kCjk))) ++j;
      split_regex3(units, i, j, out);
    }
    i = j;
  }
  // The scratch buffer is reused per thread; do not keep a huge one alive.
  if (units.u.capacity() > (size_t{1} << 20)) std::vector<Unit>().swap(units.u);
}

std::vector<std::string> pretokenize_strings(std::string_view text) {
  std::vector<PieceSpan> spans;
  pretokenize(text, spans);
  std::vector<std::string> out;
  out.reserve(spans.size());
  for (const PieceSpan& s : spans) out.emplace_back(text.substr(s.begin, s.size));
  return out;
}

}  // namespace ds4::text
