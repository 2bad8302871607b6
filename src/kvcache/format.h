// The "KVC" disk cache file (docs/kvcache.md) and our crash-safety extension.
//
// Layout, little-endian:
//   48-byte header | u32 key length | key bytes | DSV4 engine payload | optional KTM section
// Header fields as in ds4; the two reserved slots carry our extension:
//   byte 7      revision: 1 = this implementation (a CRC-32C is present); 0 = written by a
//               writer without checksums (ds4) — we refuse to load such files
//   bytes 20-23 CRC-32C over the body (bytes 48..end of file), then over the header with
//               the mutable fields (hits, last used) and the checksum itself zeroed
// ds4 ignores both slots, so it can read our files; hits and last-used stay rewritable in
// place because the checksum leaves them out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ds4::kvcache {

inline constexpr size_t kHeaderBytes = 48;
inline constexpr uint8_t kFileVersion = 1;
inline constexpr uint8_t kRevision = 1;
inline constexpr size_t kPayloadHeaderBytes = 13 * 4;
inline constexpr uint32_t kPayloadMagic = 0x34565344;  // "DSV4"

enum class Reason : uint8_t {
  Unknown = 0,
  Cold = 1,
  Continued = 2,
  Evict = 3,
  Shutdown = 4,
  AgentSystem = 5,
  AgentSession = 6,
};
const char* reason_name(Reason r);

// ext flag bits (header byte 6)
inline constexpr uint8_t kExtToolMap = 1;            // a KTM section follows the payload
inline constexpr uint8_t kExtResponsesVisible = 2;   // key is a Responses visible transcript
inline constexpr uint8_t kExtThinkingVisible = 4;    // key is a thinking visible transcript

struct FileHeader {
  uint8_t version = kFileVersion;
  uint8_t quant_bits = 4;  // 2 or 4
  Reason reason = Reason::Unknown;
  uint8_t ext_flags = 0;
  uint8_t revision = kRevision;
  uint32_t tokens = 0;
  uint32_t hits = 0;
  uint32_t ctx = 0;
  uint32_t checksum = 0;
  uint64_t created = 0;    // unix seconds
  uint64_t last_used = 0;  // unix seconds
  uint64_t payload_bytes = 0;
};

void encode_header(const FileHeader& h, uint8_t out[kHeaderBytes]);
// Parses the fixed layout; `error` names what is wrong (magic, version, revision, quant,
// token count). Returns nullopt on error.
std::optional<FileHeader> decode_header(const uint8_t in[kHeaderBytes], std::string* error);
// CRC-32C of the header with hits, last-used and the checksum slot zeroed, continuing from
// `body_crc` (the CRC of bytes 48..end).
uint32_t header_checksum(const FileHeader& h, uint32_t body_crc);

// One remembered tool call: its id and the exact DSML bytes the model sampled for it.
struct ToolReplayEntry {
  std::string id;
  std::string dsml;
  bool operator==(const ToolReplayEntry&) const = default;
};

// KTM section limits (docs/kvcache.md): ids 1..256 bytes, DSML 1 byte..512 MiB, count <= 4 × max ids.
inline constexpr size_t kMaxToolIdBytes = 256;
inline constexpr uint64_t kMaxToolDsmlBytes = uint64_t(512) << 20;

// Serialised KTM section ("KTM", u8 version 1, u32 count, entries).
std::string encode_tool_map(const std::vector<ToolReplayEntry>& entries);
// Parses a whole KTM section (nothing may follow it). nullopt with `error` on any violation of
// the layout or the limits, or more than `max_count` entries.
std::optional<std::vector<ToolReplayEntry>> decode_tool_map(std::string_view section,
                                                            size_t max_count, std::string* error);
inline constexpr size_t kDefaultMaxToolEntries = 4 * 100000;  // 4 × --tool-memory-max-ids
// Entries whose DSML block occurs in `key` (only those are worth storing with that key).
std::vector<ToolReplayEntry> tool_entries_in_key(const std::vector<ToolReplayEntry>& entries,
                                                 std::string_view key);

// The fields of the DSV4 payload header a store needs to judge compatibility.
struct PayloadInfo {
  uint32_t version = 0;
  uint32_t ctx = 0;
  uint32_t tokens = 0;
  uint32_t layers = 0;
  uint32_t head_dim = 0;
  uint32_t index_dim = 0;
  uint32_t vocab = 0;
};
std::optional<PayloadInfo> decode_payload_header(const uint8_t in[kPayloadHeaderBytes],
                                                 std::string* error);

// Little-endian helpers.
inline void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint64_t get_u64(const uint8_t* p) {
  return uint64_t(get_u32(p)) | uint64_t(get_u32(p + 4)) << 32;
}

}  // namespace ds4::kvcache
