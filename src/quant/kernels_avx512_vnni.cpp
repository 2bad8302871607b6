// AVX-512 kernels using VNNI (vpdpbusd) for the byte dot products.
#define DS4_AVX512_VNNI 1
#include "quant/kernels_avx512_impl.h"

namespace ds4::quant {
namespace {
const Kernels kTable = {"avx512_vnni", dot_f32, dot_f16, dot_bf16, dot_q8_0, dot_q2_K, dot_q4_K, dot_iq2_xxs,
                        detail::quantize_act_q8_0_avx2, detail::quantize_act_q8_K_avx2,
                        detail::dot_iq2_xxs_multi_avx2, dot_q8_0_multi,
                        detail::dot_q2_K_multi_avx2, detail::dot_q4_K_multi_avx2,
                        detail::dot_iq2_xxs_rows_avx2, detail::dot_q2_K_rows_avx2,
                        detail::dot_q4_K_rows_avx2,
                        detail::dot_iq2_xxs_r_avx2, detail::dot_iq2_xxs_r_multi_avx2,
                        detail::dot_iq2_xxs_r_rows_avx2, dot_q8_0_rows};
}
const Kernels* detail::avx512_vnni_kernels() { return &kTable; }
}  // namespace ds4::quant
