// Reading and validating the model hyperparameters (hparams.h) from GGUF metadata
// (docs/gguf.md).
#pragma once

#include "ds4/engine.h"
#include "gguf/gguf.h"

namespace ds4::model {

// Reads every deepseek4.* key; throws ds4::Error(BadModel) naming the key on a missing,
// mistyped or inconsistent value. When the file identifies itself as Flash (general.name
// contains "Flash", or 43 layers of width 4096) the values must equal Flash's.
ModelConfig read_config(const gguf::File& f);

// Shape rules the forward pass relies on (N multiple of 64, d_I power of two, ...).
void validate_config(const ModelConfig& c, const std::string& file);

}  // namespace ds4::model
