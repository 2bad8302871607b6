#include "text/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <queue>
#include <unordered_map>

#include "text/hf_tokenizer.h"
#include "text/pretokenize.h"
#include "text/unicode.h"

namespace ds4::text {

namespace {

constexpr size_t kNaiveBpeMaxSymbols = 64;  // longer pieces use the O(n log n) heap merge
constexpr size_t kCacheMaxPieceBytes = 256;
constexpr size_t kUncachedMaxPieceBytes = 3;
constexpr size_t kCacheMaxEntries = 1 << 16;  // per thread

// Open-addressing map (left id, right id) -> merge rank, hot in BPE. Each slot is one
// 64-bit word (40-bit pair key, 24-bit rank) so the table stays small (2 MiB for V3) and
// cache-friendly; the merged id is looked up by rank only when a merge is applied.
class MergeTable {
 public:
  static constexpr uint32_t kNoRank = UINT32_MAX;
  static constexpr uint32_t kMaxVocab = 1u << 20;
  static constexpr uint32_t kMaxMerges = (1u << 24) - 1;

  void init(size_t n) {
    size_t cap = 16;
    int bits = 4;
    while (cap < n * 2 + 16) {
      cap <<= 1;
      ++bits;
    }
    slots_.assign(cap, kEmpty);
    mask_ = cap - 1;
    shift_ = 64 - bits;
    result_.clear();
    result_.reserve(n);
  }
  // Ranks must be inserted in order 0, 1, 2...; a repeated pair keeps its first (lowest)
  // rank, as HF does.
  void insert(int32_t a, int32_t b, int32_t merged) {
    const uint32_t rank = static_cast<uint32_t>(result_.size());
    result_.push_back(merged);
    const uint64_t k = key(a, b);
    size_t i = hash(k);
    while (slots_[i] != kEmpty) {
      if ((slots_[i] >> 24) == k) return;
      i = (i + 1) & mask_;
    }
    slots_[i] = (k << 24) | rank;
  }
  uint32_t rank(int32_t a, int32_t b) const {
    const uint64_t k = key(a, b);
    size_t i = hash(k);
    while (true) {
      const uint64_t s = slots_[i];
      if (s == kEmpty) return kNoRank;
      if ((s >> 24) == k) return static_cast<uint32_t>(s & 0xFFFFFF);
      i = (i + 1) & mask_;
    }
  }
  int32_t result(uint32_t rank) const { return result_[rank]; }
  // The table does not fit in L2; issuing the loads of a piece's pairs together lets
  // their cache misses overlap.
  void prefetch(int32_t a, int32_t b) const { __builtin_prefetch(&slots_[hash(key(a, b))]); }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 20) | static_cast<uint32_t>(b);
  }
  // Fibonacci hashing: the top bits of the product depend on every bit of the key.
  size_t hash(uint64_t k) const { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> shift_); }
  std::vector<uint64_t> slots_;
  std::vector<int32_t> result_;
  size_t mask_ = 0;
  int shift_ = 60;
};

// Ids of one cached piece: up to kInline stored in place (the common case), else on the heap.
class CachedIds {
 public:
  static constexpr size_t kInline = 6;
  explicit CachedIds(const std::vector<int>& ids) : n_(static_cast<uint32_t>(ids.size())) {
    if (n_ <= kInline) {
      std::copy(ids.begin(), ids.end(), inline_);
    } else {
      heap_ = std::make_unique<int[]>(n_);
      std::copy(ids.begin(), ids.end(), heap_.get());
    }
  }
  const int* begin() const { return n_ <= kInline ? inline_ : heap_.get(); }
  const int* end() const { return begin() + n_; }

 private:
  uint32_t n_;
  int inline_[kInline];
  std::unique_ptr<int[]> heap_;
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
struct StringEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};

bool heuristic_special(const std::string& t) {
  return t.find("\xEF\xBD\x9C") != std::string::npos || t == "<think>" || t == "</think>" ||
         t == "<|EOT|>";
}

}  // namespace

struct Tokenizer::Impl {
  std::vector<std::string> tokens;
  std::vector<std::string> bytes;  // decoded form
  std::vector<uint8_t> special;
  std::unordered_map<std::string, int, StringHash, StringEq> text_to_id;
  int32_t byte_token[256];
  MergeTable merges;

  // Byte trie over the special-token texts, for leftmost-longest extraction.
  struct TrieNode {
    int token = -1;
    std::vector<std::pair<uint8_t, int>> next;  // sorted by byte
  };
  std::vector<TrieNode> trie;
  bool first_byte[256] = {};

  // Piece caches are per thread (no locking on the hot path); a serial number that is
  // never reused ties a thread's cache to one tokenizer, a generation counter clears it.
  const uint64_t serial = next_serial();
  std::atomic<uint64_t> cache_generation{0};

  struct PieceCache {
    uint64_t owner = 0;
    uint64_t generation = 0;
    std::unordered_map<std::string, CachedIds, StringHash, StringEq> map;
  };
  static uint64_t next_serial() {
    static std::atomic<uint64_t> counter{1};
    return counter.fetch_add(1, std::memory_order_relaxed);
  }
  PieceCache& cache() const {
    thread_local PieceCache c;
    const uint64_t gen = cache_generation.load(std::memory_order_relaxed);
    if (c.owner != serial || c.generation != gen) {
      c.map.clear();
      c.owner = serial;
      c.generation = gen;
    }
    return c;
  }

  void build_trie() {
    trie.assign(1, TrieNode{});
    for (size_t id = 0; id < tokens.size(); ++id) {
      if (!special[id]) continue;
      const std::string& t = tokens[id];
      first_byte[static_cast<uint8_t>(t[0])] = true;
      int node = 0;
      for (char ch : t) {
        const uint8_t b = static_cast<uint8_t>(ch);
        auto& nx = trie[node].next;
        auto it = std::lower_bound(nx.begin(), nx.end(), std::make_pair(b, -1),
                                   [](const auto& x, const auto& y) { return x.first < y.first; });
        if (it != nx.end() && it->first == b) {
          node = it->second;
        } else {
          const int created = static_cast<int>(trie.size());
          nx.insert(it, {b, created});
          trie.emplace_back();
          node = created;
        }
      }
      trie[node].token = static_cast<int>(id);
    }
  }

  // Longest special token starting at text[pos]: returns its length (0 if none).
  size_t match_special(std::string_view text, size_t pos, int* id) const {
    int node = 0;
    size_t best = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      const uint8_t b = static_cast<uint8_t>(text[i]);
      const auto& nx = trie[node].next;
      auto it = std::lower_bound(nx.begin(), nx.end(), std::make_pair(b, -1),
                                 [](const auto& x, const auto& y) { return x.first < y.first; });
      if (it == nx.end() || it->first != b) break;
      node = it->second;
      if (trie[node].token >= 0) {
        best = i + 1 - pos;
        *id = trie[node].token;
      }
    }
    return best;
  }

  // Short pieces: keep the rank of every adjacent pair in an array; each step takes the
  // lowest (leftmost on ties), merges it and re-ranks only its two new neighbour pairs.
  void bpe_small(std::vector<int>& syms) const {
    size_t n = syms.size();
    uint32_t rank[kNaiveBpeMaxSymbols];
    auto rank_pair = [&](size_t i) { rank[i] = merges.rank(syms[i], syms[i + 1]); };
    for (size_t i = 0; i + 1 < n; ++i) merges.prefetch(syms[i], syms[i + 1]);
    for (size_t i = 0; i + 1 < n; ++i) rank_pair(i);
    while (n > 1) {
      size_t best = 0;
      for (size_t i = 1; i + 1 < n; ++i) {
        if (rank[i] < rank[best]) best = i;
      }
      if (rank[best] == MergeTable::kNoRank) break;
      syms[best] = merges.result(rank[best]);
      for (size_t i = best + 1; i + 1 < n; ++i) {
        syms[i] = syms[i + 1];
        rank[i] = rank[i + 1];
      }
      --n;
      if (best > 0) rank_pair(best - 1);
      if (best + 1 < n) rank_pair(best);
    }
    syms.resize(n);
  }

  void bpe_heap(std::vector<int>& syms) const {
    const int n = static_cast<int>(syms.size());
    std::vector<int> prev(n), next(n);
    for (int i = 0; i < n; ++i) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    // Ordered by (rank, position): lowest rank first, leftmost on ties.
    struct Cand {
      uint64_t order;  // rank << 32 | pos
      int32_t left, right;
      bool operator>(const Cand& o) const { return order > o.order; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto consider = [&](int pos) {
      if (pos < 0 || next[pos] < 0) return;
      const uint32_t r = merges.rank(syms[pos], syms[next[pos]]);
      if (r != MergeTable::kNoRank) {
        heap.push({(uint64_t{r} << 32) | static_cast<uint32_t>(pos), syms[pos], syms[next[pos]]});
      }
    };
    for (int i = 0; i + 1 < n; ++i) consider(i);
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      const int pos = static_cast<int>(c.order & 0xFFFFFFFF);
      // Stale entries: a side was merged since the candidate was pushed (ids only grow
      // longer, so an unchanged id pair means an unchanged pair).
      if (syms[pos] != c.left || next[pos] < 0 || syms[next[pos]] != c.right) continue;
      const int r = next[pos];
      syms[pos] = merges.result(static_cast<uint32_t>(c.order >> 32));
      syms[r] = -1;
      next[pos] = next[r];
      if (next[r] >= 0) prev[next[r]] = pos;
      consider(prev[pos]);
      consider(pos);
    }
    size_t w = 0;
    for (int i = 0; i < n; ++i) {
      if (syms[i] >= 0) syms[w++] = syms[i];
    }
    syms.resize(w);
  }

  void bpe(std::string_view piece, std::vector<int>& out) const {
    if (piece.size() == 1) {
      out.push_back(byte_token[static_cast<uint8_t>(piece[0])]);
      return;
    }
    // Very short pieces are cheaper to merge than to look up.
    const bool cacheable = piece.size() > kUncachedMaxPieceBytes && piece.size() <= kCacheMaxPieceBytes;
    PieceCache* pc = nullptr;
    if (cacheable) {
      pc = &cache();
      auto it = pc->map.find(piece);
      if (it != pc->map.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int> syms;
    syms.reserve(piece.size());
    for (char ch : piece) syms.push_back(byte_token[static_cast<uint8_t>(ch)]);
    if (syms.size() <= kNaiveBpeMaxSymbols) {
      bpe_small(syms);
    } else {
      bpe_heap(syms);
    }
    out.insert(out.end(), syms.begin(), syms.end());
    if (pc) {
      if (pc->map.size() >= kCacheMaxEntries) pc->map.clear();
      pc->map.emplace(std::string(piece), CachedIds(syms));
    }
  }

  void encode_plain(std::string_view text, std::vector<int>& out) const {
    if (text.empty()) return;
    thread_local std::vector<PieceSpan> spans;
    spans.clear();
    pretokenize(text, spans);
    for (const PieceSpan& s : spans) bpe(text.substr(s.begin, s.size), out);
    if (spans.capacity() > (size_t{1} << 20)) std::vector<PieceSpan>().swap(spans);
  }
};

Tokenizer::Tokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
                     std::vector<int32_t> token_types, bool require_control_tokens)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  if (tokens.empty()) throw TokenizerError("tokenizer: empty vocabulary");
  if (tokens.size() > MergeTable::kMaxVocab) {
    throw TokenizerError("tokenizer: vocabulary of " + std::to_string(tokens.size()) +
                         " tokens exceeds the supported " + std::to_string(MergeTable::kMaxVocab));
  }
  if (merges.size() > MergeTable::kMaxMerges) {
    throw TokenizerError("tokenizer: too many merges (" + std::to_string(merges.size()) + ")");
  }
  if (!token_types.empty() && token_types.size() != tokens.size()) {
    throw TokenizerError("tokenizer: " + std::to_string(token_types.size()) +
                         " token types for " + std::to_string(tokens.size()) + " tokens");
  }
  m.tokens = std::move(tokens);
  const size_t n = m.tokens.size();
  m.special.resize(n);
  m.bytes.resize(n);
  m.text_to_id.reserve(n * 2);
  for (size_t id = 0; id < n; ++id) {
    const std::string& t = m.tokens[id];
    if (t.empty()) throw TokenizerError("tokenizer: token " + std::to_string(id) + " is empty");
    if (!m.text_to_id.emplace(t, static_cast<int>(id)).second) {
      throw TokenizerError("tokenizer: token text of id " + std::to_string(id) +
                           " repeats id " + std::to_string(m.text_to_id.find(t)->second));
    }
    m.special[id] = token_types.empty() ? heuristic_special(t) : token_types[id] != kTokenNormal;
    if (m.special[id]) {
      m.bytes[id] = t;
      continue;
    }
    // Byte-unicode text back to bytes; a code point outside the byte map (not produced by
    // a byte-level converter) is kept as its own UTF-8.
    const auto* s = reinterpret_cast<const unsigned char*>(t.data());
    size_t i = 0;
    while (i < t.size()) {
      uint32_t cp = 0;
      const int len = unicode::utf8_decode(s + i, t.size() - i, &cp);
      if (len <= 0) {
        throw TokenizerError("tokenizer: token " + std::to_string(id) + " is not valid UTF-8");
      }
      const int b = unicode::codepoint_to_byte(cp);
      if (b >= 0) {
        m.bytes[id].push_back(static_cast<char>(b));
      } else {
        m.bytes[id].append(t, i, static_cast<size_t>(len));
      }
      i += static_cast<size_t>(len);
    }
  }
  for (int b = 0; b < 256; ++b) {
    std::string sym;
    unicode::utf8_append(sym, unicode::byte_to_codepoint(static_cast<uint8_t>(b)));
    auto it = m.text_to_id.find(sym);
    if (it == m.text_to_id.end() || m.special[it->second]) {
      throw TokenizerError("tokenizer: no token for byte 0x" +
                           std::string(1, "0123456789abcdef"[b >> 4]) +
                           std::string(1, "0123456789abcdef"[b & 15]) + " (\"" + sym + "\")");
    }
    m.byte_token[b] = it->second;
  }
  m.merges.init(merges.size());
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& mg = merges[rank];
    const size_t sp = mg.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= mg.size()) {
      throw TokenizerError("tokenizer: merge " + std::to_string(rank) + " \"" + mg +
                           "\" is not \"LEFT RIGHT\"");
    }
    const std::string_view left(mg.data(), sp), right(mg.data() + sp + 1, mg.size() - sp - 1);
    auto l = m.text_to_id.find(left), r = m.text_to_id.find(right);
    joined.assign(left);
    joined.append(right);
    auto j = m.text_to_id.find(joined);
    if (l == m.text_to_id.end() || r == m.text_to_id.end() || j == m.text_to_id.end() ||
        m.special[j->second]) {
      throw TokenizerError("tokenizer: merge " + std::to_string(rank) + " \"" + mg +
                           "\" refers to a token not in the vocabulary");
    }
    m.merges.insert(l->second, r->second, j->second);
  }
  m.build_trie();
  resolve_control_ids(require_control_tokens);
}

Tokenizer Tokenizer::from_hf(const HfTokenizer& hf, bool require_control_tokens) {
  return Tokenizer(hf.tokens, hf.merges, hf.token_types, require_control_tokens);
}

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

void Tokenizer::resolve_control_ids(bool require) {
  struct Want {
    const char* text;
    int* id;
    bool required;
  };
  const Want wants[] = {
      {"<｜begin▁of▁sentence｜>", &bos_, true},
      {"<｜end▁of▁sentence｜>", &eos_, true},
      {"<｜User｜>", &user_, true},
      {"<｜Assistant｜>", &assistant_, true},
      {"<think>", &think_open_, true},
      {"</think>", &think_close_, true},
      {"｜DSML｜", &dsml_, true},
      {"<｜latest_reminder｜>", &latest_reminder_, false},
  };
  for (const Want& w : wants) {
    auto found = find_token(w.text);
    *w.id = found ? *found : -1;
    if (!found && w.required && require) {
      throw TokenizerError(std::string("tokenizer: required control token ") + w.text +
                           " is not in the vocabulary");
    }
  }
}

size_t Tokenizer::vocab_size() const { return impl_->tokens.size(); }

std::vector<int> Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int> out;
  out.reserve(text.size() / 3 + 4);
  encode_append(text, out, parse_special);
  return out;
}

void Tokenizer::encode_append(std::string_view text, std::vector<int>& out,
                              bool parse_special) const {
  const Impl& m = *impl_;
  if (!parse_special) {
    m.encode_plain(text, out);
    return;
  }
  size_t gap = 0;
  size_t i = 0;
  while (i < text.size()) {
    if (!m.first_byte[static_cast<uint8_t>(text[i])]) {
      ++i;
      continue;
    }
    int id = -1;
    const size_t len = m.match_special(text, i, &id);
    if (len == 0) {
      ++i;
      continue;
    }
    m.encode_plain(text.substr(gap, i - gap), out);
    out.push_back(id);
    i += len;
    gap = i;
  }
  m.encode_plain(text.substr(gap), out);
}

void Tokenizer::encode_piece(std::string_view piece, std::vector<int>& out) const {
  if (!piece.empty()) impl_->bpe(piece, out);
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string out;
  for (int id : ids) out += token_bytes(id);
  return out;
}

const std::string& Tokenizer::token_bytes(int id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->tokens.size()) {
    throw TokenizerError("tokenizer: token id " + std::to_string(id) + " out of range");
  }
  return impl_->bytes[static_cast<size_t>(id)];
}

const std::string& Tokenizer::token_text(int id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->tokens.size()) {
    throw TokenizerError("tokenizer: token id " + std::to_string(id) + " out of range");
  }
  return impl_->tokens[static_cast<size_t>(id)];
}

bool Tokenizer::is_special(int id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->tokens.size() &&
         impl_->special[static_cast<size_t>(id)];
}

std::optional<int> Tokenizer::find_token(std::string_view text) const {
  auto it = impl_->text_to_id.find(text);
  if (it == impl_->text_to_id.end()) return std::nullopt;
  return it->second;
}

size_t Tokenizer::cache_entries() const { return impl_->cache().map.size(); }

void Tokenizer::clear_cache() const {
  impl_->cache_generation.fetch_add(1, std::memory_order_relaxed);
}

// ---- streaming ----

std::string StreamDecoder::push(int id) { return push_bytes(tok_->token_bytes(id)); }

std::string StreamDecoder::push_bytes(std::string_view bytes) {
  pending_.append(bytes);
  // Everything but a tail that more bytes could still complete; that tail starts at a lead
  // byte, which never continues an earlier invalid subpart, so the cut changes no replacement.
  const size_t ready = pending_.size() - unicode::utf8_incomplete_tail(pending_);
  const std::string_view done = std::string_view(pending_).substr(0, ready);
  std::string out = mode_ == InvalidBytes::kReplace ? unicode::utf8_sanitized(done) : std::string(done);
  pending_.erase(0, ready);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = mode_ == InvalidBytes::kReplace ? unicode::utf8_sanitized(pending_) : pending_;
  pending_.clear();
  return out;
}

// ---- dump ----

std::string format_token_dump(const Tokenizer& tok, const std::vector<int>& ids) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (int id : ids) {
    out += std::to_string(id);
    out.push_back('\t');
    if (id < 0 || static_cast<size_t>(id) >= tok.vocab_size()) {
      out += "<invalid>\n";
      continue;
    }
    for (char ch : tok.token_bytes(id)) {
      const auto b = static_cast<unsigned char>(ch);
      switch (b) {
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        case '\r': out += "\\r"; break;
        case '\\': out += "\\\\"; break;
        default:
          if (b < 0x20 || b == 0x7F) {
            out += "\\x";
            out.push_back(hex[b >> 4]);
            out.push_back(hex[b & 15]);
          } else {
            out.push_back(ch);
          }
      }
    }
    out.push_back('\n');
  }
  return out;
}

}  // namespace ds4::text
