#include "convert/catalogue.h"

#include <algorithm>

#include "convert/safetensors.h"

namespace ds4::convert {

std::optional<Recipe> parse_recipe(std::string_view s) {
  if (s == "f32") return Recipe::F32;
  if (s == "q8") return Recipe::Q8;
  if (s == "q2") return Recipe::Q2;
  if (s == "q4") return Recipe::Q4;
  return std::nullopt;
}

std::string_view recipe_name(Recipe r) {
  switch (r) {
    case Recipe::F32: return "f32";
    case Recipe::Q8: return "q8";
    case Recipe::Q2: return "q2";
    case Recipe::Q4: return "q4";
  }
  return "?";
}

quant::Type recipe_type(Recipe r, const TensorSpec& t) {
  using quant::Type;
  if (t.role == Role::Tid2eid) return Type::I32;
  if (r == Recipe::F32) return Type::F32;
  switch (t.role) {
    case Role::Embedding:
    case Role::HcFn:
    case Role::CompressorApe:
    case Role::CompressorProj:
    case Role::IndexerProj:
    case Role::Router:
      return Type::F16;
    case Role::HcScale:
    case Role::HcBase:
    case Role::Norm:
    case Role::AttnSink:
    case Role::RouterBias:
      return Type::F32;
    case Role::OutputHead:
    case Role::AttnProj:
    case Role::SharedExpert:
    case Role::MtpProj:
      return Type::Q8_0;
    case Role::ExpertGate:
    case Role::ExpertUp:
      return r == Recipe::Q8 ? Type::Q8_0 : r == Recipe::Q2 ? Type::IQ2_XXS : Type::Q4_K;
    case Role::ExpertDown:
      return r == Recipe::Q8 ? Type::Q8_0 : r == Recipe::Q2 ? Type::Q2_K : Type::Q4_K;
    case Role::Tid2eid:
      return Type::I32;
  }
  return Type::F32;
}

std::vector<PlannedTensor> plan_tensors(const std::vector<TensorSpec>& cat, Recipe r, bool f16_fallback,
                                        std::vector<std::string>* fallbacks) {
  std::vector<PlannedTensor> out;
  out.reserve(cat.size());
  for (const auto& t : cat) {
    quant::Type type = recipe_type(r, t);
    auto rb = quant::row_bytes(type, t.row_length());
    if (!rb) {
      const auto info = quant::type_info(static_cast<uint32_t>(type));
      const std::string why = "tensor " + t.gguf_name + ": row length " + std::to_string(t.row_length()) +
                              " is not a multiple of the " + std::string(quant::type_name(type)) + " block (" +
                              std::to_string(info ? info->block_elems : 0) + " values) required by recipe " +
                              std::string(recipe_name(r));
      if (!f16_fallback) throw ConvertError(why + " (use --f16-fallback to store such tensors as F16)");
      if (fallbacks) fallbacks->push_back(t.gguf_name + " (" + std::string(quant::type_name(type)) + " -> F16)");
      type = quant::Type::F16;
      rb = quant::row_bytes(type, t.row_length());
    }
    out.push_back({t, type, *rb * t.n_rows()});
  }
  return out;
}

}  // namespace ds4::convert
