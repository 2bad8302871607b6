#include "model/numerics.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

namespace ds4::model {

float pow2_ceil_bits(float y) {
  uint32_t bits = std::bit_cast<uint32_t>(y);
  int32_t exp_field = static_cast<int32_t>((bits >> 23) & 0xff);
  uint32_t mant = bits & 0x7fffff;
  if (exp_field == 0) {
    // Subnormal (never reached by the clamped amax values): fall back to exact frexp.
    if (y <= 0.f) return 0.f;
    int e;
    float m = std::frexp(y, &e);  // y = m * 2^e, m in [0.5, 1)
    return (m == 0.5f) ? std::ldexp(1.f, e - 1) : std::ldexp(1.f, e);
  }
  if (mant != 0) exp_field += 1;
  return std::ldexp(1.f, exp_field - 127);
}

// Rounds |v| to a minifloat grid: `mant_bits` mantissa bits, smallest normal exponent
// `min_exp`; round half to even on the grid index, which is the even code.
static inline float round_minifloat(float v, int mant_bits, int min_exp) {
  float a = std::fabs(v);
  if (a == 0.f) return v;
  int e = std::ilogb(a);
  if (e < min_exp) e = min_exp;
  float step = std::ldexp(1.f, e - mant_bits);
  float q = std::nearbyint(a / step) * step;  // default rounding mode: half to even
  return std::copysign(q, v);
}

float round_e4m3(float v) { return round_minifloat(v, 3, -6); }
float round_e2m1(float v) { return round_minifloat(v, 1, 0); }

void fp8_sim64(float* x, int n) {
  for (int b = 0; b < n; b += 64) {
    float amax = 0.f;
    for (int i = 0; i < 64; ++i) amax = std::max(amax, std::fabs(x[b + i]));
    amax = std::max(amax, 1e-4f);
    float scale = pow2_ceil_bits(amax * (1.0f / 448.0f));
    for (int i = 0; i < 64; ++i) {
      float v = std::clamp(x[b + i] / scale, -448.f, 448.f);
      x[b + i] = round_e4m3(v) * scale;
    }
  }
}

void fp4_sim32(float* x, int n) {
  const float min_amax = 6.f * std::ldexp(1.f, -126);
  for (int b = 0; b < n; b += 32) {
    float amax = 0.f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b + i]));
    amax = std::max(amax, min_amax);
    float scale = pow2_ceil_bits(amax * (1.0f / 6.0f));
    for (int i = 0; i < 32; ++i) {
      float v = std::clamp(x[b + i] / scale, -6.f, 6.f);
      x[b + i] = round_e2m1(v) * scale;
    }
  }
}

void hadamard_scaled(float* x, int n) {
  for (int h = 1; h < n; h *= 2) {
    for (int i = 0; i < n; i += 2 * h) {
      for (int j = i; j < i + h; ++j) {
        float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
  const float s = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  for (int i = 0; i < n; ++i) x[i] *= s;
}

float rms_factor(const float* x, int n, float eps) {
  double ss = 0.0;
  for (int i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  return static_cast<float>(1.0 / std::sqrt(ss / n + eps));
}

void rms_norm(const float* x, const float* w, float* y, int n, float eps) {
  const float f = rms_factor(x, n, eps);
  if (w) {
    for (int i = 0; i < n; ++i) y[i] = x[i] * f * w[i];
  } else {
    for (int i = 0; i < n; ++i) y[i] = x[i] * f;
  }
}

Rope Rope::make(int rope_dims, float base, bool yarn, int64_t orig_ctx, float factor,
                float beta_fast, float beta_slow) {
  Rope r;
  r.dims = rope_dims;
  r.yarn = yarn && orig_ctx > 0;
  const int half = rope_dims / 2;
  r.freq.resize(half);
  for (int k = 0; k < half; ++k) {
    // f32 like the reference: 1 / base^(2k/R).
    float expo = static_cast<float>(2 * k) / static_cast<float>(rope_dims);
    r.freq[k] = 1.0f / std::pow(base, expo);
  }
  if (r.yarn) {
    auto cdim = [&](double nrot) {
      return rope_dims * std::log(static_cast<double>(orig_ctx) / (nrot * 2.0 * M_PI)) /
             (2.0 * std::log(static_cast<double>(base)));
    };
    int lo = std::max(static_cast<int>(std::floor(cdim(beta_fast))), 0);
    int hi = std::min(static_cast<int>(std::ceil(cdim(beta_slow))), rope_dims - 1);
    r.yarn_lo = lo;
    r.yarn_hi = hi;
    float den = (hi != lo) ? static_cast<float>(hi - lo) : 0.001f;
    for (int k = 0; k < half; ++k) {
      float ramp = std::clamp((static_cast<float>(k) - lo) / den, 0.f, 1.f);
      float smooth = 1.f - ramp;
      r.freq[k] = r.freq[k] / factor * (1.f - smooth) + r.freq[k] * smooth;
    }
  }
  return r;
}

void Rope::apply(float* x, int64_t pos, bool inverse) const {
  const int half = dims / 2;
  const float p = static_cast<float>(pos);
  for (int k = 0; k < half; ++k) {
    float th = p * freq[k];  // f32 product like the reference
    float c = std::cos(th), s = std::sin(th);
    if (inverse) s = -s;
    float x0 = x[2 * k], x1 = x[2 * k + 1];
    x[2 * k] = x0 * c - x1 * s;
    x[2 * k + 1] = x0 * s + x1 * c;
  }
}

float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

float softplus(float x) {
  if (x > 20.f) return x;
  if (x < -20.f) return std::exp(x);
  return std::log1p(std::exp(x));
}

void hc_split_sinkhorn(const float* m, const float* scale3, const float* base, int hc, int iters,
                       float eps, float* pre, float* post, float* comb) {
  for (int s = 0; s < hc; ++s) {
    pre[s] = sigmoid(m[s] * scale3[0] + base[s]) + eps;
    post[s] = 2.f * sigmoid(m[hc + s] * scale3[1] + base[hc + s]);
  }
  float* C = comb;
  for (int i = 0; i < hc; ++i) {
    float mx = -INFINITY;
    for (int j = 0; j < hc; ++j) {
      C[i * hc + j] = m[2 * hc + i * hc + j] * scale3[2] + base[2 * hc + i * hc + j];
      mx = std::max(mx, C[i * hc + j]);
    }
    float sum = 0.f;
    for (int j = 0; j < hc; ++j) {
      C[i * hc + j] = std::exp(C[i * hc + j] - mx);
      sum += C[i * hc + j];
    }
    for (int j = 0; j < hc; ++j) C[i * hc + j] = C[i * hc + j] / sum + eps;
  }
  auto col_norm = [&] {
    for (int j = 0; j < hc; ++j) {
      float s = 0.f;
      for (int i = 0; i < hc; ++i) s += C[i * hc + j];
      for (int i = 0; i < hc; ++i) C[i * hc + j] /= (s + eps);
    }
  };
  auto row_norm = [&] {
    for (int i = 0; i < hc; ++i) {
      float s = 0.f;
      for (int j = 0; j < hc; ++j) s += C[i * hc + j];
      for (int j = 0; j < hc; ++j) C[i * hc + j] /= (s + eps);
    }
  };
  col_norm();
  for (int it = 1; it < iters; ++it) {
    row_norm();
    col_norm();
  }
}

}  // namespace ds4::model
