#include "vulkan/ops.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "quant/quant.h"
#include "quant/tables.h"

namespace ds4::vulkan {

namespace {

using quant::Type;

struct MatmulPush {
  uint32_t rows, cols, nvec, w_off, w_row_bytes, x_stride, y_stride, y_off;
};

struct QuantPush {
  uint32_t n, x_stride, y_stride;
};

uint32_t u32(uint64_t v, const char* what) {
  if (v > 0xFFFFFFFFu) throw std::invalid_argument(std::string("Vulkan op: ") + what + " exceeds 32 bits");
  return static_cast<uint32_t>(v);
}

const char* matmul_module(Type t) {
  switch (t) {
    case Type::F32: return "matmul_f32";
    case Type::F16: return "matmul_f16";
    case Type::Q8_0: return "matmul_q8_0";
    case Type::Q2_K: return "matmul_q2_K";
    case Type::Q4_K: return "matmul_q4_K";
    case Type::IQ2_XXS: return "matmul_iq2_xxs";
    default: return nullptr;
  }
}

// Workgroup grid for `count` groups: x up to 65535 (the minimum every device allows), the
// rest in y; shaders recompute the linear index and skip the overhang.
void grid(uint64_t count, uint32_t* gx, uint32_t* gy) {
  const uint64_t x = std::min<uint64_t>(count, 65535);
  *gx = static_cast<uint32_t>(x);
  *gy = static_cast<uint32_t>((count + x - 1) / std::max<uint64_t>(x, 1));
}

}  // namespace

Ops::Ops(Context& ctx) : ctx_(ctx) {
  // IQ2_XXS decode tables: 256 grid entries as two words each, then 128 sign bytes.
  std::vector<uint32_t> t(512 + 32);
  std::memcpy(t.data(), quant::tables::kIq2xxsGrid, 256 * sizeof(uint64_t));
  std::memcpy(t.data() + 512, quant::tables::kIq2Signs, 128);
  iq2_tables_ = ctx_.create_buffer(t.size() * 4);
  ctx_.upload(iq2_tables_, t.data(), t.size() * 4);
  dummy_ = ctx_.create_buffer(16);
  const uint32_t zeros[4] = {0, 0, 0, 0};
  ctx_.upload(dummy_, zeros, sizeof(zeros));
}

bool Ops::supports(Type t) { return matmul_module(t) != nullptr; }

size_t Ops::act_words(Type t, int64_t n) {
  switch (quant::activation_type(t)) {
    case quant::ActType::F32: return static_cast<size_t>(n);
    case quant::ActType::Q8_0: return quant::activation_bytes(quant::ActType::Q8_0, n) / 4;
    case quant::ActType::Q8_K: return quant::activation_bytes(quant::ActType::Q8_K, n) / 4;
  }
  return 0;
}

void Ops::quantize_act(Recorder& rec, Type wt, Range x, int64_t n, int nvec, size_t x_stride, Range y,
                       size_t y_stride) {
  const auto act = quant::activation_type(wt);
  if (act == quant::ActType::F32 || nvec <= 0) return;
  const int block = act == quant::ActType::Q8_K ? quant::QK_K : quant::QK8_0;
  if (n <= 0 || n % block != 0)
    throw std::invalid_argument("Vulkan quantize_act: length " + std::to_string(n) + " is not a multiple of " +
                                std::to_string(block));
  const auto& p = ctx_.pipeline(act == quant::ActType::Q8_K ? "quantize_q8_K" : "quantize_q8_0", 2, 0b10,
                                sizeof(QuantPush));
  QuantPush pc{u32(n, "n"), u32(x_stride, "x stride"), u32(y_stride, "y stride")};
  rec.dispatch(p, {x, y}, &pc, sizeof(pc), static_cast<uint32_t>((n + 255) / 256), static_cast<uint32_t>(nvec));
}

void Ops::matmul(Recorder& rec, const DeviceMatrix& w, Range x, size_t x_stride, int nvec, Range y, size_t y_stride,
                 size_t y_off) {
  const char* mod = matmul_module(w.type);
  if (!mod) throw std::invalid_argument("Vulkan matmul: no kernel for weight type " + std::string(quant::type_name(w.type)));
  const bool flt = w.type == Type::F32 || w.type == Type::F16;
  // Rows of at most 4 blocks: the block shader's 16-rows-per-workgroup variant.
  const bool short_rows = !flt && w.cols <= 4 * (w.type == Type::Q8_0 ? quant::QK8_0 : quant::QK_K);
  const std::string short_mod = std::string("matmul_short_") + (mod + 7);
  if (short_rows) mod = short_mod.c_str();
  const auto rb = quant::row_bytes(w.type, static_cast<uint64_t>(w.cols));
  if (!rb || *rb != w.row_bytes) throw std::invalid_argument("Vulkan matmul: row size does not match the type");
  if (w.rows <= 0 || nvec <= 0) return;
  const bool iq2 = w.type == Type::IQ2_XXS;
  const auto& p = ctx_.pipeline(mod, iq2 ? 4 : 3, 0b100, sizeof(MatmulPush));
  // Rows per dispatch so that one binding covers them (plus the alignment slack).
  const uint64_t align = ctx_.binding_alignment();
  const uint64_t limit = ctx_.max_binding_bytes() - align - 4;
  const int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>(limit / w.row_bytes));
  if (w.row_bytes > limit) throw std::invalid_argument("Vulkan matmul: one row exceeds the device's binding limit");
  for (int64_t r0 = 0; r0 < w.rows; r0 += chunk) {
    const int64_t nr = std::min(chunk, w.rows - r0);
    const size_t start = w.offset + static_cast<size_t>(r0) * w.row_bytes;
    const size_t bind = start / align * align;
    const size_t bytes = start - bind + static_cast<size_t>(nr) * w.row_bytes;
    MatmulPush pc{u32(nr, "rows"),           u32(w.cols, "cols"),     static_cast<uint32_t>(nvec),
                  u32(start - bind, "w off"), u32(w.row_bytes, "row"), u32(x_stride, "x stride"),
                  u32(y_stride, "y stride"),  u32(y_off + r0, "y off")};
    // The binding must cover whole words.
    const size_t bound = std::min<size_t>((bytes + 3) / 4 * 4, w.buffer->size() - bind);
    // The block shader covers 4 rows per workgroup (its short-row variant 16), the float one.
    const uint64_t rows_per_group = flt ? 1 : short_rows ? 16 : 4;
    const uint64_t groups = (static_cast<uint64_t>(nr) + rows_per_group - 1) / rows_per_group;
    uint32_t gx, gy;
    grid(groups, &gx, &gy);
    Range wr{w.buffer, bind, bound};
    if (iq2)
      rec.dispatch(p, {wr, x, y, Range{&iq2_tables_}}, &pc, sizeof(pc), gx, gy);
    else
      rec.dispatch(p, {wr, x, y}, &pc, sizeof(pc), gx, gy);
  }
}

DeviceExperts DeviceExperts::upload(Context& ctx, Type type, int64_t n_experts, int64_t rows, int64_t cols,
                                    const void* data, int64_t experts_per_buffer) {
  DeviceExperts e;
  e.type = type;
  e.n_experts = n_experts;
  e.rows = rows;
  e.cols = cols;
  const auto rb = quant::row_bytes(type, static_cast<uint64_t>(cols));
  if (!rb) throw std::invalid_argument("Vulkan experts: row length is not a whole number of blocks");
  e.row_bytes = *rb;
  const size_t expert_bytes = e.row_bytes * static_cast<size_t>(rows);
  const int64_t fit = static_cast<int64_t>((ctx.max_binding_bytes() - 4) / expert_bytes);
  if (fit < 1) throw std::invalid_argument("Vulkan experts: one expert exceeds the device's binding limit");
  const int64_t per = experts_per_buffer > 0 ? std::min(experts_per_buffer, fit) : fit;
  for (int64_t e0 = 0; e0 < n_experts; e0 += per) {
    Segment s;
    s.first_expert = e0;
    s.n_experts = std::min(per, n_experts - e0);
    const size_t bytes = expert_bytes * static_cast<size_t>(s.n_experts);
    s.buffer = ctx.create_buffer((bytes + 3) / 4 * 4);
    ctx.upload(s.buffer, static_cast<const uint8_t*>(data) + expert_bytes * static_cast<size_t>(e0), bytes);
    e.segments.push_back(std::move(s));
  }
  return e;
}

void Ops::matmul_experts(Recorder& rec, const DeviceExperts& w, Range x, size_t x_stride, Range ids, int n_pairs,
                         int k_per_token, Range y, size_t y_stride) {
  const char* mod = nullptr;
  switch (w.type) {
    case Type::F32: mod = "matmul_ids_f32"; break;
    case Type::F16: mod = "matmul_ids_f16"; break;
    case Type::Q8_0: mod = "matmul_ids_q8_0"; break;
    case Type::Q2_K: mod = "matmul_ids_q2_K"; break;
    case Type::Q4_K: mod = "matmul_ids_q4_K"; break;
    case Type::IQ2_XXS: mod = "matmul_ids_iq2_xxs"; break;
    default:
      throw std::invalid_argument("Vulkan matmul_experts: no kernel for weight type " +
                                  std::string(quant::type_name(w.type)));
  }
  if (n_pairs <= 0) return;
  if (n_pairs > 65535 || w.rows > 65535) throw std::invalid_argument("Vulkan matmul_experts: more than 65535 pairs or rows");
  const bool iq2 = w.type == Type::IQ2_XXS;
  // The float shader covers one row per workgroup, the block shader 4.
  const bool flt = w.type == Type::F32 || w.type == Type::F16;
  const uint32_t row_groups = static_cast<uint32_t>(flt ? w.rows : (w.rows + 3) / 4);
  struct {
    MatmulPush base;
    uint32_t e_lo, e_hi, expert_bytes, k_per_token;
  } pc{};
  const auto& p = ctx_.pipeline(mod, iq2 ? 5 : 4, 0b100, sizeof(pc));
  for (const auto& s : w.segments) {
    pc.base = MatmulPush{u32(w.rows, "rows"), u32(w.cols, "cols"), 1u, 0u, u32(w.row_bytes, "row"),
                         u32(x_stride, "x stride"), u32(y_stride, "y stride"), 0u};
    pc.e_lo = static_cast<uint32_t>(s.first_expert);
    pc.e_hi = static_cast<uint32_t>(s.first_expert + s.n_experts);
    pc.expert_bytes = u32(w.row_bytes * static_cast<size_t>(w.rows), "expert bytes");
    pc.k_per_token = static_cast<uint32_t>(k_per_token);
    Range wr{&s.buffer};
    if (iq2)
      rec.dispatch(p, {wr, x, y, Range{&iq2_tables_}, ids}, &pc, sizeof(pc), row_groups,
                   static_cast<uint32_t>(n_pairs));
    else
      rec.dispatch(p, {wr, x, y, ids}, &pc, sizeof(pc), row_groups, static_cast<uint32_t>(n_pairs));
  }
}

void Ops::rms_norm(Recorder& rec, Range x, Range weight, int64_t n, int nvec, size_t x_stride, Range y,
                   size_t y_stride, float eps) {
  struct {
    uint32_t n, x_stride, y_stride, has_weight;
    float eps;
  } pc{u32(n, "n"), u32(x_stride, "x stride"), u32(y_stride, "y stride"), weight.buffer ? 1u : 0u, eps};
  const auto& p = ctx_.pipeline("rms_norm", 3, 0b100, sizeof(pc));
  rec.dispatch(p, {x, weight.buffer ? weight : Range{&dummy_}, y}, &pc, sizeof(pc), static_cast<uint32_t>(nvec));
}

void Ops::rms_factor(Recorder& rec, Range x, int64_t n, int nvec, size_t x_stride, Range f, float eps) {
  struct {
    uint32_t n, x_stride, y_stride, has_weight;
    float eps;
  } pc{u32(n, "n"), u32(x_stride, "x stride"), 1u, 0u, eps};
  const auto& p = ctx_.pipeline("rms_factor", 3, 0b100, sizeof(pc));
  rec.dispatch(p, {x, Range{&dummy_}, f}, &pc, sizeof(pc), static_cast<uint32_t>(nvec));
}

void Ops::swiglu(Recorder& rec, Range g, Range u, Range scale, int64_t n, int nvec, size_t stride, Range out,
                 float lim) {
  struct {
    uint32_t n, stride, has_scale;
    float lim;
  } pc{u32(n, "n"), u32(stride, "stride"), scale.buffer ? 1u : 0u, lim};
  const auto& p = ctx_.pipeline("swiglu", 4, 0b1000, sizeof(pc));
  rec.dispatch(p, {g, u, scale.buffer ? scale : Range{&dummy_}, out}, &pc, sizeof(pc),
               static_cast<uint32_t>((n + 255) / 256), static_cast<uint32_t>(nvec));
}

void Ops::rope(Recorder& rec, Range x, Range cos_sin, int half, int nrows, size_t row_stride, size_t tail,
               size_t cs_stride, bool inverse, int rows_per_group, size_t group_stride) {
  if (nrows <= 0) return;
  if (rows_per_group < 1) throw std::invalid_argument("Vulkan rope: rows_per_group must be >= 1");
  if (rows_per_group == 1) group_stride = row_stride;
  struct {
    uint32_t half_dims, row_stride, tail, cs_stride, inverse, rows_per_group, group_stride;
  } pc{static_cast<uint32_t>(half), u32(row_stride, "row stride"), u32(tail, "tail"), u32(cs_stride, "cs stride"),
       inverse ? 1u : 0u, static_cast<uint32_t>(rows_per_group), u32(group_stride, "group stride")};
  const auto& p = ctx_.pipeline("rope", 2, 0b01, sizeof(pc));
  rec.dispatch(p, {x, cos_sin}, &pc, sizeof(pc), static_cast<uint32_t>((half + 63) / 64), static_cast<uint32_t>(nrows));
}

void Ops::attention(Recorder& rec, Range q, Range rows, Range row_index, Range spans, int n_tokens, int max_rows,
                    Range sinks, int heads, int dim, float scale, Range scores, Range out) {
  if (n_tokens <= 0 || max_rows <= 0 || heads <= 0 || dim <= 0) throw std::invalid_argument("Vulkan attention: empty shape");
  struct {
    uint32_t dim, heads, max_rows;
    float scale;
  } pc{static_cast<uint32_t>(dim), static_cast<uint32_t>(heads), static_cast<uint32_t>(max_rows), scale};
  const auto& p = ctx_.pipeline("attention", 7, 0b1100000, sizeof(pc));
  rec.dispatch(p, {q, rows, row_index, spans, sinks, scores, out}, &pc, sizeof(pc), static_cast<uint32_t>(heads),
               static_cast<uint32_t>(n_tokens));
}

void Ops::hc_sinkhorn(Recorder& rec, Range m, Range scale3, Range base, int hc, int iters, float eps, int n_tokens,
                      Range out, Range factor) {
  if (hc <= 0 || hc > 8) throw std::invalid_argument("Vulkan hc_sinkhorn: hc must be 1..8");
  struct {
    uint32_t n_tokens, hc, iters;
    float eps;
    uint32_t has_factor;
  } pc{static_cast<uint32_t>(n_tokens), static_cast<uint32_t>(hc), static_cast<uint32_t>(std::max(iters, 1)), eps,
       factor.buffer ? 1u : 0u};
  const auto& p = ctx_.pipeline("hc_sinkhorn", 5, 0b1000, sizeof(pc));
  rec.dispatch(p, {m, scale3, base, out, factor.buffer ? factor : Range{&dummy_}}, &pc, sizeof(pc),
               static_cast<uint32_t>((n_tokens + 63) / 64));
}

void Ops::hc_mix(Recorder& rec, bool post, Range x, Range gates, Range y, int hc, int dim, int n_tokens, Range out) {
  struct {
    uint32_t dim, hc, post_mode;
  } pc{static_cast<uint32_t>(dim), static_cast<uint32_t>(hc), post ? 1u : 0u};
  const auto& p = ctx_.pipeline("hc_mix", 4, 0b1000, sizeof(pc));
  rec.dispatch(p, {x, gates, y.buffer ? y : Range{&dummy_}, out}, &pc, sizeof(pc),
               static_cast<uint32_t>((dim + 63) / 64), static_cast<uint32_t>(n_tokens));
}

void Ops::hc_head_gates(Recorder& rec, Range m, Range factor, Range base, int hc, float scale, float eps, int n_tokens,
                        Range out) {
  struct {
    uint32_t n_tokens, hc;
    float scale, eps;
  } pc{static_cast<uint32_t>(n_tokens), static_cast<uint32_t>(hc), scale, eps};
  const auto& p = ctx_.pipeline("hc_head_gates", 4, 0b1000, sizeof(pc));
  rec.dispatch(p, {m, factor, base, out}, &pc, sizeof(pc), static_cast<uint32_t>((n_tokens + 63) / 64));
}

void Ops::compressor_pool(Recorder& rec, Range kv, Range score, int ratio, int d, int width, Range out) {
  if (ratio <= 0 || ratio > 128 || d <= 0 || width < (ratio == 4 ? 2 * d : d))
    throw std::invalid_argument("Vulkan compressor_pool: bad shape");
  struct {
    uint32_t ratio, d, width;
  } pc{static_cast<uint32_t>(ratio), static_cast<uint32_t>(d), static_cast<uint32_t>(width)};
  const auto& p = ctx_.pipeline("compressor_pool", 3, 0b100, sizeof(pc));
  rec.dispatch(p, {kv, score, out}, &pc, sizeof(pc), static_cast<uint32_t>((d + 63) / 64));
}

void Ops::indexer_score(Recorder& rec, Range q, Range rows, Range w, int n_rows, int heads, int dim, float wscale,
                        Range score) {
  struct {
    uint32_t n_rows, heads, dim;
    float wscale;
  } pc{static_cast<uint32_t>(n_rows), static_cast<uint32_t>(heads), static_cast<uint32_t>(dim), wscale};
  const auto& p = ctx_.pipeline("indexer_score", 4, 0b1000, sizeof(pc));
  uint32_t gx, gy;
  grid((static_cast<uint64_t>(n_rows) + 63) / 64, &gx, &gy);
  rec.dispatch(p, {q, rows, w, score}, &pc, sizeof(pc), gx, gy);
}

void Ops::topk_rows(Recorder& rec, Range score, int n, int k, Range selected, size_t out_off) {
  if (k <= 0 || k > n) throw std::invalid_argument("Vulkan topk_rows: needs 0 < k <= n");
  struct {
    uint32_t n, k, out_off;
  } pc{static_cast<uint32_t>(n), static_cast<uint32_t>(k), u32(out_off, "out offset")};
  const auto& p = ctx_.pipeline("topk_rows", 2, 0b10, sizeof(pc));
  rec.dispatch(p, {score, selected}, &pc, sizeof(pc), 1);
}

void Ops::hadamard(Recorder& rec, Range x, int n, int nrows, size_t row_stride) {
  if (n <= 0 || n > 4096 || (n & (n - 1)) != 0) throw std::invalid_argument("Vulkan hadamard: n must be a power of two <= 4096");
  struct {
    uint32_t n, row_stride;
    float scale;
  } pc{static_cast<uint32_t>(n), u32(row_stride, "row stride"),
       static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)))};
  const auto& p = ctx_.pipeline("hadamard", 1, 0b1, sizeof(pc));
  rec.dispatch(p, {x}, &pc, sizeof(pc), static_cast<uint32_t>(nrows));
}

void Ops::fp_sim(Recorder& rec, bool fp8, Range x, int n, int nrows, size_t row_stride) {
  const int block = fp8 ? 64 : 32;
  if (n <= 0 || n % block != 0) throw std::invalid_argument("Vulkan fp_sim: length must be a multiple of the block");
  struct {
    uint32_t n, row_stride, n_blocks;
    float inv_max, min_amax;
  } pc{static_cast<uint32_t>(n), u32(row_stride, "row stride"), u32(static_cast<uint64_t>(nrows) * (n / block), "blocks"),
       // The CPU's constants, as its float expressions give them.
       fp8 ? 1.0f / 448.0f : 1.0f / 6.0f, fp8 ? 1e-4f : 6.f * std::ldexp(1.f, -126)};
  const auto& p = ctx_.pipeline(fp8 ? "fp8_sim" : "fp4_sim", 1, 0b1, sizeof(pc));
  uint32_t gx, gy;
  grid((pc.n_blocks + 63) / 64, &gx, &gy);
  rec.dispatch(p, {x}, &pc, sizeof(pc), gx, gy);
}

void Ops::embed(Recorder& rec, const DeviceMatrix& table, Range tokens, int n_tokens, int hc, Range x) {
  uint32_t wt;
  switch (table.type) {
    case Type::F32: wt = 0; break;
    case Type::F16: wt = 1; break;
    case Type::Q8_0: wt = 8; break;
    default:
      throw std::invalid_argument("Vulkan embed: no kernel for table type " + std::string(quant::type_name(table.type)));
  }
  struct {
    uint32_t dim, hc, row_bytes, w_type, w_off, r_lo, r_hi;
  } pc{u32(table.cols, "dim"), static_cast<uint32_t>(hc), u32(table.row_bytes, "row"), wt, 0, 0, 0};
  const auto& p = ctx_.pipeline("embed", 3, 0b100, sizeof(pc));
  const uint64_t align = ctx_.binding_alignment();
  const int64_t chunk = static_cast<int64_t>((ctx_.max_binding_bytes() - align - 4) / table.row_bytes);
  if (chunk < 1) throw std::invalid_argument("Vulkan embed: one row exceeds the device's binding limit");
  for (int64_t r0 = 0; r0 < table.rows; r0 += chunk) {
    const int64_t nr = std::min(chunk, table.rows - r0);
    const size_t start = table.offset + static_cast<size_t>(r0) * table.row_bytes;
    const size_t bind = start / align * align;
    const size_t bytes = std::min<size_t>((start - bind + nr * table.row_bytes + 3) / 4 * 4, table.buffer->size() - bind);
    pc.w_off = u32(start - bind, "w off");
    pc.r_lo = u32(r0, "row");
    pc.r_hi = u32(r0 + nr, "row");
    rec.dispatch(p, {Range{table.buffer, bind, bytes}, tokens, x}, &pc, sizeof(pc),
                 static_cast<uint32_t>((table.cols + 63) / 64), static_cast<uint32_t>(n_tokens));
  }
}

void Ops::moe_combine(Recorder& rec, Range pairs, Range shared, int dim, int k, int n_tokens, Range y) {
  struct {
    uint32_t dim, k, has_shared;
  } pc{static_cast<uint32_t>(dim), static_cast<uint32_t>(k), shared.buffer ? 1u : 0u};
  const auto& p = ctx_.pipeline("moe_combine", 3, 0b100, sizeof(pc));
  rec.dispatch(p, {pairs, shared.buffer ? shared : Range{&dummy_}, y}, &pc, sizeof(pc),
               static_cast<uint32_t>((dim + 63) / 64), static_cast<uint32_t>(n_tokens));
}

void Ops::scatter_row(Recorder& rec, Range src, Range slot, int slot_index, int n, int max_slots, Range dst) {
  struct {
    uint32_t n, slot_index, max_slots;
  } pc{static_cast<uint32_t>(n), static_cast<uint32_t>(slot_index), static_cast<uint32_t>(max_slots)};
  const auto& p = ctx_.pipeline("scatter_row", 3, 0b100, sizeof(pc));
  rec.dispatch(p, {src, slot, dst}, &pc, sizeof(pc), static_cast<uint32_t>((n + 255) / 256));
}

void Ops::copy_rows(Recorder& rec, Rows src, Rows dst, size_t len, int nrows, Rows b) {
  if (len == 0 || nrows <= 0) return;
  struct {
    uint32_t len, nrows, s_off, s_stride, d_off, d_stride, b_off, b_stride, has_b;
  } pc{u32(len, "len"),           static_cast<uint32_t>(nrows),   u32(src.off, "src offset"),
       u32(src.stride, "stride"), u32(dst.off, "dst offset"),     u32(dst.stride, "stride"),
       u32(b.off, "b offset"),    u32(b.stride, "stride"),        b.buf.buffer ? 1u : 0u};
  const auto& p = ctx_.pipeline("copy_rows", 3, 0b100, sizeof(pc));
  uint32_t gy, gz;
  grid(static_cast<uint64_t>(nrows), &gy, &gz);
  rec.dispatch(p, {src.buf, b.buf.buffer ? b.buf : Range{&dummy_}, dst.buf}, &pc, sizeof(pc),
               static_cast<uint32_t>((len + 255) / 256), gy, gz);
}

void Ops::add(Recorder& rec, Range a, Range b, Range out, int64_t n) {
  struct {
    uint32_t n;
  } pc{u32(n, "n")};
  const auto& p = ctx_.pipeline("add", 3, 0b100, sizeof(pc));
  uint32_t gx, gy;
  grid((static_cast<uint64_t>(n) + 255) / 256, &gx, &gy);
  rec.dispatch(p, {a, b, out}, &pc, sizeof(pc), gx, gy);
}

void Ops::copy(Recorder& rec, Range src, Range dst, size_t bytes) {
  if (bytes % 16 != 0) throw std::invalid_argument("Vulkan copy: size must be a multiple of 16 bytes");
  struct {
    uint32_t n;
  } pc{u32(bytes / 16, "copy size")};
  const auto& p = ctx_.pipeline("copy", 2, 0b10, sizeof(pc));
  uint32_t gx, gy;
  grid((bytes / 16 + 255) / 256, &gx, &gy);
  rec.dispatch(p, {src, dst}, &pc, sizeof(pc), gx, gy);
}

double Ops::measure_bandwidth(size_t bytes, int reps) {
  bytes = std::min<size_t>(bytes / 16 * 16, ctx_.max_binding_bytes() / 16 * 16);
  Buffer a = ctx_.create_buffer(bytes), b = ctx_.create_buffer(bytes);
  Recorder rec(ctx_);
  // Alternate directions so every dispatch depends on the previous one (barriers included,
  // as in a real decode sequence).
  for (int i = 0; i < reps; ++i) copy(rec, {i % 2 ? &b : &a}, {i % 2 ? &a : &b}, bytes);
  double best = 0;
  for (int run = 0; run < 3; ++run) {
    const auto t0 = std::chrono::steady_clock::now();
    rec.submit_and_wait();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * static_cast<double>(bytes) * reps / s / 1e9);
  }
  return best;
}

void Ops::rope_cos_sin(const float* freq, int half, const int64_t* pos, int n, float* out) {
  for (int i = 0; i < n; ++i) {
    const float p = static_cast<float>(pos[i]);
    for (int k = 0; k < half; ++k) {
      const float th = p * freq[k];
      out[(static_cast<size_t>(i) * half + k) * 2] = std::cos(th);
      out[(static_cast<size_t>(i) * half + k) * 2 + 1] = std::sin(th);
    }
  }
}

void Ops::route_topk(Recorder& rec, Range logits, Range bias, int n_experts, int k, int n_tokens, bool normalise,
                     float route_scale, Range chosen, Range weight, Range tokens, Range tid2eid) {
  if (n_experts <= 0 || n_experts > 1024 || k <= 0 || k > 16 || k > n_experts)
    throw std::invalid_argument("Vulkan route_topk: needs 0 < k <= 16, k <= experts <= 1024");
  const bool hash = tid2eid.buffer != nullptr;
  if (hash != (tokens.buffer != nullptr)) throw std::invalid_argument("Vulkan route_topk: hash routing needs tokens and tid2eid");
  struct {
    uint32_t n_experts, k, has_bias, normalise;
    float route_scale;
    uint32_t hash;
  } pc{static_cast<uint32_t>(n_experts), static_cast<uint32_t>(k), bias.buffer ? 1u : 0u, normalise ? 1u : 0u,
       route_scale, hash ? 1u : 0u};
  const auto& p = ctx_.pipeline("route_topk", 6, 0b1100, sizeof(pc));
  rec.dispatch(p, {logits, bias.buffer ? bias : Range{&dummy_}, chosen, weight, hash ? tokens : Range{&dummy_},
                   hash ? tid2eid : Range{&dummy_}},
               &pc, sizeof(pc), static_cast<uint32_t>(n_tokens));
}

}  // namespace ds4::vulkan
