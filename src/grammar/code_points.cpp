#include "grammar/code_points.h"

#include <algorithm>

namespace ds4::grammar {

CodePointSet normalize(CodePointSet set) {
  std::sort(set.begin(), set.end());
  CodePointSet out;
  for (auto [lo, hi] : set) {
    if (lo > hi) continue;
    if (!out.empty() && lo <= out.back().second + 1) {
      out.back().second = std::max(out.back().second, hi);
    } else {
      out.emplace_back(lo, hi);
    }
  }
  return out;
}

CodePointSet complement(const CodePointSet& set) {
  CodePointSet out;
  uint32_t next = 0;
  for (auto [lo, hi] : set) {
    if (lo > next) out.emplace_back(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxCodePoint) out.emplace_back(next, kMaxCodePoint);
  return out;
}

CodePointSet without_surrogates(const CodePointSet& set) {
  CodePointSet out;
  for (auto [lo, hi] : set) {
    if (hi < 0xD800 || lo > 0xDFFF) {
      out.emplace_back(lo, hi);
      continue;
    }
    if (lo < 0xD800) out.emplace_back(lo, 0xD7FF);
    if (hi > 0xDFFF) out.emplace_back(0xE000, hi);
  }
  return out;
}

}  // namespace ds4::grammar
