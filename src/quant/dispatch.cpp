// Run-time choice of kernel table: compiled-in ISAs filtered by what this CPU supports,
// optionally forced with DS4_ISA=scalar|avx2|avx512.
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "quant/internal.h"
#include "quant/isa.h"
#include "quant/quant.h"

namespace ds4::quant {

// ISAs left out of this build (non-x86 targets) report no table.
#ifndef DS4_QUANT_HAVE_AVX2
const Kernels* detail::avx2_kernels() { return nullptr; }
#endif
#ifndef DS4_QUANT_HAVE_AVX512
const Kernels* detail::avx512_kernels() { return nullptr; }
const Kernels* detail::avx512_vnni_kernels() { return nullptr; }
#endif

namespace {

#if defined(__x86_64__) || defined(__i386__)
// clang's __builtin_cpu_supports has no "f16c"; read CPUID leaf 1 (ECX bit 29) directly.
// Only consulted once AVX2 is known usable, which already implies OS support for YMM state.
bool cpu_has_f16c() {
  unsigned eax, ebx, ecx, edx;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
}
#endif

bool cpu_supports(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::AVX2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    case Isa::AVX512:
      return cpu_supports(Isa::AVX2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    case Isa::AVX512_VNNI:
      return cpu_supports(Isa::AVX512) && __builtin_cpu_supports("avx512vnni");
  }
  return false;
#else
  return isa == Isa::Scalar;
#endif
}

const Kernels* compiled(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return &scalar::kernels();
    case Isa::AVX2: return detail::avx2_kernels();
    case Isa::AVX512: return detail::avx512_kernels();
    case Isa::AVX512_VNNI: return detail::avx512_vnni_kernels();
  }
  return nullptr;
}

Isa best_isa() {
  for (Isa isa : {Isa::AVX512_VNNI, Isa::AVX512, Isa::AVX2}) {
    if (isa_available(isa)) return isa;
  }
  return Isa::Scalar;
}

// An unusable DS4_ISA value must not stop the engine: warn and use the best ISA.
Isa isa_from_environment() {
  const char* env = std::getenv("DS4_ISA");
  if (!env || !*env) return best_isa();
  const std::string_view want(env);
  if (want == "scalar") return Isa::Scalar;
  if (want == "avx2" && isa_available(Isa::AVX2)) return Isa::AVX2;
  if (want == "avx512") {
    if (isa_available(Isa::AVX512_VNNI)) return Isa::AVX512_VNNI;
    if (isa_available(Isa::AVX512)) return Isa::AVX512;
  }
  if (want == "avx512_vnni" && isa_available(Isa::AVX512_VNNI)) return Isa::AVX512_VNNI;
  const Isa best = best_isa();
  std::fprintf(stderr, "ds4: DS4_ISA=%s is unknown or not supported by this CPU; using %s\n", env,
               isa_name(best));
  return best;
}

}  // namespace

Isa chosen_isa() {
  static const Isa chosen = isa_from_environment();
  return chosen;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::AVX2: return "avx2";
    case Isa::AVX512: return "avx512";
    case Isa::AVX512_VNNI: return "avx512_vnni";
  }
  return "unknown";
}

bool isa_available(Isa isa) { return compiled(isa) != nullptr && cpu_supports(isa); }

const Kernels& kernels(Isa isa) {
  if (!isa_available(isa)) {
    throw std::runtime_error(std::string("quant kernels for ") + isa_name(isa) +
                             " are not available on this build/CPU");
  }
  return *compiled(isa);
}

const Kernels& kernels() {
  static const Kernels& chosen = kernels(chosen_isa());
  return chosen;
}

namespace {
void check_row_length(const char* what, Type t, int64_t n) {
  const auto info = type_info(static_cast<uint32_t>(t));
  if (info && n >= 0 && n % info->block_elems == 0) return;
  throw std::invalid_argument(std::string(what) + ": " + std::string(type_name(t)) + " row of " + std::to_string(n) +
                              " values is not a whole number of blocks");
}
}  // namespace

// The block sizes of the types vec_dot supports are powers of two: a mask test instead of the
// table lookup and 64-bit division of check_row_length, which cost a few percent of a
// 4096-wide row's dot.
inline bool whole_blocks(Type t, int64_t n) {
  switch (t) {
    case Type::F32:
    case Type::F16:
    case Type::BF16: return n >= 0;
    case Type::Q8_0: return n >= 0 && (n & (QK8_0 - 1)) == 0;
    case Type::Q2_K:
    case Type::Q4_K:
    case Type::IQ2_XXS: return n >= 0 && (n & (QK_K - 1)) == 0;
    default: return false;
  }
}

float vec_dot(Type weight_type, const void* w_row, const void* x_act, int64_t n) {
  if (!whole_blocks(weight_type, n)) check_row_length("vec_dot", weight_type, n);
  const Kernels& k = kernels();
  switch (weight_type) {
    case Type::F32: return k.dot_f32(static_cast<const float*>(w_row), static_cast<const float*>(x_act), n);
    case Type::F16: return k.dot_f16(static_cast<const uint16_t*>(w_row), static_cast<const float*>(x_act), n);
    case Type::BF16: return k.dot_bf16(static_cast<const uint16_t*>(w_row), static_cast<const float*>(x_act), n);
    case Type::Q8_0:
      return k.dot_q8_0(static_cast<const block_q8_0*>(w_row), static_cast<const block_q8_0_act*>(x_act), n);
    case Type::Q2_K:
      return k.dot_q2_K(static_cast<const block_q2_K*>(w_row), static_cast<const block_q8_K*>(x_act), n);
    case Type::Q4_K:
      return k.dot_q4_K(static_cast<const block_q4_K*>(w_row), static_cast<const block_q8_K*>(x_act), n);
    case Type::IQ2_XXS:
      return k.dot_iq2_xxs(static_cast<const block_iq2_xxs*>(w_row), static_cast<const block_q8_K*>(x_act), n);
    default:
      throw std::invalid_argument("vec_dot: no dot product for weight type " + std::string(type_name(weight_type)));
  }
}

}  // namespace ds4::quant

namespace ds4::quant {

void vec_dot_multi(Type weight_type, const void* w_row, const void* x_acts, size_t x_stride_bytes, int nx,
                   int64_t n, float* out) {
  check_row_length("vec_dot_multi", weight_type, n);
  if (nx <= 0) return;
  if (weight_type == Type::IQ2_XXS) {
    if (x_stride_bytes % sizeof(block_q8_K) != 0) {
      throw std::invalid_argument("vec_dot_multi: Q8_K activation stride must be whole blocks");
    }
    kernels().dot_iq2_xxs_multi(static_cast<const block_iq2_xxs*>(w_row), static_cast<const block_q8_K*>(x_acts),
                                static_cast<int64_t>(x_stride_bytes / sizeof(block_q8_K)), nx, n, out);
    return;
  }
  const Kernels& k = kernels();
  if ((weight_type == Type::Q2_K || weight_type == Type::Q4_K) && x_stride_bytes % sizeof(block_q8_K) == 0) {
    const auto* x = static_cast<const block_q8_K*>(x_acts);
    const auto stride = static_cast<int64_t>(x_stride_bytes / sizeof(block_q8_K));
    if (weight_type == Type::Q2_K) {
      k.dot_q2_K_multi(static_cast<const block_q2_K*>(w_row), x, stride, nx, n, out);
    } else {
      k.dot_q4_K_multi(static_cast<const block_q4_K*>(w_row), x, stride, nx, n, out);
    }
    return;
  }
  if (weight_type == Type::Q8_0 && x_stride_bytes % sizeof(block_q8_0_act) == 0) {
    kernels().dot_q8_0_multi(static_cast<const block_q8_0*>(w_row), static_cast<const block_q8_0_act*>(x_acts),
                             static_cast<int64_t>(x_stride_bytes / sizeof(block_q8_0_act)), nx, n, out);
    return;
  }
  const auto* base = static_cast<const uint8_t*>(x_acts);
  for (int v = 0; v < nx; ++v) out[v] = vec_dot(weight_type, w_row, base + v * x_stride_bytes, n);
}

void vec_dot_rows(Type weight_type, const void* w, size_t w_stride_bytes, int nr, const void* x_acts,
                  size_t x_stride_bytes, int nx, int64_t n, float* out) {
  check_row_length("vec_dot_rows", weight_type, n);
  if (nr <= 0 || nx <= 0) return;
  const Kernels& k = kernels();
  const auto* x = static_cast<const block_q8_K*>(x_acts);
  const auto xs = static_cast<int64_t>(x_stride_bytes / sizeof(block_q8_K));
  const bool x_blocks = x_stride_bytes % sizeof(block_q8_K) == 0;
  if (weight_type == Type::IQ2_XXS && x_blocks && w_stride_bytes % sizeof(block_iq2_xxs) == 0) {
    k.dot_iq2_xxs_rows(static_cast<const block_iq2_xxs*>(w), static_cast<int64_t>(w_stride_bytes / sizeof(block_iq2_xxs)),
                       nr, x, xs, nx, n, out);
    return;
  }
  if (weight_type == Type::Q2_K && x_blocks && w_stride_bytes % sizeof(block_q2_K) == 0) {
    k.dot_q2_K_rows(static_cast<const block_q2_K*>(w), static_cast<int64_t>(w_stride_bytes / sizeof(block_q2_K)), nr, x,
                    xs, nx, n, out);
    return;
  }
  if (weight_type == Type::Q4_K && x_blocks && w_stride_bytes % sizeof(block_q4_K) == 0) {
    k.dot_q4_K_rows(static_cast<const block_q4_K*>(w), static_cast<int64_t>(w_stride_bytes / sizeof(block_q4_K)), nr, x,
                    xs, nx, n, out);
    return;
  }
  if (weight_type == Type::Q8_0 && x_stride_bytes % sizeof(block_q8_0_act) == 0 &&
      w_stride_bytes % sizeof(block_q8_0) == 0) {
    k.dot_q8_0_rows(static_cast<const block_q8_0*>(w), static_cast<int64_t>(w_stride_bytes / sizeof(block_q8_0)), nr,
                    static_cast<const block_q8_0_act*>(x_acts),
                    static_cast<int64_t>(x_stride_bytes / sizeof(block_q8_0_act)), nx, n, out);
    return;
  }
  const auto* rows = static_cast<const uint8_t*>(w);
  for (int r = 0; r < nr; ++r) {
    vec_dot_multi(weight_type, rows + r * w_stride_bytes, x_acts, x_stride_bytes, nx, n, out + r * nx);
  }
}

}  // namespace ds4::quant
