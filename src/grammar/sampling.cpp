#include "grammar/sampling.h"

#include <limits>
#include <string>
#include <string_view>

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

namespace {
constexpr std::string_view kThinkClose = "</think>";
}  // namespace

bool ConstrainedSampling::closes_reasoning(int32_t tok, std::string& rest) const {
  const Vocabulary& v = matcher_->compiled().vocab();
  if (tok < 0 || static_cast<size_t>(tok) >= v.size()) return false;
  const std::string joined = think_tail_ + v.bytes(tok);
  const size_t at = joined.find(kThinkClose);
  if (at == std::string::npos) return false;
  rest = joined.substr(at + kThinkClose.size());
  return true;
}

int32_t ConstrainedSampling::vet_free(sample::Sampler& sampler, std::span<const float> logits,
                                      int32_t tok, bool greedy) {
  if (!matcher_ || active_) return tok;
  std::string rest;
  auto refused = [&](int32_t t) {
    if (t == think_close_ || !closes_reasoning(t, rest) || rest.empty()) return false;
    Matcher probe = *matcher_;
    return !probe.accept_bytes(rest);
  };
  if (!refused(tok)) return tok;
  masked_.assign(logits.begin(), logits.end());
  while (tok >= 0 && refused(tok)) {
    masked_[static_cast<size_t>(tok)] = -std::numeric_limits<float>::infinity();
    tok = sampler.sample(masked_, greedy);
  }
  if (tok < 0) throw GrammarError("grammar: no token can continue the output");
  return tok;
}

void ConstrainedSampling::accept(int32_t tok) {
  if (!matcher_) return;
  if (!active_) {
    std::string rest;
    if (tok == think_close_) {
      active_ = true;
    } else if (closes_reasoning(tok, rest)) {
      active_ = true;
      if (!rest.empty() && !matcher_->accept_bytes(rest)) {
        throw GrammarError("grammar: token " + std::to_string(tok) + " does not continue the output");
      }
    } else {
      const Vocabulary& v = matcher_->compiled().vocab();
      if (tok >= 0 && static_cast<size_t>(tok) < v.size()) think_tail_ += v.bytes(tok);
      if (think_tail_.size() > kThinkClose.size() - 1) {
        think_tail_.erase(0, think_tail_.size() - (kThinkClose.size() - 1));
      }
    }
    return;
  }
  if (!matcher_->accept_token(tok)) {
    throw GrammarError("grammar: token " + std::to_string(tok) + " does not continue the output");
  }
}

}  // namespace ds4::grammar
