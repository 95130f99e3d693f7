// optics_labels on CUDA: torch-free launchers of optics_labels_cuda.cu. Semantics are those of optics_labels.h
// (scikit-learn's OPTICS(metric="precomputed") + xi extraction, bit-for-bit the labels of the CPU engine on the
// same distances); this header adds the device-side data layout.
//
// Input: P matrices, row-major with row stride N, either the distances themselves or Gram matrices G from which
// dist = max(0, 1 - G) is formed on the fly (pts_select). Every distance must be finite and >= 0 (the caller
// checks; the kernels do not); -0.0 reads as +0.0, like the CPU engine.
//
// Work: one block per problem orders it (core distances by warps, one row each; then N expansions with the
// reachability update and the argmin of the next point spread over the block); one thread per problem then runs the
// sequential xi extraction. Workspace: optics_labels_cuda_workspace_bytes(P, N) bytes of device memory.
#pragma once

#include <cstdint>

#include "../common/cuda_common.h"

namespace hetmm {

// Largest N one block can order with `max_smem_per_block` bytes of shared memory (the per-point state lives there).
int64_t optics_labels_cuda_max_points(int max_smem_per_block);

size_t optics_labels_cuda_workspace_bytes(int64_t P, int64_t N);

// labels: [P][N] int64 (device), -1 = noise. workspace: optics_labels_cuda_workspace_bytes(P, N) bytes, 256-byte
// aligned. Asynchronous on `stream`; returns cudaErrorInvalidValue for bad sizes (N above the limit included).
cudaError_t optics_labels_cuda(const double* src, bool src_is_gram, int64_t P, int64_t N, int64_t min_samples,
                               double xi, void* workspace, int64_t* labels, const CudaDeviceLimits& limits,
                               cudaStream_t stream);

}  // namespace hetmm
