// Quant formats: conversion, quantization and the dot products the engine needs.
//
// Scalar reference kernels live in namespace ds4::quant::scalar; SIMD versions are
// picked at run time (see kernels()). Tests compare each SIMD kernel to the scalar one.
#pragma once

#include <cstddef>
#include <cstdint>

#include "quant/types.h"

namespace ds4::quant {

// ---- scalar conversions -------------------------------------------------------------
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);    // round to nearest even, overflow -> inf
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);   // round to nearest even, NaN stays NaN

// Official checkpoint formats.
float fp8_e4m3_to_f32(uint8_t code);    // e4m3fn: no inf, 0x7f/0xff NaN, max 448
uint8_t f32_to_fp8_e4m3(float f);       // nearest, ties to even code, saturating to +-448
float e8m0_to_f32(uint8_t code);        // 2^(code-127); code 0 -> 2^-127, 0xff -> NaN
float fp4_e2m1_to_f32(uint8_t nibble);  // {0,.5,1,1.5,2,3,4,6} with sign bit 3
uint8_t f32_to_fp4_e2m1(float f);       // nearest, ties to even code, saturating to +-6

// Dequantize an official FP8 weight [rows, cols] (row-major) with a block scale tensor of
// shape [ceil(rows/128), ceil(cols/128)], scales either e8m0 bytes or f32. NaN codes give 0
// (as ds4's converter does).
enum class ScaleFormat { E8M0, F32 };
void dequantize_fp8_weight(const uint8_t* q, const void* scales, ScaleFormat sf, int64_t rows,
                           int64_t cols, float* out);
// Dequantize an official FP4 expert weight [rows, cols]: packed [rows, cols/2] (low nibble =
// even element), e8m0 scales [rows, cols/32].
void dequantize_fp4_weight(const uint8_t* packed, const uint8_t* scales_e8m0, int64_t rows,
                           int64_t cols, float* out);

// ---- rows of GGUF types -------------------------------------------------------------
// n must be a whole number of blocks; supported: F32, F16, BF16, Q8_0, Q8_K, Q2_K, Q4_K,
// IQ2_XXS. Throws std::invalid_argument otherwise.
void dequantize_row(Type t, const void* src, float* dst, int64_t n);

// Quantize one row. importance (n values, may be null) weights the error the search
// minimises for the K-quants and IQ2_XXS (an imatrix column, or sum of squares). The
// output is byte-identical to ggml's quantizers: with importance, its imatrix paths; without,
// its reference paths for Q2_K/Q4_K and, for IQ2_XXS (where ggml demands an imatrix), the
// imatrix path with every importance 1. Q8_0 rounds half away from zero (as ggml).
// Supported: F32, F16, BF16, Q8_0, Q8_K, Q2_K, Q4_K, IQ2_XXS.
void quantize_row(Type t, const float* src, void* dst, int64_t n,
                  const float* importance = nullptr);

// ---- activations --------------------------------------------------------------------
// The operand a weight type is multiplied with: F32 for F32/F16/BF16, Q8_0 activations
// (block_q8_0_act) for Q8_0, Q8_K for Q2_K/Q4_K/IQ2_XXS.
enum class ActType { F32, Q8_0, Q8_K };
ActType activation_type(Type weight_type);
// Bytes needed to hold n activations quantized as a.
size_t activation_bytes(ActType a, int64_t n);
// Quantize n activations for multiplication with weight_type rows (F32: plain copy).
void quantize_activations(Type weight_type, const float* x, void* dst, int64_t n);

// ds4's activation quantizers (docs/quant.md, "Activation operands").
void quantize_act_q8_0(const float* x, block_q8_0_act* dst, int64_t n);
void quantize_act_q8_K(const float* x, block_q8_K* dst, int64_t n);

// ---- IQ2_XXS repacked in memory --------------------------------------------------------
// A lossless re-encoding of IQ2_XXS blocks in place (docs/quant.md): same 66 bytes per block
// at the same offsets, so rows and experts are addressed as before. Per block: d, then the 32
// grid indices (group g's four at qs bytes 4g..4g+3), then one byte per 8 weights (group g's
// four at 32+4g..): bits 0-6 the prefix xor of the seven stored sign bits (bit 6 is then the
// 8th sign, their parity) and bit 7 one bit of the group's 4-bit scale (byte k: bit k).
// The *_r kernels below read this layout; unpack restores the GGUF bytes exactly.
void iq2_xxs_repack(block_iq2_xxs* blocks, int64_t nblocks);
void iq2_xxs_unpack(block_iq2_xxs* blocks, int64_t nblocks);

// ---- dot products ---------------------------------------------------------------------
// One kernel table per instruction set. All functions take n in values, a whole number of
// blocks (not checked here; vec_dot checks). Activations must come from the quantizers
// above (int8 values within [-127, 127]; the SIMD byte products rely on it).
// Q2_K, Q4_K and IQ2_XXS kernels return the same float on every ISA (integer block sums,
// fixed combination order); F32/F16/BF16/Q8_0 differ from scalar only by summation order.
struct Kernels {
  const char* isa_name;
  float (*dot_f32)(const float* w, const float* x, int64_t n);
  float (*dot_f16)(const uint16_t* w, const float* x, int64_t n);
  float (*dot_bf16)(const uint16_t* w, const float* x, int64_t n);
  float (*dot_q8_0)(const block_q8_0* w, const block_q8_0_act* x, int64_t n);
  float (*dot_q2_K)(const block_q2_K* w, const block_q8_K* x, int64_t n);
  float (*dot_q4_K)(const block_q4_K* w, const block_q8_K* x, int64_t n);
  float (*dot_iq2_xxs)(const block_iq2_xxs* w, const block_q8_K* x, int64_t n);
  // Activation quantizers (n a multiple of the block size; checked by the public wrappers).
  // Every ISA produces the same bytes as the scalar version for finite inputs.
  void (*quantize_act_q8_0)(const float* x, block_q8_0_act* dst, int64_t n);
  void (*quantize_act_q8_K)(const float* x, block_q8_K* dst, int64_t n);
  // One IQ2_XXS row against nx Q8_K activation vectors (vector v at x + v*x_stride blocks),
  // out[v] = dot_iq2_xxs(w, x_v, n) bit for bit. Decodes the row's grid and signs once per
  // block and reuses them for every vector: the prefill/batched form of the hot kernel.
  void (*dot_iq2_xxs_multi)(const block_iq2_xxs* w, const block_q8_K* x, int64_t x_stride, int nx,
                            int64_t n, float* out);
  // The same for Q8_0 rows and Q8_0 activations (x_stride in blocks): loads and unpacks the
  // weight block once for up to four vectors; out[v] == dot_q8_0(w, x_v, n) exactly.
  void (*dot_q8_0_multi)(const block_q8_0* w, const block_q8_0_act* x, int64_t x_stride, int nx, int64_t n,
                         float* out);
  // And for the K-quant rows against Q8_K vectors (unpacked scales and quants reused).
  void (*dot_q2_K_multi)(const block_q2_K* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n,
                         float* out);
  void (*dot_q4_K_multi)(const block_q4_K* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n,
                         float* out);
  // nr IQ2_XXS rows (row i at w + i*w_stride blocks) against nx Q8_K vectors:
  // out[i*nx + v] = dot_iq2_xxs(row i, x_v, n) bit for bit. The prefill tile form: weight
  // blocks of several rows are decoded together, so each activation block is read once per
  // group of rows (from L1) instead of once per row.
  void (*dot_iq2_xxs_rows)(const block_iq2_xxs* w, int64_t w_stride, int nr, const block_q8_K* x, int64_t x_stride,
                           int nx, int64_t n, float* out);
  // The same tile form for the K-quants (out[i*nx + v] = dot_q2_K / dot_q4_K exactly).
  void (*dot_q2_K_rows)(const block_q2_K* w, int64_t w_stride, int nr, const block_q8_K* x, int64_t x_stride, int nx,
                        int64_t n, float* out);
  void (*dot_q4_K_rows)(const block_q4_K* w, int64_t w_stride, int nr, const block_q8_K* x, int64_t x_stride, int nx,
                        int64_t n, float* out);
  // The three IQ2_XXS kernels for rows repacked by iq2_xxs_repack(): each result equals the
  // one of the plain kernel on the unpacked row, bit for bit.
  float (*dot_iq2_xxs_r)(const block_iq2_xxs* w, const block_q8_K* x, int64_t n);
  void (*dot_iq2_xxs_r_multi)(const block_iq2_xxs* w, const block_q8_K* x, int64_t x_stride, int nx, int64_t n,
                              float* out);
  void (*dot_iq2_xxs_r_rows)(const block_iq2_xxs* w, int64_t w_stride, int nr, const block_q8_K* x,
                             int64_t x_stride, int nx, int64_t n, float* out);
  // nr Q8_0 rows (row i at w + i*w_stride blocks) against nx Q8_0 vectors:
  // out[i*nx + v] = dot_q8_0(row i, x_v, n) bit for bit. The prefill tile form.
  void (*dot_q8_0_rows)(const block_q8_0* w, int64_t w_stride, int nr, const block_q8_0_act* x, int64_t x_stride,
                        int nx, int64_t n, float* out);
};

enum class Isa { Scalar, AVX2, AVX512, AVX512_VNNI };
const char* isa_name(Isa isa);
bool isa_available(Isa isa);       // compiled in and supported by this CPU
const Kernels& kernels(Isa isa);   // std::runtime_error unless isa_available(isa)
// Best available table, chosen once per process. DS4_ISA=scalar|avx2|avx512|avx512_vnni
// forces one; a value this build/CPU cannot honour is reported on stderr and ignored.
const Kernels& kernels();

// Dot of one weight row with activations already quantized by quantize_activations().
// n must be a whole number of the weight type's blocks (std::invalid_argument otherwise).
float vec_dot(Type weight_type, const void* w_row, const void* x_act, int64_t n);

// One weight row against nx activation vectors laid out x_stride_bytes apart (each as
// quantize_activations() wrote it); out[v] equals vec_dot(weight_type, w_row, x_v, n)
// exactly. Faster than nx vec_dot calls where weight loading/decoding is shared (IQ2_XXS,
// Q8_0, Q2_K, Q4_K); the float types loop over vec_dot.
void vec_dot_multi(Type weight_type, const void* w_row, const void* x_acts, size_t x_stride_bytes,
                   int nx, int64_t n, float* out);

// nr weight rows, w_stride_bytes apart, against nx activation vectors: out[r*nx + v] equals
// vec_dot(weight_type, row r, x_v, n) exactly. IQ2_XXS, Q2_K, Q4_K and Q8_0 have kernels for
// the whole tile; the other types run vec_dot_multi row by row.
void vec_dot_rows(Type weight_type, const void* w, size_t w_stride_bytes, int nr, const void* x_acts,
                  size_t x_stride_bytes, int nx, int64_t n, float* out);

namespace scalar {
const Kernels& kernels();
}

}  // namespace ds4::quant
