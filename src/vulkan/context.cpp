#include "vulkan/context.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "vulkan/shaders.h"

VULKAN_HPP_DEFAULT_DISPATCH_LOADER_DYNAMIC_STORAGE

namespace ds4::vulkan {

struct ValidationCounter {
  std::atomic<uint64_t> messages{0};
};

namespace {

constexpr const char* kValidationLayer = "VK_LAYER_KHRONOS_validation";

// The loader is opened at run time, so a binary built with the backend still starts (and says
// "no Vulkan device") on a machine without libvulkan.so.1.
bool init_loader() {
  static std::once_flag once;
  static bool ok = false;
  static std::unique_ptr<vk::DynamicLoader> loader;
  std::call_once(once, [] {
    try {
      loader = std::make_unique<vk::DynamicLoader>();
      auto gipa = loader->getProcAddress<PFN_vkGetInstanceProcAddr>("vkGetInstanceProcAddr");
      if (!gipa) return;
      VULKAN_HPP_DEFAULT_DISPATCHER.init(gipa);
      ok = true;
    } catch (const std::exception&) {
      ok = false;
    }
  });
  return ok;
}

bool layer_available(const char* name) {
  for (const auto& l : vk::enumerateInstanceLayerProperties())
    if (std::strcmp(l.layerName, name) == 0) return true;
  return false;
}

bool instance_extension_available(const char* name) {
  for (const auto& e : vk::enumerateInstanceExtensionProperties())
    if (std::strcmp(e.extensionName, name) == 0) return true;
  return false;
}

VKAPI_ATTR VkBool32 VKAPI_CALL on_validation_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                     VkDebugUtilsMessageTypeFlagsEXT,
                                                     const VkDebugUtilsMessengerCallbackDataEXT* data,
                                                     void* user) {
  if (severity >= VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
    static_cast<ValidationCounter*>(user)->messages++;
    std::cerr << "vulkan validation: " << (data && data->pMessage ? data->pMessage : "?") << "\n";
  }
  return VK_FALSE;
}

vk::Instance make_instance(bool validation, ValidationCounter* counter) {
  vk::ApplicationInfo app{.pApplicationName = "ds4", .applicationVersion = 1, .pEngineName = "ds4",
                          .engineVersion = 1, .apiVersion = VK_API_VERSION_1_2};
  std::vector<const char*> layers, exts;
  vk::DebugUtilsMessengerCreateInfoEXT dbg{};
  std::vector<vk::ValidationFeatureEnableEXT> enables = {
      vk::ValidationFeatureEnableEXT::eSynchronizationValidation};
  vk::ValidationFeaturesEXT features{.enabledValidationFeatureCount = static_cast<uint32_t>(enables.size()),
                                     .pEnabledValidationFeatures = enables.data()};
  vk::InstanceCreateInfo ci{.pApplicationInfo = &app};
  if (validation) {
    layers.push_back(kValidationLayer);
    exts.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    dbg.messageSeverity = vk::DebugUtilsMessageSeverityFlagBitsEXT::eWarning |
                          vk::DebugUtilsMessageSeverityFlagBitsEXT::eError;
    dbg.messageType = vk::DebugUtilsMessageTypeFlagBitsEXT::eGeneral |
                      vk::DebugUtilsMessageTypeFlagBitsEXT::eValidation |
                      vk::DebugUtilsMessageTypeFlagBitsEXT::ePerformance;
    dbg.pfnUserCallback = on_validation_message;
    dbg.pUserData = counter;
    // Messages from instance creation itself go to this chained messenger.
    features.pNext = &dbg;
    ci.pNext = &features;
  }
  ci.enabledLayerCount = static_cast<uint32_t>(layers.size());
  ci.ppEnabledLayerNames = layers.data();
  ci.enabledExtensionCount = static_cast<uint32_t>(exts.size());
  ci.ppEnabledExtensionNames = exts.data();
  vk::Instance inst = vk::createInstance(ci);
  VULKAN_HPP_DEFAULT_DISPATCHER.init(inst);
  return inst;
}

const char* type_name(vk::PhysicalDeviceType t) {
  switch (t) {
    case vk::PhysicalDeviceType::eDiscreteGpu: return "discrete";
    case vk::PhysicalDeviceType::eIntegratedGpu: return "integrated";
    case vk::PhysicalDeviceType::eVirtualGpu: return "virtual";
    case vk::PhysicalDeviceType::eCpu: return "cpu";
    default: return "other";
  }
}

int compute_queue_family(vk::PhysicalDevice pd) {
  auto fams = pd.getQueueFamilyProperties();
  // A compute-only family first (async compute on discrete GPUs), else any with compute.
  for (size_t i = 0; i < fams.size(); ++i)
    if ((fams[i].queueFlags & vk::QueueFlagBits::eCompute) && !(fams[i].queueFlags & vk::QueueFlagBits::eGraphics))
      return static_cast<int>(i);
  for (size_t i = 0; i < fams.size(); ++i)
    if (fams[i].queueFlags & vk::QueueFlagBits::eCompute) return static_cast<int>(i);
  return -1;
}

DeviceInfo describe(vk::PhysicalDevice pd, int index) {
  DeviceInfo d;
  d.index = index;
  auto chain = pd.getProperties2<vk::PhysicalDeviceProperties2, vk::PhysicalDeviceSubgroupProperties>();
  const auto& p = chain.get<vk::PhysicalDeviceProperties2>().properties;
  d.name = p.deviceName.data();
  d.type = type_name(p.deviceType);
  d.api_version = p.apiVersion;
  d.subgroup_size = chain.get<vk::PhysicalDeviceSubgroupProperties>().subgroupSize;
  auto mem = pd.getMemoryProperties();
  for (uint32_t i = 0; i < mem.memoryHeapCount; ++i)
    if (mem.memoryHeaps[i].flags & vk::MemoryHeapFlagBits::eDeviceLocal) d.device_local_bytes += mem.memoryHeaps[i].size;
  std::string missing;
  if (VK_API_VERSION_MAJOR(p.apiVersion) == 1 && VK_API_VERSION_MINOR(p.apiVersion) < 2) missing += " Vulkan 1.2";
  if (compute_queue_family(pd) < 0) missing += " compute queue";
  if (p.limits.maxComputeSharedMemorySize < 16384) missing += " 16 KiB shared memory";
  if (p.limits.maxComputeWorkGroupInvocations < 256) missing += " 256-invocation workgroups";
  d.usable = missing.empty();
  if (!d.usable) d.missing = "needs" + missing;
  return d;
}

}  // namespace

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> out;
  if (!init_loader()) return out;
  try {
    vk::Instance inst = make_instance(false, nullptr);
    int i = 0;
    for (auto pd : inst.enumeratePhysicalDevices()) out.push_back(describe(pd, i++));
    inst.destroy();
  } catch (const vk::SystemError&) {
    // No ICD at all (vkCreateInstance fails with VK_ERROR_INCOMPATIBLE_DRIVER): no devices.
  }
  return out;
}

std::string describe_devices(const std::vector<DeviceInfo>& devices) {
  std::ostringstream s;
  if (devices.empty()) s << "no Vulkan device (is a Vulkan driver installed? Debian: mesa-vulkan-drivers)\n";
  for (const auto& d : devices) {
    s << "  " << d.index << ": " << d.name << " (" << d.type << ", Vulkan " << VK_API_VERSION_MAJOR(d.api_version)
      << "." << VK_API_VERSION_MINOR(d.api_version) << ", " << (d.device_local_bytes >> 20)
      << " MiB device-local, subgroup " << d.subgroup_size << ")";
    if (!d.usable) s << " unusable: " << d.missing;
    s << "\n";
  }
  return s.str();
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    this->~Buffer();
    device_ = o.device_;
    buffer_ = o.buffer_;
    memory_ = o.memory_;
    size_ = o.size_;
    mapped_ = o.mapped_;
    o.buffer_ = nullptr;
    o.memory_ = nullptr;
    o.mapped_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

Buffer::~Buffer() {
  if (!device_) return;
  if (mapped_) device_.unmapMemory(memory_);
  if (buffer_) device_.destroyBuffer(buffer_);
  if (memory_) device_.freeMemory(memory_);
  buffer_ = nullptr;
  memory_ = nullptr;
  mapped_ = nullptr;
}

Context::Context(const ContextOptions& opt) {
  if (!init_loader()) throw std::runtime_error("no Vulkan loader (libvulkan.so.1 not found)");
  const char* env = std::getenv("DS4_VULKAN_VALIDATION");
  bool want_validation = opt.validation || (env && std::strcmp(env, "1") == 0);
  if (want_validation && (!layer_available(kValidationLayer) ||
                          !instance_extension_available(VK_EXT_DEBUG_UTILS_EXTENSION_NAME))) {
    throw std::runtime_error(std::string("validation requested but ") + kValidationLayer +
                             " is not installed (Debian: vulkan-validationlayers)");
  }
  validation_ = want_validation;
  counter_ = std::make_unique<ValidationCounter>();
  try {
    instance_ = make_instance(validation_, counter_.get());
  } catch (const vk::SystemError& e) {
    throw std::runtime_error(std::string("no Vulkan device: cannot create an instance (") + e.what() + ")");
  }
  if (validation_) {
    vk::DebugUtilsMessengerCreateInfoEXT dbg{
        .messageSeverity = vk::DebugUtilsMessageSeverityFlagBitsEXT::eWarning |
                           vk::DebugUtilsMessageSeverityFlagBitsEXT::eError,
        .messageType = vk::DebugUtilsMessageTypeFlagBitsEXT::eGeneral |
                       vk::DebugUtilsMessageTypeFlagBitsEXT::eValidation |
                       vk::DebugUtilsMessageTypeFlagBitsEXT::ePerformance,
        .pfnUserCallback = on_validation_message,
        .pUserData = counter_.get()};
    messenger_ = instance_.createDebugUtilsMessengerEXT(dbg);
  }
  auto pds = instance_.enumeratePhysicalDevices();
  if (pds.empty()) {
    release();
    throw std::runtime_error("no Vulkan device (is a Vulkan driver installed? Debian: mesa-vulkan-drivers)");
  }
  if (opt.device < 0 || opt.device >= static_cast<int>(pds.size())) {
    std::vector<DeviceInfo> all;
    for (size_t i = 0; i < pds.size(); ++i) all.push_back(describe(pds[i], static_cast<int>(i)));
    release();
    throw std::runtime_error("--device " + std::to_string(opt.device) + " does not exist; devices:\n" +
                             describe_devices(all));
  }
  physical_ = pds[opt.device];
  info_ = describe(physical_, opt.device);
  if (!info_.usable) {
    release();
    throw std::runtime_error("Vulkan device " + std::to_string(opt.device) + " (" + info_.name + ") " + info_.missing);
  }
  queue_family_ = static_cast<uint32_t>(compute_queue_family(physical_));
  mem_props_ = physical_.getMemoryProperties();
  const auto limits = physical_.getProperties().limits;
  max_binding_bytes_ = device_binding_bytes_ = limits.maxStorageBufferRange;
  binding_alignment_ = limits.minStorageBufferOffsetAlignment;

  float prio = 1.0f;
  vk::DeviceQueueCreateInfo qci{.queueFamilyIndex = queue_family_, .queueCount = 1, .pQueuePriorities = &prio};
  vk::DeviceCreateInfo dci{.queueCreateInfoCount = 1, .pQueueCreateInfos = &qci};
  device_ = physical_.createDevice(dci);
  VULKAN_HPP_DEFAULT_DISPATCHER.init(device_);
  queue_ = device_.getQueue(queue_family_, 0);
  cmd_pool_ = device_.createCommandPool({.flags = vk::CommandPoolCreateFlagBits::eResetCommandBuffer,
                                         .queueFamilyIndex = queue_family_});
}

Context::~Context() { release(); }

void Context::release() {
  if (device_) {
    device_.waitIdle();
    for (auto& [name, p] : pipelines_) {
      device_.destroyPipeline(p->pipeline);
      device_.destroyPipelineLayout(p->layout);
      device_.destroyDescriptorSetLayout(p->set_layout);
    }
    pipelines_.clear();
    if (cmd_pool_) device_.destroyCommandPool(cmd_pool_);
    device_.destroy();
    device_ = nullptr;
    cmd_pool_ = nullptr;
  }
  if (instance_) {
    if (messenger_) instance_.destroyDebugUtilsMessengerEXT(messenger_);
    instance_.destroy();
    instance_ = nullptr;
    messenger_ = nullptr;
  }
}

uint64_t Context::validation_messages() const { return counter_ ? counter_->messages.load() : 0; }

Buffer Context::make_buffer(size_t bytes, vk::MemoryPropertyFlags want, vk::MemoryPropertyFlags avoid) {
  Buffer b;
  b.device_ = device_;
  b.size_ = bytes;
  b.buffer_ = device_.createBuffer({.size = std::max<size_t>(bytes, 4),
                                    .usage = vk::BufferUsageFlagBits::eStorageBuffer |
                                             vk::BufferUsageFlagBits::eTransferSrc |
                                             vk::BufferUsageFlagBits::eTransferDst,
                                    .sharingMode = vk::SharingMode::eExclusive});
  const auto req = device_.getBufferMemoryRequirements(b.buffer_);
  int type = -1;
  for (int pass = 0; pass < 2 && type < 0; ++pass) {
    for (uint32_t i = 0; i < mem_props_.memoryTypeCount; ++i) {
      if (!(req.memoryTypeBits & (1u << i))) continue;
      const auto f = mem_props_.memoryTypes[i].propertyFlags;
      if ((f & want) != want) continue;
      if (pass == 0 && (f & avoid)) continue;
      type = static_cast<int>(i);
      break;
    }
  }
  if (type < 0) throw std::runtime_error("Vulkan: no memory type for a " + std::to_string(bytes) + "-byte buffer");
  try {
    b.memory_ = device_.allocateMemory({.allocationSize = req.size, .memoryTypeIndex = static_cast<uint32_t>(type)});
  } catch (const vk::OutOfDeviceMemoryError&) {
    throw std::runtime_error("Vulkan: out of device memory allocating " + std::to_string(bytes >> 20) +
                             " MiB (try --cpu-moe to keep routed experts in host memory)");
  }
  device_.bindBufferMemory(b.buffer_, b.memory_, 0);
  const auto f = mem_props_.memoryTypes[type].propertyFlags;
  if ((f & vk::MemoryPropertyFlagBits::eHostVisible) && (f & vk::MemoryPropertyFlagBits::eHostCoherent))
    b.mapped_ = device_.mapMemory(b.memory_, 0, VK_WHOLE_SIZE);
  return b;
}

Buffer Context::create_buffer(size_t bytes) {
  // Whole 16-byte units: shaders read words (and the copy shader 16 bytes), so a binding that
  // ends with the buffer must cover the last partial word.
  return make_buffer((bytes + 15) / 16 * 16, vk::MemoryPropertyFlagBits::eDeviceLocal, {});
}

Buffer Context::create_host_buffer(size_t bytes) {
  const auto host = vk::MemoryPropertyFlagBits::eHostVisible | vk::MemoryPropertyFlagBits::eHostCoherent;
  const size_t size = (bytes + 15) / 16 * 16;
  try {
    return make_buffer(size, host | vk::MemoryPropertyFlagBits::eDeviceLocal, {});
  } catch (const std::runtime_error&) {
    return make_buffer(size, host, {});  // no host-visible device memory: system memory
  }
}

void Context::copy_buffer(vk::Buffer src, vk::Buffer dst, size_t src_off, size_t dst_off, size_t bytes) {
  auto cbs = device_.allocateCommandBuffers({.commandPool = cmd_pool_, .level = vk::CommandBufferLevel::ePrimary,
                                             .commandBufferCount = 1});
  vk::CommandBuffer cb = cbs[0];
  cb.begin({.flags = vk::CommandBufferUsageFlagBits::eOneTimeSubmit});
  // Earlier compute writes (or transfers) finish before the copy reads or overwrites.
  vk::MemoryBarrier before{.srcAccessMask = vk::AccessFlagBits::eShaderWrite | vk::AccessFlagBits::eTransferWrite,
                           .dstAccessMask = vk::AccessFlagBits::eTransferRead | vk::AccessFlagBits::eTransferWrite};
  cb.pipelineBarrier(vk::PipelineStageFlagBits::eComputeShader | vk::PipelineStageFlagBits::eTransfer,
                     vk::PipelineStageFlagBits::eTransfer, {}, before, {}, {});
  cb.copyBuffer(src, dst, vk::BufferCopy{.srcOffset = src_off, .dstOffset = dst_off, .size = bytes});
  vk::MemoryBarrier after{.srcAccessMask = vk::AccessFlagBits::eTransferWrite,
                          .dstAccessMask = vk::AccessFlagBits::eHostRead | vk::AccessFlagBits::eShaderRead |
                                           vk::AccessFlagBits::eShaderWrite};
  cb.pipelineBarrier(vk::PipelineStageFlagBits::eTransfer,
                     vk::PipelineStageFlagBits::eHost | vk::PipelineStageFlagBits::eComputeShader, {}, after, {}, {});
  cb.end();
  vk::Fence fence = device_.createFence({});
  submit_and_wait(cb, fence);
  device_.destroyFence(fence);
  device_.freeCommandBuffers(cmd_pool_, cb);
}

void Context::submit_and_wait(vk::CommandBuffer cb, vk::Fence fence) {
  queue_.submit(vk::SubmitInfo{.commandBufferCount = 1, .pCommandBuffers = &cb}, fence);
  submits_.fetch_add(1, std::memory_order_relaxed);
  (void)device_.waitForFences(fence, VK_TRUE, UINT64_MAX);
  waits_.fetch_add(1, std::memory_order_relaxed);
  device_.resetFences(fence);
}

void Context::upload(Buffer& dst, const void* src, size_t bytes, size_t offset) {
  if (offset + bytes > dst.size()) throw std::out_of_range("Vulkan upload past the end of a buffer");
  if (bytes == 0) return;
  if (dst.mapped()) {
    std::memcpy(static_cast<char*>(dst.mapped()) + offset, src, bytes);
    return;
  }
  Buffer staging = make_buffer(bytes, vk::MemoryPropertyFlagBits::eHostVisible | vk::MemoryPropertyFlagBits::eHostCoherent,
                               vk::MemoryPropertyFlagBits::eDeviceLocal);
  std::memcpy(staging.mapped(), src, bytes);
  copy_buffer(staging.handle(), dst.handle(), 0, offset, bytes);
}

void Context::download(const Buffer& src, void* dst, size_t bytes, size_t offset) {
  if (offset + bytes > src.size()) throw std::out_of_range("Vulkan download past the end of a buffer");
  if (bytes == 0) return;
  if (src.mapped()) {
    std::memcpy(dst, static_cast<const char*>(src.mapped()) + offset, bytes);
    return;
  }
  Buffer staging = make_buffer(bytes, vk::MemoryPropertyFlagBits::eHostVisible | vk::MemoryPropertyFlagBits::eHostCoherent,
                               vk::MemoryPropertyFlagBits::eDeviceLocal);
  copy_buffer(src.handle(), staging.handle(), offset, 0, bytes);
  std::memcpy(dst, staging.mapped(), bytes);
}

const Pipeline& Context::pipeline(std::string_view name, uint32_t n_bindings, uint32_t written_mask,
                                  uint32_t push_bytes) {
  if (auto it = pipelines_.find(name); it != pipelines_.end()) return *it->second;
  const shaders::Module* mod = nullptr;
  for (size_t i = 0; i < shaders::kModuleCount; ++i)
    if (name == shaders::kModules[i].name) mod = &shaders::kModules[i];
  if (!mod) throw std::invalid_argument("Vulkan: no shader module named " + std::string(name));
  auto p = std::make_unique<Pipeline>();
  p->name = std::string(name);
  p->n_bindings = n_bindings;
  p->written_mask = written_mask;
  p->push_bytes = push_bytes;
  std::vector<vk::DescriptorSetLayoutBinding> binds(n_bindings);
  for (uint32_t i = 0; i < n_bindings; ++i)
    binds[i] = {.binding = i, .descriptorType = vk::DescriptorType::eStorageBuffer, .descriptorCount = 1,
                .stageFlags = vk::ShaderStageFlagBits::eCompute};
  p->set_layout = device_.createDescriptorSetLayout({.bindingCount = n_bindings, .pBindings = binds.data()});
  vk::PushConstantRange pcr{.stageFlags = vk::ShaderStageFlagBits::eCompute, .offset = 0, .size = push_bytes};
  p->layout = device_.createPipelineLayout({.setLayoutCount = 1, .pSetLayouts = &p->set_layout,
                                            .pushConstantRangeCount = push_bytes ? 1u : 0u,
                                            .pPushConstantRanges = push_bytes ? &pcr : nullptr});
  vk::ShaderModule sm = device_.createShaderModule({.codeSize = mod->n_words * 4, .pCode = mod->words});
  vk::ComputePipelineCreateInfo ci{
      .stage = {.stage = vk::ShaderStageFlagBits::eCompute, .module = sm, .pName = "main"}, .layout = p->layout};
  auto res = device_.createComputePipeline(nullptr, ci);
  device_.destroyShaderModule(sm);
  if (res.result != vk::Result::eSuccess) throw std::runtime_error("Vulkan: cannot build pipeline " + p->name);
  p->pipeline = res.value;
  auto& ref = *p;
  pipelines_.emplace(p->name, std::move(p));
  return ref;
}

}  // namespace ds4::vulkan
