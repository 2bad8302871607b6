#include "model/stages.h"

#include <algorithm>
#include <stdexcept>

namespace ds4::model {

StageBytes stage_bytes(const gguf::File& f, int n_layers) {
  StageBytes b;
  b.layers.assign(n_layers, 0);
  for (const gguf::TensorInfo& t : f.tensors()) {
    const std::string& n = t.name;
    if (n.rfind("blk.", 0) == 0) {
      const size_t dot = n.find('.', 4);
      if (dot == std::string::npos) continue;
      int il = -1;
      try {
        il = std::stoi(n.substr(4, dot - 4));
      } catch (const std::exception&) {
        continue;
      }
      if (il >= 0 && il < n_layers) b.layers[il] += t.nbytes;
    } else if (n.rfind("token_embd.", 0) == 0) {
      b.embed += t.nbytes;
    } else if (n.rfind("output", 0) == 0) {
      b.head += t.nbytes;
    }
  }
  return b;
}

std::vector<int> split_by_bytes(const StageBytes& b, int stages) {
  const int n = static_cast<int>(b.layers.size());
  if (stages < 1) throw std::invalid_argument("at least one stage is needed");
  if (n < stages)
    throw std::invalid_argument(std::to_string(stages) + " stages need at least as many layers, the model has " +
                                std::to_string(n));
  // cost(s, a, b): bytes of stage s holding layers [a, b).
  std::vector<uint64_t> prefix(n + 1, 0);
  for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + b.layers[i];
  auto cost = [&](int s, int lo, int hi) {
    uint64_t c = prefix[hi] - prefix[lo];
    if (s == 0) c += b.embed;
    if (s == stages - 1) c += b.head;
    return c;
  };
  // best[s][i]: smallest possible largest stage when stages 0..s-1 hold layers [0, i).
  const uint64_t inf = ~uint64_t{0};
  std::vector<std::vector<uint64_t>> best(stages + 1, std::vector<uint64_t>(n + 1, inf));
  std::vector<std::vector<int>> from(stages + 1, std::vector<int>(n + 1, -1));
  best[0][0] = 0;
  for (int s = 1; s <= stages; ++s)
    for (int i = s; i <= n - (stages - s); ++i)
      for (int j = s - 1; j < i; ++j) {
        if (best[s - 1][j] == inf) continue;
        const uint64_t c = std::max(best[s - 1][j], cost(s - 1, j, i));
        if (c < best[s][i]) {  // strict: ties keep the earliest cut, so the split is deterministic
          best[s][i] = c;
          from[s][i] = j;
        }
      }
  std::vector<int> bounds(stages + 1);
  bounds[stages] = n;
  for (int s = stages, i = n; s > 0; --s) {
    i = from[s][i];
    bounds[s - 1] = i;
  }
  return bounds;
}

std::vector<int> split_from_counts(const std::vector<int>& counts, int n_layers, int stages) {
  if (static_cast<int>(counts.size()) != stages)
    throw std::invalid_argument("--layer-split has " + std::to_string(counts.size()) + " counts for " +
                                std::to_string(stages) + " ranks (one layer count per rank)");
  std::vector<int> bounds{0};
  int64_t total = 0;
  for (int c : counts) {
    if (c < 1) throw std::invalid_argument("--layer-split: every rank needs at least one layer");
    total += c;
    if (total > n_layers) break;
    bounds.push_back(static_cast<int>(total));
  }
  if (total != n_layers)
    throw std::invalid_argument("--layer-split counts add up to " + std::to_string(total) +
                                ", the model has " + std::to_string(n_layers) + " layers");
  return bounds;
}

std::vector<int> parse_layer_split(const std::string& text) {
  std::vector<int> out;
  size_t i = 0;
  while (true) {
    size_t j = i;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
    if (j == i || j - i > 6)
      throw std::invalid_argument("--layer-split '" + text + "': expected layer counts like 22,21");
    out.push_back(std::stoi(text.substr(i, j - i)));
    if (j == text.size()) break;
    if (text[j] != ',') throw std::invalid_argument("--layer-split '" + text + "': expected layer counts like 22,21");
    i = j + 1;
  }
  return out;
}

}  // namespace ds4::model
