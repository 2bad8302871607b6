// The embedded SPIR-V modules (generated at build time from shaders/*.comp by glslc).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ds4::vulkan::shaders {

struct Module {
  const char* name;
  const uint32_t* words;
  size_t n_words;
};

extern const Module kModules[];
extern const size_t kModuleCount;

}  // namespace ds4::vulkan::shaders
