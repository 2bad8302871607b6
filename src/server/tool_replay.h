// Exact DSML replay memory: tool call id -> the DSML bytes the model sampled for the block
// that holds the call (docs/server.md, "Exact tool-call replay").
//
// Clients send past tool calls back as JSON, often with keys reordered or numbers
// reformatted. Rendering those calls canonically would change the prompt bytes and miss the
// live KV cache; rendering the remembered bytes reproduces what the session evaluated.
//
// Bounded: at most `max_ids` ids (least recently used ones go first) and `max_bytes` of
// distinct blocks (calls of one block share its bytes). Thread-safe: request threads look
// ids up while the worker inserts.
//
// Serialisable for the disk KV cache (the KTM section, docs/kvcache.md): entries() lists (id, block bytes)
// pairs, oldest first, and insert() restores them.
#pragma once

#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ds4::server {

class ToolReplay {
 public:
  static constexpr size_t kDefaultMaxIds = 100000;
  static constexpr size_t kDefaultMaxBytes = size_t(512) << 20;

  // max_ids == 0 disables the memory (lookups miss, inserts are dropped).
  explicit ToolReplay(size_t max_ids = kDefaultMaxIds, size_t max_bytes = kDefaultMaxBytes);

  bool enabled() const { return max_ids_ > 0; }

  // Remembers `dsml` for `id` (replacing an older mapping). An empty id or block is ignored.
  void insert(const std::string& id, std::string_view dsml);
  // The bytes for `id`, marking it recently used.
  std::optional<std::string> lookup(std::string_view id);
  bool contains(std::string_view id) const;

  // (id, block) pairs, least recently used first, so inserting them in order restores the
  // same recency.
  std::vector<std::pair<std::string, std::string>> entries() const;
  size_t size() const;
  size_t block_bytes() const;  // bytes of distinct blocks held
  void clear();

  // A fresh id: prefix + 32 random hex digits, not already in the memory.
  std::string new_id(std::string_view prefix) const;
  // prefix + 32 hex digits from the kernel's CSPRNG (ids must not be guessable).
  static std::string random_id(std::string_view prefix);

 private:
  struct Entry {
    std::string id;
    std::shared_ptr<const std::string> block;
  };
  void drop_oldest_locked();
  void release_block_locked(const std::shared_ptr<const std::string>& block);

  size_t max_ids_;
  size_t max_bytes_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // front = least recently used
  std::unordered_map<std::string, std::list<Entry>::iterator> by_id_;
  // Distinct blocks by content, with the number of ids that share each one.
  std::unordered_map<std::string_view, std::pair<std::shared_ptr<const std::string>, size_t>> blocks_;
  size_t bytes_ = 0;
};

}  // namespace ds4::server
