// The model hyperparameters read from either config.json form (the reference's ModelArgs
// names or the Hugging Face names), and written as GGUF metadata.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "model/hparams.h"

namespace ds4::gguf {
class Writer;
}

namespace ds4::convert {

// The one hyperparameter struct, shared with the loader (model/hparams.h).
using model::ModelConfig;

// general.name of a converted model whose config.json names none.
inline constexpr const char* kDefaultModelName = "DeepSeek-V4";

// Throws ConvertError naming the missing/invalid field. `source` names the file in messages.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& source);
ModelConfig load_model_config(const std::string& path);
// Checks the shape constraints the catalogue relies on (divisibility etc.).
void validate_model_config(const ModelConfig& c, const std::string& source);
// Keeps the first n layers of the schedule and the MTP entries.
ModelConfig truncate_layers(const ModelConfig& c, int n);

// Every general.* and deepseek4.* key (docs/gguf.md, model/schema.h).
void write_model_metadata(const ModelConfig& c, gguf::Writer& w);

}  // namespace ds4::convert
