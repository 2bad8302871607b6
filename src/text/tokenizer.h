// Byte-level BPE tokenizer for DeepSeek V4 Flash (docs/prompting.md).
//
// Encoding: optional special-token extraction, then the pre-tokenizer of pretokenize.h,
// then the GPT-2 byte map and rank-ordered BPE merges per piece (cached).
// Decoding: normal tokens map back through the inverse byte map; special (added) tokens
// decode to their text verbatim.
//
// Invalid UTF-8 input never fails: every byte is representable (each of the 256 byte
// symbols is a token), pieces are cut as if each invalid byte were U+FFFD, and the raw
// bytes are encoded, so decode(encode(x)) == x for any byte string x.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ds4::gguf {
class File;
}

namespace ds4::text {

struct HfTokenizer;

struct TokenizerError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Tokenizer {
 public:
  // From GGUF metadata: tokenizer.ggml.tokens, tokenizer.ggml.merges and, when present,
  // tokenizer.ggml.token_type. Throws TokenizerError (or gguf::Error for a missing key).
  explicit Tokenizer(const gguf::File& file);
  // From plain tables. token_types may be empty: then a token is special when its text
  // contains U+FF5C "｜" (no byte-level token can) or is <think>/</think>/<|EOT|>.
  // With require_control_tokens, the seven tokens ds4 needs (BOS, EOS, User, Assistant,
  // <think>, </think>, ｜DSML｜) must exist, else TokenizerError.
  Tokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
            std::vector<int32_t> token_types = {}, bool require_control_tokens = true);
  static Tokenizer from_hf(const HfTokenizer& hf, bool require_control_tokens = true);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  size_t vocab_size() const;

  // Encodes text. parse_special=false: all of `text` is BPE'd (special-token strings in it
  // become ordinary pieces). parse_special=true: every special (added) token text is first
  // extracted, leftmost-longest, as HF encode(add_special_tokens=False) does; the gaps are
  // BPE'd independently. Thread-safe.
  std::vector<int> encode(std::string_view text, bool parse_special = false) const;
  void encode_append(std::string_view text, std::vector<int>& out,
                     bool parse_special = false) const;
  // BPE of one pre-tokenized piece (no splitting). Exposed for tests.
  void encode_piece(std::string_view piece, std::vector<int>& out) const;

  // Concatenated bytes of the tokens. Throws TokenizerError for an id out of range.
  std::string decode(const std::vector<int>& ids) const;
  // Bytes one token decodes to.
  const std::string& token_bytes(int id) const;
  // The vocabulary string (byte-unicode form for normal tokens).
  const std::string& token_text(int id) const;
  bool is_special(int id) const;
  // Id of the token whose vocabulary text is `text`.
  std::optional<int> find_token(std::string_view text) const;

  int bos_id() const { return bos_; }
  int eos_id() const { return eos_; }
  int user_id() const { return user_; }
  int assistant_id() const { return assistant_; }
  int think_open_id() const { return think_open_; }
  int think_close_id() const { return think_close_; }
  int dsml_id() const { return dsml_; }
  int latest_reminder_id() const { return latest_reminder_; }  // -1 when absent

  // The piece cache is per thread and bounded. cache_entries() counts the calling thread's
  // entries; clear_cache() empties every thread's cache (lazily, at its next use).
  size_t cache_entries() const;
  void clear_cache() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int bos_ = -1, eos_ = -1, user_ = -1, assistant_ = -1, think_open_ = -1, think_close_ = -1,
      dsml_ = -1, latest_reminder_ = -1;
  void resolve_control_ids(bool require);
};

// Incremental decoder for streaming output: never emits a partial UTF-8 sequence.
// push() returns the bytes that became complete; up to 3 trailing bytes of an incomplete
// sequence are held until the next push or flush(). Bytes that cannot be part of valid
// UTF-8 are emitted with kReplace as unicode::utf8_sanitized does (one U+FFFD per maximal
// invalid subpart, so the stream reads as the whole text decoded at once), or unchanged with
// kRaw (then the concatenated output equals Tokenizer::decode of all ids byte for byte).
class StreamDecoder {
 public:
  enum class InvalidBytes { kReplace, kRaw };
  explicit StreamDecoder(const Tokenizer& tok, InvalidBytes mode = InvalidBytes::kReplace)
      : tok_(&tok), mode_(mode) {}
  std::string push(int id);
  std::string push_bytes(std::string_view bytes);
  // Emits what is held (an incomplete tail counts as invalid bytes) and resets.
  std::string flush();
  size_t pending() const { return pending_.size(); }

 private:
  const Tokenizer* tok_;
  InvalidBytes mode_;
  std::string pending_;
};

// One line per token: decimal id, TAB, the token's decoded bytes where newline, tab, CR and
// backslash are written as the escapes \n \t \r \\ (backslash doubled), other bytes
// < 0x20 and 0x7F as \xHH (two lowercase hex digits), everything else (including bytes
// >= 0x80, even of a partial character) raw; each line ends in a newline.
// Ids out of range print "<invalid>".
std::string format_token_dump(const Tokenizer& tok, const std::vector<int>& ids);

}  // namespace ds4::text
