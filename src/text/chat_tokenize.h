// Token ids of a rendered prompt (docs/prompting.md): each control segment becomes its
// token id; client text is BPE-encoded without recognizing special-token strings inside it
// (or, HF-compatible, with recognition of every added token).
#pragma once

#include <vector>

#include "text/chat_segments.h"
#include "text/tokenizer.h"

namespace ds4::text {

// Throws ChatError when a control segment names a token the vocabulary lacks.
std::vector<int> tokenize_prompt(const Tokenizer& tokenizer, const PromptSegments& segments,
                                 bool parse_special_in_text = false);

}  // namespace ds4::text
