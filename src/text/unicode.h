// The project's one UTF-8 module: strict decoding and encoding, the streaming helpers (cuts
// and incomplete tails), the invalid-byte policy (U+FFFD per maximal invalid subpart), code
// point ranges as UTF-8 byte ranges (grammars), the character classes used by the DeepSeek
// pre-tokenizer regexes, and the GPT-2 byte <-> code point map.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ds4::text::unicode {

// Decodes one UTF-8 sequence at s[0..n). Returns its length (1..4) and sets *cp when the
// sequence is valid (shortest form, no surrogates, <= U+10FFFF); returns 0 when s[0..n) is
// a valid but incomplete prefix of a sequence (more bytes could complete it); returns -1
// when s[0] cannot start a valid sequence here (the caller treats s[0] as one invalid byte).
int utf8_decode(const unsigned char* s, size_t n, uint32_t* cp);

// Decodes the character at s[pos] and moves pos past it; nullopt (pos unchanged) when s[pos..]
// does not start with a complete, valid sequence.
std::optional<uint32_t> utf8_next(std::string_view s, size_t& pos);

// Appends the UTF-8 encoding of cp (caller guarantees a valid scalar value).
void utf8_append(std::string& out, uint32_t cp);
// The UTF-8 encoding of cp (a valid scalar value).
std::string utf8_encode(uint32_t cp);

// Appends s with each maximal invalid subpart (Unicode's "best practice" for U+FFFD
// substitution, which nlohmann::json's error_handler_t::replace follows too) replaced by U+FFFD;
// an incomplete sequence at the end is one such subpart.
void utf8_append_sanitized(std::string& out, std::string_view s);
std::string utf8_sanitized(std::string_view s);

// Length (0..3) of a sequence at the end of s that is incomplete but that more bytes could
// still make valid: what a streamer holds back.
size_t utf8_incomplete_tail(std::string_view s);

// The largest cut <= n that does not split a UTF-8 sequence of s: it moves back over at most
// three continuation bytes to their lead; where no lead is that close (not UTF-8), n itself.
size_t utf8_cut(std::string_view s, size_t n);

// A code point range [lo, hi] (no surrogates) as sequences of byte ranges whose products are
// exactly the UTF-8 encodings of the range's code points (appended to `out`).
using Utf8ByteRanges = std::vector<std::pair<uint8_t, uint8_t>>;
void utf8_range_sequences(uint32_t lo, uint32_t hi, std::vector<Utf8ByteRanges>& out);

// Character-class bits for the pre-tokenizer. A code point may carry several.
enum CharClass : uint16_t {
  kLetter = 1 << 0,       // \p{L}
  kMark = 1 << 1,         // \p{M}
  kNumber = 1 << 2,       // \p{N}
  kPunct = 1 << 3,        // \p{P}
  kSymbol = 1 << 4,       // \p{S}
  kSpace = 1 << 5,        // \s: the Unicode White_Space property (Oniguruma's meaning)
  kCjk = 1 << 6,          // [一-龥぀-ゟ゠-ヿ] of regex 2
  kCrLf = 1 << 7,         // \r or \n
  kAsciiPunct = 1 << 8,   // the 32 ASCII punctuation characters of regex 3's first class
  kAsciiLetter = 1 << 9,  // [A-Za-z]
};

// Classes of a Unicode scalar value (categories from utf8proc, Unicode 15 in Debian 12).
uint16_t char_class(uint32_t cp);

// Class given to an invalid input byte: a symbol, as the U+FFFD a lossy decoder would put
// in its place, so piece boundaries match what HF computes on the lossily decoded string.
inline constexpr uint16_t kInvalidByteClass = kSymbol;

// GPT-2 byte-level map: byte -> code point (U+0021..U+017F range) and back.
uint32_t byte_to_codepoint(uint8_t b);
// Returns -1 for a code point that no byte maps to.
int codepoint_to_byte(uint32_t cp);

}  // namespace ds4::text::unicode
