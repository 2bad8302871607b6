// The Vulkan backend (ds4::Backend::Vulkan). What runs where today (docs/vulkan.md, "The
// backend"): the token embedding and the output head run on the device from weights uploaded
// once; the transformer blocks and the MTP block still run on the CPU backend's forward pass
// (cpu/forward.h) on the host sequence state, until their device composition is wired.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace ds4::vulkan {

// `weights` must outlive the backend. Opens device opt.device (DS4_VULKAN_VALIDATION=1 turns
// the Khronos validation layer on); throws ds4::Error(InvalidArgument) when there is no such
// usable device.
std::unique_ptr<backend::Backend> make_backend(model::Weights& weights, const EngineOptions& opt);

}  // namespace ds4::vulkan
