// IQ2_XXS quantizer: per 32-value group, a weighted search over the 256-entry grid of
// 8-value magnitude patterns (levels {1,3,5}), with even-parity signs and a 4-bit group
// scale. Follows ggml's algorithm so the output matches its files.
#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "quant/internal.h"
#include "quant/quant.h"
#include "quant/tables.h"

namespace ds4::quant {
namespace {

using detail::nearest_int;

constexpr int kLevels = 3;          // magnitude levels 0..2 -> values 1, 3, 5
constexpr int kCodeSpace = 43692;   // 16-bit level codes (2 bits per weight) + slack, as ggml
constexpr int kNeighbourShells = 2; // off-grid codes try the two nearest distance shells

struct Iq2Search {
  int8_t values[256][8];          // 2*level+1 per weight of each grid entry
  std::vector<int> map;           // level code -> grid index, or -(offset+1) into neighbours
  std::vector<uint16_t> neighbours;  // at offset: count, then grid indices
};

int level_of_byte(uint8_t b) {
  switch (b) {
    case 0x08: return 0;
    case 0x19: return 1;
    case 0x2b: return 2;
  }
  throw std::logic_error("IQ2_XXS grid holds an unexpected magnitude");
}

Iq2Search build_search() {
  Iq2Search s;
  s.map.assign(kCodeSpace, -1);
  for (int g = 0; g < 256; ++g) {
    int code = 0;
    for (int i = 0; i < 8; ++i) {
      const int level = level_of_byte(static_cast<uint8_t>(tables::kIq2xxsGrid[g] >> (8 * i)));
      s.values[g][i] = static_cast<int8_t>(2 * level + 1);
      code |= level << (2 * i);
    }
    s.map[code] = g;
  }
  // Codes the quantizer can produce (every level <= 2) that the grid lacks get a list of
  // grid entries in the nearest two squared-distance shells, ties ordered by index.
  std::vector<std::pair<int, int>> nearest;
  int d2[256];
  for (int code = 0; code < kCodeSpace; ++code) {
    if (s.map[code] >= 0) continue;
    bool reachable = true;
    int8_t pos[8];
    for (int i = 0; i < 8; ++i) {
      const int level = (code >> (2 * i)) & 3;
      reachable = reachable && level < kLevels;
      pos[i] = static_cast<int8_t>(2 * level + 1);
    }
    if (!reachable) continue;
    int shell[kNeighbourShells] = {INT32_MAX, INT32_MAX};  // the smallest distinct distances
    for (int g = 0; g < 256; ++g) {
      int d = 0;
      for (int i = 0; i < 8; ++i) d += (s.values[g][i] - pos[i]) * (s.values[g][i] - pos[i]);
      d2[g] = d;
      if (d < shell[0]) {
        shell[1] = shell[0];
        shell[0] = d;
      } else if (d > shell[0] && d < shell[1]) {
        shell[1] = d;
      }
    }
    // Entries of those shells ordered by (distance, index): the search's tie order.
    nearest.clear();
    for (int g = 0; g < 256; ++g) {
      if (d2[g] <= shell[1]) nearest.emplace_back(d2[g], g);
    }
    std::sort(nearest.begin(), nearest.end());
    s.map[code] = -static_cast<int>(s.neighbours.size() + 1);
    s.neighbours.push_back(static_cast<uint16_t>(nearest.size()));
    for (const auto& entry : nearest) s.neighbours.push_back(static_cast<uint16_t>(entry.second));
  }
  return s;
}

const Iq2Search& search() {
  static const Iq2Search s = build_search();
  return s;
}

// Best grid entry (weighted squared error at this scale) among an off-grid code's
// neighbours; writes its levels to L and returns its index.
int best_neighbour(const Iq2Search& s, int code, const float* xval, const float* w, float scale,
                   uint8_t* L) {
  const uint16_t* list = s.neighbours.data() + (-s.map[code] - 1);
  const int count = list[0];
  float best_d2 = FLT_MAX;
  int best = list[1];
  for (int k = 1; k <= count; ++k) {
    const int8_t* v = s.values[list[k]];
    float d2 = 0;
    for (int i = 0; i < 8; ++i) {
      const float diff = scale * v[i] - xval[i];
      d2 += w[i] * diff * diff;
    }
    if (d2 < best_d2) {
      best_d2 = d2;
      best = list[k];
    }
  }
  for (int i = 0; i < 8; ++i) L[i] = static_cast<uint8_t>((s.values[best][i] - 1) / 2);
  return best;
}

// Levels of one 8-value sub-group at inverse scale id, snapped onto the grid.
int snap_to_grid(const Iq2Search& s, const float* xval, const float* waux, float id, float scale,
                 uint8_t* L) {
  int code = 0;
  for (int i = 0; i < 8; ++i) {
    const int l = std::max(0, std::min(kLevels - 1, nearest_int(0.5f * (id * xval[i] - 1))));
    L[i] = static_cast<uint8_t>(l);
    code |= l << (2 * i);
  }
  if (s.map[code] >= 0) return s.map[code];
  return best_neighbour(s, code, xval, waux, scale, L);
}

// Least-squares group scale for levels L: sum w*x*q / sum w*q^2 with q = 2L+1.
void weighted_sums(const float* xval, const float* w, const uint8_t* L, float* sumqx, float* sumq2) {
  *sumqx = 0;
  *sumq2 = 0;
  for (int i = 0; i < 32; ++i) {
    const float q = 2 * L[i] + 1;
    *sumqx += w[i] * xval[i] * q;
    *sumq2 += w[i] * q * q;
  }
}

void quantize_block(const Iq2Search& s, const float* x, block_iq2_xxs* y, const float* importance) {
  uint32_t words[16] = {};
  float group_scales[8];
  float weight[32], waux[32], xval[32];
  uint8_t L[32], Laux[32];

  float sumx2 = 0;
  for (int i = 0; i < QK_K; ++i) sumx2 += x[i] * x[i];
  const float sigma2 = sumx2 / QK_K;
  float max_scale = 0;

  for (int g = 0; g < 8; ++g) {
    const float* xb = x + 32 * g;
    for (int i = 0; i < 32; ++i) {
      const float imp = importance ? importance[32 * g + i] : 1.0f;
      weight[i] = imp * std::sqrt(sigma2 + xb[i] * xb[i]);
      waux[i] = std::sqrt(weight[i]);
    }
    // Signs: only an even number of negatives per 8 is storable. With an odd count, the
    // value whose sign error costs least (smallest w*x^2) gets the wrong sign.
    uint8_t signs[4];
    for (int k = 0; k < 4; ++k) {
      int negatives = 0;
      uint8_t bits = 0;
      for (int i = 0; i < 8; ++i) {
        const float v = xb[8 * k + i];
        xval[8 * k + i] = std::fabs(v);
        if (v < 0) {
          ++negatives;
          bits |= static_cast<uint8_t>(1u << i);
        }
      }
      if (negatives % 2) {
        int cheapest = 0;
        float least = weight[8 * k] * xb[8 * k] * xb[8 * k];
        for (int i = 1; i < 8; ++i) {
          const float cost = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
          if (cost < least) {
            least = cost;
            cheapest = i;
          }
        }
        xval[8 * k + cheapest] = -xval[8 * k + cheapest];
        bits ^= static_cast<uint8_t>(1u << cheapest);
      }
      signs[k] = bits & 127;
    }

    float max = xval[0];
    for (int i = 1; i < 32; ++i) max = std::max(max, xval[i]);
    if (max < 1e-15f) {
      group_scales[g] = 0;
      continue;
    }
    float scale = detail::fit_scale_positive(32, kLevels + 1, xval, L, weight);
    const float eff_max = scale * kLevels;
    if (eff_max <= 0) {
      group_scales[g] = 0;
      continue;
    }
    // Try 13 inverse scales around the one that maps eff_max to the top level.
    float best = 0;
    for (int is = -6; is <= 6; ++is) {
      const float id = (2 * kLevels - 1 + is * 0.1f) / eff_max;
      const float this_scale = 1 / id;
      for (int k = 0; k < 4; ++k) snap_to_grid(s, xval + 8 * k, waux + 8 * k, id, this_scale, Laux + 8 * k);
      float sumqx, sumq2;
      weighted_sums(xval, weight, Laux, &sumqx, &sumq2);
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
        scale = sumqx / sumq2;
        best = scale * sumqx;
        std::memcpy(L, Laux, sizeof(L));
      }
    }
    // One refinement at the best scale found.
    if (scale > 0) {
      const float id = 1 / scale;
      for (int k = 0; k < 4; ++k) snap_to_grid(s, xval + 8 * k, waux + 8 * k, id, scale, L + 8 * k);
      float sumqx, sumq2;
      weighted_sums(xval, weight, L, &sumqx, &sumq2);
      if (sumq2 > 0) scale = sumqx / sumq2;
    }
    if (scale < 0) {  // flipping the 7 stored bits also flips the implied 8th
      scale = -scale;
      for (auto& b : signs) b = static_cast<uint8_t>(~b & 127);
    }
    for (int k = 0; k < 4; ++k) {
      int code = 0;
      for (int i = 0; i < 8; ++i) code |= L[8 * k + i] << (2 * i);
      const int index = s.map[code];
      if (index < 0) throw std::logic_error("IQ2_XXS quantizer left a sub-group off the grid");
      words[2 * g] |= static_cast<uint32_t>(index) << (8 * k);
      words[2 * g + 1] |= static_cast<uint32_t>(signs[k]) << (7 * k);
    }
    group_scales[g] = scale;
    max_scale = std::max(max_scale, scale);
  }

  if (max_scale == 0) {
    y->d = f32_to_f16(0.0f);
    std::memset(y->qs, 0, sizeof(y->qs));
    return;
  }
  const float d = max_scale / 31;
  y->d = f32_to_f16(d);
  const float id = 1 / d;
  for (int g = 0; g < 8; ++g) {
    const int l = std::max(0, std::min(15, nearest_int(0.5f * (id * group_scales[g] - 1))));
    words[2 * g + 1] |= static_cast<uint32_t>(l) << 28;
  }
  std::memcpy(y->qs, words, sizeof(words));
}

}  // namespace

void quantize_row_iq2_xxs(const float* x, block_iq2_xxs* y, int64_t nb, const float* importance) {
  const Iq2Search& s = search();
  for (int64_t i = 0; i < nb; ++i) {
    quantize_block(s, x + i * QK_K, y + i, importance ? importance + i * QK_K : nullptr);
  }
}

}  // namespace ds4::quant
