// The DeepSeek V3/V4 pre-tokenizer (docs/prompting.md): three regex splits applied in
// sequence with Hugging Face "Isolated" semantics (matches and the gaps between them both
// become pieces), implemented as a hand-written matcher over Unicode character classes.
//
//   1. \p{N}{1,3}
//   2. [一-龥぀-ゟ゠-ヿ]+
//   3. [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+ | [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
//      | ?[\p{P}\p{S}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+
//
// \s is the Unicode White_Space property (Oniguruma, which HF tokenizers uses): it includes
// U+0085 and excludes U+FEFF.
//
// Invalid UTF-8: each byte that does not begin a valid sequence is one unit of class
// \p{S} (as the U+FFFD a lossy decoder would substitute), but its raw byte stays in the
// piece, so pieces always concatenate back to the exact input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ds4::text {

struct PieceSpan {
  uint32_t begin;  // byte offset in the input
  uint32_t size;   // bytes
};

// Appends the pieces of `text` to `out`, in order; together they cover `text` exactly.
// Inputs must be shorter than 4 GiB.
void pretokenize(std::string_view text, std::vector<PieceSpan>& out);

// Convenience form returning the pieces as strings.
std::vector<std::string> pretokenize_strings(std::string_view text);

}  // namespace ds4::text
