// Conversion recipes: the GGUF type each tensor of the catalogue (model/catalogue.h) gets,
// by its role.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convert/model_config.h"
#include "model/catalogue.h"
#include "quant/types.h"

namespace ds4::convert {

// The catalogue itself is the model's (model/catalogue.h), shared with the loader.
using model::build_catalogue;
using model::is_expert;
using model::Role;
using model::role_name;
using model::TensorSpec;

// ---- recipes ----------------------------------------------------------------------------
enum class Recipe { F32, Q8, Q2, Q4 };
std::optional<Recipe> parse_recipe(std::string_view s);
std::string_view recipe_name(Recipe r);

// The GGUF type a tensor gets under a recipe (before any row-fit check).
quant::Type recipe_type(Recipe r, const TensorSpec& t);

struct PlannedTensor {
  TensorSpec spec;
  quant::Type type;
  uint64_t nbytes;
};

// Types every tensor; a row length that is not a whole number of blocks of the chosen type is
// an error naming the tensor, unless f16_fallback (then that tensor becomes F16, reported in
// `fallbacks`).
std::vector<PlannedTensor> plan_tensors(const std::vector<TensorSpec>& cat, Recipe r, bool f16_fallback,
                                        std::vector<std::string>* fallbacks = nullptr);

}  // namespace ds4::convert
