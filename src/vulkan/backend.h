// The Vulkan backend (ds4::Backend::Vulkan; docs/vulkan.md, "The backend"): weights uploaded
// once, every sequence's state in device memory, a batch (embedding, blocks, head) recorded
// into one command buffer and submitted once; the MTP block likewise on a device-side ring.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace ds4::vulkan {

// `weights` must outlive the backend. Opens device opt.device (DS4_VULKAN_VALIDATION=1 turns
// the Khronos validation layer on); throws ds4::Error(InvalidArgument) when there is no such
// usable device.
std::unique_ptr<backend::Backend> make_backend(model::Weights& weights, const EngineOptions& opt);

}  // namespace ds4::vulkan
