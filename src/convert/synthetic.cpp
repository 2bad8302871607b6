// Random-weight models with the real catalogue. Weights follow the oracle's initialisation
// (oracle/tiny-a/README.md "How it was produced": variances below), so activations stay O(1)
// through the layers. Block-quantized tensors are generated as random valid blocks directly
// (sane f16 scales, random codes) instead of quantizing floats, which keeps Flash-sized
// experts fast. Every row range is seeded from (seed, tensor name, range index), so the output
// does not depend on the thread count.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "convert/convert.h"
#include "convert/parallel.h"
#include "convert/safetensors.h"
#include "convert/vocab.h"
#include "convert/write_model.h"
#include "quant/quant.h"
#include "random/random.h"

namespace ds4::convert {

namespace {

using random::Rng;
using random::splitmix64;

uint64_t hash_name(const std::string& s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

uint64_t chunk_seed(uint64_t seed, const std::string& name, uint64_t chunk) {
  uint64_t x = seed ^ hash_name(name);
  splitmix64(x);
  x ^= chunk * 0xD1B54A32D192ED03ull;
  return splitmix64(x);
}

// Standard deviation and mean of a tensor's values (or the uniform range for HC scales).
struct Dist {
  float mean = 0, stddev = 0;
  bool uniform = false;  // U(mean - stddev, mean + stddev)
};

Dist distribution(const TensorSpec& t) {
  const float fan_in = static_cast<float>(t.row_length());
  switch (t.role) {
    case Role::Embedding: return {0.0f, 1.0f};
    case Role::Router: return {0.0f, 3.0f / std::sqrt(fan_in)};
    case Role::HcScale: return {1.0f, 0.5f, true};
    case Role::HcBase: return {0.0f, 1.0f};
    case Role::Norm: return {1.0f, 0.1f};
    case Role::AttnSink: return {0.0f, 1.0f};
    case Role::CompressorApe: return {0.0f, 0.5f};
    case Role::RouterBias: return {0.0f, 0.5f};
    default: return {0.0f, 1.0f / std::sqrt(fan_in)};  // linear N(0, 1/fan_in), HC fns included
  }
}

// ---- random blocks ---------------------------------------------------------------------

uint16_t f16(float x) { return quant::f32_to_f16(x); }

void pack_q4k_scales(const uint8_t sc[8], const uint8_t m[8], uint8_t q[12]) {
  for (int j = 0; j < 4; ++j) {
    q[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    q[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    q[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

// One random block of `t` with super-block scale d (minimums chosen so values centre on 0).
void random_block(quant::Type t, Rng& rng, float d, uint8_t* out) {
  using namespace quant;
  switch (t) {
    case Type::Q8_0: {
      block_q8_0 b;
      b.d = f16(d);
      for (auto& q : b.qs) q = static_cast<int8_t>(static_cast<int>(rng.next() % 255) - 127);
      std::memcpy(out, &b, sizeof b);
      return;
    }
    case Type::Q4_K: {
      block_q4_K b;
      uint8_t sc[8], m[8];
      for (int j = 0; j < 8; ++j) sc[j] = m[j] = static_cast<uint8_t>(16 + rng.next() % 16);
      b.d = f16(d);
      b.dmin = f16(7.5f * d);  // value = d*sc*(q - 7.5): nibbles centred
      pack_q4k_scales(sc, m, b.scales);
      for (int i = 0; i < QK_K / 2; i += 8) {
        const uint64_t r = rng.next();
        std::memcpy(b.qs + i, &r, 8);
      }
      std::memcpy(out, &b, sizeof b);
      return;
    }
    case Type::Q2_K: {
      block_q2_K b;
      for (auto& s : b.scales) {
        const uint8_t v = static_cast<uint8_t>(8 + rng.next() % 8);
        s = static_cast<uint8_t>(v | (v << 4));
      }
      b.d = f16(d);
      b.dmin = f16(1.5f * d);  // value = d*sc*(q - 1.5)
      for (int i = 0; i < QK_K / 4; i += 8) {
        const uint64_t r = rng.next();
        std::memcpy(b.qs + i, &r, 8);
      }
      std::memcpy(out, &b, sizeof b);
      return;
    }
    case Type::IQ2_XXS: {
      // Every grid index, sign index and 4-bit scale is valid, so random bytes are a block.
      block_iq2_xxs b;
      b.d = f16(d);
      for (int i = 0; i < QK_K / 8; i += 4) {
        const uint64_t r = rng.next();
        std::memcpy(b.qs + i, &r, 8);
      }
      std::memcpy(out, &b, sizeof b);
      return;
    }
    default:
      throw ConvertError("no random block generator for " + std::string(type_name(t)));
  }
}

bool is_block_type(quant::Type t) {
  return t == quant::Type::Q8_0 || t == quant::Type::Q4_K || t == quant::Type::Q2_K || t == quant::Type::IQ2_XXS;
}

// Standard deviation of random blocks generated with d = 1, measured through the format's own
// dequantizer so the scale is right whatever the code distribution.
float unit_stddev(quant::Type t) {
  static std::mutex m;
  static std::map<quant::Type, float> cache;
  std::lock_guard<std::mutex> g(m);
  auto it = cache.find(t);
  if (it != cache.end()) return it->second;
  const auto info = quant::type_info(static_cast<uint32_t>(t));
  const int blocks = 64;
  const uint64_t n = static_cast<uint64_t>(info->block_elems) * blocks;
  std::vector<uint8_t> buf(static_cast<size_t>(info->block_bytes) * blocks);
  Rng rng(12345);
  for (int b = 0; b < blocks; ++b) random_block(t, rng, 1.0f, buf.data() + static_cast<size_t>(b) * info->block_bytes);
  std::vector<float> v(n);
  quant::dequantize_row(t, buf.data(), v.data(), static_cast<int64_t>(n));
  double s = 0, s2 = 0;
  for (float x : v) {
    s += x;
    s2 += static_cast<double>(x) * x;
  }
  const double mean = s / static_cast<double>(n);
  const float sd = static_cast<float>(std::sqrt(std::max(1e-30, s2 / static_cast<double>(n) - mean * mean)));
  cache[t] = sd;
  return sd;
}

class SyntheticSource {
 public:
  SyntheticSource(const ModelConfig& c, uint64_t seed, int threads)
      : cfg_(c), seed_(seed), pool_(converter_pool(threads)) {}

  gguf::Writer::Producer producer(const PlannedTensor& p) const {
    return [this, p](uint8_t* dst, uint64_t nbytes) {
      if (nbytes != p.nbytes) throw ConvertError(p.spec.gguf_name + ": writer asked for an unexpected size");
      produce(p, dst);
    };
  }

 private:
  void produce(const PlannedTensor& p, uint8_t* dst) const {
    const TensorSpec& s = p.spec;
    if (s.role == Role::Tid2eid) {
      // Each token gets k distinct experts (partial Fisher-Yates).
      const uint32_t k = cfg_.n_experts_used, E = cfg_.n_experts;
      Rng rng(chunk_seed(seed_, s.gguf_name, 0));
      std::vector<int32_t> ids(static_cast<size_t>(k) * cfg_.vocab);
      std::vector<int32_t> perm(E);
      for (uint32_t t = 0; t < static_cast<uint32_t>(cfg_.vocab); ++t) {
        for (uint32_t e = 0; e < E; ++e) perm[e] = static_cast<int32_t>(e);
        for (uint32_t j = 0; j < k; ++j) {
          const uint32_t pick = j + static_cast<uint32_t>(rng.next() % (E - j));
          std::swap(perm[j], perm[pick]);
          ids[static_cast<size_t>(t) * k + j] = perm[j];
        }
      }
      std::memcpy(dst, ids.data(), ids.size() * sizeof(int32_t));
      return;
    }
    const Dist dist = distribution(s);
    const uint64_t cols = s.row_length(), rows = s.n_rows();
    const uint64_t rb = *quant::row_bytes(p.type, cols);
    // Rows per independently seeded range: about 1 MiB of values.
    const uint64_t chunk_rows = std::max<uint64_t>(1, (1u << 18) / std::max<uint64_t>(1, cols));
    const uint64_t chunks = (rows + chunk_rows - 1) / chunk_rows;
    if (is_block_type(p.type)) {
      const auto info = quant::type_info(static_cast<uint32_t>(p.type));
      const float d = dist.stddev / unit_stddev(p.type);
      const uint64_t blocks_per_row = cols / info->block_elems;
      parallel_for(pool_, chunks, [&](size_t c) {
        Rng rng(chunk_seed(seed_, s.gguf_name, c));
        const uint64_t r0 = c * chunk_rows, n = std::min(chunk_rows, rows - r0);
        uint8_t* out = dst + r0 * rb;
        for (uint64_t b = 0; b < n * blocks_per_row; ++b) random_block(p.type, rng, d, out + b * info->block_bytes);
      });
      return;
    }
    parallel_for(pool_, chunks, [&](size_t c) {
      Rng rng(chunk_seed(seed_, s.gguf_name, c));
      const uint64_t r0 = c * chunk_rows, n = std::min(chunk_rows, rows - r0);
      std::vector<float> w(n * cols);
      for (float& x : w)
        x = dist.uniform ? dist.mean + dist.stddev * static_cast<float>(2.0 * rng.uniform() - 1.0)
                         : dist.mean + dist.stddev * rng.normal();
      encode_rows(p.type, w.data(), n, cols, dst + r0 * rb, nullptr);
    });
  }

  const ModelConfig& cfg_;
  uint64_t seed_;
  mutable cpu::ThreadPool pool_;
};

}  // namespace

ConvertReport write_synthetic(const SyntheticOptions& o) {
  ModelConfig cfg = load_model_config(o.config_path);
  if (o.layers > 0) cfg = truncate_layers(cfg, o.layers);
  if (!o.name.empty())
    cfg.name = o.name;
  else if (cfg.name == kDefaultModelName)
    cfg.name = "synthetic-" + std::filesystem::path(o.config_path).stem().string();
  const bool mtp = o.include_mtp && cfg.n_mtp_layers > 0;
  ConvertReport report;
  const auto plan = plan_tensors(build_catalogue(cfg, mtp), o.recipe, o.f16_fallback, &report.fallbacks);
  const Vocab vocab = o.tokenizer_path.empty() ? make_synthetic_vocab(cfg.vocab)
                                                : load_tokenizer_vocab(o.tokenizer_path, cfg.vocab);
  for (const auto& p : plan)
    if (is_block_type(p.type)) (void)unit_stddev(p.type);
  SyntheticSource src(cfg, o.seed, o.threads);
  ModelWriter mw(o, cfg, vocab);
  mw.set_meta("ds4.synthetic.seed", gguf::Value::make_u64(o.seed));
  for (const auto& p : plan) {
    if (o.sparse_experts && p.spec.gguf_name.find("_exps.") != std::string::npos)
      mw.add_zeros(p);
    else
      mw.add(p, src.producer(p));
  }
  mw.write(report);
  return report;
}

}  // namespace ds4::convert
