#include "model/state.h"

#include <algorithm>
#include <cstring>

namespace ds4::model {

void CompressorState::init(int ratio_, int d_, int undo_depth_) {
  ratio = ratio_;
  d = d_;
  undo_depth = ratio_ == 0 ? 0 : undo_depth_;
  if (ratio == 0) {
    width = state_rows = 0;
  } else {
    const int c = ratio == 4 ? 2 : 1;
    width = c * d;
    state_rows = c * ratio;
  }
  kv.assign(static_cast<size_t>(width) * state_rows, 0.f);
  score.assign(static_cast<size_t>(width) * state_rows, kNegInf);
  rows.clear();
  n_rows = 0;
  clear_undo();
}

void CompressorState::reset() { init(ratio, d, undo_depth); }

void CompressorState::clear_undo() {
  undo_.resize(undo_depth);
  for (Undo& u : undo_) u.pos = -1;
}

void CompressorState::save_undo(int64_t pos) {
  if (undo_depth == 0) return;
  Undo& u = undo_[static_cast<size_t>(pos % undo_depth)];
  const int phase = static_cast<int>(pos % ratio);
  const size_t row = static_cast<size_t>(ratio == 4 ? 4 + phase : phase) * width;
  u.pos = pos;
  u.kv.assign(kv.begin() + row, kv.begin() + row + width);
  u.score.assign(score.begin() + row, score.begin() + row + width);
  u.shifted = ratio == 4 && (pos + 1) % ratio == 0;
  if (u.shifted) {
    u.prev_kv.assign(kv.begin(), kv.begin() + 4 * static_cast<size_t>(width));
    u.prev_score.assign(score.begin(), score.begin() + 4 * static_cast<size_t>(width));
  }
}

bool CompressorState::can_undo(int64_t n, int64_t pos) const {
  if (ratio == 0 || pos >= n) return true;
  if (pos < 0 || n - pos > undo_depth) return false;
  for (int64_t p = pos; p < n; ++p)
    if (undo_[static_cast<size_t>(p % undo_depth)].pos != p) return false;
  return true;
}

void CompressorState::undo(int64_t n, int64_t pos) {
  if (ratio == 0) return;
  for (int64_t p = n - 1; p >= pos; --p) {  // newest first: each step restores what it saw
    Undo& u = undo_[static_cast<size_t>(p % undo_depth)];
    if (u.shifted) {
      std::copy(u.prev_kv.begin(), u.prev_kv.end(), kv.begin());
      std::copy(u.prev_score.begin(), u.prev_score.end(), score.begin());
    }
    const int phase = static_cast<int>(p % ratio);
    const size_t row = static_cast<size_t>(ratio == 4 ? 4 + phase : phase) * width;
    std::copy(u.kv.begin(), u.kv.end(), kv.begin() + row);
    std::copy(u.score.begin(), u.score.end(), score.begin() + row);
    u.pos = -1;
  }
  n_rows = pos / ratio;
  rows.resize(static_cast<size_t>(n_rows) * d);
}

void LayerState::init(int ratio, int head_dim, int index_head_dim, int ring_cap, int undo_depth) {
  raw.init(ring_cap, head_dim);
  comp.init(ratio, head_dim, undo_depth);
  icomp.init(ratio == 4 ? 4 : 0, index_head_dim, undo_depth);
}

void LayerState::reset() {
  raw.reset();
  comp.reset();
  icomp.reset();
}

bool LayerState::can_truncate(int64_t n, int64_t pos) const { return comp.can_undo(n, pos) && icomp.can_undo(n, pos); }

void LayerState::truncate(int64_t n, int64_t pos) {
  raw.drop_from(pos);
  comp.undo(n, pos);
  icomp.undo(n, pos);
}

void RawRing::init(int cap_, int width_) {
  cap = cap_;
  width = width_;
  rows.assign(static_cast<size_t>(cap) * width, 0.f);
  slot_pos.assign(cap, -1);
}

void RawRing::reset() {
  std::fill(rows.begin(), rows.end(), 0.f);
  std::fill(slot_pos.begin(), slot_pos.end(), -1);
}

void RawRing::put(int64_t pos, const float* row) {
  const int slot = static_cast<int>(pos % cap);
  std::memcpy(rows.data() + static_cast<size_t>(slot) * width, row, sizeof(float) * width);
  slot_pos[slot] = pos;
}

void RawRing::visible(int64_t lo, int64_t hi, std::vector<const float*>& out) const {
  out.clear();
  if (lo < 0) lo = 0;
  if (hi - lo + 1 > cap) lo = hi - cap + 1;
  for (int64_t p = lo; p <= hi; ++p) {
    const int slot = static_cast<int>(p % cap);
    if (slot_pos[slot] == p) out.push_back(rows.data() + static_cast<size_t>(slot) * width);
  }
}

const float* RawRing::find(int64_t pos) const {
  if (pos < 0) return nullptr;
  const int slot = static_cast<int>(pos % cap);
  return slot_pos[slot] == pos ? rows.data() + static_cast<size_t>(slot) * width : nullptr;
}

void RawRing::drop_from(int64_t pos) {
  for (int i = 0; i < cap; ++i)
    if (slot_pos[i] >= pos) slot_pos[i] = -1;
}

}  // namespace ds4::model
