// Records a sequence of compute dispatches into one command buffer, inserting the barriers
// the data flow needs, and submits it as one batch (re-submittable: record once, run many).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "vulkan/context.h"

namespace ds4::vulkan {

// A range of a buffer bound to one shader binding. size 0 means "to the end of the buffer".
// offset must be a multiple of Context::binding_alignment().
struct Range {
  const Buffer* buffer = nullptr;
  size_t offset = 0;
  size_t size = 0;
};

class Recorder {
 public:
  explicit Recorder(Context& ctx);
  ~Recorder();
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  // One dispatch. bindings[i] goes to binding i; the pipeline's written_mask says which are
  // written. A barrier is recorded first when this dispatch touches a buffer that an earlier
  // dispatch since the last barrier wrote (read-after-write, write-after-write) or when it
  // writes one an earlier dispatch read (write-after-read).
  void dispatch(const Pipeline& p, std::initializer_list<Range> bindings, const void* push, uint32_t push_bytes,
                uint32_t groups_x, uint32_t groups_y = 1, uint32_t groups_z = 1);

  // Ends recording (first call only), submits and waits. May be called again to run the same
  // recorded sequence once more.
  void submit_and_wait();

  // Submits what was recorded so far, waits for it, and goes on recording into a new command
  // buffer (a host round trip inside a pass: hybrid MoE). Barriers as at the start and end of
  // a batch. A later submit_and_wait() re-runs only what was recorded after the last flush.
  void flush();

  uint32_t dispatches() const { return dispatches_; }
  uint32_t barriers() const { return barriers_; }

 private:
  void new_pool();
  void begin();
  void end();

  Context& ctx_;
  vk::CommandBuffer cb_;
  vk::Fence fence_;
  std::vector<vk::DescriptorPool> pools_;
  uint32_t pool_left_ = 0;
  bool ended_ = false;
  // Buffers read / written by dispatches since the last barrier (whole-buffer granularity).
  std::vector<VkBuffer> read_, written_;
  uint32_t dispatches_ = 0, barriers_ = 0;
};

}  // namespace ds4::vulkan
