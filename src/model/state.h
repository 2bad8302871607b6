// Per-sequence model state (docs/forward-pass.md): raw window ring, compressed rows, indexer rows and
// compressor frontiers, one set per layer. This is the host layout snapshots carry; a
// backend may keep its working copy elsewhere (backend::Sequence).
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

  void init(int ratio_, int d_, int undo_depth_ = 0);
  void reset();

  // Undo log for cheap rewinds: before the step at `pos` writes its state row (and, when it
  // completes a ratio-4 window, shifts the window), save_undo(pos) keeps what it overwrites.
  // The last undo_depth steps can then be taken back exactly, whatever rows they completed.
  int undo_depth = 0;
  void save_undo(int64_t pos);
  bool can_undo(int64_t n, int64_t pos) const;  // back from n tokens to pos
  void undo(int64_t n, int64_t pos);            // requires can_undo(n, pos)
  void clear_undo();

  // One undo entry. A backend that keeps the state in its own memory keeps the payloads
  // there too and only pos/shifted here (undo_log()); its pull() fills the payloads in.
  struct Undo {
    int64_t pos = -1;
    bool shifted = false;
    std::vector<float> kv, score;          // the step's row before it was written
    std::vector<float> prev_kv, prev_score;  // ratio 4: rows 0..3 before the shift
  };
  std::vector<Undo>& undo_log() { return undo_; }
  const std::vector<Undo>& undo_log() const { return undo_; }

 private:
  std::vector<Undo> undo_;  // ring, slot pos % undo_depth
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

  // Ring of ring_cap raw rows of head_dim; compressors for `ratio`; undo logs of undo_depth.
  void init(int ratio, int head_dim, int index_head_dim, int ring_cap, int undo_depth);
  void reset();
  // Positions >= pos forgotten; requires can_truncate (compressors' undo logs cover n..pos).
  bool can_truncate(int64_t n, int64_t pos) const;
  void truncate(int64_t n, int64_t pos);
};

// One sequence: every layer's state and the MTP block's (ring only; cap 0 without MTP).
struct SequenceState {
  std::vector<LayerState> layers;
  LayerState mtp;
};

}  // namespace ds4::model
