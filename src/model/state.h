// Per-sequence model state (spec §6): raw window ring, compressed rows, indexer rows and
// compressor frontiers, one set per layer.
#pragma once

#include <cstdint>
#include <vector>

namespace ds4::model {

// "Minus infinity" of the score states (ds4 convention; values <= -5e29 count as masked).
inline constexpr float kNegInf = -1e30f;

struct CompressorState {
  int ratio = 0;       // 0: no compressor
  int d = 0;           // output row width
  int width = 0;       // c*d feature columns of the state
  int state_rows = 0;  // c*ratio
  std::vector<float> kv, score;  // state_rows x width
  std::vector<float> rows;       // n_rows x d, append-only
  int64_t n_rows = 0;

  void init(int ratio_, int d_);
  void reset();
};

// Raw KV rows in a ring; slot_pos[i] is the position held by slot i (-1: empty), so the
// visible set is "every slot whose position lies in the window", in position order.
struct RawRing {
  int cap = 0;
  int width = 0;
  std::vector<float> rows;        // cap x width
  std::vector<int64_t> slot_pos;  // cap

  void init(int cap_, int width_);
  void reset();
  void put(int64_t pos, const float* row);
  // Positions lo..hi that are present, oldest first, as row pointers.
  void visible(int64_t lo, int64_t hi, std::vector<const float*>& out) const;
  void drop_from(int64_t pos);  // forget rows of positions >= pos
  const float* find(int64_t pos) const;
};

struct LayerState {
  RawRing raw;
  CompressorState comp;   // attention compressor (ratio != 0)
  CompressorState icomp;  // indexer compressor (ratio == 4)
};

}  // namespace ds4::model
