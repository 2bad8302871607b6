// Numerical primitives of the DeepSeek V4 forward pass (docs/forward-pass.md).
// Pure functions on f32 buffers; no dependency on the weights or the file format.
#pragma once

#include <cstdint>
#include <vector>

namespace ds4::model {

// Smallest power of two >= y for a positive normal float, taken from its bits (exponent,
// plus one when any mantissa bit is set), as the reference kernels do.
float pow2_ceil_bits(float y);

// Nearest FP8 e4m3fn value of v (|v| <= 448), ties to the even code.
float round_e4m3(float v);
// Nearest FP4 e2m1 value of v (|v| <= 6), ties to the even code.
float round_e2m1(float v);

// FP8sim64 in place over n values (n a multiple of 64).
void fp8_sim64(float* x, int n);
// FP4sim32 in place over n values (n a multiple of 32).
void fp4_sim32(float* x, int n);

// Sylvester Hadamard transform of size n (a power of two) in place, scaled by n^-1/2.
void hadamard_scaled(float* x, int n);

// RMSNorm: y = x * (mean(x^2) + eps)^-1/2 (* w when w is not null). Sum in double.
void rms_norm(const float* x, const float* w, float* y, int n, float eps);
// Just the factor (mean(x^2)+eps)^-1/2.
float rms_factor(const float* x, int n, float eps);

// RoPE parameters for one family of layers (docs/forward-pass.md, "Rotary embedding").
struct Rope {
  int dims = 0;                 // R, rotated tail dims (R/2 pairs)
  std::vector<float> freq;      // R/2 per-pair frequencies after YaRN (f32 like the reference)
  int yarn_lo = 0, yarn_hi = 0; // ramp ends (only meaningful with YaRN)
  bool yarn = false;

  static Rope make(int rope_dims, float base, bool yarn, int64_t orig_ctx, float factor,
                   float beta_fast, float beta_slow);
  // Rotates the adjacent pairs of x[0..R) by angle pos*freq (inverse: -angle).
  void apply(float* x, int64_t pos, bool inverse = false) const;
};

// Hyper-connection mixes (docs/forward-pass.md, steps 2-3). m has (2+hc)*hc values; outputs pre[hc],
// post[hc], comb[hc*hc] (row i = source stream, column j = destination).
void hc_split_sinkhorn(const float* m, const float* scale3, const float* base, int hc, int iters,
                       float eps, float* pre, float* post, float* comb);

float sigmoid(float x);

// softplus with ds4's thresholds (x if x > 20, e^x if x < -20).
float softplus(float x);

}  // namespace ds4::model
