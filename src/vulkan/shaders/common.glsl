// Helpers shared by the compute shaders. Every buffer is a uint array: byte and half-word
// fields are extracted with shifts, so the shaders need no 8/16-bit storage features and
// blocks of any even size (Q8_0: 34 bytes, IQ2_XXS: 66) can start at any even byte.

// Byte o (0..255) of a uint array.
#define BYTE_AT(arr, o) ((arr[(o) >> 2] >> (((o) & 3u) * 8u)) & 0xFFu)
// Half-word at an even byte offset o.
#define U16_AT(arr, o) ((arr[(o) >> 2] >> (((o) & 2u) * 8u)) & 0xFFFFu)
// Signed byte i of an int8 array starting at word w.
#define I8_AT(arr, w, i) bitfieldExtract(int(arr[(w) + ((i) >> 2)]), int(((i) & 3u) * 8u), 8)

// IEEE binary16 bits -> float, exact for every value (subnormals included) without relying
// on the device's f16 conversion.
float f16_bits_to_f32(uint h) {
  uint s = (h & 0x8000u) << 16;
  uint e = (h >> 10) & 0x1Fu;
  uint m = h & 0x3FFu;
  if (e == 0u) {
    // Subnormal (or zero): m * 2^-24 is exact in f32.
    float v = float(m) * 5.9604644775390625e-8;
    return (s != 0u) ? -v : v;
  }
  if (e == 31u) return uintBitsToFloat(s | 0x7F800000u | (m << 13));
  return uintBitsToFloat(s | ((e + 112u) << 23) | (m << 13));
}

// x * y = hi + lo exactly (Dekker's product: Veltkamp splits, correctly rounded mul/add
// only). Needs no fma: some implementations (lavapipe among them) emulate fma unfused.
void two_prod(float x, float y, out float hi, out float lo) {
  precise float p = x * y;
  precise float cx = 4097.0 * x;
  precise float xh = cx - (cx - x);
  precise float xl = x - xh;
  precise float cy = 4097.0 * y;
  precise float yh = cy - (cy - y);
  precise float yl = y - yh;
  precise float e = ((xh * yh - p) + xh * yl + xl * yh) + xl * yl;
  hi = p;
  lo = e;
}

// a / b correctly rounded (for a normal quotient): Vulkan lets OpFDiv be 2.5 ulp off, so the
// quotient gets one residual correction with the exact residual a - q*b. A huge or tiny
// divisor is first scaled by 2^-64 / 2^64 (exact) so that nothing reaches the subnormal
// range (which devices may flush) or overflows. The activation quantizers need this to
// produce the CPU's bytes.
float exact_div(float a, float b) {
  precise float sa = a, sb = b;
  if (abs(b) > 1e30) {
    sa = a * 5.421010862427522e-20;  // 2^-64
    sb = b * 5.421010862427522e-20;
  } else if (abs(b) < 1e-30) {
    sa = a * 1.8446744073709552e19;  // 2^64
    sb = b * 1.8446744073709552e19;
  }
  precise float q = sa / sb;
  float hi, lo;
  two_prod(q, sb, hi, lo);
  precise float r = (sa - hi) - lo;
  precise float c = q + r / sb;
  return c;
}
