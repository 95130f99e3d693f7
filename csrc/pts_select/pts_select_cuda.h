// pts_select on CUDA: torch-free launchers of pts_select_cuda.cu. Semantics are those of pts_select.h (SPEC §4),
// computed with the same arithmetic as the CPU engine, so the chosen indices are identical to it:
//   G[i, j] = one sequential float64 FMA chain over c = 0..C-1 (exactly symmetric, like gram_f64), then OPTICS on
//   max(0, 1 - G) (optics_labels_cuda.h), then the easy/hard normal choice with sums in ascending index order.
// The caller runs pixel chunks: pack the chunk's features, gram, optics_labels_cuda(src_is_gram = true), choose.
#pragma once

#include <cstdint>

#include "../common/cuda_common.h"

namespace hetmm {

// X: [P][N][C] (float or double, device), G: [P][N][N] float64 (device). Asynchronous on `stream`.
cudaError_t pts_gram_cuda(const float* X, int64_t P, int64_t N, int64_t C, double* G, cudaStream_t stream);
cudaError_t pts_gram_cuda(const double* X, int64_t P, int64_t N, int64_t C, double* G, cudaStream_t stream);

// Largest N pts_choose_cuda takes with `max_smem_per_block` bytes of shared memory.
int64_t pts_choose_cuda_max_points(int max_smem_per_block);

// Steps 3-4 of SPEC §4 for P pixels: G [P][N][N], labels [P][N] (-1 noise, clusters 0..N-1) -> out [P][K] int64,
// the K choices of each pixel in order (1 <= K <= N). One block per pixel.
cudaError_t pts_choose_cuda(const double* G, const int64_t* labels, int64_t P, int64_t N, int64_t K, int64_t* out,
                            const CudaDeviceLimits& limits, cudaStream_t stream);

}  // namespace hetmm
