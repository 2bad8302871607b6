#include "text/unicode.h"

#include <array>

#include <utf8proc.h>

namespace ds4::text::unicode {

int utf8_decode(const unsigned char* s, size_t n, uint32_t* cp) {
  if (n == 0) return 0;
  const unsigned char b0 = s[0];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  int len;
  uint32_t value;
  // Allowed range for the second byte; the tighter bounds exclude overlong forms,
  // surrogates (ED A0..BF) and code points above U+10FFFF.
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    value = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    value = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    value = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int i = 1; i < len; ++i) {
    if (static_cast<size_t>(i) >= n) return 0;
    const unsigned char b = s[i];
    if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return -1;
    value = (value << 6) | (b & 0x3F);
  }
  *cp = value;
  return len;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::optional<uint32_t> utf8_next(std::string_view s, size_t& pos) {
  if (pos >= s.size()) return std::nullopt;
  uint32_t cp = 0;
  const int n = utf8_decode(reinterpret_cast<const unsigned char*>(s.data()) + pos, s.size() - pos, &cp);
  if (n <= 0) return std::nullopt;
  pos += static_cast<size_t>(n);
  return cp;
}

std::string utf8_encode(uint32_t cp) {
  std::string out;
  utf8_append(out, cp);
  return out;
}

void utf8_append_sanitized(std::string& out, std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      out.push_back(static_cast<char>(p[i++]));
      continue;
    }
    uint32_t cp = 0;
    const int len = utf8_decode(p + i, n - i, &cp);
    if (len > 0) {
      out.append(s.substr(i, static_cast<size_t>(len)));
      i += static_cast<size_t>(len);
      continue;
    }
    // The maximal subpart: the longest prefix here that could still have become valid.
    size_t bad = 1;
    if (len == 0) {
      bad = n - i;
    } else {
      while (i + bad < n && utf8_decode(p + i, bad + 1, &cp) == 0) ++bad;
    }
    out += "\xEF\xBF\xBD";
    i += bad;
  }
}

std::string utf8_sanitized(std::string_view s) {
  std::string out;
  utf8_append_sanitized(out, s);
  return out;
}

size_t utf8_incomplete_tail(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    if ((p[n - back] & 0xC0) == 0x80) continue;  // continuation byte: look further for the lead
    uint32_t cp = 0;
    return utf8_decode(p + n - back, back, &cp) == 0 ? back : 0;
  }
  return 0;
}

size_t utf8_cut(std::string_view s, size_t n) {
  if (n >= s.size()) return s.size();
  auto continuation = [&](size_t at) { return (static_cast<unsigned char>(s[at]) & 0xC0) == 0x80; };
  size_t cut = n;
  while (cut > 0 && continuation(cut) && n - cut < 3) --cut;
  return continuation(cut) ? n : cut;
}

void utf8_range_sequences(uint32_t lo, uint32_t hi, std::vector<Utf8ByteRanges>& out) {
  std::vector<std::pair<uint32_t, uint32_t>> todo{{lo, hi}};
  while (!todo.empty()) {
    auto [s, e] = todo.back();
    todo.pop_back();
    bool split = false;
    // First split where the encoded length changes, then where the bytes below a position
    // stop covering their whole range.
    for (uint32_t max : {0x7Fu, 0x7FFu, 0xFFFFu}) {
      if (s <= max && max < e) {
        todo.emplace_back(max + 1, e);
        todo.emplace_back(s, max);
        split = true;
        break;
      }
    }
    if (split) continue;
    if (e <= 0x7F) {
      out.push_back({{static_cast<uint8_t>(s), static_cast<uint8_t>(e)}});
      continue;
    }
    for (int i = 1; i < 4 && !split; ++i) {
      const uint32_t m = (1u << (6 * i)) - 1;
      if ((s & ~m) != (e & ~m)) {
        if ((s & m) != 0) {
          todo.emplace_back((s | m) + 1, e);
          todo.emplace_back(s, s | m);
          split = true;
        } else if ((e & m) != m) {
          todo.emplace_back(e & ~m, e);
          todo.emplace_back(s, (e & ~m) - 1);
          split = true;
        }
      }
    }
    if (split) continue;
    const std::string a = utf8_encode(s), b = utf8_encode(e);
    Utf8ByteRanges seq;
    for (size_t i = 0; i < a.size(); ++i) seq.emplace_back(static_cast<uint8_t>(a[i]), static_cast<uint8_t>(b[i]));
    out.push_back(std::move(seq));
  }
}

namespace {

bool is_white_space(uint32_t cp) {
  // Unicode PropList White_Space (stable since Unicode 6.3).
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

uint16_t compute_class(uint32_t cp) {
  uint16_t c = 0;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
      c |= kLetter;
      break;
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
      c |= kMark;
      break;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      c |= kNumber;
      break;
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      c |= kPunct;
      break;
    case UTF8PROC_CATEGORY_SM: case UTF8PROC_CATEGORY_SC: case UTF8PROC_CATEGORY_SK:
    case UTF8PROC_CATEGORY_SO:
      c |= kSymbol;
      break;
    default:
      break;
  }
  if (is_white_space(cp)) c |= kSpace;
  if ((cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x30FF)) c |= kCjk;
  if (cp == '\r' || cp == '\n') c |= kCrLf;
  if (cp < 0x80) {
    if ((cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z')) c |= kAsciiLetter;
    if ((cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
        (cp >= 0x7B && cp <= 0x7E)) {
      c |= kAsciiPunct;
    }
  }
  return c;
}

// The Basic Multilingual Plane is tabulated (128 KiB) because nearly all text lives there.
struct BmpTable {
  std::array<uint16_t, 0x10000> cls;
  BmpTable() {
    for (uint32_t cp = 0; cp < 0x10000; ++cp) {
      cls[cp] = (cp >= 0xD800 && cp <= 0xDFFF) ? 0 : compute_class(cp);
    }
  }
};

const BmpTable& bmp_table() {
  static const BmpTable table;
  return table;
}

struct ByteMap {
  std::array<uint32_t, 256> to_cp;
  std::array<int16_t, 0x180> from_cp;
  ByteMap() {
    from_cp.fill(-1);
    uint32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cp[b] = self ? static_cast<uint32_t>(b) : next++;
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

uint16_t char_class(uint32_t cp) {
  if (cp < 0x10000) return bmp_table().cls[cp];
  return compute_class(cp);
}

uint32_t byte_to_codepoint(uint8_t b) { return byte_map().to_cp[b]; }

int codepoint_to_byte(uint32_t cp) {
  return cp < byte_map().from_cp.size() ? byte_map().from_cp[cp] : -1;
}

}  // namespace ds4::text::unicode
