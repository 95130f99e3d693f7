// Torch-free host-side declarations shared by the CUDA launchers of hetmm (csrc/<op>/<op>_cuda.h): the CUDA runtime
// types (or the emulator's, see tests/cpp/cuda_emulation.h) and the device limits the launchers size their work by.
#pragma once

#ifdef HETMM_CUDA_EMULATION
#include "cuda_emulation.h"
#else
#include <cuda_runtime_api.h>
#endif

namespace hetmm {

// cudaDeviceProp::multiProcessorCount and cudaDeviceProp::sharedMemPerBlockOptin of the device a launch runs on.
struct CudaDeviceLimits {
  int sm_count = 1;
  int max_smem_per_block = 48 * 1024;
};

// Lets `kernel` (no static shared memory) launch with up to the device's opt-in dynamic shared memory per block; each
// launch then passes what it uses. The attribute belongs to the function on the current device, not to a launch:
// setting each launch's own size would let another host thread lower it between that set and the launch (a failed
// launch), and could leave launches captured earlier in a CUDA graph above it. The device's maximum is the same for
// every caller, so concurrent calls agree.
template <typename Kernel>
cudaError_t allow_max_dynamic_smem(Kernel kernel, const CudaDeviceLimits& limits) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, limits.max_smem_per_block);
}

}  // namespace hetmm
