// Helpers shared by the tensor-level CUDA wrappers (csrc/<op>/<op>_cuda_torch.cpp); needs c10/CUDA headers.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime_api.h>

#include "cuda_common.h"

namespace hetmm {

// Limits of CUDA device `device` (multiprocessors, opt-in shared memory per block).
inline CudaDeviceLimits cuda_device_limits(int device) {
  CudaDeviceLimits lim;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&lim.sm_count, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&lim.max_smem_per_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return lim;
}

}  // namespace hetmm
