// Grammar-constrained sampling shared by the server and the CLI: masks the logits with the
// grammar while the visible answer is written. With `thinking`, the output starts as free
// reasoning and the grammar applies from the token after </think>.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "grammar/matcher.h"
#include "sample/sampler.h"

namespace ds4::grammar {

class ConstrainedSampling {
 public:
  // `grammar` may be null (then nothing is constrained).
  ConstrainedSampling(std::shared_ptr<CompiledGrammar> grammar, bool thinking,
                      int32_t think_close_id);
  // The next token is constrained.
  bool active() const { return active_; }
  // Samples from the logits restricted to the grammar's mask (EOS only when complete).
  // Throws GrammarError when no token can continue (cannot happen with a byte-level
  // vocabulary).
  int32_t sample(sample::Sampler& sampler, std::span<const float> logits);
  // While the reasoning is free: `tok` was drawn without a mask. A token that ends the
  // reasoning by its bytes ("</think>" spelled with ordinary tokens) and carries answer bytes
  // the grammar refuses is dropped and another one drawn, which is sampling from the
  // distribution without the refused tokens. Returns `tok` in every other case.
  int32_t vet_free(sample::Sampler& sampler, std::span<const float> logits, int32_t tok,
                   bool greedy = false);
  // Every emitted token, sampled or forced. The grammar starts after the </think> token or
  // after "</think>" written with ordinary tokens (the bytes after it are its first). Throws
  // GrammarError for a token the grammar rejects.
  void accept(int32_t tok);

 private:
  // For a free token: whether it ends the reasoning, and the answer bytes it carries.
  bool closes_reasoning(int32_t tok, std::string& rest) const;

  std::optional<Matcher> matcher_;
  bool active_ = false;
  int32_t think_close_;
  std::string think_tail_;  // the reasoning's last bytes (a "</think>" may span tokens)
  TokenMask mask_;
  std::vector<float> masked_;
};

}  // namespace ds4::grammar
