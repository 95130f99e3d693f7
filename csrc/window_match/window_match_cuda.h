// window_match on CUDA: torch-free launchers of the kernels in window_match_cuda.cu and the naive baseline in
// window_match_naive_cuda.cu. Semantics are those of window_match.h (SPEC §2); this header adds the packed input
// layout, the precision paths and the device limits the launchers need.
//
// Packed inputs (prepared by the caller, e.g. csrc/window_match/window_match_cuda_torch.cpp):
//   query      [H*W][B][Cp]   pixel-major, channels contiguous, zero in channels C..Cp-1
//   templates  [H*W][N][Cp]   same layout
//   Cp = window_match_cuda_padded_channels(path, C) (a multiple of 128 bytes of elements).
// Outputs: fwd, bwd [B][H][W] float32 (written completely; bwd, and fwd when tiles are split, are used as int
// scratch during the launch).
//
// Paths (element type of the packed inputs -> arithmetic):
//   kFloat16, kBFloat16  16-bit inputs, tensor cores (mma.sync m16n8k16), float32 accumulation
//   kTF32                float32 inputs that are TF32 values already (10-bit mantissa: round them with
//                        window_match_cuda_round_tf32, to nearest with ties away from zero), tensor cores
//                        (mma.sync m16n8k8), float32 accumulation
//   kExactFloat32        float32 inputs, one sequential float32 FMA chain per dot product over c = 0..C-1 (the
//                        same arithmetic as window_match_cpu, so the results are bit-identical to the CPU engine)
//   kExactFloat64        float64 inputs and arithmetic (sequential FMA chain), outputs rounded to float32
// Tensor-core paths accumulate in an order chosen by the hardware; their error is dominated by the input rounding.
#pragma once

#include <cstdint>

#include "../common/cuda_common.h"
#include "window_match.h"

namespace hetmm {

enum class WindowMatchCudaPath : int {
  kFloat16 = 0,
  kBFloat16 = 1,
  kTF32 = 2,
  kExactFloat32 = 3,
  kExactFloat64 = 4,
};

struct WindowMatchCudaProblem {
  const void* query = nullptr;      // [H*W][B][Cp]
  const void* templates = nullptr;  // [H*W][N][Cp]
  int64_t B = 0, N = 0, C_padded = 0, H = 0, W = 0;
  int64_t fwd_window = 1, bwd_window = 1;  // odd, >= 1
  float* fwd = nullptr;                    // [B][H][W]
  float* bwd = nullptr;                    // [B][H][W]
  int max_warps = 0;  // warps per block of the fused kernel: 0 = automatic (up to 4), else at most 1, 2 or 4 (tuning)
  // Blocks sharing each query tile's work (its template chunks x neighbourhood pixels): 0 = automatic (more than one
  // only when even the smallest tile leaves multiprocessors idle), else exactly this many, at most
  // kWindowMatchCudaMaxSplits (tuning, tests). For finite inputs the results are identical whatever the split (maxima
  // only).
  int splits = 0;
};

constexpr int kWindowMatchCudaMaxSplits = 1024;

// Bytes of one packed element of `path` (2, 4 or 8).
int64_t window_match_cuda_element_bytes(WindowMatchCudaPath path);

// C rounded up to the channel chunk of `path` (64 fp16/bf16, 32 float32, 16 float64 elements).
int64_t window_match_cuda_padded_channels(WindowMatchCudaPath path, int64_t channels);

// Largest C the kernels can take with `max_smem_per_block` bytes of shared memory per block (0 if none): the block's
// query columns stay resident in shared memory.
int64_t window_match_cuda_max_channels(WindowMatchCudaPath path, int max_smem_per_block);

// Rounds n float32 values in place to TF32 (cvt.rna: 10 mantissa bits, to nearest, ties away from zero; infinities
// and NaN kept), as the kTF32 path expects its packed inputs. Asynchronous on `stream`.
cudaError_t window_match_cuda_round_tf32(float* data, int64_t n, cudaStream_t stream);

// Launches the fused kernel on `stream` (asynchronous). Returns cudaErrorInvalidValue for inconsistent sizes or
// too many channels, else the launch status.
cudaError_t window_match_cuda(const WindowMatchCudaProblem& problem, WindowMatchCudaPath path,
                              const CudaDeviceLimits& limits, cudaStream_t stream);

// Benchmark baseline with the structure of the published implementation: one thread per (b, t, y, x) loops over
// the window and the channels and writes scratch_fwd / scratch_bwd [B][N][H][W] float32, then a second kernel takes
// the max over t (floored at -1) into fwd / bwd [B][H][W]. Inputs are contiguous NCHW (query [B][C][H][W],
// templates [N][C][H][W]) of `dtype`; float32 accumulation. Not used by the library.
cudaError_t window_match_naive_cuda(const void* query, const void* templates, FeatureDtype dtype, int64_t B,
                                    int64_t N, int64_t C, int64_t H, int64_t W, int64_t fwd_window,
                                    int64_t bwd_window, float* scratch_fwd, float* scratch_bwd, float* fwd,
                                    float* bwd, cudaStream_t stream);

}  // namespace hetmm
