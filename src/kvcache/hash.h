// Hashes of the disk KV cache: SHA-1 names the files (docs/kvcache.md), CRC-32C guards
// their contents against truncation and bit flips (our addition to the format).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ds4::kvcache {

// Lower-case hex SHA-1 of `bytes` (40 characters), computed by OpenSSL's libcrypto. Used only as
// a file name, not for security.
std::string sha1_hex(std::string_view bytes);

// CRC-32C (Castagnoli, reflected, init/final xor 0xFFFFFFFF). `crc` is the running value
// returned by a previous call (start with 0), so crc32c(b, crc32c(a)) == crc32c(a + b).
// Uses the SSE4.2 instruction when the CPU has it.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

}  // namespace ds4::kvcache
