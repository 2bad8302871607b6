// Scratch memory for the forward pass: bump allocation from blocks that are kept between
// evaluations, so steady-state decode and prefill allocate nothing. A Frame releases what
// was allocated inside it. Not thread-safe: one arena per evaluating thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace ds4::cpu {

class Arena {
 public:
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // 64-byte aligned, uninitialised.
  void* alloc_bytes(size_t bytes);
  template <class T>
  T* alloc(size_t n) {
    return static_cast<T*>(alloc_bytes(n * sizeof(T)));
  }

  // Everything allocated after construction of a Frame is released when it goes away.
  class Frame {
   public:
    explicit Frame(Arena& a) : a_(a), block_(a.cur_), used_(a.cur_ < a.blocks_.size() ? a.blocks_[a.cur_].used : 0) {}
    ~Frame() { a_.release_to(block_, used_); }
    Frame(const Frame&) = delete;
    Frame& operator=(const Frame&) = delete;

   private:
    Arena& a_;
    size_t block_, used_;
  };

  size_t capacity_bytes() const;   // memory held
  size_t high_water_bytes() const { return high_water_; }

 private:
  struct Block {
    std::unique_ptr<uint8_t[]> mem;
    uint8_t* base = nullptr;  // aligned start
    size_t size = 0, used = 0;
  };
  void release_to(size_t block, size_t used);
  void add_block(size_t min_bytes);

  std::vector<Block> blocks_;
  size_t cur_ = 0;
  size_t live_ = 0;        // bytes handed out and not released
  size_t high_water_ = 0;  // most bytes live at once
};

}  // namespace ds4::cpu
