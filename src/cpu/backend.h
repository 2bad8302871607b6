// The CPU backend: weights used in place in the GGUF mmap, sequence state in host memory,
// the forward pass of cpu/forward.h on the persistent thread pool.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace ds4::cpu {

// `weights` must outlive the backend; use_f32_activations() changes its matrix views.
std::unique_ptr<backend::Backend> make_backend(model::Weights& weights, const EngineOptions& opt);

}  // namespace ds4::cpu
