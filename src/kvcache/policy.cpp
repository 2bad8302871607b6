#include "kvcache/policy.h"

#include <cmath>

namespace ds4::kvcache {

std::string CacheOptions::check() const {
  if (min_tokens < 1) return "--kv-cache-min-tokens must be at least 1";
  if (cold_max_tokens != 0 && cold_max_tokens < min_tokens) {
    return "--kv-cache-cold-max-tokens must be 0 or >= --kv-cache-min-tokens";
  }
  if (continued_interval_tokens < 0 || boundary_trim_tokens < 0 || boundary_align_tokens < 0) {
    return "--kv-cache-* token counts must not be negative";
  }
  return {};
}

int cold_store_len(const CacheOptions& o, int n) {
  int len = n - o.boundary_trim_tokens;
  if (o.boundary_align_tokens > 0 && len > 0) len -= len % o.boundary_align_tokens;
  return len >= o.min_tokens ? len : n;
}

int chat_anchor(const CacheOptions& o, const std::vector<int32_t>& tokens, int32_t user_id,
                int32_t assistant_id) {
  int anchor = -1;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] == assistant_id) break;
    if (tokens[i] == user_id) anchor = static_cast<int>(i);
  }
  return anchor >= o.min_tokens ? anchor : -1;
}

int continued_step(const CacheOptions& o) {
  const int n = o.continued_interval_tokens;
  if (n <= 0) return 0;
  const int a = o.boundary_align_tokens;
  return a > 0 ? (n + a - 1) / a * a : n;
}

int continued_target(const CacheOptions& o, int last_frontier) {
  const int step = continued_step(o);
  if (step == 0) return 0;
  return (std::max(last_frontier, 0) / step + 1) * step;
}

bool file_fits(const CacheOptions& o, uint64_t file_bytes) {
  return static_cast<double>(file_bytes) * 1.01 <= static_cast<double>(o.budget_bytes());
}

double eviction_score(uint32_t hits, uint32_t tokens, uint64_t bytes, uint64_t last_used,
                      uint64_t now) {
  const double idle = now > last_used ? static_cast<double>(now - last_used) : 0.0;
  double eff = hits * std::exp2(-idle / (6.0 * 3600.0));
  if (eff < 0.01) eff = 0;
  return (eff + 1.0) * tokens / static_cast<double>(bytes ? bytes : 1);
}

}  // namespace ds4::kvcache
