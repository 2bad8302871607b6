// Splitting the model's layers into pipeline stages (docs/mpi.md): stage s runs layers
// [bounds[s], bounds[s+1]); the first stage also runs the embedding, the last the output head.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace ds4::model {

// Bytes of the stored tensors each part of the model reads: blk.<i>.* per layer, the token
// embedding, and the output head (output.*, output_hc_*). MTP tensors are not counted.
struct StageBytes {
  std::vector<uint64_t> layers;
  uint64_t embed = 0;
  uint64_t head = 0;
};
StageBytes stage_bytes(const gguf::File& f, int n_layers);

// Contiguous split of the layers into `stages` stages of at least one layer each, balancing
// the bytes each stage holds (embedding counted on the first, head on the last): the split
// whose largest stage is smallest. Returns stages + 1 bounds. Throws std::invalid_argument
// when there are fewer layers than stages.
std::vector<int> split_by_bytes(const StageBytes& b, int stages);

// Bounds from per-stage layer counts (--layer-split a,b,...): as many counts as stages, each
// at least 1, adding up to n_layers; otherwise std::invalid_argument saying why.
std::vector<int> split_from_counts(const std::vector<int>& counts, int n_layers, int stages);

// "a,b,c" -> {a, b, c}; std::invalid_argument on anything but positive integers and commas.
std::vector<int> parse_layer_split(const std::string& text);

}  // namespace ds4::model
