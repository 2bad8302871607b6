#include "server/tool_replay.h"

#include "random/random.h"

namespace ds4::server {

ToolReplay::ToolReplay(size_t max_ids, size_t max_bytes) : max_ids_(max_ids), max_bytes_(max_bytes) {}

void ToolReplay::release_block_locked(const std::shared_ptr<const std::string>& block) {
  auto it = blocks_.find(std::string_view(*block));
  if (it == blocks_.end()) return;
  if (--it->second.second == 0) {
    bytes_ -= it->second.first->size();
    blocks_.erase(it);
  }
}

void ToolReplay::drop_oldest_locked() {
  Entry& e = lru_.front();
  by_id_.erase(e.id);
  release_block_locked(e.block);
  lru_.pop_front();
}

void ToolReplay::insert(const std::string& id, std::string_view dsml) {
  if (!enabled() || id.empty() || dsml.empty() || dsml.size() > max_bytes_) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (auto old = by_id_.find(id); old != by_id_.end()) {
    release_block_locked(old->second->block);
    lru_.erase(old->second);
    by_id_.erase(old);
  }
  std::shared_ptr<const std::string> block;
  if (auto b = blocks_.find(dsml); b != blocks_.end()) {
    block = b->second.first;
    b->second.second++;
  } else {
    block = std::make_shared<const std::string>(dsml);
    blocks_.emplace(std::string_view(*block), std::make_pair(block, size_t{1}));
    bytes_ += block->size();
  }
  lru_.push_back({id, std::move(block)});
  by_id_[id] = std::prev(lru_.end());
  // The new entry is last, so it survives unless it alone breaks a limit (checked above).
  while (lru_.size() > max_ids_ || bytes_ > max_bytes_) drop_oldest_locked();
}

std::optional<std::string> ToolReplay::lookup(std::string_view id) {
  if (!enabled()) return std::nullopt;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_id_.find(std::string(id));
  if (it == by_id_.end()) return std::nullopt;
  lru_.splice(lru_.end(), lru_, it->second);
  return *it->second->block;
}

bool ToolReplay::contains(std::string_view id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return by_id_.count(std::string(id)) > 0;
}

std::vector<std::pair<std::string, std::string>> ToolReplay::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(lru_.size());
  for (const auto& e : lru_) out.emplace_back(e.id, *e.block);
  return out;
}

size_t ToolReplay::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

size_t ToolReplay::block_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

void ToolReplay::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  lru_.clear();
  by_id_.clear();
  blocks_.clear();
  bytes_ = 0;
}

std::string ToolReplay::random_id(std::string_view prefix) {
  // Ids must not be guessable by other clients.
  return random::unguessable_hex(prefix, 32);
}

std::string ToolReplay::new_id(std::string_view prefix) const {
  while (true) {
    std::string id = random_id(prefix);
    if (!contains(id)) return id;
  }
}

}  // namespace ds4::server
