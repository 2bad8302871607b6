#include "text/chat_tokenize.h"

#include <string>

#include "text/chat.h"

namespace ds4::text {

std::vector<int> tokenize_prompt(const Tokenizer& tokenizer, const PromptSegments& segments,
                                 bool parse_special_in_text) {
  std::vector<int> ids;
  for (const PromptSegment& seg : segments) {
    if (seg.special) {
      std::optional<int> id = tokenizer.find_token(seg.text);
      if (!id) throw ChatError("control token not in the vocabulary: " + seg.text);
      ids.push_back(*id);
    } else {
      tokenizer.encode_append(seg.text, ids, parse_special_in_text);
    }
  }
  return ids;
}

}  // namespace ds4::text
