#include "cpu/arena.h"

#include <algorithm>

namespace ds4::cpu {

namespace {
constexpr size_t kAlign = 64;
constexpr size_t kMinBlock = size_t{1} << 20;
inline size_t round_up(size_t v) { return (v + kAlign - 1) & ~(kAlign - 1); }
}  // namespace

void Arena::add_block(size_t min_bytes) {
  size_t size = std::max(min_bytes, kMinBlock);
  if (!blocks_.empty()) size = std::max(size, blocks_.back().size * 2);
  Block b;
  b.mem.reset(new uint8_t[size + kAlign]);
  const auto addr = reinterpret_cast<uintptr_t>(b.mem.get());
  b.base = b.mem.get() + (round_up(addr) - addr);
  b.size = size;
  blocks_.push_back(std::move(b));
}

void* Arena::alloc_bytes(size_t bytes) {
  bytes = round_up(std::max<size_t>(bytes, 1));
  for (;;) {
    if (cur_ < blocks_.size()) {
      Block& b = blocks_[cur_];
      if (b.size - b.used >= bytes) {
        void* p = b.base + b.used;
        b.used += bytes;
        live_ += bytes;
        high_water_ = std::max(high_water_, live_);
        return p;
      }
      if (cur_ + 1 < blocks_.size() && blocks_[cur_ + 1].size >= bytes) {
        ++cur_;
        continue;
      }
      // Later blocks too small for this request: drop them (they hold nothing live).
      blocks_.resize(cur_ + 1);
      if (b.used == 0) {  // an empty current block that is too small: replace it
        blocks_.pop_back();
        add_block(bytes);
        continue;
      }
      add_block(bytes);
      ++cur_;
      continue;
    }
    add_block(bytes);
    cur_ = blocks_.size() - 1;
  }
}

void Arena::release_to(size_t block, size_t used) {
  if (blocks_.empty()) return;
  for (size_t i = block + 1; i < blocks_.size(); ++i) blocks_[i].used = 0;
  if (block < blocks_.size()) blocks_[block].used = used;
  cur_ = std::min(block, blocks_.size() - 1);
  live_ = 0;
  for (size_t i = 0; i <= cur_; ++i) live_ += blocks_[i].used;
  if (live_ == 0 && blocks_.size() > 1) {
    // Everything released and the work needed several blocks: keep one that holds it all.
    size_t total = 0;
    for (const Block& b : blocks_) total += b.size;
    blocks_.clear();
    cur_ = 0;
    add_block(total);
  }
}

size_t Arena::capacity_bytes() const {
  size_t total = 0;
  for (const Block& b : blocks_) total += b.size;
  return total;
}

}  // namespace ds4::cpu
