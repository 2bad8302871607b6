// Record of one block's discrete decisions (expert routing, indexer picks), shared by every
// backend: the oracle tests compare them with the reference and replay them.
#pragma once

#include <cstddef>
#include <vector>

namespace ds4::model {

// With `replay` set, the block reads its expert and indexer choices from here, in position
// order, instead of computing them: tests use it to compare two weight files without the
// discrete flips that near-tied choices would add (the expert weights are still computed).
struct BlockTrace {
  std::vector<std::vector<int>> experts;    // per token, slot order
  std::vector<std::vector<float>> weights;  // per token, matching experts
  std::vector<std::vector<int>> indexer;    // per token (ratio 4 only), ascending row ids
  bool replay = false;
  size_t next_expert = 0, next_indexer = 0;  // replay cursors
};

}  // namespace ds4::model
