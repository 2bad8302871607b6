// Sets of Unicode code points as sorted inclusive ranges: what GBNF character classes and
// the JSON Schema `pattern` converter compute with before anything is lowered to bytes.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace ds4::grammar {

using CodePointRange = std::pair<uint32_t, uint32_t>;  // inclusive
using CodePointSet = std::vector<CodePointRange>;
inline constexpr uint32_t kMaxCodePoint = 0x10FFFF;

// Sorted, with empty ranges dropped and overlapping or adjacent ranges merged.
CodePointSet normalize(CodePointSet set);
// Every code point in [0, kMaxCodePoint] not in `set` (`set` normalized).
CodePointSet complement(const CodePointSet& set);
// `set` without the UTF-16 surrogates U+D800..U+DFFF (not encodable in UTF-8).
CodePointSet without_surrogates(const CodePointSet& set);

}  // namespace ds4::grammar
