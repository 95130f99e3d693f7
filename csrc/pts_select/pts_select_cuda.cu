// pts_select CUDA kernels, torch-free; contract in pts_select_cuda.h, semantics in pts_select.h (SPEC §4).
//
// pts_gram_kernel: block (pixel, 64x64 tile of G) of 16x16 threads, 4x4 outputs per thread (rows ty + 16 r,
// columns tx + 16 s, so a warp's stores are contiguous). Channels stream through shared memory 16 at a time
// (converted to float64; zeros beyond C/N), and every output is one FMA chain over c = 0..C-1 in ascending order:
// the CPU engine's arithmetic, hence the same G to the last bit. FLOPs 2*N^2*C per pixel (the symmetric half is
// recomputed rather than mirrored: identical values, simpler writes); bytes: X read ceil(N/64) times per pixel.
// Not cuBLAS: a batched DGEMM sums in its own blocked order, so G could differ from the CPU engine's in the last bits
// and OPTICS could break a near-tie differently; equal partitions are the contract. A category at N = 400 (layers
// 256x64x64, 512x32x32, 1024x16x16) is 0.59 TFLOP of float64, against the H200's 34 TFLOP/s FP64 vector peak
// (NVIDIA H200 datasheet).
// pts_choose_kernel: one block of 128 threads per pixel runs the choice of pts_select_core.h, the CPU engine's rules.
// Thread 0 buckets the cluster members by first appearance (O(N)); each prototype is an argmax over the cluster's
// members of pts_cluster_similarity (one member per thread, O(|cluster|^2) reads), then the greedy hard normals: per
// step an argmin of dp over the unchosen points (block reduction in the order of `better`) and dp += G[chosen]
// (thread-owned entries, one barrier per step).
#include "pts_select_cuda.h"

#include <algorithm>

#include "../common/cuda_device.cuh"
#include "pts_select_core.h"

namespace hetmm {
namespace {

constexpr int kTile = 64;
constexpr int kChunk = 16;
constexpr int kGramThreads = 256;
constexpr int kChooseThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kGramThreads) pts_gram_kernel(const T* X, int N, int C, int tiles, double* G) {
  double* a_s = reinterpret_cast<double*>(cu::dynamic_smem());  // [64][17]
  double* b_s = a_s + kTile * (kChunk + 1);                       // [64][17]
  const int tid = static_cast<int>(threadIdx.x), tx = tid % 16, ty = tid / 16;
  int blk = static_cast<int>(blockIdx.x);
  const int tj = blk % tiles;
  blk /= tiles;
  const int ti = blk % tiles;
  const int64_t p = blk / tiles;
  const int i0 = ti * kTile, j0 = tj * kTile;
  const T* xp = X + p * N * C;

  double acc[4][4];
  for (int r = 0; r < 4; ++r)
    for (int s = 0; s < 4; ++s) acc[r][s] = 0.0;

  for (int c0 = 0; c0 < C; c0 += kChunk) {
    for (int e = tid; e < kTile * kChunk; e += kGramThreads) {
      const int r = e / kChunk, k = e % kChunk, c = c0 + k;
      const bool in_c = c < C;
      a_s[r * (kChunk + 1) + k] =
          (i0 + r < N && in_c) ? static_cast<double>(xp[static_cast<int64_t>(i0 + r) * C + c]) : 0.0;
      b_s[r * (kChunk + 1) + k] =
          (j0 + r < N && in_c) ? static_cast<double>(xp[static_cast<int64_t>(j0 + r) * C + c]) : 0.0;
    }
    cu::block_sync();
    for (int k = 0; k < kChunk; ++k) {
      double a[4], b[4];
      for (int r = 0; r < 4; ++r) a[r] = a_s[(ty + 16 * r) * (kChunk + 1) + k];
      for (int s = 0; s < 4; ++s) b[s] = b_s[(tx + 16 * s) * (kChunk + 1) + k];
      for (int r = 0; r < 4; ++r)
        for (int s = 0; s < 4; ++s) acc[r][s] = fma(a[r], b[s], acc[r][s]);
    }
    cu::block_sync();
  }
  double* gp = G + p * N * N;
  for (int r = 0; r < 4; ++r)
    for (int s = 0; s < 4; ++s) {
      const int i = i0 + ty + 16 * r, j = j0 + tx + 16 * s;
      if (i < N && j < N) gp[static_cast<int64_t>(i) * N + j] = acc[r][s];
    }
}

struct ChooseSmem {
  double* dp;       // N
  double* scratch_v;  // 64
  int* scratch_i;   // 64
  int* members;     // N
  int* rank;        // N: rank of each label by first appearance
  int* start;       // N + 1
  int* cursor;      // N
  int* chosen;      // N
  int* n_clusters;  // 1
  uint8_t* taken;   // N
};

size_t choose_smem_bytes(int64_t N) {
  const size_t n = static_cast<size_t>(N);
  return n * 8 + 64 * 8 + 64 * 4 + (5 * n + 2) * 4 + n + 16;  // dp, scratch, int arrays, taken, slack
}

__device__ __forceinline__ ChooseSmem choose_smem(int N) {
  char* base = cu::dynamic_smem();
  ChooseSmem s;
  s.dp = reinterpret_cast<double*>(base);
  s.scratch_v = s.dp + N;
  s.scratch_i = reinterpret_cast<int*>(s.scratch_v + 64);
  s.members = s.scratch_i + 64;
  s.rank = s.members + N;
  s.start = s.rank + N;
  s.cursor = s.start + N + 1;
  s.chosen = s.cursor + N;
  s.n_clusters = s.chosen + N;
  s.taken = reinterpret_cast<uint8_t*>(s.n_clusters + 1);
  return s;
}

__global__ void __launch_bounds__(kChooseThreads) pts_choose_kernel(const double* G, const int64_t* labels, int N,
                                                                    int K, int64_t* out) {
  const ChooseSmem sm = choose_smem(N);
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  const int64_t p = blockIdx.x;
  const double* gp = G + p * N * N;
  const int64_t* lab = labels + p * N;
  int64_t* outp = out + p * K;

  if (tid == 0) *sm.n_clusters = pts_bucket_clusters(lab, N, sm.rank, sm.cursor, sm.start, sm.members);
  for (int i = tid; i < N; i += nt) sm.taken[i] = 0;
  cu::block_sync();

  const int nc = *sm.n_clusters;
  int n_chosen = 0, parity = 0;
  // Easy normals: per cluster the prototype, its members' scores spread over the block.
  for (int r = 0; r < nc && n_chosen < K; ++r) {
    const int* m = sm.members + sm.start[r];
    const int size = sm.start[r + 1] - sm.start[r];
    double best = -cu::kInfinity;
    int best_j = cu::kNoIndex;
    for (int a = tid; a < size; a += nt) {
      const double s = pts_cluster_similarity(gp + static_cast<int64_t>(m[a]) * N, m, size);
      if (best_j == cu::kNoIndex || better<true>(s, m[a], best, best_j)) {
        best = s;
        best_j = m[a];
      }
    }
    cu::block_arg_reduce<true>(best, best_j, sm.scratch_v, sm.scratch_i, parity);
    parity ^= 1;
    if (tid == 0) {
      sm.chosen[n_chosen] = best_j;
      sm.taken[best_j] = 1;
      outp[n_chosen] = best_j;
    }
    ++n_chosen;
  }
  if (nc == 0) {  // no cluster: the global medoid
    double best = -cu::kInfinity;
    int best_j = cu::kNoIndex;
    for (int j = tid; j < N; j += nt) {
      const double s = pts_total_similarity(gp + static_cast<int64_t>(j) * N, N);
      if (best_j == cu::kNoIndex || better<true>(s, j, best, best_j)) {
        best = s;
        best_j = j;
      }
    }
    cu::block_arg_reduce<true>(best, best_j, sm.scratch_v, sm.scratch_i, parity);
    parity ^= 1;
    if (tid == 0) {
      sm.chosen[0] = best_j;
      sm.taken[best_j] = 1;
      outp[0] = best_j;
    }
    n_chosen = 1;
  }
  cu::block_sync();

  // Hard normals: dp[i] = pts_chosen_similarity, thread-owned entries; per step an argmin over the block.
  for (int i = tid; i < N; i += nt) sm.dp[i] = pts_chosen_similarity(gp, N, sm.chosen, 1, n_chosen, i);
  while (n_chosen < K) {
    double best = cu::kInfinity;
    int best_i = cu::kNoIndex;
    for (int i = tid; i < N; i += nt)
      if (!sm.taken[i] && (best_i == cu::kNoIndex || sm.dp[i] < best)) {
        best = sm.dp[i];
        best_i = i;
      }
    cu::block_arg_reduce<false>(best, best_i, sm.scratch_v, sm.scratch_i, parity);
    parity ^= 1;
    if (tid == 0) outp[n_chosen] = best_i;
    if (best_i % nt == tid) sm.taken[best_i] = 1;
    const double* row = gp + static_cast<int64_t>(best_i) * N;
    for (int i = tid; i < N; i += nt) sm.dp[i] += row[i];
    ++n_chosen;
  }
}

template <typename T>
cudaError_t gram(const T* X, int64_t P, int64_t N, int64_t C, double* G, cudaStream_t stream) {
  if (!X || !G || P <= 0 || N <= 0 || C <= 0 || N > 0x7fffffffLL || C > 0x7fffffffLL) return cudaErrorInvalidValue;
  const int64_t tiles = (N + kTile - 1) / kTile;
  const int64_t blocks = P * tiles * tiles;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
  const size_t smem = 2 * kTile * (kChunk + 1) * sizeof(double);
  HETMM_LAUNCH(pts_gram_kernel<T>, cu::dim3_t(static_cast<unsigned>(blocks)), cu::dim3_t(kGramThreads), smem, stream,
               X, static_cast<int>(N), static_cast<int>(C), static_cast<int>(tiles), G);
  return cudaGetLastError();
}

}  // namespace

cudaError_t pts_gram_cuda(const float* X, int64_t P, int64_t N, int64_t C, double* G, cudaStream_t stream) {
  return gram(X, P, N, C, G, stream);
}

cudaError_t pts_gram_cuda(const double* X, int64_t P, int64_t N, int64_t C, double* G, cudaStream_t stream) {
  return gram(X, P, N, C, G, stream);
}

int64_t pts_choose_cuda_max_points(int max_smem_per_block) {
  int64_t n = 0;
  for (int64_t step = int64_t(1) << 20; step > 0; step /= 2)
    if (choose_smem_bytes(n + step) <= static_cast<size_t>(max_smem_per_block)) n += step;
  return n;
}

cudaError_t pts_choose_cuda(const double* G, const int64_t* labels, int64_t P, int64_t N, int64_t K, int64_t* out,
                            const CudaDeviceLimits& limits, cudaStream_t stream) {
  if (!G || !labels || !out || P <= 0 || N <= 0 || K < 1 || K > N || P > 0x7fffffffLL ||
      N > pts_choose_cuda_max_points(limits.max_smem_per_block))
    return cudaErrorInvalidValue;
  const size_t smem = choose_smem_bytes(N);
  cudaError_t err = allow_max_dynamic_smem(pts_choose_kernel, limits);
  if (err != cudaSuccess) return err;
  HETMM_LAUNCH(pts_choose_kernel, cu::dim3_t(static_cast<unsigned>(P)), cu::dim3_t(kChooseThreads), smem, stream, G,
               labels, static_cast<int>(N), static_cast<int>(K), out);
  return cudaGetLastError();
}

}  // namespace hetmm
