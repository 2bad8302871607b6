// A rendered prompt as a list of segments: control markers the renderer itself emitted
// (role tokens, think tags, ｜DSML｜, ...) and client text. The tokenizer maps each special
// segment to its control id and BPE-encodes text segments without recognizing special-token
// strings inside them (docs/prompting.md). Adjacent text is always merged into one segment
// because BPE pre-tokenization may join pieces across a seam.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ds4::text {

struct PromptSegment {
  std::string text;
  bool special = false;  // text is exactly one control token's string
};

using PromptSegments = std::vector<PromptSegment>;

class SegmentWriter {
 public:
  void text(std::string_view bytes) {
    if (bytes.empty()) return;
    if (!segments_.empty() && !segments_.back().special) {
      segments_.back().text.append(bytes);
    } else {
      segments_.push_back({std::string(bytes), false});
    }
  }
  void special(std::string_view token) { segments_.push_back({std::string(token), true}); }
  // Text in which every occurrence of `token` is a control marker (model-generated DSML
  // bytes replayed verbatim).
  void text_with_markers(std::string_view bytes, std::string_view token) {
    size_t pos = 0;
    while (true) {
      size_t hit = bytes.find(token, pos);
      if (hit == std::string_view::npos) break;
      text(bytes.substr(pos, hit - pos));
      special(token);
      pos = hit + token.size();
    }
    text(bytes.substr(pos));
  }
  const PromptSegments& segments() const { return segments_; }
  PromptSegments take() { return std::move(segments_); }

 private:
  PromptSegments segments_;
};

inline std::string join_segments(const PromptSegments& segments) {
  std::string out;
  for (const auto& s : segments) out += s.text;
  return out;
}

}  // namespace ds4::text
