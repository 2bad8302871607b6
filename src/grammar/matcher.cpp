#include "grammar/matcher.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <tuple>

namespace ds4::grammar {

// ---- Vocabulary

Vocabulary::Vocabulary(std::vector<std::string> token_bytes, const std::vector<bool>& allowed,
                       int32_t eos)
    : bytes_(std::move(token_bytes)), eos_(eos) {
  for (size_t i = 0; i < bytes_.size(); ++i) {
    if (i < allowed.size() && allowed[i] && !bytes_[i].empty() && static_cast<int32_t>(i) != eos) {
      sorted_.push_back(static_cast<int32_t>(i));
    }
  }
  std::sort(sorted_.begin(), sorted_.end(), [&](int32_t a, int32_t b) {
    return bytes_[static_cast<size_t>(a)] < bytes_[static_cast<size_t>(b)];
  });
  // Breadth first, so that a node's children are contiguous.
  struct Todo {
    uint32_t node, lo, hi, depth;
  };
  std::deque<Todo> todo;
  nodes_.emplace_back();
  edge_byte_.push_back(0);
  todo.push_back({0, 0, static_cast<uint32_t>(sorted_.size()), 0});
  while (!todo.empty()) {
    Todo t = todo.front();
    todo.pop_front();
    auto len = [&](uint32_t i) { return bytes_[static_cast<size_t>(sorted_[i])].size(); };
    auto byte_at = [&](uint32_t i, uint32_t d) {
      return static_cast<uint8_t>(bytes_[static_cast<size_t>(sorted_[i])][d]);
    };
    uint32_t i = t.lo;
    while (i < t.hi && len(i) == t.depth) ++i;
    nodes_[t.node].first_token = t.lo;
    nodes_[t.node].end_token = t.hi;
    nodes_[t.node].own_tokens = i - t.lo;
    nodes_[t.node].first_child = static_cast<uint32_t>(nodes_.size());
    uint32_t n = 0;
    for (uint32_t j = i; j < t.hi;) {
      const uint8_t b = byte_at(j, t.depth);
      uint32_t k = j;
      while (k < t.hi && byte_at(k, t.depth) == b) ++k;
      todo.push_back({static_cast<uint32_t>(nodes_.size()), j, k, t.depth + 1});
      nodes_.emplace_back();
      edge_byte_.push_back(b);
      ++n;
      j = k;
    }
    nodes_[t.node].n_children = n;
  }
}

size_t TokenMask::count() const {
  size_t n = 0;
  for (uint64_t w : bits) n += static_cast<size_t>(std::popcount(w));
  return n;
}

void apply_mask(const TokenMask& mask, float* logits, size_t n) {
  const float ninf = -std::numeric_limits<float>::infinity();
  for (size_t w = 0; w * 64 < n; ++w) {
    uint64_t bits = w < mask.bits.size() ? mask.bits[w] : 0;
    if (bits == ~uint64_t(0)) continue;
    const size_t end = std::min(n, w * 64 + 64);
    for (size_t i = w * 64; i < end; ++i) {
      if (!((bits >> (i - w * 64)) & 1)) logits[i] = ninf;
    }
  }
}

// ---- CompiledGrammar

namespace {
constexpr uint32_t kSentinel = 0xFFFFFFFFu;  // the bottom of a frame walk
constexpr int32_t kDead = 0;                 // the empty state
constexpr size_t kMaxStates = 200000;
constexpr size_t kMaxStacks = 4096;
constexpr size_t kMaskCache = 256;
// Stack entries that key a token table: with the top few entries a table covers whole
// terminals (a string with its closing quote, a multi-byte character inside a string), so
// few tokens depend on the rest of the stack.
constexpr size_t kFrameDepth = 3;
using Stack = std::vector<uint32_t>;
}  // namespace

struct CompiledGrammar::Impl {
  const Grammar& g;
  const Vocabulary& vocab;
  size_t words;
  std::mutex mu;

  struct State {
    std::vector<Stack> stacks;
    bool accepting = false;  // holds an empty stack: the sentence is complete
    bool exited = false;     // holds a stack that popped to the sentinel
    std::unique_ptr<std::array<int32_t, 256>> next;
  };
  std::vector<State> states;
  std::unordered_map<std::string, int32_t> ids;
  int32_t initial = kDead;

  // Per top-of-stack frame (the top kFrameDepth entries): the classification of every token
  // that does not depend on the stack below.
  struct RemNode {
    std::vector<std::pair<uint8_t, uint32_t>> kids;
    std::vector<int32_t> tokens;  // tokens whose remainder ends here
  };
  struct PosEntry {
    std::vector<uint64_t> accepted;
    std::vector<RemNode> rem;  // remainder trie (node 0 = root); empty when none
  };
  std::map<Stack, std::unique_ptr<PosEntry>> positions;
  std::vector<ByteSet> follow;  // rule -> bytes that can come right after it completes

  std::unordered_map<int32_t, std::shared_ptr<const TokenMask>> mask_cache;

  Impl(const Grammar& grammar, const Vocabulary& v)
      : g(grammar), vocab(v), words((v.size() + 63) / 64) {
    states.emplace_back();  // kDead
    ids.emplace(std::string(), kDead);
    compute_follow();
    std::vector<Stack> init;
    Stack st;
    for (uint32_t a : g.alts[g.root]) {
      if (g.elems[a].op != Grammar::Op::End) st.push_back(a);
      expand(st, init);
      st.clear();
    }
    initial = intern(std::move(init));
  }

  // Replaces a rule reference on top by the alternatives' first positions, recursively,
  // so that every stack in a state has a byte element (or nothing, or the sentinel) on top.
  void expand(Stack& st, std::vector<Stack>& out) {
    if (st.empty() || st.back() == kSentinel ||
        g.elems[st.back()].op == Grammar::Op::Bytes) {
      out.push_back(st);
      if (out.size() > kMaxStacks) {
        throw GrammarError("grammar is too ambiguous (more than " + std::to_string(kMaxStacks) +
                           " parse stacks)");
      }
      return;
    }
    const uint32_t top = st.back();
    const uint32_t rule = g.elems[top].arg;
    st.pop_back();
    const bool cont = g.elems[top + 1].op != Grammar::Op::End;
    if (cont) st.push_back(top + 1);
    for (uint32_t a : g.alts[rule]) {
      if (g.elems[a].op != Grammar::Op::End) {
        st.push_back(a);
        expand(st, out);
        st.pop_back();
      } else {
        expand(st, out);
      }
    }
    if (cont) st.pop_back();
    st.push_back(top);
  }

  int32_t intern(std::vector<Stack> stacks) {
    if (stacks.empty()) return kDead;
    std::sort(stacks.begin(), stacks.end());
    stacks.erase(std::unique(stacks.begin(), stacks.end()), stacks.end());
    std::string key;
    for (const Stack& s : stacks) {
      uint32_t n = static_cast<uint32_t>(s.size());
      key.append(reinterpret_cast<const char*>(&n), sizeof n);
      key.append(reinterpret_cast<const char*>(s.data()), s.size() * sizeof(uint32_t));
    }
    auto it = ids.find(key);
    if (it != ids.end()) return it->second;
    if (states.size() >= kMaxStates) throw GrammarError("grammar state limit reached");
    State st;
    for (const Stack& s : stacks) {
      if (s.empty()) st.accepting = true;
      else if (s.back() == kSentinel) st.exited = true;
    }
    st.stacks = std::move(stacks);
    const int32_t id = static_cast<int32_t>(states.size());
    states.push_back(std::move(st));
    ids.emplace(std::move(key), id);
    return id;
  }

  int32_t step(int32_t s, uint8_t b) {
    if (s == kDead) return kDead;
    if (!states[s].next) {
      states[s].next = std::make_unique<std::array<int32_t, 256>>();
      states[s].next->fill(-1);
    }
    int32_t cached = (*states[s].next)[b];
    if (cached >= 0) return cached;
    std::vector<Stack> out;
    Stack ns;
    for (const Stack& st : states[s].stacks) {
      if (st.empty() || st.back() == kSentinel) continue;
      const uint32_t top = st.back();
      if (!g.sets[g.elems[top].arg].test(b)) continue;
      ns.assign(st.begin(), st.end() - 1);
      if (g.elems[top + 1].op != Grammar::Op::End) ns.push_back(top + 1);
      expand(ns, out);
    }
    const int32_t id = intern(std::move(out));
    (*states[s].next)[b] = id;
    return id;
  }

  // FIRST sets of rules and FOLLOW sets (bytes after a rule completes), at the byte level.
  void compute_follow() {
    const size_t n = g.alts.size();
    std::vector<ByteSet> first(n);
    std::vector<bool> nullable(n, false);
    // First bytes of the suffix starting at position p, and whether it can be empty.
    auto suffix = [&](uint32_t p, ByteSet& out) {
      for (; g.elems[p].op != Grammar::Op::End; ++p) {
        const auto& e = g.elems[p];
        if (e.op == Grammar::Op::Bytes) {
          out |= g.sets[e.arg];
          return false;
        }
        out |= first[e.arg];
        if (!nullable[e.arg]) return false;
      }
      return true;
    };
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < n; ++r) {
        for (uint32_t a : g.alts[r]) {
          ByteSet f = first[r];
          bool nl = suffix(a, f);
          if (!(f == first[r]) || (nl && !nullable[r])) {
            first[r] = f;
            if (nl) nullable[r] = true;
            changed = true;
          }
        }
      }
    }
    follow.assign(n, ByteSet{});
    for (bool changed = true; changed;) {
      changed = false;
      for (uint32_t q = 0; q < g.elems.size(); ++q) {
        if (g.elems[q].op != Grammar::Op::Rule) continue;
        const uint32_t r = g.elems[q].arg;
        ByteSet f = follow[r];
        if (suffix(q + 1, f)) f |= follow[g.owner[q]];
        if (!(f == follow[r])) {
          follow[r] = f;
          changed = true;
        }
      }
    }
  }

  // `frame`: the top entries of a stack; `whole`: they are the whole stack (then leaving the
  // frame means the sentence is complete, and no bytes may follow).
  PosEntry& prepare(const Stack& frame, bool whole) {
    Stack key = frame;  // a frame over a deeper stack is keyed with the sentinel below it
    if (!whole) key.insert(key.begin(), kSentinel);
    auto found = positions.find(key);
    if (found != positions.end()) return *found->second;
    auto entry = std::make_unique<PosEntry>();
    entry->accepted.assign(words, 0);
    static const ByteSet kNothing;
    const ByteSet& fol = whole ? kNothing : follow[g.owner[frame.front()]];
    const auto& nodes = vocab.nodes();
    const auto& edge = vocab.edge_bytes();
    const auto& sorted = vocab.sorted_tokens();
    std::vector<std::pair<int32_t, uint32_t>> rem;  // (token, offset of the remainder)
    const int32_t init = intern({key});
    struct Item {
      uint32_t node;
      int32_t state;
      uint32_t depth;
    };
    std::vector<Item> todo{{0, init, 0}};
    while (!todo.empty()) {
      const Item it = todo.back();
      todo.pop_back();
      const auto& nd = nodes[it.node];
      if (it.node != 0) {
        for (uint32_t t = nd.first_token; t < nd.first_token + nd.own_tokens; ++t) {
          const auto id = static_cast<size_t>(sorted[t]);
          entry->accepted[id >> 6] |= uint64_t(1) << (id & 63);
        }
      }
      const bool exited = states[it.state].exited;
      for (uint32_t c = nd.first_child; c < nd.first_child + nd.n_children; ++c) {
        const uint8_t b = edge[c];
        if (exited && fol.test(b)) {
          for (uint32_t t = nodes[c].first_token; t < nodes[c].end_token; ++t) {
            rem.emplace_back(sorted[t], it.depth);
          }
        }
        const int32_t ns = step(it.state, b);
        if (ns != kDead) todo.push_back({c, ns, it.depth + 1});
      }
    }
    for (auto [tok, off] : rem) {
      const auto id = static_cast<size_t>(tok);
      if ((entry->accepted[id >> 6] >> (id & 63)) & 1) continue;
      if (entry->rem.empty()) entry->rem.emplace_back();
      const std::string& bytes = vocab.bytes(tok);
      uint32_t n = 0;
      for (size_t i = off; i < bytes.size(); ++i) {
        const auto b = static_cast<uint8_t>(bytes[i]);
        uint32_t next = 0;
        for (auto [kb, kn] : entry->rem[n].kids) {
          if (kb == b) next = kn;
        }
        if (next == 0) {
          next = static_cast<uint32_t>(entry->rem.size());
          entry->rem[n].kids.emplace_back(b, next);
          entry->rem.emplace_back();
        }
        n = next;
      }
      entry->rem[n].tokens.push_back(tok);
    }
    auto& slot = positions[key];
    slot = std::move(entry);
    return *slot;
  }

  void walk_remainders(const PosEntry& e, uint32_t node, int32_t state, TokenMask& m) {
    for (int32_t tok : e.rem[node].tokens) {
      const auto id = static_cast<size_t>(tok);
      m.bits[id >> 6] |= uint64_t(1) << (id & 63);
    }
    for (auto [b, kid] : e.rem[node].kids) {
      const int32_t ns = step(state, b);
      if (ns != kDead) walk_remainders(e, kid, ns, m);
    }
  }

  std::shared_ptr<const TokenMask> mask(int32_t s) {
    auto it = mask_cache.find(s);
    if (it != mask_cache.end()) return it->second;
    auto m = std::make_shared<TokenMask>();
    m->bits.assign(words, 0);
    m->eos = states[s].accepting;
    const std::vector<Stack> stacks = states[s].stacks;  // step() may grow `states`
    for (const Stack& st : stacks) {
      if (st.empty()) continue;
      const size_t depth = std::min(kFrameDepth, st.size());
      const Stack frame(st.end() - static_cast<std::ptrdiff_t>(depth), st.end());
      const PosEntry& e = prepare(frame, depth == st.size());
      for (size_t w = 0; w < words; ++w) m->bits[w] |= e.accepted[w];
      if (e.rem.empty()) continue;
      Stack base(st.begin(), st.end() - static_cast<std::ptrdiff_t>(depth));
      std::vector<Stack> expanded;
      expand(base, expanded);
      const int32_t bs = intern(std::move(expanded));
      walk_remainders(e, 0, bs, *m);
    }
    if (mask_cache.size() >= kMaskCache) mask_cache.clear();
    mask_cache.emplace(s, m);
    return m;
  }
};

CompiledGrammar::CompiledGrammar(Grammar g, std::shared_ptr<const Vocabulary> vocab)
    : g_(std::move(g)), vocab_(std::move(vocab)) {
  impl_ = std::make_unique<Impl>(g_, *vocab_);
}

CompiledGrammar::~CompiledGrammar() = default;

size_t CompiledGrammar::states() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->states.size();
}

size_t CompiledGrammar::positions_prepared() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->positions.size();
}

// ---- Matcher

Matcher::Matcher(std::shared_ptr<CompiledGrammar> grammar)
    : g_(std::move(grammar)), state_(g_->impl_->initial) {}

bool Matcher::accept_bytes(std::string_view bytes) {
  auto& impl = *g_->impl_;
  std::lock_guard<std::mutex> lock(impl.mu);
  int32_t s = state_;
  for (char c : bytes) {
    s = impl.step(s, static_cast<uint8_t>(c));
    if (s == kDead) return false;
  }
  state_ = s;
  return true;
}

bool Matcher::accept_token(int32_t id) {
  if (id == g_->vocab().eos()) return can_end();
  if (id < 0 || static_cast<size_t>(id) >= g_->vocab().size()) return false;
  const std::string& b = g_->vocab().bytes(id);
  if (b.empty()) return false;
  return accept_bytes(b);
}

bool Matcher::can_end() const {
  auto& impl = *g_->impl_;
  std::lock_guard<std::mutex> lock(impl.mu);
  return impl.states[state_].accepting;
}

bool Matcher::must_end() const {
  auto& impl = *g_->impl_;
  std::lock_guard<std::mutex> lock(impl.mu);
  const auto& st = impl.states[state_];
  return st.accepting && st.stacks.size() == 1;
}

void Matcher::fill_mask(TokenMask& mask) {
  auto& impl = *g_->impl_;
  std::lock_guard<std::mutex> lock(impl.mu);
  auto m = impl.mask(state_);
  mask.bits = m->bits;
  mask.eos = m->eos;
}

}  // namespace ds4::grammar
