// Vulkan runtime: device discovery, one logical device with one compute queue, buffers and
// compute pipelines built from the embedded SPIR-V modules. See docs/vulkan.md.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#define VULKAN_HPP_NO_CONSTRUCTORS
#include <vulkan/vulkan.hpp>

namespace ds4::vulkan {

// What --list-devices prints: one line per physical device the loader reports.
struct DeviceInfo {
  int index = 0;
  std::string name;
  std::string type;            // "discrete", "integrated", "virtual", "cpu", "other"
  uint32_t api_version = 0;
  uint64_t device_local_bytes = 0;
  uint32_t subgroup_size = 0;
  bool usable = false;         // has every feature the shaders need
  std::string missing;         // why not, when !usable
};

// Every physical device (empty when there is no loader driver). Never throws for a missing
// driver: an empty list is the answer.
std::vector<DeviceInfo> list_devices();
// One human-readable line per device (what --list-devices prints).
std::string describe_devices(const std::vector<DeviceInfo>& devices);

struct ContextOptions {
  int device = 0;            // index into list_devices()
  // Enable VK_LAYER_KHRONOS_validation (with synchronization validation) when it is installed,
  // and count every warning/error it reports. Also on when DS4_VULKAN_VALIDATION=1.
  bool validation = false;
};

class Context;

// A storage buffer with its own memory. Host-visible memory stays mapped (mapped() != null):
// on unified-memory devices (lavapipe, integrated GPUs) weights need no staging copy.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer();

  vk::Buffer handle() const { return buffer_; }
  size_t size() const { return size_; }
  void* mapped() const { return mapped_; }
  explicit operator bool() const { return static_cast<bool>(buffer_); }

 private:
  friend class Context;
  vk::Device device_;
  vk::Buffer buffer_;
  vk::DeviceMemory memory_;
  size_t size_ = 0;
  void* mapped_ = nullptr;
};

// A compute pipeline for one embedded module. Bindings 0..n-1 are storage buffers;
// written_mask bit i says the shader writes binding i (the recorder's barriers use it).
struct Pipeline {
  std::string name;
  uint32_t n_bindings = 0;
  uint32_t written_mask = 0;
  uint32_t push_bytes = 0;
  vk::DescriptorSetLayout set_layout;
  vk::PipelineLayout layout;
  vk::Pipeline pipeline;
};

class Context {
 public:
  explicit Context(const ContextOptions& opt = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const DeviceInfo& info() const { return info_; }
  vk::Device device() const { return device_; }
  vk::Queue queue() const { return queue_; }
  uint32_t queue_family() const { return queue_family_; }
  vk::CommandPool command_pool() const { return cmd_pool_; }

  // Largest range one storage-buffer binding may cover, and the alignment of binding offsets.
  uint64_t max_binding_bytes() const { return max_binding_bytes_; }
  uint64_t binding_alignment() const { return binding_alignment_; }
  // Sets the binding limit below the device's (tests use it to exercise the splitting of large
  // tensors); a value above the device's limit restores that.
  void limit_binding_bytes(uint64_t bytes) { max_binding_bytes_ = std::min(device_binding_bytes_, bytes); }

  // Device-local memory, mapped when the device also makes it host-visible. The size is
  // rounded up to a multiple of 16 bytes.
  Buffer create_buffer(size_t bytes);
  // Host-visible, coherent memory that stays mapped (device-local too where the device offers
  // it: unified memory, resizable BAR). For the small per-step inputs of a recorded sequence
  // (positions, RoPE tables, row lists): the host writes them between submissions of the same
  // command buffer, no copy is recorded. Rounded up to 16 bytes like create_buffer().
  Buffer create_host_buffer(size_t bytes);
  void upload(Buffer& dst, const void* src, size_t bytes, size_t offset = 0);
  void download(const Buffer& src, void* dst, size_t bytes, size_t offset = 0);

  // Cached per module name; throws std::invalid_argument for an unknown module.
  const Pipeline& pipeline(std::string_view name, uint32_t n_bindings, uint32_t written_mask,
                           uint32_t push_bytes);

  // Submits one command buffer and waits for it (every submission goes through here, so the
  // counters below see them all).
  void submit_and_wait(vk::CommandBuffer cb, vk::Fence fence);
  // Command-buffer submissions and host waits for the device since the context was created
  // (ds4-bench reports them per token).
  uint64_t submits() const { return submits_.load(std::memory_order_relaxed); }
  uint64_t host_waits() const { return waits_.load(std::memory_order_relaxed); }

  bool validation_enabled() const { return validation_; }
  // Warnings and errors reported by the validation layer since the context was created.
  uint64_t validation_messages() const;

 private:
  Buffer make_buffer(size_t bytes, vk::MemoryPropertyFlags want, vk::MemoryPropertyFlags avoid);
  void release();  // destroys every handle (the destructor, and a constructor that fails)
  void copy_buffer(vk::Buffer src, vk::Buffer dst, size_t src_off, size_t dst_off, size_t bytes);

  DeviceInfo info_;
  vk::Instance instance_;
  vk::DebugUtilsMessengerEXT messenger_;
  vk::PhysicalDevice physical_;
  vk::PhysicalDeviceMemoryProperties mem_props_;
  vk::Device device_;
  vk::Queue queue_;
  uint32_t queue_family_ = 0;
  vk::CommandPool cmd_pool_;
  uint64_t max_binding_bytes_ = 0;
  uint64_t device_binding_bytes_ = 0;
  uint64_t binding_alignment_ = 0;
  bool validation_ = false;
  std::unique_ptr<struct ValidationCounter> counter_;
  std::map<std::string, std::unique_ptr<Pipeline>, std::less<>> pipelines_;
  std::atomic<uint64_t> submits_{0}, waits_{0};
};

}  // namespace ds4::vulkan
