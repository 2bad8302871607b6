#include "grammar/constraint.h"

#include <list>
#include <map>
#include <mutex>
#include <utility>

#include "text/tokenizer.h"

namespace ds4::grammar {

std::shared_ptr<const Vocabulary> vocabulary_of(const text::Tokenizer& tok, bool dsml_marker) {
  static std::mutex mu;
  static std::map<std::pair<const text::Tokenizer*, bool>, std::shared_ptr<const Vocabulary>> built;
  std::lock_guard<std::mutex> lock(mu);
  auto& v = built[{&tok, dsml_marker}];
  if (!v) {
    const size_t n = tok.vocab_size();
    std::vector<std::string> bytes(n);
    std::vector<bool> allowed(n);
    for (size_t i = 0; i < n; ++i) {
      const int id = static_cast<int>(i);
      allowed[i] = !tok.is_special(id) || (dsml_marker && id == tok.dsml_id());
      bytes[i] = tok.token_bytes(id);
    }
    v = std::make_shared<const Vocabulary>(std::move(bytes), allowed, tok.eos_id());
  }
  return v;
}

std::shared_ptr<CompiledGrammar> compile_cached(const std::string& gbnf,
                                                std::shared_ptr<const Vocabulary> vocab) {
  constexpr size_t kKeep = 32;
  static std::mutex mu;
  // Most recently used first.
  static std::list<std::pair<std::pair<std::string, const Vocabulary*>,
                             std::shared_ptr<CompiledGrammar>>> lru;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto it = lru.begin(); it != lru.end(); ++it) {
      if (it->first.first == gbnf && it->first.second == vocab.get()) {
        lru.splice(lru.begin(), lru, it);
        return lru.front().second;
      }
    }
  }
  const Vocabulary* key = vocab.get();
  auto compiled = std::make_shared<CompiledGrammar>(parse_gbnf(gbnf), std::move(vocab));
  std::lock_guard<std::mutex> lock(mu);
  lru.emplace_front(std::make_pair(gbnf, key), compiled);
  if (lru.size() > kKeep) lru.pop_back();
  return compiled;
}

}  // namespace ds4::grammar
