// Grammars prepared for the tokenizer's vocabulary, shared across requests.
#pragma once

#include <memory>
#include <string>

#include "grammar/matcher.h"

namespace ds4::text {
class Tokenizer;
}

namespace ds4::grammar {

// The tokenizer's vocabulary as mask input: every normal token's bytes; special tokens are
// never allowed inside a constrained text; the end token is the tokenizer's EOS. Built once
// per tokenizer.
// With `dsml_marker`, the DSML marker token (｜DSML｜) is allowed too, by its bytes: for
// tool-call grammars (json_schema.h), which place it only where DSML tags go.
std::shared_ptr<const Vocabulary> vocabulary_of(const text::Tokenizer& tok, bool dsml_marker = false);

// Parses GBNF and prepares it for `vocab`; recently used grammars (same text, same
// vocabulary) are shared, so their token-mask caches carry over between requests.
// Throws GrammarError.
std::shared_ptr<CompiledGrammar> compile_cached(const std::string& gbnf,
                                                std::shared_ptr<const Vocabulary> vocab);

}  // namespace ds4::grammar
