// The disk KV cache directory: lookup by longest rendered-byte prefix, crash-safe writes,
// validation of everything read, eviction under a space budget (docs/kvcache.md, src/kvcache/README.md).
//
// Safety between processes sharing one directory:
// * writes go to a unique temporary file (`<name>.tmp.<pid>.<seq>`, O_EXCL), are fsync'ed,
//   then renamed over the final name (atomic), and the directory is fsync'ed;
// * a reader holds a shared flock on the file while it reads; deleting (eviction, consumed,
//   corrupt) first takes an exclusive non-blocking flock and checks the name still refers to
//   the locked inode, so a file being read is never deleted;
// * a header or payload that fails validation (truncated, bit flips, another format
//   revision, another model shape) is never loaded; corrupt files are removed.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ds4/engine.h"
#include "kvcache/format.h"
#include "kvcache/policy.h"
#include "quant/types.h"

namespace ds4::kvcache {

// What a payload must match to be loadable by this process.
struct ModelIdentity {
  uint8_t quant_bits = 4;  // 2 or 4 (routed expert width class)
  uint32_t layers = 0;
  uint32_t head_dim = 0;
  uint32_t index_dim = 0;
  uint32_t vocab = 0;
};
ModelIdentity identity_of(const ModelConfig& c, uint8_t quant_bits);
// The header's quant class of a model from its routed experts' tensor type: 2 for the 2-bit
// formats, else 4.
uint8_t quant_bits_for(quant::Type expert_type);
// Name of the tensor whose type decides it.
inline constexpr const char* kExpertTensorName = "blk.0.ffn_gate_exps.weight";

// One file of the directory as seen by a scan.
struct FileInfo {
  std::string name;  // "<sha1>.kv"
  uint64_t bytes = 0;
  std::optional<FileHeader> header;  // nullopt: unreadable header
  uint32_t key_bytes = 0;
};

struct Loaded {
  std::string name;
  int tokens = 0;
  size_t key_bytes = 0;
  Reason reason = Reason::Unknown;
  uint8_t ext_flags = 0;
  std::vector<ToolReplayEntry> tools;
};

class DiskCache {
 public:
  using LogFn = std::function<void(const std::string&)>;

  // Creates the directory (0700) when missing, removes temporary files left by dead
  // processes, then evicts down to the budget. Throws std::runtime_error when the
  // directory cannot be used.
  DiskCache(CacheOptions options, ModelIdentity identity, LogFn log);

  const CacheOptions& options() const { return opt_; }
  const std::string& dir() const { return opt_.dir; }

  // Finds the longest stored key that is a byte prefix of `prompt` and loads it into
  // `session` (which must be of this model; its context bounds the stored one).
  // `accept(key bytes, tokens)` may veto a candidate (e.g. a cut inside a control marker, or
  // fewer tokens than the live session already shares); on any failure the next candidate
  // is tried. On a miss the session is left as it was unless a
  // load failed half-way, in which case it is reset. Logs the decision.
  std::optional<Loaded> load_longest_prefix(std::string_view prompt, Session& session,
                                            const std::function<bool(size_t, int)>& accept = {});

  // Writes the session's whole live state under `key` (the text its tokens decode to).
  // Entries whose DSML occurs in the key go into the KTM section. Returns false (with a
  // log line) when it did not write: too short, over budget, I/O failure, already stored.
  bool save(const Session& session, std::string_view key, Reason reason,
            const std::vector<ToolReplayEntry>& tools = {}, uint8_t ext_flags = 0);

  // Deletes lowest-score files until the total fits the budget; `protect` (a file name)
  // stays unless it alone exceeds the budget.
  void evict_to_budget(const std::string& protect = {});

  // Removes one checkpoint (same rules as eviction: never one a reader holds).
  bool remove(const std::string& name) { return remove_file(name, "replaced"); }
  // The key text stored in `name`, if its header reads (nothing else is validated).
  std::optional<std::string> read_key(const std::string& name) const;

  // The tool-id map entries of every file, least recently used file first (to seed the
  // tool replay memory at startup). Entries whose DSML is not in the file's key are dropped.
  std::vector<ToolReplayEntry> read_tool_maps(size_t max_count = kDefaultMaxToolEntries) const;

  // The `.kv` files now in the directory (headers read, nothing validated beyond them).
  std::vector<FileInfo> scan() const;
  uint64_t total_bytes() const;

  // Test hook: the time used for created / last-used / eviction (unix seconds).
  std::function<uint64_t()> clock;

 private:
  std::optional<Loaded> try_load(const FileInfo& f, std::string_view prompt, Session& session,
                                 bool* session_touched);
  // Removes `name` unless another process holds a lock on it; logs why.
  bool remove_file(const std::string& name, const std::string& why);
  void remove_stale_temporaries();
  std::string path(const std::string& name) const;
  uint64_t now() const;
  void log(const std::string& line) const;

  CacheOptions opt_;
  ModelIdentity id_;
  LogFn log_;
  uint64_t seq_ = 0;
};

}  // namespace ds4::kvcache
