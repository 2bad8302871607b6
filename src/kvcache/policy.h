// When to write and what to keep: the disk KV cache's numbers (src/kvcache/README.md).
// Pure functions, so the rules are testable without files or a model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ds4::kvcache {

// Every --kv-* flag with its default.
struct CacheOptions {
  std::string dir;                    // empty: the disk cache is off
  uint64_t space_mb = 4096;           // budget; 0 means the default
  int min_tokens = 512;               // never save or load shorter
  int cold_max_tokens = 30000;        // cold saves for prompts in [min, this]; 0 off
  int continued_interval_tokens = 10000;  // 0 off
  int boundary_trim_tokens = 32;
  int boundary_align_tokens = 2048;   // 0 off
  bool reject_different_quant = false;

  uint64_t budget_bytes() const { return (space_mb == 0 ? 4096 : space_mb) << 20; }
  // Empty when consistent, else the reason (cold max must be 0 or >= min).
  std::string check() const;
};

// Length of a cold save for a prompt of `n` tokens when no chat anchor applies: the tail
// (which changes between requests) trimmed, aligned down; if that falls under the minimum,
// the full prompt.
int cold_store_len(const CacheOptions& o, int n);
// Chat anchor: the position of the last User marker before the first Assistant marker, when
// it leaves at least min tokens before it; -1 otherwise.
int chat_anchor(const CacheOptions& o, const std::vector<int32_t>& tokens, int32_t user_id,
                int32_t assistant_id);
// Spacing of continued saves: the interval rounded up to the alignment (0: off).
int continued_step(const CacheOptions& o);
// The next continued frontier above `last_frontier` (0 when continued saves are off).
int continued_target(const CacheOptions& o, int last_frontier);
// A file may be written only when size × 1.01 fits the budget.
bool file_fits(const CacheOptions& o, uint64_t file_bytes);

// Eviction score: (effective hits + 1) × tokens / bytes, hits decaying with a 6 h half-life
// of idleness (under 0.01 counts as 0). Lowest goes first.
double eviction_score(uint32_t hits, uint32_t tokens, uint64_t bytes, uint64_t last_used,
                      uint64_t now);

}  // namespace ds4::kvcache
