// Incremental grammar matcher and per-token masks over a tokenizer vocabulary.
//
// The matcher is a pushdown recognizer over bytes: its state is the set of parse stacks
// (positions in Grammar::elems) that are still alive after the bytes generated so far.
// States are interned per grammar, and byte transitions between them are memoised, so
// stepping is a table lookup once a state has been seen.
//
// Token masks. For each top-of-stack frame (the top three stack entries; lazily, once per
// grammar) every vocabulary token is classified by walking the vocabulary trie from that
// frame alone: accepted (some path consumes the whole token without popping below the
// frame: valid in every context), or, when a path leaves the frame with bytes left,
// "context dependent": the rest of the token is kept in a small trie that is walked at mask
// time from the real stack below the frame. Tokens neither accepted nor context dependent
// are rejected. A remainder is only kept when its first byte can follow the frame's rule at
// all (static FOLLOW sets), which keeps these lists short. Masks of recent states are cached.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "grammar/grammar.h"

namespace ds4::grammar {

// The token bytes a mask is computed over. Tokens not `allowed` (special tokens, empty
// tokens) are never in a mask; `eos` is allowed exactly when the grammar is complete.
class Vocabulary {
 public:
  Vocabulary(std::vector<std::string> token_bytes, const std::vector<bool>& allowed, int32_t eos);
  size_t size() const { return bytes_.size(); }
  int32_t eos() const { return eos_; }
  const std::string& bytes(int32_t id) const { return bytes_[static_cast<size_t>(id)]; }

  // Trie of the allowed tokens' bytes. Node 0 is the root. A node's subtree holds the
  // tokens sorted_[first_token, end_token) (tokens sorted by bytes).
  struct Node {
    uint32_t first_child = 0, n_children = 0;
    uint32_t first_token = 0, end_token = 0;  // subtree token range in sorted_
    uint32_t own_tokens = 0;                  // tokens ending here: sorted_[first_token, +own)
  };
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<uint8_t>& edge_bytes() const { return edge_byte_; }  // per node: its byte
  const std::vector<int32_t>& sorted_tokens() const { return sorted_; }

 private:
  std::vector<std::string> bytes_;
  int32_t eos_;
  std::vector<Node> nodes_;
  std::vector<uint8_t> edge_byte_;
  std::vector<int32_t> sorted_;
};

// A token mask: bit i set = token i allowed; `eos` = the end token allowed.
struct TokenMask {
  std::vector<uint64_t> bits;
  bool eos = false;
  bool test(int32_t id) const {
    return (bits[static_cast<size_t>(id) >> 6] >> (static_cast<size_t>(id) & 63)) & 1;
  }
  size_t count() const;
};

// A grammar prepared for one vocabulary. Shared by the matchers of many requests; its caches
// fill lazily under a mutex.
class CompiledGrammar {
 public:
  CompiledGrammar(Grammar g, std::shared_ptr<const Vocabulary> vocab);
  ~CompiledGrammar();
  const Grammar& grammar() const { return g_; }
  const Vocabulary& vocab() const { return *vocab_; }

  // Statistics for tests and benchmarks.
  size_t states() const;
  size_t positions_prepared() const;

 private:
  friend class Matcher;
  struct Impl;
  Grammar g_;
  std::shared_ptr<const Vocabulary> vocab_;
  std::unique_ptr<Impl> impl_;
};

class Matcher {
 public:
  explicit Matcher(std::shared_ptr<CompiledGrammar> grammar);

  // Feeds bytes; returns false (and leaves the state unchanged) when they are not a valid
  // continuation.
  bool accept_bytes(std::string_view bytes);
  // Feeds a token's bytes (the end token: true when the grammar is complete).
  bool accept_token(int32_t id);
  // The grammar has matched a complete sentence (the end token is allowed).
  bool can_end() const;
  // Nothing but the end is possible.
  bool must_end() const;
  // Allowed tokens from the current state.
  void fill_mask(TokenMask& mask);
  const CompiledGrammar& compiled() const { return *g_; }

 private:
  std::shared_ptr<CompiledGrammar> g_;
  int32_t state_;
};

// Sets the logits of tokens outside `mask` to -infinity.
void apply_mask(const TokenMask& mask, float* logits, size_t n);

}  // namespace ds4::grammar
