#include "cpu/float_dots.h"

#include <cstring>

#include "quant/quant.h"

namespace ds4::cpu {

#if defined(DS4_CPU_HAVE_AVX2)
extern const FloatDots kFloatDotsAvx2;
#endif

const FloatDots* float_dots() {
  static const FloatDots* const table = []() -> const FloatDots* {
#if defined(DS4_CPU_HAVE_AVX2)
    // Only beside the AVX2 dot kernels, whose chains these reproduce.
    if (std::strcmp(quant::kernels().isa_name, "avx2") == 0) return &kFloatDotsAvx2;
#endif
    return nullptr;
  }();
  return table;
}

}  // namespace ds4::cpu
