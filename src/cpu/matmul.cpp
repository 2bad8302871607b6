#include "cpu/matmul.h"

#include <cstring>
#include <vector>

#include "quant/quant.h"

namespace ds4::cpu {

void matmul(ThreadPool& pool, const MatView& w, const float* x, int64_t n_vec, int64_t x_stride,
            float* y, int64_t y_stride) {
  if (n_vec <= 0 || w.out <= 0) return;
  const quant::ActType act = quant::activation_type(w.type);
  std::vector<uint8_t> qbuf;
  std::vector<const void*> xs(n_vec);
  if (w.f32_activations && act != quant::ActType::F32) {
    pool.parallel_for(w.out, [&](int64_t rb, int64_t re) {
      std::vector<float> row(static_cast<size_t>(w.in));
      const quant::Kernels& k = quant::kernels();
      for (int64_t r = rb; r < re; ++r) {
        quant::dequantize_row(w.type, w.row(r), row.data(), w.in);
        for (int64_t v = 0; v < n_vec; ++v) y[v * y_stride + r] = k.dot_f32(row.data(), x + v * x_stride, w.in);
      }
    }, 16);
    return;
  }
  if (act == quant::ActType::F32) {
    for (int64_t v = 0; v < n_vec; ++v) xs[v] = x + v * x_stride;
  } else {
    const size_t nb = quant::activation_bytes(act, w.in);
    qbuf.resize(nb * n_vec);
    for (int64_t v = 0; v < n_vec; ++v) {
      quant::quantize_activations(w.type, x + v * x_stride, qbuf.data() + nb * v, w.in);
      xs[v] = qbuf.data() + nb * v;
    }
  }
  const quant::Kernels& k = quant::kernels();
  const quant::Type t = w.type;
  const int64_t n = w.in;
  auto body = [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const uint8_t* row = w.row(r);
      for (int64_t v = 0; v < n_vec; ++v) {
        float d;
        switch (t) {
          case quant::Type::F32:
            d = k.dot_f32(reinterpret_cast<const float*>(row), static_cast<const float*>(xs[v]), n);
            break;
          case quant::Type::F16:
            d = k.dot_f16(reinterpret_cast<const uint16_t*>(row), static_cast<const float*>(xs[v]), n);
            break;
          case quant::Type::BF16:
            d = k.dot_bf16(reinterpret_cast<const uint16_t*>(row), static_cast<const float*>(xs[v]), n);
            break;
          case quant::Type::Q8_0:
            d = k.dot_q8_0(reinterpret_cast<const quant::block_q8_0*>(row),
                           static_cast<const quant::block_q8_0_act*>(xs[v]), n);
            break;
          case quant::Type::Q2_K:
            d = k.dot_q2_K(reinterpret_cast<const quant::block_q2_K*>(row),
                           static_cast<const quant::block_q8_K*>(xs[v]), n);
            break;
          case quant::Type::Q4_K:
            d = k.dot_q4_K(reinterpret_cast<const quant::block_q4_K*>(row),
                           static_cast<const quant::block_q8_K*>(xs[v]), n);
            break;
          case quant::Type::IQ2_XXS:
            d = k.dot_iq2_xxs(reinterpret_cast<const quant::block_iq2_xxs*>(row),
                              static_cast<const quant::block_q8_K*>(xs[v]), n);
            break;
          default:
            d = quant::vec_dot(t, row, xs[v], n);
            break;
        }
        y[v * y_stride + r] = d;
      }
    }
  };
  // Keep tiny matrices on one thread: waking workers costs more than the work.
  const int64_t min_rows = (n * n_vec < 4096) ? w.out : 16;
  pool.parallel_for(w.out, body, min_rows);
}

}  // namespace ds4::cpu
