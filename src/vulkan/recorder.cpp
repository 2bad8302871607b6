#include "vulkan/recorder.h"

#include <algorithm>
#include <stdexcept>

namespace ds4::vulkan {

namespace {
constexpr uint32_t kSetsPerPool = 256;
constexpr uint32_t kBindingsPerSet = 8;

bool contains(const std::vector<VkBuffer>& v, VkBuffer b) { return std::find(v.begin(), v.end(), b) != v.end(); }
}  // namespace

Recorder::Recorder(Context& ctx) : ctx_(ctx) {
  fence_ = ctx_.device().createFence({});
  begin();
}

void Recorder::begin() {
  auto cbs = ctx_.device().allocateCommandBuffers(
      {.commandPool = ctx_.command_pool(), .level = vk::CommandBufferLevel::ePrimary, .commandBufferCount = 1});
  cb_ = cbs[0];
  cb_.begin(vk::CommandBufferBeginInfo{});
  // Orders this batch after everything submitted before it (earlier batches and uploads,
  // including a previous run of this same command buffer).
  vk::MemoryBarrier mb{.srcAccessMask = vk::AccessFlagBits::eShaderWrite | vk::AccessFlagBits::eTransferWrite,
                       .dstAccessMask = vk::AccessFlagBits::eShaderRead | vk::AccessFlagBits::eShaderWrite};
  cb_.pipelineBarrier(vk::PipelineStageFlagBits::eComputeShader | vk::PipelineStageFlagBits::eTransfer,
                      vk::PipelineStageFlagBits::eComputeShader, {}, mb, {}, {});
  read_.clear();
  written_.clear();
  ended_ = false;
}

void Recorder::end() {
  // Shader writes become visible to the host (and to the next submission's transfers).
  vk::MemoryBarrier mb{.srcAccessMask = vk::AccessFlagBits::eShaderWrite,
                       .dstAccessMask = vk::AccessFlagBits::eHostRead | vk::AccessFlagBits::eTransferRead};
  cb_.pipelineBarrier(vk::PipelineStageFlagBits::eComputeShader,
                      vk::PipelineStageFlagBits::eHost | vk::PipelineStageFlagBits::eTransfer, {}, mb, {}, {});
  cb_.end();
  ended_ = true;
}

Recorder::~Recorder() {
  auto dev = ctx_.device();
  dev.destroyFence(fence_);
  dev.freeCommandBuffers(ctx_.command_pool(), cb_);
  for (auto p : pools_) dev.destroyDescriptorPool(p);
}

void Recorder::new_pool() {
  vk::DescriptorPoolSize size{.type = vk::DescriptorType::eStorageBuffer,
                              .descriptorCount = kSetsPerPool * kBindingsPerSet};
  pools_.push_back(ctx_.device().createDescriptorPool({.maxSets = kSetsPerPool, .poolSizeCount = 1, .pPoolSizes = &size}));
  pool_left_ = kSetsPerPool;
}

void Recorder::dispatch(const Pipeline& p, std::initializer_list<Range> bindings, const void* push,
                        uint32_t push_bytes, uint32_t gx, uint32_t gy, uint32_t gz) {
  if (ended_) throw std::logic_error("Recorder: dispatch after submit");
  if (bindings.size() != p.n_bindings || bindings.size() > kBindingsPerSet)
    throw std::invalid_argument("Recorder: " + p.name + " takes " + std::to_string(p.n_bindings) + " bindings");
  if (push_bytes != p.push_bytes) throw std::invalid_argument("Recorder: wrong push-constant size for " + p.name);
  if (gx == 0 || gy == 0 || gz == 0) return;

  // Hazards against dispatches since the last barrier.
  bool hazard = false;
  uint32_t i = 0;
  for (const Range& r : bindings) {
    const VkBuffer b = r.buffer->handle();
    const bool writes = (p.written_mask >> i++) & 1u;
    if (contains(written_, b) || (writes && contains(read_, b))) hazard = true;
  }
  if (hazard) {
    vk::MemoryBarrier mb{.srcAccessMask = vk::AccessFlagBits::eShaderWrite | vk::AccessFlagBits::eShaderRead,
                         .dstAccessMask = vk::AccessFlagBits::eShaderRead | vk::AccessFlagBits::eShaderWrite};
    cb_.pipelineBarrier(vk::PipelineStageFlagBits::eComputeShader, vk::PipelineStageFlagBits::eComputeShader, {}, mb,
                        {}, {});
    read_.clear();
    written_.clear();
    ++barriers_;
  }
  i = 0;
  for (const Range& r : bindings) {
    const VkBuffer b = r.buffer->handle();
    if ((p.written_mask >> i++) & 1u) {
      if (!contains(written_, b)) written_.push_back(b);
    } else if (!contains(read_, b)) {
      read_.push_back(b);
    }
  }

  if (pool_left_ == 0) new_pool();
  vk::DescriptorSet set =
      ctx_.device().allocateDescriptorSets({.descriptorPool = pools_.back(), .descriptorSetCount = 1,
                                            .pSetLayouts = &p.set_layout})[0];
  --pool_left_;
  vk::DescriptorBufferInfo infos[kBindingsPerSet];
  vk::WriteDescriptorSet writes[kBindingsPerSet];
  i = 0;
  for (const Range& r : bindings) {
    if (r.offset % ctx_.binding_alignment() != 0)
      throw std::invalid_argument("Recorder: binding offset not aligned for " + p.name);
    const size_t size = r.size ? r.size : r.buffer->size() - r.offset;
    if (r.offset + size > r.buffer->size()) throw std::out_of_range("Recorder: binding past the end of a buffer");
    if (size > ctx_.max_binding_bytes())
      throw std::invalid_argument("Recorder: binding of " + std::to_string(size) + " bytes exceeds the device limit");
    infos[i] = vk::DescriptorBufferInfo{.buffer = r.buffer->handle(), .offset = r.offset, .range = size};
    writes[i] = vk::WriteDescriptorSet{.dstSet = set, .dstBinding = i, .descriptorCount = 1,
                 .descriptorType = vk::DescriptorType::eStorageBuffer, .pBufferInfo = &infos[i]};
    ++i;
  }
  ctx_.device().updateDescriptorSets(i, writes, 0, nullptr);
  cb_.bindPipeline(vk::PipelineBindPoint::eCompute, p.pipeline);
  cb_.bindDescriptorSets(vk::PipelineBindPoint::eCompute, p.layout, 0, set, {});
  if (push_bytes) cb_.pushConstants(p.layout, vk::ShaderStageFlagBits::eCompute, 0, push_bytes, push);
  cb_.dispatch(gx, gy, gz);
  ++dispatches_;
}

void Recorder::submit_and_wait() {
  if (!ended_) end();
  ctx_.submit_and_wait(cb_, fence_);
}

void Recorder::flush() {
  if (ended_) throw std::logic_error("Recorder: flush after submit");
  end();
  ctx_.submit_and_wait(cb_, fence_);
  ctx_.device().freeCommandBuffers(ctx_.command_pool(), cb_);  // finished: the fence was waited on
  begin();
}

}  // namespace ds4::vulkan
