// Naive window_match CUDA baseline (benchmark only; contract in window_match_cuda.h).
//
// The structure of the published implementation: one thread per (b, t, y, x) computes
//   Sf[b, t, y, x] = max_{p' in Omega_kf(y, x)} <q[b, :, y, x], T[t, :, p']>
//   Sb[b, t, y, x] = max_{p' in Omega_kb(y, x)} <q[b, :, p'], T[t, :, y, x]>
// with a loop over the window and, inside, over the channels (reading NCHW directly: adjacent threads read adjacent
// x, so each channel read is coalesced), and writes the B*N*H*W intermediates; a second kernel (one thread per
// (b, y, x)) takes the max over t, floored at -1. Bytes moved: ~2*k^2*C element reads per thread (L1/L2 served),
// 2*B*N*H*W*4 written and read back; FLOPs: 2*B*N*H*W*C*(|Omega_kf| + |Omega_kb|) (the pairs of the smaller window
// are computed twice, unlike the fused kernel).
#include <algorithm>

#include "../common/cuda_device.cuh"
#include "window_match_cuda.h"

namespace hetmm {
namespace {

__device__ __forceinline__ float load_as_float(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_as_float(const uint16_t* p, int64_t i, bool bf16) {
  return bf16 ? cu::bf16_bits_to_float(p[i]) : cu::half_bits_to_float(p[i]);
}

template <typename E>
__device__ __forceinline__ float element(const E* p, int64_t i, bool bf16) {
  if constexpr (sizeof(E) == 4)
    return load_as_float(reinterpret_cast<const float*>(p), i);
  else
    return load_as_float(reinterpret_cast<const uint16_t*>(p), i, bf16);
}

template <typename E>
__global__ void naive_pairs_kernel(const E* q, const E* t, bool bf16, int B, int N, int C, int H, int W, int df,
                                   int db, float* sf, float* sb) {
  const int64_t HW = static_cast<int64_t>(H) * W;
  const int64_t total = static_cast<int64_t>(B) * N * HW;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int x = static_cast<int>(idx % W), y = static_cast<int>((idx / W) % H);
    const int tt = static_cast<int>((idx / HW) % N), b = static_cast<int>(idx / (HW * N));
    const E* qb = q + static_cast<int64_t>(b) * C * HW;
    const E* tb = t + static_cast<int64_t>(tt) * C * HW;
    const int64_t p = static_cast<int64_t>(y) * W + x;

    float best = -1.0f;  // forward: query pixel (y, x) against the template window
    for (int y2 = y - df > 0 ? y - df : 0; y2 <= y + df && y2 < H; ++y2)
      for (int x2 = x - df > 0 ? x - df : 0; x2 <= x + df && x2 < W; ++x2) {
        const int64_t p2 = static_cast<int64_t>(y2) * W + x2;
        float dot = 0.0f;
        for (int c = 0; c < C; ++c) dot = fmaf(element(qb, c * HW + p, bf16), element(tb, c * HW + p2, bf16), dot);
        best = dot > best ? dot : best;
      }
    sf[idx] = best;

    best = -1.0f;  // backward: template pixel (y, x) against the query window
    for (int y2 = y - db > 0 ? y - db : 0; y2 <= y + db && y2 < H; ++y2)
      for (int x2 = x - db > 0 ? x - db : 0; x2 <= x + db && x2 < W; ++x2) {
        const int64_t p2 = static_cast<int64_t>(y2) * W + x2;
        float dot = 0.0f;
        for (int c = 0; c < C; ++c) dot = fmaf(element(qb, c * HW + p2, bf16), element(tb, c * HW + p, bf16), dot);
        best = dot > best ? dot : best;
      }
    sb[idx] = best;
  }
}

__global__ void naive_max_over_templates_kernel(const float* sf, const float* sb, int B, int N, int64_t HW,
                                                float* fwd, float* bwd) {
  const int64_t total = static_cast<int64_t>(B) * HW;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = idx / HW, p = idx % HW;
    float f = -1.0f, r = -1.0f;
    for (int t = 0; t < N; ++t) {
      const int64_t i = (b * N + t) * HW + p;
      f = sf[i] > f ? sf[i] : f;
      r = sb[i] > r ? sb[i] : r;
    }
    fwd[idx] = f;
    bwd[idx] = r;
  }
}

unsigned grid_for(int64_t n, int threads) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 1 << 20)));
}

}  // namespace

cudaError_t window_match_naive_cuda(const void* query, const void* templates, FeatureDtype dtype, int64_t B,
                                    int64_t N, int64_t C, int64_t H, int64_t W, int64_t fwd_window,
                                    int64_t bwd_window, float* scratch_fwd, float* scratch_bwd, float* fwd,
                                    float* bwd, cudaStream_t stream) {
  if (B <= 0 || N <= 0 || C <= 0 || H <= 0 || W <= 0 || fwd_window < 1 || bwd_window < 1 || !query ||
      !templates || !scratch_fwd || !scratch_bwd || !fwd || !bwd || B * N * H * W > (int64_t(1) << 40) ||
      C * H * W > 0x7fffffffLL)
    return cudaErrorInvalidValue;
  const int threads = 256;
  const int df = static_cast<int>(fwd_window / 2), db = static_cast<int>(bwd_window / 2);
  const unsigned blocks = grid_for(B * N * H * W, threads);
  if (dtype == FeatureDtype::kFloat32) {
    HETMM_LAUNCH(naive_pairs_kernel<float>, cu::dim3_t(blocks), cu::dim3_t(threads), 0, stream,
                 static_cast<const float*>(query), static_cast<const float*>(templates), false, static_cast<int>(B),
                 static_cast<int>(N), static_cast<int>(C), static_cast<int>(H), static_cast<int>(W), df, db,
                 scratch_fwd, scratch_bwd);
  } else {
    HETMM_LAUNCH(naive_pairs_kernel<uint16_t>, cu::dim3_t(blocks), cu::dim3_t(threads), 0, stream,
                 static_cast<const uint16_t*>(query), static_cast<const uint16_t*>(templates),
                 dtype == FeatureDtype::kBFloat16, static_cast<int>(B), static_cast<int>(N), static_cast<int>(C),
                 static_cast<int>(H), static_cast<int>(W), df, db, scratch_fwd, scratch_bwd);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  HETMM_LAUNCH(naive_max_over_templates_kernel, cu::dim3_t(grid_for(B * H * W, threads)), cu::dim3_t(threads), 0,
               stream, scratch_fwd, scratch_bwd, static_cast<int>(B), static_cast<int>(N), H * W, fwd, bwd);
  return cudaGetLastError();
}

}  // namespace hetmm
