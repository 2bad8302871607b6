// Disk KV cache: hashes against published vectors, the policy's worked numbers, the file
// layout at the byte offsets of docs/kvcache.md, and the store on the tiny model (restart hit
// with bit-identical logits, longest prefix, truncations and bit flips rejected, space limit,
// KTM, locking).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "ds4/engine.h"
#include "gguf/gguf.h"
#include "kvcache/format.h"
#include "kvcache/hash.h"
#include "kvcache/policy.h"
#include "kvcache/store.h"
#include "text/tokenizer.h"
#include "test_seed.h"

using namespace ds4;
using namespace ds4::kvcache;
namespace fs = std::filesystem;

namespace {

// ---- hashes: published test vectors (FIPS 180 examples, RFC 3720 / iSCSI CRC-32C check)

TEST(KvHash, Sha1KnownVectors) {
  EXPECT_EQ(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(sha1_hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  EXPECT_EQ(sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  EXPECT_EQ(sha1_hex(std::string(1000000, 'a')), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

// Binary keys (token bytes include NUL and bytes >= 0x80) around the 55/56/64-byte padding
// boundaries; expected digests from Python's hashlib.
TEST(KvHash, Sha1BinaryKeysAtPaddingBoundaries) {
  std::string s;
  for (int i = 0; i < 1000; ++i) s += static_cast<char>(i * 7);
  EXPECT_EQ(sha1_hex(s), "38f3aa587f4aa04965a359f9151092759b3a4c2a");
  EXPECT_EQ(sha1_hex(s.substr(0, 55)), "aecd1643c9903b9bae8cb94f53c50f8a4e18605b");
  EXPECT_EQ(sha1_hex(s.substr(0, 56)), "f5d65c621c02cc8e785159feff8088e3072da1bc");
  EXPECT_EQ(sha1_hex(s.substr(0, 63)), "4952f0fe097e4d6410ae9eab4855aa836caf3bff");
  EXPECT_EQ(sha1_hex(s.substr(0, 64)), "1e17ae1fc093e5daca033553c97a5192ca164486");
  EXPECT_EQ(sha1_hex(s.substr(0, 65)), "ac44f5dbe3e9b5d2733fc9537fcad715c3c20bc3");
}

TEST(KvHash, Crc32cKnownVectors) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
  const std::string a = "hello, ", b = "disk cache with an odd length tail";
  EXPECT_EQ(crc32c(b.data(), b.size(), crc32c(a.data(), a.size())),
            crc32c((a + b).data(), a.size() + b.size()));
}

// ---- policy: worked numbers of the cache policy (src/kvcache/policy.h)

TEST(KvPolicy, ColdStoreLength) {
  CacheOptions o;
  EXPECT_EQ(cold_store_len(o, 11011), 10240);
  EXPECT_EQ(cold_store_len(o, 1695), 1695);  // trimmed and aligned falls under min: full
  EXPECT_EQ(cold_store_len(o, 2048 + 32), 2048);
  EXPECT_EQ(cold_store_len(o, 2048 + 31), 2079);
  o.boundary_align_tokens = 0;
  EXPECT_EQ(cold_store_len(o, 11011), 10979);
}

TEST(KvPolicy, ContinuedFrontiers) {
  CacheOptions o;
  EXPECT_EQ(continued_step(o), 10240);
  EXPECT_EQ(continued_target(o, 0), 10240);
  EXPECT_EQ(continued_target(o, 10240), 20480);
  EXPECT_EQ(continued_target(o, 20480), 30720);
  EXPECT_EQ(continued_target(o, 12000), 20480);
  o.boundary_align_tokens = 0;
  EXPECT_EQ(continued_target(o, 20000), 30000);
  o.continued_interval_tokens = 0;
  EXPECT_EQ(continued_target(o, 5), 0);
}

TEST(KvPolicy, BudgetSlackAndOptions) {
  CacheOptions o;
  o.space_mb = 100;
  const uint64_t budget = 100ull << 20;
  EXPECT_TRUE(file_fits(o, static_cast<uint64_t>(budget / 1.01) - 1));
  EXPECT_FALSE(file_fits(o, static_cast<uint64_t>(budget / 1.01) + 2));
  o.space_mb = 0;
  EXPECT_EQ(o.budget_bytes(), 4096ull << 20);
  o.cold_max_tokens = 100;  // below min 512
  EXPECT_FALSE(o.check().empty());
  o.cold_max_tokens = 0;
  EXPECT_TRUE(o.check().empty());
}

TEST(KvPolicy, ChatAnchor) {
  CacheOptions o;
  o.min_tokens = 3;
  const int32_t U = 100, A = 101;
  // BOS sys sys U text A ... : last User before the first Assistant
  EXPECT_EQ(chat_anchor(o, {0, 1, 2, U, 5, U, 6, A, 7, U, 8}, U, A), 5);
  EXPECT_EQ(chat_anchor(o, {0, U, 5, A}, U, A), -1);  // anchor 1 < min 3
  EXPECT_EQ(chat_anchor(o, {0, 1, 2, 3, 4}, U, A), -1);
}

TEST(KvPolicy, EvictionScore) {
  const uint64_t now = 1'000'000;
  // More hits, more tokens per byte: kept longer.
  EXPECT_GT(eviction_score(4, 1000, 1 << 20, now, now), eviction_score(0, 1000, 1 << 20, now, now));
  EXPECT_DOUBLE_EQ(eviction_score(0, 1000, 2000, now, now), 0.5);
  EXPECT_DOUBLE_EQ(eviction_score(2, 1000, 2000, now, now), 1.5);
  // Six hours idle halves the hits.
  EXPECT_DOUBLE_EQ(eviction_score(2, 1000, 2000, now - 6 * 3600, now), 1.0);
  // Decayed under 0.01: no hits at all.
  EXPECT_DOUBLE_EQ(eviction_score(1, 1000, 2000, now - 60 * 3600, now), 0.5);
}

// ---- file layout at the byte offsets of docs/kvcache.md

TEST(KvFormat, HeaderLayoutMatchesSpecOffsets) {
  FileHeader h;
  h.quant_bits = 2;
  h.reason = Reason::Continued;
  h.ext_flags = kExtToolMap | kExtThinkingVisible;
  h.tokens = 0x01020304;
  h.hits = 7;
  h.ctx = 32768;
  h.checksum = 0xA1B2C3D4;
  h.created = 0x1122334455667788ull;
  h.last_used = 42;
  h.payload_bytes = 123456789012ull;
  uint8_t b[kHeaderBytes];
  encode_header(h, b);
  EXPECT_EQ(std::memcmp(b, "KVC", 3), 0);
  EXPECT_EQ(b[3], 1);
  EXPECT_EQ(b[4], 2);
  EXPECT_EQ(b[5], 2);
  EXPECT_EQ(b[6], 5);
  EXPECT_EQ(b[7], kRevision);
  EXPECT_EQ(b[8], 0x04);
  EXPECT_EQ(b[11], 0x01);
  EXPECT_EQ(b[12], 7);
  EXPECT_EQ(get_u32(b + 16), 32768u);
  EXPECT_EQ(get_u32(b + 20), 0xA1B2C3D4u);
  EXPECT_EQ(b[24], 0x88);
  EXPECT_EQ(b[31], 0x11);
  EXPECT_EQ(b[32], 42);
  EXPECT_EQ(get_u64(b + 40), 123456789012ull);
  std::string err;
  auto d = decode_header(b, &err);
  ASSERT_TRUE(d) << err;
  EXPECT_EQ(d->tokens, h.tokens);
  EXPECT_EQ(d->created, h.created);
  EXPECT_EQ(d->reason, Reason::Continued);

  uint8_t bad[kHeaderBytes];
  std::memcpy(bad, b, sizeof b);
  bad[3] = 2;
  EXPECT_FALSE(decode_header(bad, &err));
  EXPECT_NE(err.find("version"), std::string::npos);
  std::memcpy(bad, b, sizeof b);
  bad[4] = 8;
  EXPECT_FALSE(decode_header(bad, &err));
  std::memcpy(bad, b, sizeof b);
  std::memset(bad + 8, 0, 4);
  EXPECT_FALSE(decode_header(bad, &err));
  std::memcpy(bad, b, sizeof b);
  bad[7] = 0;
  EXPECT_FALSE(decode_header(bad, &err));
  EXPECT_NE(err.find("checksum"), std::string::npos);
}

TEST(KvFormat, ChecksumIgnoresOnlyTheMutableFields) {
  FileHeader h;
  h.tokens = 600;
  h.ctx = 4096;
  h.payload_bytes = 1000;
  const uint32_t base = header_checksum(h, 0x1234);
  FileHeader m = h;
  m.hits = 99;
  m.last_used = 12345;
  m.checksum = 7;
  EXPECT_EQ(header_checksum(m, 0x1234), base);
  m = h;
  m.tokens = 601;
  EXPECT_NE(header_checksum(m, 0x1234), base);
  m = h;
  m.reason = Reason::Evict;
  EXPECT_NE(header_checksum(m, 0x1234), base);
  EXPECT_NE(header_checksum(h, 0x1235), base);
}

TEST(KvFormat, ToolMapLayoutAndFilter) {
  const std::vector<ToolReplayEntry> all = {
      {"call_1", "\n\n<dsml a>"}, {"call_2", "<dsml b>"}, {"", "<x>"}, {"call_3", ""}};
  const auto in_key = tool_entries_in_key(all, "prefix\n\n<dsml a> and <dsml b> later");
  ASSERT_EQ(in_key.size(), 2u);
  EXPECT_EQ(tool_entries_in_key(all, "nothing here").size(), 0u);
  const std::string s = encode_tool_map({{"id", "DSML!"}});
  // "KTM", u8 1, u32 count, u32 id len, u32 dsml len, id, dsml
  ASSERT_EQ(s.size(), 3u + 1 + 4 + 4 + 4 + 2 + 5);
  EXPECT_EQ(s.substr(0, 3), "KTM");
  EXPECT_EQ(s[3], 1);
  const auto* u = reinterpret_cast<const uint8_t*>(s.data());
  EXPECT_EQ(get_u32(u + 4), 1u);
  EXPECT_EQ(get_u32(u + 8), 2u);
  EXPECT_EQ(get_u32(u + 12), 5u);
  EXPECT_EQ(s.substr(16), "idDSML!");
}

TEST(KvFormat, ToolMapLimitsOnLoad) {
  const std::vector<ToolReplayEntry> two = {{"a", "x"}, {"bb", "yy"}};
  const std::string good = encode_tool_map(two);
  std::string why;
  auto back = decode_tool_map(good, 10, &why);
  ASSERT_TRUE(back) << why;
  EXPECT_EQ(*back, two);
  EXPECT_FALSE(decode_tool_map(good, 1, &why));  // count over the limit
  EXPECT_NE(why.find("count"), std::string::npos);
  EXPECT_FALSE(decode_tool_map(good + "z", 10, &why));  // trailing byte
  EXPECT_FALSE(decode_tool_map(good.substr(0, good.size() - 1), 10, &why));
  std::string bad = good;
  bad[3] = 2;  // section version
  EXPECT_FALSE(decode_tool_map(bad, 10, &why));
  // id length 0, id length 257
  std::string zero_id = encode_tool_map({{"a", "x"}});
  put_u32(reinterpret_cast<uint8_t*>(zero_id.data()) + 8, 0);
  EXPECT_FALSE(decode_tool_map(zero_id, 10, &why));
  const std::string long_id = encode_tool_map({{std::string(257, 'i'), "x"}});
  EXPECT_FALSE(decode_tool_map(long_id, 10, &why));
  EXPECT_TRUE(decode_tool_map(encode_tool_map({{std::string(256, 'i'), "x"}}), 10, &why));
  // A huge declared DSML length is rejected before anything is allocated.
  std::string huge = encode_tool_map({{"a", "x"}});
  put_u32(reinterpret_cast<uint8_t*>(huge.data()) + 12, 0xFFFFFFFFu);
  EXPECT_FALSE(decode_tool_map(huge, 10, &why));
}

// ---- the store on the tiny model

struct Model {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<text::Tokenizer> tok;
};

Model& model() {
  static Model m = [] {
    Model m;
    auto f = gguf::File::open(DS4_KV_MODEL);
    m.tok = std::make_unique<text::Tokenizer>(*f);
    EngineOptions eo;
    eo.threads = 2;
    m.engine = Engine::open(DS4_KV_MODEL, eo);
    return m;
  }();
  return m;
}

std::vector<int32_t> encode(const std::string& s) {
  auto ids = model().tok->encode(s);
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string decode(const std::vector<int32_t>& t, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += model().tok->token_bytes(t[i]);
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// A prompt of roughly `words` words, different per seed.
std::string prose(int words, int seed) {
  static const char* w[] = {"river", "stone", "lamp", "orbit", "cedar", "violet", "quartz",
                            "meadow", "signal", "harbor", "ember", "tundra", "pixel", "ledger"};
  std::mt19937 g(ds4::testdata::test_seed(seed));
  std::string s;
  for (int i = 0; i < words; ++i) {
    s += w[g() % 14];
    s += (i % 11 == 10) ? ". " : " ";
  }
  return s;
}

class KvStore : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(DS4_KV_MODEL)) << DS4_KV_MODEL << " is written by the oracle_ggufs fixture";
    dir_ = std::string(DS4_KV_TMP) + "/unit-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    opt_.dir = dir_;
    opt_.min_tokens = 16;
    opt_.cold_max_tokens = 4000;
  }
  std::unique_ptr<DiskCache> open_cache() {
    return std::make_unique<DiskCache>(
        opt_, identity_of(model().engine->config(), 4),
        [this](const std::string& l) { log_ += l + "\n"; });
  }
  std::unique_ptr<Session> session(const std::vector<int32_t>& t, int n) {
    auto s = model().engine->new_session(ctx_);
    s->sync(std::vector<int32_t>(t.begin(), t.begin() + n));
    return s;
  }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  std::string dir_;
  CacheOptions opt_;
  std::string log_;
  int ctx_ = 1024;
};

// Save, "restart" (a new DiskCache and a fresh session), load by prefix, continue: the
// logits equal an uncached run over the same tokens bit for bit.
TEST_F(KvStore, RestartHitGivesIdenticalLogits) {
  const std::string text = prose(120, 1);
  const auto toks = encode(text);
  ASSERT_GT(toks.size(), 100u);
  const size_t cut = 70;
  const std::string key = decode(toks, cut);
  {
    auto cache = open_cache();
    auto s = session(toks, cut);
    ASSERT_TRUE(cache->save(*s, key, Reason::Cold));
  }
  ASSERT_EQ(files().size(), 1u);
  EXPECT_EQ(files()[0], sha1_hex(key) + ".kv");

  auto cache = open_cache();
  auto s = model().engine->new_session(ctx_);
  auto hit = cache->load_longest_prefix(text, *s);
  ASSERT_TRUE(hit) << log_;
  EXPECT_EQ(hit->tokens, static_cast<int>(cut));
  EXPECT_EQ(hit->key_bytes, key.size());
  EXPECT_EQ(s->n_tokens(), static_cast<int>(cut));
  EXPECT_EQ(s->sync(toks), static_cast<int>(cut));  // only the suffix is evaluated

  auto fresh = model().engine->new_session(ctx_);
  EXPECT_EQ(fresh->sync(toks), 0);
  EXPECT_TRUE(same_bits(s->logits(), fresh->logits()));
  EXPECT_NE(log_.find("kv cache: hit"), std::string::npos);
  EXPECT_NE(log_.find("kv cache: saved cold"), std::string::npos);

  // The hit was counted in the file.
  auto info = cache->scan();
  ASSERT_EQ(info.size(), 1u);
  EXPECT_EQ(info[0].header->hits, 1u);
}

TEST_F(KvStore, LongestBytePrefixWins) {
  const std::string text = prose(100, 2);
  const auto toks = encode(text);
  auto cache = open_cache();
  for (size_t n : {20u, 60u, 40u}) {
    auto s = session(toks, n);
    ASSERT_TRUE(cache->save(*s, decode(toks, n), Reason::Evict));
  }
  auto s = model().engine->new_session(ctx_);
  auto hit = cache->load_longest_prefix(text, *s);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->tokens, 60);
  // A prompt that diverges inside the 40..60 span finds the 40-token file.
  std::string other = decode(toks, 45) + "completely different ending";
  auto s2 = model().engine->new_session(ctx_);
  hit = cache->load_longest_prefix(other, *s2);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->tokens, 40);
  // A veto on a key length moves on to the next.
  auto s3 = model().engine->new_session(ctx_);
  hit = cache->load_longest_prefix(text, *s3, [](size_t, int tokens) { return tokens != 60; });
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->tokens, 40);
  // Unrelated text: miss, session untouched.
  auto s4 = session(toks, 5);
  EXPECT_FALSE(cache->load_longest_prefix("unrelated prompt text", *s4));
  EXPECT_EQ(s4->n_tokens(), 5);
  EXPECT_NE(log_.find("kv cache: miss"), std::string::npos);
}

TEST_F(KvStore, MinTokensAndContextBound) {
  const auto toks = encode(prose(60, 3));
  auto cache = open_cache();
  auto small = session(toks, 10);
  EXPECT_FALSE(cache->save(*small, decode(toks, 10), Reason::Cold));
  EXPECT_TRUE(files().empty());
  auto s = session(toks, 30);
  ASSERT_TRUE(cache->save(*s, decode(toks, 30), Reason::Cold));
  // A session with a smaller context cannot take a checkpoint of a larger one.
  auto narrow = model().engine->new_session(512);
  EXPECT_FALSE(cache->load_longest_prefix(decode(toks, toks.size()), *narrow));
  EXPECT_EQ(narrow->n_tokens(), 0);
}

// Every truncation and every flipped bit outside the two advisory fields is rejected:
// never loaded, the file removed, the session left empty.
TEST_F(KvStore, TruncationsAndBitFlipsAreRejected) {
  const std::string text = prose(80, 4);
  const auto toks = encode(text);
  const std::string key = decode(toks, 40);
  std::string good;
  {
    auto cache = open_cache();
    auto s = session(toks, 40);
    ASSERT_TRUE(cache->save(*s, key, Reason::Cold, {{"call_x", key.substr(5, 20)}}));
    std::ifstream in(dir_ + "/" + files()[0], std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string name = sha1_hex(key) + ".kv";
  ASSERT_GT(good.size(), 1000u);
  auto write_file = [&](const std::string& bytes) {
    std::ofstream out(dir_ + "/" + name, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };
  auto cache = open_cache();
  std::mt19937 g(ds4::testdata::test_seed(5));
  const size_t payload_at = kHeaderBytes + 4 + key.size();
  std::vector<size_t> cuts = {0, 3, 47, 48, 51, payload_at - 1, payload_at + 10, good.size() - 1,
                              good.size() - 20};
  for (int i = 0; i < 10; ++i) cuts.push_back(g() % good.size());
  for (size_t cut : cuts) {
    write_file(good.substr(0, cut));
    auto s = model().engine->new_session(ctx_);
    EXPECT_FALSE(cache->load_longest_prefix(text, *s)) << "truncated at " << cut;
    EXPECT_EQ(s->n_tokens(), 0);
  }
  int flips = 0;
  while (flips < 30) {
    const size_t at = g() % good.size();
    if ((at >= 12 && at < 16) || (at >= 32 && at < 40)) continue;  // hits, last used
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ (1 << (g() % 8)));
    write_file(bad);
    auto s = model().engine->new_session(ctx_);
    EXPECT_FALSE(cache->load_longest_prefix(text, *s)) << "bit flip at byte " << at;
    EXPECT_EQ(s->n_tokens(), 0) << "bit flip at byte " << at;
    ++flips;
  }
  // Corrupt files are removed once rejected (except header flips that hide the file from
  // the lookup, which the next rewrite replaces).
  write_file(good.substr(0, good.size() / 2));
  {
    auto s = model().engine->new_session(ctx_);
    EXPECT_FALSE(cache->load_longest_prefix(text, *s));
  }
  EXPECT_FALSE(fs::exists(dir_ + "/" + name));
  EXPECT_NE(log_.find("rejected"), std::string::npos);
  // The intact file still loads, with its tool map.
  write_file(good);
  auto s = model().engine->new_session(ctx_);
  auto hit = cache->load_longest_prefix(text, *s);
  ASSERT_TRUE(hit) << log_;
  ASSERT_EQ(hit->tools.size(), 1u);
  EXPECT_EQ(hit->tools[0].id, "call_x");
  EXPECT_EQ(hit->tools[0].dsml, key.substr(5, 20));
}

// Files of another format revision or another model shape are skipped and kept.
TEST_F(KvStore, OtherRevisionOrShapeIsSkipped) {
  const std::string text = prose(60, 6);
  const auto toks = encode(text);
  const std::string key = decode(toks, 30);
  std::string good;
  {
    auto cache = open_cache();
    auto s = session(toks, 30);
    ASSERT_TRUE(cache->save(*s, key, Reason::Cold));
    std::ifstream in(dir_ + "/" + files()[0], std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string path = dir_ + "/" + sha1_hex(key) + ".kv";
  auto rewrite = [&](std::string bytes) {
    // Re-seal the checksum so only the changed field can be the reason.
    FileHeader h = *decode_header(reinterpret_cast<const uint8_t*>(bytes.data()), nullptr);
    const uint32_t body = crc32c(bytes.data() + kHeaderBytes, bytes.size() - kHeaderBytes);
    h.checksum = header_checksum(h, body);
    encode_header(h, reinterpret_cast<uint8_t*>(bytes.data()));
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };
  auto cache = open_cache();
  // Vocabulary field of the DSV4 header (u32 index 11).
  std::string other = good;
  put_u32(reinterpret_cast<uint8_t*>(other.data()) + kHeaderBytes + 4 + key.size() + 44, 1000);
  rewrite(other);
  auto s = model().engine->new_session(ctx_);
  EXPECT_FALSE(cache->load_longest_prefix(text, *s));
  EXPECT_TRUE(fs::exists(path));
  EXPECT_NE(log_.find("another model shape"), std::string::npos);
  // The same field flipped without resealing: damage, not another model: removed.
  other = good;
  other[kHeaderBytes + 4 + key.size() + 44] ^= 0x10;
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(other.data(), static_cast<std::streamsize>(other.size()));
  }
  EXPECT_FALSE(cache->load_longest_prefix(text, *s));
  EXPECT_FALSE(fs::exists(path));
  // Revision 0 (no checksum): skipped, kept.
  other = good;
  other[7] = 0;
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(other.data(), static_cast<std::streamsize>(other.size()));
  }
  EXPECT_FALSE(cache->load_longest_prefix(text, *s));
  EXPECT_TRUE(fs::exists(path));
  // A payload length beyond the file (even one that wraps the offset arithmetic): corrupt.
  for (uint64_t bogus : {uint64_t(1) << 40, ~uint64_t(0) - 10}) {
    other = good;
    put_u64(reinterpret_cast<uint8_t*>(other.data()) + 40, bogus);
    rewrite(other);
    EXPECT_FALSE(cache->load_longest_prefix(text, *s));
    EXPECT_FALSE(fs::exists(path));
    EXPECT_EQ(s->n_tokens(), 0);
  }
  // A token count that disagrees with the payload: corrupt, removed.
  other = good;
  put_u32(reinterpret_cast<uint8_t*>(other.data()) + 8, 31);
  rewrite(other);
  EXPECT_FALSE(cache->load_longest_prefix(text, *s));
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(s->n_tokens(), 0);
}

TEST_F(KvStore, SpaceLimitIsRespected) {
  const auto toks = encode(prose(200, 7));
  opt_.space_mb = 2;
  const uint64_t budget = 2 << 20;
  uint64_t t = 1000;
  auto cache = open_cache();
  cache->clock = [&] { return t; };
  uint64_t one = 0;
  for (int i = 0; i < 6; ++i) {
    auto s = session(toks, 20 + 10 * i);
    ++t;
    ASSERT_TRUE(cache->save(*s, decode(toks, 20 + 10 * i), Reason::Continued));
    if (i == 0) one = cache->total_bytes();
    EXPECT_LE(cache->total_bytes(), budget);
    // The file just written survives its own eviction pass.
    EXPECT_TRUE(fs::exists(dir_ + "/" + sha1_hex(decode(toks, 20 + 10 * i)) + ".kv"));
  }
  ASSERT_GT(one, 0u);
  ASSERT_GT(one * 6, budget) << "six tiny files must not all fit";
  EXPECT_LT(files().size(), 6u);
  EXPECT_NE(log_.find("evict: score"), std::string::npos);
  // A file that alone does not fit (with 1% slack) is never written, and leaves nothing.
  opt_.space_mb = 1;
  auto small = open_cache();
  const auto before = files();
  auto big = model().engine->new_session(4096);
  auto big_toks = encode(prose(3000, 8));
  ASSERT_GT(big_toks.size(), 2000u);
  big->sync(std::vector<int32_t>(big_toks.begin(), big_toks.begin() + 2000));
  const uint64_t big_bytes = big->save_snapshot().size();
  if (big_bytes * 1.01 > (1 << 20)) {
    EXPECT_FALSE(small->save(*big, decode(big_toks, 2000), Reason::Evict));
    for (const auto& f : files()) EXPECT_EQ(f.find(".tmp."), std::string::npos) << f;
  }
  EXPECT_LE(small->total_bytes(), 1u << 20);
}

TEST_F(KvStore, EvictionPrefersLowScoreAndSparesLockedFiles) {
  const auto toks = encode(prose(100, 9));
  uint64_t t = 5000;
  opt_.space_mb = 2;
  auto cache = open_cache();
  cache->clock = [&] { return t; };
  auto name = [&](int n) { return sha1_hex(decode(toks, n)) + ".kv"; };
  auto save = [&](int n) {
    ++t;
    auto s = session(toks, n);
    ASSERT_TRUE(cache->save(*s, decode(toks, n), Reason::Cold));
  };
  save(30);
  const uint64_t one = fs::file_size(dir_ + "/" + name(30));
  ASSERT_EQ((2u << 20) / one, 3u) << "the test assumes three tiny files fit in 2 MiB";
  for (int i = 0; i < 2; ++i) {  // two hits on the 30-token file
    auto s = model().engine->new_session(ctx_);
    ASSERT_TRUE(cache->load_longest_prefix(decode(toks, 30) + "zzz", *s));
  }
  save(31);
  save(32);
  // Scores: 30 has hits; among 31 and 32 the smaller token count per byte goes first.
  // A reader holds 31, so 32 is evicted instead.
  const int fd = ::open((dir_ + "/" + name(31)).c_str(), O_RDONLY);
  ASSERT_EQ(::flock(fd, LOCK_SH), 0);
  save(33);
  EXPECT_TRUE(fs::exists(dir_ + "/" + name(30)));
  EXPECT_TRUE(fs::exists(dir_ + "/" + name(31)));
  EXPECT_FALSE(fs::exists(dir_ + "/" + name(32)));
  EXPECT_TRUE(fs::exists(dir_ + "/" + name(33)));
  EXPECT_NE(log_.find("in use by a reader"), std::string::npos);
  ::close(fd);
  // Unlocked, 31 is now the lowest.
  save(34);
  EXPECT_TRUE(fs::exists(dir_ + "/" + name(30)));
  EXPECT_FALSE(fs::exists(dir_ + "/" + name(31)));
  EXPECT_TRUE(fs::exists(dir_ + "/" + name(33)));
  EXPECT_TRUE(fs::exists(dir_ + "/" + name(34)));
}

// Two stores (as two servers) writing and reading the same directory at the same time:
// every file left behind is valid and loads.
TEST_F(KvStore, TwoWritersOneDirectory) {
  const auto toks = encode(prose(150, 10));
  opt_.space_mb = 2;
  auto worker = [&](int id) {
    DiskCache c(opt_, identity_of(model().engine->config(), 4), nullptr);
    for (int i = 0; i < 6; ++i) {
      const int n = 20 + ((i * 7 + id * 3) % 40);
      auto s = model().engine->new_session(ctx_);
      s->sync(std::vector<int32_t>(toks.begin(), toks.begin() + n));
      c.save(*s, decode(toks, n), Reason::Evict);
      auto r = model().engine->new_session(ctx_);
      c.load_longest_prefix(decode(toks, toks.size()), *r);
    }
  };
  std::thread a(worker, 0), b(worker, 1);
  a.join();
  b.join();
  auto cache = open_cache();
  EXPECT_LE(cache->total_bytes(), 2u << 20);
  for (const auto& f : files()) EXPECT_EQ(f.find(".tmp."), std::string::npos) << f;
  for (const auto& f : cache->scan()) {
    ASSERT_TRUE(f.header) << f.name;
    auto s = model().engine->new_session(ctx_);
    auto hit = cache->load_longest_prefix(decode(toks, f.header->tokens), *s);
    ASSERT_TRUE(hit) << f.name << "\n" << log_;
    EXPECT_EQ(hit->tokens, static_cast<int>(f.header->tokens));
  }
}

TEST_F(KvStore, StaleTemporariesOfDeadWritersAreRemoved) {
  fs::create_directories(dir_);
  const pid_t child = fork();
  if (child == 0) _exit(0);
  int status = 0;
  waitpid(child, &status, 0);
  const std::string dead = dir_ + "/" + std::string(40, 'a') + ".tmp." + std::to_string(child) + ".1";
  const std::string live = dir_ + "/" + std::string(40, 'b') + ".tmp." + std::to_string(getpid()) + ".1";
  std::ofstream(dead) << "partial";
  std::ofstream(live) << "in progress";
  auto cache = open_cache();
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));  // a live writer's file stays
}

}  // namespace
