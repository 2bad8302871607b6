// Session snapshot payload "DSV4" version 1 (docs/kvcache.md), generalised to the model's
// shape: fields [8..11] hold the layer count, head dim, indexer head dim and vocabulary size.
#include <cstring>
#include <istream>
#include <ostream>

#include "session/session_impl.h"

namespace ds4 {

namespace {
constexpr uint32_t kMagic = 0x34565344;  // "DSV4"
constexpr uint32_t kVersion = 1;

[[noreturn]] void bad(const std::string& msg) { throw Error(Error::Kind::BadSnapshot, "snapshot: " + msg); }
}  // namespace

struct SessionImpl::Sink {
  std::function<void(const void*, size_t)> write;
  void u32(uint32_t v) { write(&v, 4); }
  void f32s(const float* p, size_t n) { write(p, n * 4); }
};

struct SessionImpl::Source {
  std::function<void(void*, size_t)> read;  // throws BadSnapshot when short
  std::function<bool()> at_end;
  uint32_t u32() {
    uint32_t v;
    read(&v, 4);
    return v;
  }
  void f32s(float* p, size_t n) { read(p, n * 4); }
};

// Compressor frontier in canonical form (docs/kvcache.md): state rows the current window has not
// written yet are stored as kv = 0 / score = -1e30, whatever stale values they hold (they
// are never read), so equal prefixes give equal payloads.
static void write_state(SessionImpl::Sink& out, const model::CompressorState& cs, uint32_t n_tokens) {
  const int r = cs.ratio;
  const int first_unwritten = (r == 4 ? 4 : 0) + static_cast<int>(n_tokens % r);
  std::vector<float> kv = cs.kv, score = cs.score;
  for (int row = first_unwritten; row < cs.state_rows; ++row) {
    std::fill(kv.begin() + static_cast<size_t>(row) * cs.width, kv.begin() + static_cast<size_t>(row + 1) * cs.width, 0.f);
    std::fill(score.begin() + static_cast<size_t>(row) * cs.width,
              score.begin() + static_cast<size_t>(row + 1) * cs.width, model::kNegInf);
  }
  out.f32s(kv.data(), kv.size());
  out.f32s(score.data(), score.size());
}

void SessionImpl::write_snapshot(Sink& out) const {
  const ModelConfig& c = engine_.config();
  const uint32_t n = static_cast<uint32_t>(tokens_.size());
  const uint32_t window = static_cast<uint32_t>(std::min(ctx_, c.window));
  const uint32_t raw_live = std::min(n, window);
  const uint32_t hdr[13] = {kMagic,
                            kVersion,
                            static_cast<uint32_t>(ctx_),
                            static_cast<uint32_t>(chunk_),
                            window,
                            window,
                            static_cast<uint32_t>(ctx_ / 4 + 2),
                            n,
                            static_cast<uint32_t>(c.n_layers),
                            static_cast<uint32_t>(c.head_dim),
                            static_cast<uint32_t>(c.index_head_dim),
                            static_cast<uint32_t>(c.vocab),
                            raw_live};
  for (uint32_t v : hdr) out.u32(v);
  for (int32_t t : tokens_) out.u32(static_cast<uint32_t>(t));
  if (logits_.size() == static_cast<size_t>(c.vocab)) {
    out.f32s(logits_.data(), logits_.size());
  } else {
    std::vector<float> zeros(c.vocab, 0.f);
    out.f32s(zeros.data(), zeros.size());
  }
  seq_->pull();
  const std::vector<model::LayerState>& layers = seq_->host().layers;
  for (const auto& L : layers) out.u32(static_cast<uint32_t>(L.comp.ratio ? L.comp.n_rows : 0));
  for (const auto& L : layers) out.u32(static_cast<uint32_t>(L.icomp.ratio ? L.icomp.n_rows : 0));
  for (const auto& L : layers) {
    for (uint32_t i = 0; i < raw_live; ++i) {
      const float* row = L.raw.find(static_cast<int64_t>(n) - raw_live + i);
      if (!row) bad("internal error: raw row missing");
      out.f32s(row, c.head_dim);
    }
    if (L.comp.ratio) {
      out.f32s(L.comp.rows.data(), static_cast<size_t>(L.comp.n_rows) * c.head_dim);
      write_state(out, L.comp, n);
    }
    if (L.icomp.ratio) {
      out.f32s(L.icomp.rows.data(), static_cast<size_t>(L.icomp.n_rows) * c.index_head_dim);
      write_state(out, L.icomp, n);
    }
  }
}

void SessionImpl::read_snapshot(Source& in) {
  const ModelConfig& c = engine_.config();
  uint32_t h[13];
  for (auto& v : h) v = in.u32();
  if (h[0] != kMagic) bad("bad magic (not a DSV4 payload)");
  if (h[1] != kVersion) bad("unsupported version " + std::to_string(h[1]));
  if (h[8] != static_cast<uint32_t>(c.n_layers) || h[9] != static_cast<uint32_t>(c.head_dim) ||
      h[10] != static_cast<uint32_t>(c.index_head_dim) || h[11] != static_cast<uint32_t>(c.vocab))
    bad("model shape differs (layers " + std::to_string(h[8]) + ", head dim " + std::to_string(h[9]) +
        ", indexer dim " + std::to_string(h[10]) + ", vocab " + std::to_string(h[11]) + ")");
  const uint32_t window = static_cast<uint32_t>(std::min(ctx_, c.window));
  if (h[3] != static_cast<uint32_t>(chunk_)) bad("prefill chunk cap differs (" + std::to_string(h[3]) + ")");
  if (h[5] != window) bad("raw window differs (" + std::to_string(h[5]) + ")");
  if (h[2] > static_cast<uint32_t>(ctx_)) bad("saved context " + std::to_string(h[2]) + " exceeds this session's");
  const uint32_t n = h[7];
  if (n >= static_cast<uint32_t>(ctx_)) bad("token count " + std::to_string(n) + " does not fit the context");
  if (n > h[2]) bad("token count exceeds the saved context");
  const uint32_t raw_live = h[12];
  if (raw_live != std::min(n, h[5]) || raw_live > h[4]) bad("raw_live is inconsistent");
  if (h[6] > static_cast<uint32_t>(ctx_ / 4 + 2)) bad("compressed-row cap exceeds this session's");

  std::vector<int32_t> toks(n);
  for (auto& t : toks) {
    t = static_cast<int32_t>(in.u32());
    if (t < 0 || t >= c.vocab) bad("token id out of range");
  }
  std::vector<float> logits(c.vocab);
  in.f32s(logits.data(), logits.size());
  std::vector<uint32_t> ncomp(c.n_layers), nidx(c.n_layers);
  for (auto& v : ncomp) v = in.u32();
  for (auto& v : nidx) v = in.u32();
  // Row counts follow from n_tokens; anything else would desynchronise attention.
  for (int il = 0; il < c.n_layers; ++il) {
    const int r = engine_.weights().layers[il].ratio;
    const uint32_t want = r ? n / r : 0;
    if (ncomp[il] != want) bad("layer " + std::to_string(il) + " compressed row count " + std::to_string(ncomp[il]) +
                               " != " + std::to_string(want));
    const uint32_t want_i = r == 4 ? n / 4 : 0;
    if (nidx[il] != want_i) bad("layer " + std::to_string(il) + " indexer row count mismatch");
  }
  // Read into fresh states, then swap in: a failed load leaves the session untouched.
  std::vector<model::LayerState> fresh(c.n_layers);
  const auto& w = engine_.weights();
  const int cap = engine_.ring_cap(ctx_);
  std::vector<float> row(c.head_dim);
  for (int il = 0; il < c.n_layers; ++il) {
    model::LayerState& L = fresh[il];
    L.init(w.layers[il].ratio, c.head_dim, c.index_head_dim, cap, engine_.rewind_tokens());
    for (uint32_t i = 0; i < raw_live; ++i) {
      in.f32s(row.data(), row.size());
      L.raw.put(static_cast<int64_t>(n) - raw_live + i, row.data());
    }
    if (L.comp.ratio) {
      L.comp.n_rows = ncomp[il];
      L.comp.rows.resize(static_cast<size_t>(ncomp[il]) * c.head_dim);
      in.f32s(L.comp.rows.data(), L.comp.rows.size());
      in.f32s(L.comp.kv.data(), L.comp.kv.size());
      in.f32s(L.comp.score.data(), L.comp.score.size());
    }
    if (L.icomp.ratio) {
      L.icomp.n_rows = nidx[il];
      L.icomp.rows.resize(static_cast<size_t>(nidx[il]) * c.index_head_dim);
      in.f32s(L.icomp.rows.data(), L.icomp.rows.size());
      in.f32s(L.icomp.kv.data(), L.icomp.kv.size());
      in.f32s(L.icomp.score.data(), L.icomp.score.size());
    }
  }
  if (!in.at_end()) bad("trailing bytes after the payload");
  seq_->host().layers = std::move(fresh);
  seq_->push();
  tokens_ = std::move(toks);
  logits_ = n ? std::move(logits) : std::vector<float>{};
  hidden_.clear();  // not part of the payload
  history_.clear();
  if (n) history_.emplace_back(logits_, std::vector<float>{});
  mtp_reset();
}

std::vector<uint8_t> SessionImpl::save_snapshot() const {
  std::vector<uint8_t> buf;
  Sink s{[&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    buf.insert(buf.end(), b, b + n);
  }};
  write_snapshot(s);
  return buf;
}

void SessionImpl::save_snapshot(std::FILE* f) const {
  if (!f) throw Error(Error::Kind::Io, "snapshot: null FILE*");
  Sink s{[&](const void* p, size_t n) {
    if (std::fwrite(p, 1, n, f) != n) throw Error(Error::Kind::Io, "snapshot: write failed");
  }};
  write_snapshot(s);
}

void SessionImpl::save_snapshot(std::ostream& os) const {
  Sink s{[&](const void* p, size_t n) {
    os.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
    if (!os) throw Error(Error::Kind::Io, "snapshot: write failed");
  }};
  write_snapshot(s);
}

void SessionImpl::load_snapshot(const uint8_t* data, size_t size) {
  size_t off = 0;
  Source s{[&](void* p, size_t n) {
             if (size - off < n) bad("truncated payload");
             if (n) std::memcpy(p, data + off, n);  // data may be null for an empty payload
             off += n;
           },
           [&] { return off == size; }};
  read_snapshot(s);
}

void SessionImpl::load_snapshot(std::FILE* f) {
  if (!f) throw Error(Error::Kind::Io, "snapshot: null FILE*");
  Source s{[&](void* p, size_t n) {
             if (std::fread(p, 1, n, f) != n) bad("truncated payload");
           },
           [&] {
             int ch = std::fgetc(f);
             if (ch == EOF) return true;
             std::ungetc(ch, f);
             return false;
           }};
  read_snapshot(s);
}

void SessionImpl::load_snapshot(std::istream& is) {
  Source s{[&](void* p, size_t n) {
             is.read(static_cast<char*>(p), static_cast<std::streamsize>(n));
             if (static_cast<size_t>(is.gcount()) != n) bad("truncated payload");
           },
           [&] { return is.peek() == std::char_traits<char>::eof(); }};
  read_snapshot(s);
}

}  // namespace ds4
