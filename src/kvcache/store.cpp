#include "kvcache/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstring>
#include <istream>
#include <ostream>
#include <stdexcept>
#include <streambuf>

#include "kvcache/hash.h"

namespace ds4::kvcache {

ModelIdentity identity_of(const ModelConfig& c, uint8_t quant_bits) {
  ModelIdentity id;
  id.quant_bits = quant_bits;
  id.layers = static_cast<uint32_t>(c.n_layers);
  id.head_dim = static_cast<uint32_t>(c.head_dim);
  id.index_dim = static_cast<uint32_t>(c.index_head_dim);
  id.vocab = static_cast<uint32_t>(c.vocab);
  return id;
}

uint8_t quant_bits_for(quant::Type t) {
  using quant::Type;
  return (t == Type::IQ2_XXS || t == Type::IQ2_XS || t == Type::IQ2_S || t == Type::Q2_K) ? 2 : 4;
}

namespace {

// Closes on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

bool is_cache_name(const std::string& n) {
  if (n.size() != 43 || n.compare(40, 3, ".kv") != 0) return false;
  return std::all_of(n.begin(), n.begin() + 40,
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool read_exact(int fd, void* buf, size_t n, uint64_t off) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return true;
}

bool write_all(int fd, const void* buf, size_t n) {
  auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Streams [begin, end) of a file, folding every byte handed out into a CRC-32C.
class ReadCrcBuf : public std::streambuf {
 public:
  ReadCrcBuf(int fd, uint64_t begin, uint64_t end, uint32_t crc)
      : fd_(fd), off_(begin), end_(end), crc_(crc), buf_(1 << 20) {}
  uint32_t crc() const { return crc_; }
  uint64_t consumed() const { return off_ - static_cast<uint64_t>(egptr() - gptr()); }

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    if (off_ >= end_) return traits_type::eof();
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf_.size(), end_ - off_));
    if (!read_exact(fd_, buf_.data(), n, off_)) return traits_type::eof();
    crc_ = crc32c(buf_.data(), n, crc_);
    off_ += n;
    setg(buf_.data(), buf_.data(), buf_.data() + n);
    return traits_type::to_int_type(*gptr());
  }

 private:
  int fd_;
  uint64_t off_, end_;
  uint32_t crc_;
  std::vector<char> buf_;
};

// Writes to a file descriptor, counting bytes and folding them into a CRC-32C.
class WriteCrcBuf : public std::streambuf {
 public:
  WriteCrcBuf(int fd, uint32_t crc) : fd_(fd), crc_(crc), buf_(1 << 20) {
    setp(buf_.data(), buf_.data() + buf_.size());
  }
  bool flush_all() { return drain(); }
  uint32_t crc() const { return crc_; }
  uint64_t bytes() const { return bytes_ + static_cast<uint64_t>(pptr() - pbase()); }
  bool failed() const { return failed_; }

 protected:
  int_type overflow(int_type c) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  int sync() override { return drain() ? 0 : -1; }

 private:
  bool drain() {
    const size_t n = static_cast<size_t>(pptr() - pbase());
    if (n > 0) {
      crc_ = crc32c(pbase(), n, crc_);
      if (!write_all(fd_, pbase(), n)) failed_ = true;
      bytes_ += n;
      setp(buf_.data(), buf_.data() + buf_.size());
    }
    return !failed_;
  }
  int fd_;
  uint32_t crc_;
  uint64_t bytes_ = 0;
  bool failed_ = false;
  std::vector<char> buf_;
};

// Whole-file checksum check (used only where the payload is not being loaded anyway).
bool checksum_matches(int fd, uint64_t size, const FileHeader& h) {
  std::vector<char> buf(1 << 20);
  uint32_t crc = 0;
  for (uint64_t off = kHeaderBytes; off < size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
    if (!read_exact(fd, buf.data(), n, off)) return false;
    crc = crc32c(buf.data(), n, crc);
    off += n;
  }
  return header_checksum(h, crc) == h.checksum;
}

struct Candidate {
  FileInfo info;
  uint32_t tokens;
};

}  // namespace

DiskCache::DiskCache(CacheOptions options, ModelIdentity identity, LogFn log_fn)
    : opt_(std::move(options)), id_(identity), log_(std::move(log_fn)) {
  if (opt_.dir.empty()) throw std::runtime_error("kv cache: empty directory name");
  if (std::string why = opt_.check(); !why.empty()) throw std::runtime_error(why);
  while (opt_.dir.size() > 1 && opt_.dir.back() == '/') opt_.dir.pop_back();
  if (::mkdir(opt_.dir.c_str(), 0700) != 0 && errno != EEXIST) {
    throw std::runtime_error("kv cache: cannot create " + opt_.dir + ": " + std::strerror(errno));
  }
  struct stat st;
  if (::stat(opt_.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw std::runtime_error("kv cache: " + opt_.dir + " is not a directory");
  }
  if (::access(opt_.dir.c_str(), R_OK | W_OK | X_OK) != 0) {
    throw std::runtime_error("kv cache: " + opt_.dir + " is not writable");
  }
  remove_stale_temporaries();
  evict_to_budget();
  const auto files = scan();
  log("kv cache: dir " + opt_.dir + ", " + std::to_string(files.size()) + " files, " +
      std::to_string(total_bytes() >> 20) + " MiB of " + std::to_string(opt_.budget_bytes() >> 20) +
      " MiB");
}

std::string DiskCache::path(const std::string& name) const { return opt_.dir + "/" + name; }

uint64_t DiskCache::now() const {
  if (clock) return clock();
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
}

void DiskCache::log(const std::string& line) const {
  if (log_) log_(line);
}

void DiskCache::remove_stale_temporaries() {
  DIR* d = ::opendir(opt_.dir.c_str());
  if (!d) return;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    const size_t t = n.find(".tmp.");
    if (t == std::string::npos) continue;
    // "<name>.tmp.<pid>.<seq>": a live writer's file is left alone.
    const long pid = std::strtol(n.c_str() + t + 5, nullptr, 10);
    if (pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) continue;
    stale.push_back(n);
  }
  ::closedir(d);
  for (const auto& n : stale) {
    if (::unlink(path(n).c_str()) == 0) log("kv cache: removed stale temporary " + n);
  }
}

std::vector<FileInfo> DiskCache::scan() const {
  std::vector<FileInfo> out;
  DIR* d = ::opendir(opt_.dir.c_str());
  if (!d) return out;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (is_cache_name(n)) names.push_back(std::move(n));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (auto& n : names) {
    Fd fd(::open(path(n).c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.fd < 0) continue;  // gone meanwhile
    struct stat st;
    if (::fstat(fd.fd, &st) != 0) continue;
    FileInfo f;
    f.name = n;
    f.bytes = static_cast<uint64_t>(st.st_size);
    uint8_t h[kHeaderBytes + 4];
    if (read_exact(fd.fd, h, sizeof h, 0)) {
      f.header = decode_header(h, nullptr);
      f.key_bytes = get_u32(h + kHeaderBytes);
    }
    out.push_back(std::move(f));
  }
  return out;
}

std::optional<std::string> DiskCache::read_key(const std::string& name) const {
  Fd fd(::open(path(name).c_str(), O_RDONLY | O_CLOEXEC));
  uint8_t h[kHeaderBytes + 4];
  struct stat st;
  if (fd.fd < 0 || ::fstat(fd.fd, &st) != 0 || !read_exact(fd.fd, h, sizeof h, 0) ||
      !decode_header(h, nullptr)) {
    return std::nullopt;
  }
  const uint64_t len = get_u32(h + kHeaderBytes);
  if (len == 0 || kHeaderBytes + 4 + len > static_cast<uint64_t>(st.st_size)) return std::nullopt;
  std::string key(len, '\0');
  if (!read_exact(fd.fd, key.data(), len, kHeaderBytes + 4)) return std::nullopt;
  return key;
}

std::vector<ToolReplayEntry> DiskCache::read_tool_maps(size_t max_count) const {
  auto files = scan();
  std::sort(files.begin(), files.end(), [](const FileInfo& a, const FileInfo& b) {
    const uint64_t ua = a.header ? a.header->last_used : 0, ub = b.header ? b.header->last_used : 0;
    return ua < ub;
  });
  std::vector<ToolReplayEntry> out;
  size_t files_with_map = 0;
  for (const auto& f : files) {
    if (!f.header || !(f.header->ext_flags & kExtToolMap)) continue;
    Fd fd(::open(path(f.name).c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st;
    if (fd.fd < 0 || ::fstat(fd.fd, &st) != 0) continue;
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (f.header->payload_bytes > size) continue;
    const uint64_t at = kHeaderBytes + 4 + uint64_t(f.key_bytes) + f.header->payload_bytes;
    if (at >= size || size - at > kMaxToolDsmlBytes) continue;
    std::string key(f.key_bytes, '\0'), sec(size - at, '\0');
    if (!read_exact(fd.fd, key.data(), key.size(), kHeaderBytes + 4) ||
        !read_exact(fd.fd, sec.data(), sec.size(), at)) {
      continue;
    }
    // Without reading the payload the checksum cannot be checked here; a block must at
    // least occur in the file's key, whose SHA-1 is its name.
    if (sha1_hex(key) != f.name.substr(0, 40)) continue;
    std::string why;
    auto tools = decode_tool_map(sec, max_count, &why);
    if (!tools) {
      log("kv cache: skipped tool map of " + f.name + ": " + why);
      continue;
    }
    ++files_with_map;
    for (auto& e : *tools) {
      if (key.find(e.dsml) != std::string::npos) out.push_back(std::move(e));
    }
  }
  if (files_with_map > 0) {
    log("kv cache: " + std::to_string(out.size()) + " tool replay entries from " +
        std::to_string(files_with_map) + " files");
  }
  return out;
}

uint64_t DiskCache::total_bytes() const {
  uint64_t total = 0;
  for (const auto& f : scan()) total += f.bytes;
  return total;
}

bool DiskCache::remove_file(const std::string& name, const std::string& why) {
  const std::string p = path(name);
  Fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.fd < 0) return false;
  if (::flock(fd.fd, LOCK_EX | LOCK_NB) != 0) {
    log("kv cache: keep " + name + " (" + why + "): in use by a reader");
    return false;
  }
  // The name may have been renamed over since we opened it: delete only what we locked.
  struct stat a, b;
  if (::fstat(fd.fd, &a) != 0 || ::stat(p.c_str(), &b) != 0 || a.st_ino != b.st_ino ||
      a.st_dev != b.st_dev) {
    return false;
  }
  if (::unlink(p.c_str()) != 0) return false;
  log("kv cache: removed " + name + " (" + why + ")");
  return true;
}

void DiskCache::evict_to_budget(const std::string& protect) {
  auto files = scan();
  uint64_t total = 0;
  for (const auto& f : files) total += f.bytes;
  const uint64_t budget = opt_.budget_bytes();
  if (total <= budget) return;
  const uint64_t t = now();
  struct Scored {
    const FileInfo* f;
    double score;
    uint64_t last_used;
  };
  std::vector<Scored> order;
  for (const auto& f : files) {
    if (f.name == protect && f.bytes <= budget) continue;
    // A file whose header we cannot use is worth nothing here.
    const double s = f.header ? eviction_score(f.header->hits, f.header->tokens, f.bytes,
                                               f.header->last_used, t)
                              : -1.0;
    order.push_back({&f, s, f.header ? f.header->last_used : 0});
  }
  std::sort(order.begin(), order.end(), [](const Scored& a, const Scored& b) {
    if (a.score != b.score) return a.score < b.score;
    return a.last_used < b.last_used;
  });
  for (const auto& s : order) {
    if (total <= budget) break;
    char why[160];
    std::snprintf(why, sizeof why, "evict: score %.3g, %u tokens, %llu bytes; total %llu > budget %llu",
                  s.score, s.f->header ? s.f->header->tokens : 0u,
                  static_cast<unsigned long long>(s.f->bytes),
                  static_cast<unsigned long long>(total), static_cast<unsigned long long>(budget));
    if (remove_file(s.f->name, why)) total -= s.f->bytes;
  }
}

std::optional<Loaded> DiskCache::load_longest_prefix(std::string_view prompt, Session& session,
                                                     const std::function<bool(size_t, int)>& accept) {
  const auto files = scan();
  std::vector<Candidate> cands;
  std::vector<std::pair<size_t, std::string>> sha_by_len;  // prompt prefix hashes, memoised
  for (const auto& f : files) {
    if (!f.header) {
      // A final name always holds a complete file (writes are renamed into place), so an
      // unreadable header is damage; another format version is left to its writer.
      uint8_t hb[kHeaderBytes] = {};
      std::string why = "truncated header";
      Fd fd(::open(path(f.name).c_str(), O_RDONLY | O_CLOEXEC));
      if (fd.fd >= 0 && f.bytes >= kHeaderBytes && read_exact(fd.fd, hb, sizeof hb, 0)) {
        decode_header(hb, &why);
      }
      if (why.rfind("format version", 0) != 0 && why.rfind("revision", 0) != 0 &&
          why.rfind("no checksum", 0) != 0) {
        log("kv cache: rejected " + f.name + ": " + why);
        remove_file(f.name, "corrupt: " + why);
      }
      continue;
    }
    const FileHeader& h = *f.header;
    if (f.key_bytes == 0 || f.key_bytes > prompt.size()) continue;
    if (h.tokens < static_cast<uint32_t>(opt_.min_tokens)) continue;
    if (h.ctx > static_cast<uint32_t>(session.context_size())) continue;
    if (opt_.reject_different_quant && h.quant_bits != id_.quant_bits) continue;
    if (accept && !accept(f.key_bytes, static_cast<int>(h.tokens))) continue;
    std::string sha;
    for (const auto& [len, s] : sha_by_len) {
      if (len == f.key_bytes) sha = s;
    }
    if (sha.empty()) {
      sha = sha1_hex(prompt.substr(0, f.key_bytes));
      sha_by_len.emplace_back(f.key_bytes, sha);
    }
    if (f.name.compare(0, 40, sha) != 0) continue;
    cands.push_back({f, h.tokens});
  }
  std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) {
    if (a.info.key_bytes != b.info.key_bytes) return a.info.key_bytes > b.info.key_bytes;
    return a.tokens > b.tokens;
  });
  for (const auto& c : cands) {
    bool touched = false;
    if (auto hit = try_load(c.info, prompt, session, &touched)) return hit;
    if (touched) session.reset();
  }
  log("kv cache: miss (prompt " + std::to_string(prompt.size()) + " bytes, " +
      std::to_string(files.size()) + " files, " + std::to_string(cands.size()) +
      " candidates)");
  return std::nullopt;
}

std::optional<Loaded> DiskCache::try_load(const FileInfo& f, std::string_view prompt,
                                          Session& session, bool* touched) {
  const std::string p = path(f.name);
  bool writable = true;
  Fd fd(::open(p.c_str(), O_RDWR | O_CLOEXEC));
  if (fd.fd < 0) {
    writable = false;
    fd.fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  }
  if (fd.fd < 0) return std::nullopt;  // evicted meanwhile
  if (::flock(fd.fd, LOCK_SH) != 0) return std::nullopt;
  auto corrupt = [&](const std::string& why) -> std::optional<Loaded> {
    log("kv cache: rejected " + f.name + ": " + why);
    ::flock(fd.fd, LOCK_UN);
    remove_file(f.name, "corrupt: " + why);
    return std::nullopt;
  };
  auto skip = [&](const std::string& why) -> std::optional<Loaded> {
    log("kv cache: skipped " + f.name + ": " + why + " (kept)");
    return std::nullopt;
  };
  struct stat st;
  if (::fstat(fd.fd, &st) != 0) return std::nullopt;
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  uint8_t hb[kHeaderBytes + 4];
  if (size < sizeof hb || !read_exact(fd.fd, hb, sizeof hb, 0)) return corrupt("truncated header");
  std::string why;
  auto h = decode_header(hb, &why);
  if (!h) {
    if (why.rfind("format version", 0) == 0 || why.rfind("revision", 0) == 0 ||
        why.rfind("no checksum", 0) == 0) {
      return skip(why);
    }
    return corrupt(why);
  }
  const uint64_t key_len = get_u32(hb + kHeaderBytes);
  const uint64_t payload_at = kHeaderBytes + 4 + key_len;
  if (key_len == 0 || h->payload_bytes > size || payload_at + h->payload_bytes > size) {
    return corrupt("truncated");
  }
  if (key_len > prompt.size()) return std::nullopt;
  std::string key(key_len, '\0');
  if (!read_exact(fd.fd, key.data(), key_len, kHeaderBytes + 4)) return corrupt("truncated key");
  if (sha1_hex(key) != f.name.substr(0, 40)) return corrupt("key does not hash to the file name");
  if (prompt.compare(0, key_len, key) != 0) return std::nullopt;  // SHA-1 collision, in theory
  uint8_t ph[kPayloadHeaderBytes];
  if (!read_exact(fd.fd, ph, sizeof ph, payload_at)) return corrupt("truncated payload");
  auto pinfo = decode_payload_header(ph, &why);
  if (!pinfo) return corrupt(why);
  if (pinfo->layers != id_.layers || pinfo->head_dim != id_.head_dim ||
      pinfo->index_dim != id_.index_dim || pinfo->vocab != id_.vocab) {
    // Another model's file is kept for its owner; a damaged one of ours is not.
    if (!checksum_matches(fd.fd, size, *h)) return corrupt("checksum mismatch");
    return skip("another model shape (layers " + std::to_string(pinfo->layers) + ", vocab " +
                std::to_string(pinfo->vocab) + ")");
  }
  if (pinfo->tokens != h->tokens) return corrupt("token count differs from the payload");
  if (pinfo->ctx > static_cast<uint32_t>(session.context_size())) {
    return skip("stored ctx " + std::to_string(pinfo->ctx) + " exceeds ours");
  }

  uint32_t crc = crc32c(hb + kHeaderBytes, 4);
  crc = crc32c(key.data(), key.size(), crc);
  ReadCrcBuf payload(fd.fd, payload_at, payload_at + h->payload_bytes, crc);
  *touched = true;
  try {
    std::istream in(&payload);
    session.load_snapshot(in);
  } catch (const Error& e) {
    return corrupt(std::string("payload: ") + e.what());
  }
  if (payload.consumed() != payload_at + h->payload_bytes) return corrupt("payload length");
  crc = payload.crc();
  const uint64_t tail_at = payload_at + h->payload_bytes;
  std::string tail(size - tail_at, '\0');
  if (!tail.empty() && !read_exact(fd.fd, tail.data(), tail.size(), tail_at)) {
    return corrupt("truncated tail");
  }
  crc = crc32c(tail.data(), tail.size(), crc);
  if (header_checksum(*h, crc) != h->checksum) return corrupt("checksum mismatch");

  Loaded out;
  out.name = f.name;
  out.tokens = static_cast<int>(h->tokens);
  out.key_bytes = key_len;
  out.reason = h->reason;
  out.ext_flags = h->ext_flags;
  if (h->ext_flags & kExtToolMap) {
    auto tools = decode_tool_map(tail, kDefaultMaxToolEntries, &why);
    if (!tools) return corrupt(why);
    out.tools = std::move(*tools);
  } else if (!tail.empty()) {
    return corrupt("bytes after the payload");
  }
  if (session.n_tokens() != out.tokens) return corrupt("loaded token count differs");

  char line[256];
  std::snprintf(line, sizeof line,
                "kv cache: hit %s tokens=%d key=%zu/%zu bytes reason=%s hits=%u tools=%zu",
                f.name.c_str(), out.tokens, out.key_bytes, prompt.size(), reason_name(h->reason),
                h->hits + 1, out.tools.size());
  log(line);
  if (opt_.cold_max_tokens > 0 && h->tokens > static_cast<uint32_t>(opt_.cold_max_tokens)) {
    // Large checkpoints are consumed: the live session owns this state now and saves it
    // again when it is evicted.
    ::flock(fd.fd, LOCK_UN);
    remove_file(f.name, "consumed by the live session");
  } else if (writable) {
    uint8_t b[4], l[8];
    put_u32(b, h->hits + 1);
    put_u64(l, now());
    // Advisory fields outside the checksum; a lost update only changes eviction order.
    if (::pwrite(fd.fd, b, 4, 12) != 4 || ::pwrite(fd.fd, l, 8, 32) != 8) {
      log("kv cache: could not update hit count of " + f.name);
    }
  }
  return out;
}

bool DiskCache::save(const Session& session, std::string_view key, Reason reason,
                     const std::vector<ToolReplayEntry>& tools, uint8_t ext_flags) {
  const int n = session.n_tokens();
  const char* rn = reason_name(reason);
  if (n < opt_.min_tokens) {
    log(std::string("kv cache: save ") + rn + " skipped: " + std::to_string(n) +
        " tokens < min " + std::to_string(opt_.min_tokens));
    return false;
  }
  if (key.empty()) return false;
  const std::string name = sha1_hex(key) + ".kv";
  const auto ktm = tool_entries_in_key(tools, key);
  if (!ktm.empty()) ext_flags |= kExtToolMap;
  else ext_flags &= static_cast<uint8_t>(~kExtToolMap);

  FileHeader h;
  h.quant_bits = id_.quant_bits;
  h.reason = reason;
  h.ext_flags = ext_flags;
  h.tokens = static_cast<uint32_t>(n);
  h.ctx = static_cast<uint32_t>(session.context_size());
  h.created = h.last_used = now();
  // Same key already stored: keep its statistics; an identical checkpoint is not rewritten.
  {
    Fd old(::open(path(name).c_str(), O_RDONLY | O_CLOEXEC));
    uint8_t ob[kHeaderBytes + 4];
    if (old.fd >= 0 && read_exact(old.fd, ob, sizeof ob, 0)) {
      if (auto oh = decode_header(ob, nullptr)) {
        if (oh->tokens == h.tokens && oh->quant_bits == h.quant_bits && oh->ctx == h.ctx &&
            ktm.empty() && !(oh->ext_flags & kExtToolMap)) {
          log(std::string("kv cache: save ") + rn + " skipped: " + name + " already holds " +
              std::to_string(n) + " tokens");
          return false;
        }
        h.hits = oh->hits;
        h.created = oh->created;
      }
    }
  }

  const std::string tmp = path(name.substr(0, 40)) + ".tmp." + std::to_string(::getpid()) + "." +
                          std::to_string(++seq_);
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.fd < 0) {
    log("kv cache: save " + std::string(rn) + " failed: " + tmp + ": " + std::strerror(errno));
    return false;
  }
  auto fail = [&](const std::string& why) {
    ::unlink(tmp.c_str());
    log(std::string("kv cache: save ") + rn + " failed: " + why);
    return false;
  };
  uint8_t hb[kHeaderBytes] = {};
  if (!write_all(fd.fd, hb, sizeof hb)) return fail(std::strerror(errno));
  uint32_t crc = 0;
  {
    WriteCrcBuf body(fd.fd, 0);
    std::ostream out(&body);
    uint8_t kl[4];
    put_u32(kl, static_cast<uint32_t>(key.size()));
    out.write(reinterpret_cast<const char*>(kl), 4);
    out.write(key.data(), static_cast<std::streamsize>(key.size()));
    const uint64_t before = body.bytes();
    try {
      session.save_snapshot(out);
    } catch (const std::exception& e) {
      return fail(e.what());
    }
    out.flush();
    h.payload_bytes = body.bytes() - before;
    if (!ktm.empty()) {
      const std::string sec = encode_tool_map(ktm);
      out.write(sec.data(), static_cast<std::streamsize>(sec.size()));
    }
    out.flush();
    if (!out || body.failed() || !body.flush_all()) return fail("write error");
    crc = body.crc();
  }
  h.checksum = header_checksum(h, crc);
  encode_header(h, hb);
  if (::pwrite(fd.fd, hb, sizeof hb, 0) != static_cast<ssize_t>(sizeof hb)) {
    return fail("header write");
  }
  struct stat st;
  if (::fstat(fd.fd, &st) != 0) return fail("stat");
  const uint64_t bytes = static_cast<uint64_t>(st.st_size);
  if (!file_fits(opt_, bytes)) {
    return fail(std::to_string(bytes) + " bytes do not fit the budget of " +
                std::to_string(opt_.budget_bytes()) + " bytes");
  }
  if (::fsync(fd.fd) != 0) return fail(std::string("fsync: ") + std::strerror(errno));
  if (::rename(tmp.c_str(), path(name).c_str()) != 0) {
    return fail(std::string("rename: ") + std::strerror(errno));
  }
  {
    // Makes the rename itself durable.
    Fd dir(::open(opt_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.fd >= 0) ::fsync(dir.fd);
  }
  log(std::string("kv cache: saved ") + rn + " " + name + " tokens=" + std::to_string(n) +
      " key=" + std::to_string(key.size()) + " bytes size=" + std::to_string(bytes) +
      " tools=" + std::to_string(ktm.size()));
  evict_to_budget(name);
  return true;
}

}  // namespace ds4::kvcache
