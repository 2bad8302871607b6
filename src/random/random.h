// The project's random numbers, in one place:
// - Rng: the one seeded generator (xoshiro256**, its state filled by splitmix64). A seed gives
//   the same sequence on every platform and compiler, which the sampler's `--seed` and the
//   synthetic models' weights rely on.
// - unguessable_hex: identifiers other clients must not predict (tool-call and item ids), read
//   from the kernel's CSPRNG.
#pragma once

#include <cmath>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <string_view>

namespace ds4::random {

// One splitmix64 step: advances `x` and returns a well-mixed 64-bit value.
inline uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed = 1) {
    for (auto& v : s_) v = splitmix64(seed);
  }
  // A generator in exactly this state (checks the step against the published vectors).
  static Rng with_state(uint64_t s0, uint64_t s1, uint64_t s2, uint64_t s3) {
    Rng r;
    r.s_[0] = s0;
    r.s_[1] = s1;
    r.s_[2] = s2;
    r.s_[3] = s3;
    return r;
  }
  uint64_t next() {
    const uint64_t r = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
  }
  // [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Standard normal by Box-Muller; every second call returns the cached sine half.
  float normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    const double r = std::sqrt(-2.0 * std::log(u1)), a = 6.283185307179586 * u2;
    spare_ = static_cast<float>(r * std::sin(a));
    has_spare_ = true;
    return static_cast<float>(r * std::cos(a));
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
  bool has_spare_ = false;
  float spare_ = 0;
};

// `prefix` followed by `hex_digits` lower-case hex digits from std::random_device.
inline std::string unguessable_hex(std::string_view prefix, int hex_digits = 32) {
  static std::mutex mu;
  static std::random_device device;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(prefix);
  std::lock_guard<std::mutex> lock(mu);
  for (int left = hex_digits; left > 0; left -= 8) {
    const uint32_t r = device();
    for (int k = 0; k < 8 && k < left; ++k) id.push_back(kHex[(r >> (4 * k)) & 15]);
  }
  return id;
}

}  // namespace ds4::random
