// Grammar-constrained sampling shared by the server and the CLI: masks the logits with the
// grammar while the visible answer is written. With `thinking`, the output starts as free
// reasoning and the grammar applies from the token after </think>.
#pragma once

#include <memory>
#include <optional>
#include <span>
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
  // Every emitted token, sampled or forced. Throws GrammarError for a token the grammar
  // rejects.
  void accept(int32_t tok);

 private:
  std::optional<Matcher> matcher_;
  bool active_ = false;
  int32_t think_close_;
  TokenMask mask_;
  std::vector<float> masked_;
};

}  // namespace ds4::grammar
