#include "kvcache/format.h"

#include <cstring>

#include "kvcache/hash.h"

namespace ds4::kvcache {

const char* reason_name(Reason r) {
  switch (r) {
    case Reason::Cold: return "cold";
    case Reason::Continued: return "continued";
    case Reason::Evict: return "evict";
    case Reason::Shutdown: return "shutdown";
    case Reason::AgentSystem: return "agent-system";
    case Reason::AgentSession: return "agent-session";
    default: return "unknown";
  }
}

void encode_header(const FileHeader& h, uint8_t out[kHeaderBytes]) {
  std::memset(out, 0, kHeaderBytes);
  out[0] = 'K';
  out[1] = 'V';
  out[2] = 'C';
  out[3] = h.version;
  out[4] = h.quant_bits;
  out[5] = static_cast<uint8_t>(h.reason);
  out[6] = h.ext_flags;
  out[7] = h.revision;
  put_u32(out + 8, h.tokens);
  put_u32(out + 12, h.hits);
  put_u32(out + 16, h.ctx);
  put_u32(out + 20, h.checksum);
  put_u64(out + 24, h.created);
  put_u64(out + 32, h.last_used);
  put_u64(out + 40, h.payload_bytes);
}

std::optional<FileHeader> decode_header(const uint8_t in[kHeaderBytes], std::string* error) {
  auto fail = [&](const std::string& why) -> std::optional<FileHeader> {
    if (error) *error = why;
    return std::nullopt;
  };
  if (in[0] != 'K' || in[1] != 'V' || in[2] != 'C') return fail("bad magic");
  FileHeader h;
  h.version = in[3];
  if (h.version != kFileVersion) return fail("format version " + std::to_string(h.version));
  h.quant_bits = in[4];
  if (h.quant_bits != 2 && h.quant_bits != 4) {
    return fail("quant bits " + std::to_string(h.quant_bits));
  }
  h.reason = static_cast<Reason>(in[5]);
  h.ext_flags = in[6];
  h.revision = in[7];
  if (h.revision != kRevision) {
    return fail(h.revision == 0 ? "no checksum (written without crash-safety fields)"
                                : "revision " + std::to_string(h.revision));
  }
  h.tokens = get_u32(in + 8);
  if (h.tokens == 0) return fail("zero tokens");
  h.hits = get_u32(in + 12);
  h.ctx = get_u32(in + 16);
  h.checksum = get_u32(in + 20);
  h.created = get_u64(in + 24);
  h.last_used = get_u64(in + 32);
  h.payload_bytes = get_u64(in + 40);
  if (h.payload_bytes < kPayloadHeaderBytes) return fail("payload too short");
  return h;
}

uint32_t header_checksum(const FileHeader& h, uint32_t body_crc) {
  FileHeader stable = h;
  stable.hits = 0;
  stable.last_used = 0;
  stable.checksum = 0;
  uint8_t bytes[kHeaderBytes];
  encode_header(stable, bytes);
  return crc32c(bytes, sizeof bytes, body_crc);
}

std::string encode_tool_map(const std::vector<ToolReplayEntry>& entries) {
  std::string out = "KTM";
  out += static_cast<char>(1);
  auto u32 = [&](uint32_t v) {
    uint8_t b[4];
    put_u32(b, v);
    out.append(reinterpret_cast<const char*>(b), 4);
  };
  u32(static_cast<uint32_t>(entries.size()));
  for (const auto& e : entries) {
    u32(static_cast<uint32_t>(e.id.size()));
    u32(static_cast<uint32_t>(e.dsml.size()));
    out += e.id;
    out += e.dsml;
  }
  return out;
}

std::optional<std::vector<ToolReplayEntry>> decode_tool_map(std::string_view sec,
                                                            size_t max_count, std::string* error) {
  auto fail = [&](const char* why) -> std::optional<std::vector<ToolReplayEntry>> {
    if (error) *error = why;
    return std::nullopt;
  };
  const auto* t = reinterpret_cast<const uint8_t*>(sec.data());
  if (sec.size() < 8 || sec.compare(0, 3, "KTM") != 0 || t[3] != 1) return fail("tool map header");
  const uint32_t count = get_u32(t + 4);
  if (count > max_count) return fail("tool map count over the limit");
  std::vector<ToolReplayEntry> out;
  size_t at = 8;
  for (uint32_t i = 0; i < count; ++i) {
    if (sec.size() - at < 8) return fail("tool map truncated");
    const uint64_t il = get_u32(t + at), dl = get_u32(t + at + 4);
    at += 8;
    if (il == 0 || il > kMaxToolIdBytes || dl == 0 || dl > kMaxToolDsmlBytes) {
      return fail("tool map entry size");
    }
    if (sec.size() - at < il + dl) return fail("tool map truncated");
    out.push_back({std::string(sec.substr(at, il)), std::string(sec.substr(at + il, dl))});
    at += il + dl;
  }
  if (at != sec.size()) return fail("bytes after the tool map");
  return out;
}

std::vector<ToolReplayEntry> tool_entries_in_key(const std::vector<ToolReplayEntry>& entries,
                                                 std::string_view key) {
  std::vector<ToolReplayEntry> out;
  for (const auto& e : entries) {
    if (e.id.empty() || e.id.size() > kMaxToolIdBytes || e.dsml.empty() ||
        e.dsml.size() > kMaxToolDsmlBytes) {
      continue;  // never write what a load would reject
    }
    if (key.find(e.dsml) != std::string_view::npos) out.push_back(e);
  }
  return out;
}

std::optional<PayloadInfo> decode_payload_header(const uint8_t in[kPayloadHeaderBytes],
                                                 std::string* error) {
  auto fail = [&](const std::string& why) -> std::optional<PayloadInfo> {
    if (error) *error = why;
    return std::nullopt;
  };
  if (get_u32(in) != kPayloadMagic) return fail("payload magic");
  PayloadInfo p;
  p.version = get_u32(in + 4);
  if (p.version != 1) return fail("payload version " + std::to_string(p.version));
  p.ctx = get_u32(in + 8);
  p.tokens = get_u32(in + 28);
  p.layers = get_u32(in + 32);
  p.head_dim = get_u32(in + 36);
  p.index_dim = get_u32(in + 40);
  p.vocab = get_u32(in + 44);
  return p;
}

}  // namespace ds4::kvcache
