#include "model/state.h"

#include <algorithm>
#include <cstring>

namespace ds4::model {

void CompressorState::init(int ratio_, int d_) {
  ratio = ratio_;
  d = d_;
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
}

void CompressorState::reset() { init(ratio, d); }

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
