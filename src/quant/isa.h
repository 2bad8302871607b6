// The instruction set this process computes with. Apart from quant.h so that the few readers
// (the kernel dispatch, the attention kernels) do not make every quant.h user depend on it.
#pragma once

#include "quant/quant.h"

namespace ds4::quant {

// Chosen once: the best available, or the one DS4_ISA=scalar|avx2|avx512|avx512_vnni names; a
// value this build/CPU cannot honour is reported on stderr (once) and ignored. The only
// reader of DS4_ISA.
Isa chosen_isa();

}  // namespace ds4::quant
