#include "grammar/sampling.h"

#include <limits>
#include <string>

namespace ds4::grammar {

ConstrainedSampling::ConstrainedSampling(std::shared_ptr<CompiledGrammar> grammar, bool thinking,
                                         int32_t think_close_id)
    : think_close_(think_close_id) {
  if (!grammar) return;
  matcher_.emplace(std::move(grammar));
  active_ = !thinking;
}

int32_t ConstrainedSampling::sample(sample::Sampler& sampler, std::span<const float> logits) {
  matcher_->fill_mask(mask_);
  masked_.assign(logits.begin(), logits.end());
  apply_mask(mask_, masked_.data(), masked_.size());
  const int32_t eos = matcher_->compiled().vocab().eos();
  if (eos >= 0 && static_cast<size_t>(eos) < masked_.size()) {
    masked_[static_cast<size_t>(eos)] = mask_.eos ? logits[static_cast<size_t>(eos)]
                                                  : -std::numeric_limits<float>::infinity();
  }
  const int32_t tok = sampler.sample(masked_);
  if (tok < 0) throw GrammarError("grammar: no token can continue the output");
  return tok;
}

void ConstrainedSampling::accept(int32_t tok) {
  if (!matcher_) return;
  if (!active_) {
    active_ = tok == think_close_;
    return;
  }
  if (!matcher_->accept_token(tok)) {
    throw GrammarError("grammar: token " + std::to_string(tok) + " does not continue the output");
  }
}

}  // namespace ds4::grammar
