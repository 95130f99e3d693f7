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

}  // namespace hetmm
