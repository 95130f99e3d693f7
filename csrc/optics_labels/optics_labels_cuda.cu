// optics_labels CUDA kernels, torch-free; contract in optics_labels_cuda.h, semantics in optics_labels.h.
//
// optics_order_kernel: one block (32..256 threads) per problem. Thread t owns the points j = t (mod threads): their
// reachability, predecessor and processed flag live in shared memory and only the owner touches them, so the only
// communication is the argmin of the next point.
//   1. Core distances: warp w takes rows i = w (mod warps); the m-th smallest value of the row is found by rounds of
//      "smallest value above the previous one, with its multiplicity" (warp all-reduce), at most m rounds.
//      round15 is non-decreasing, so round15(m-th smallest of dist) = m-th smallest of round15(dist); the kernel
//      stores rcore = round15(round15(core)), the value scikit-learn compares (see optics_labels.h).
//   2. N steps: expand `point` (row read once, coalesced: cand = max(round15(d), rcore[point]), strict-< update) and,
//      in the same pass, each thread's (reachability, index) minimum over its unprocessed points; a block
//      all-reduce on (value, index) pairs picks the next point: smallest reachability, ties (+inf included) to the
//      smallest index, exactly the CPU engine's and scikit-learn's choice. One barrier per step (none with 1 warp).
//   Bytes: the matrix is read ~(m + 1) times (m rounds of core distances, one row per expansion); N^2 round15 calls.
// optics_xi_kernel: one thread per problem runs optics_xi_labels (optics_labels_core.h, the CPU engine's code) on the
//   ordering; scratch in global memory. O(N) work per problem plus O(N) per candidate.
// The per-element rules (round15, gram_distance, optics_candidate) and the xi extraction come from
// optics_labels_core.h; this file only decides how they are spread over threads.
#include "optics_labels_cuda.h"

#include <algorithm>

#include "../common/cuda_device.cuh"
#include "optics_labels_core.h"

namespace hetmm {
namespace {

constexpr int kMaxThreads = 256;

// Shared memory of optics_order_kernel: [work N doubles][rcore N doubles][pred N int32][done N bytes][pad][scratch].
size_t order_smem_bytes(int64_t N) {
  size_t bytes = static_cast<size_t>(N) * (8 + 8 + 4 + 1);
  bytes = (bytes + 15) / 16 * 16;
  return bytes + 64 * sizeof(double) + 64 * sizeof(int);
}

__device__ __forceinline__ double distance(double v, bool from_gram) {
  return from_gram ? gram_distance(v) : v + 0.0;  // -0.0 reads as +0.0, like the CPU engine (optics_labels.h)
}

__global__ void __launch_bounds__(kMaxThreads) optics_order_kernel(const double* src, bool from_gram, int N,
                                                                    int min_samples, int32_t* order_out,
                                                                    double* reach_out, int32_t* pred_out) {
  char* smem = cu::dynamic_smem();
  double* work = reinterpret_cast<double*>(smem);
  double* rcore = work + N;
  int32_t* pred = reinterpret_cast<int32_t*>(rcore + N);
  uint8_t* done = reinterpret_cast<uint8_t*>(pred + N);
  const size_t scratch_off = (static_cast<size_t>(N) * 21 + 15) / 16 * 16;
  double* scratch_v = reinterpret_cast<double*>(smem + scratch_off);
  int* scratch_i = reinterpret_cast<int*>(scratch_v + 64);

  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  const int lane = tid & 31, warp = tid >> 5, nw = nt >> 5;
  const int64_t prob = blockIdx.x;
  const double* D = src + prob * N * N;

  for (int j = tid; j < N; j += nt) {
    work[j] = cu::kInfinity;
    pred[j] = -1;
    done[j] = 0;
  }

  for (int i = warp; i < N; i += nw) {
    const double* row = D + static_cast<int64_t>(i) * N;
    double above = -cu::kInfinity, core = cu::kInfinity;
    int seen = 0;
    for (int round = 0; round < N; ++round) {
      double m = cu::kInfinity;
      int c = 0;
      for (int j = lane; j < N; j += 32) {
        const double v = distance(row[j], from_gram);
        if (v > above) {
          if (v < m) {
            m = v;
            c = 1;
          } else if (v == m) {
            ++c;
          }
        }
      }
      for (int off = 16; off > 0; off >>= 1) {  // all-reduce of (smallest value, its count)
        const double om = cu::shfl_xor(m, off);
        const int oc = cu::shfl_xor(c, off);
        if (om < m) {
          m = om;
          c = oc;
        } else if (om == m) {
          c += oc;
        }
      }
      if (c == 0) break;  // nothing above `above`: fewer than min_samples finite values (not for valid input)
      seen += c;
      if (seen >= min_samples) {
        core = m;
        break;
      }
      above = m;
    }
    if (lane == 0) rcore[i] = round15(round15(core));
  }
  cu::block_sync();

  int parity = 0;
  int point = 0;  // everything is at +inf: the smallest index comes first
  for (int step = 0; step < N; ++step) {
    if (tid == 0) order_out[prob * N + step] = point;
    if (point % nt == tid) done[point] = 1;
    const double c = rcore[point];
    double best = cu::kInfinity;
    int best_j = cu::kNoIndex;
    if (c != cu::kInfinity) {
      const double* row = D + static_cast<int64_t>(point) * N;
      for (int j = tid; j < N; j += nt) {
        if (done[j]) continue;
        const double cand = optics_candidate(round15(distance(row[j], from_gram)), c);
        if (cand < work[j]) {
          work[j] = cand;
          pred[j] = point;
        }
        if (best_j == cu::kNoIndex || work[j] < best) {
          best = work[j];
          best_j = j;
        }
      }
    } else {
      for (int j = tid; j < N; j += nt)
        if (!done[j] && (best_j == cu::kNoIndex || work[j] < best)) {
          best = work[j];
          best_j = j;
        }
    }
    cu::block_arg_reduce<false>(best, best_j, scratch_v, scratch_i, parity);
    parity ^= 1;
    point = best_j;  // cu::kNoIndex only after the last step
  }

  for (int j = tid; j < N; j += nt) {
    reach_out[prob * N + j] = work[j];
    pred_out[prob * N + j] = pred[j];
  }
}

__global__ void optics_xi_kernel(const int32_t* order, const double* reach, const int32_t* pred, int64_t P, int N,
                                 int min_samples, double xi, OpticsXiScratch<int32_t> scratch, int64_t* labels) {
  const int64_t prob = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (prob >= P) return;
  OpticsXiScratch<int32_t> s;
  s.plot = scratch.plot + prob * (N + 1);
  s.pred_plot = scratch.pred_plot + prob * N;
  s.pos = scratch.pos + prob * N;
  s.flags = scratch.flags + prob * N;
  s.sda_start = scratch.sda_start + prob * N;
  s.sda_end = scratch.sda_end + prob * N;
  s.sda_mib = scratch.sda_mib + prob * N;
  s.u_clusters = scratch.u_clusters + prob * 2 * N;
  s.pos_label = scratch.pos_label + prob * N;
  optics_xi_labels(order + prob * N, reach + prob * N, pred + prob * N, N, min_samples, xi, s, labels + prob * N);
}

// Carves the workspace into 256-byte aligned arrays; with base == nullptr only counts.
struct Carver {
  char* base;
  size_t used = 0;
  template <typename T>
  T* take(size_t count) {
    T* p = base ? reinterpret_cast<T*>(base + used) : nullptr;
    used += (count * sizeof(T) + 255) / 256 * 256;
    return p;
  }
};

struct Workspace {
  int32_t* order;
  double* reach;
  int32_t* pred;
  OpticsXiScratch<int32_t> xi;
};

Workspace carve(void* base, int64_t P, int64_t N, size_t* bytes) {
  Carver c{static_cast<char*>(base)};
  const size_t pn = static_cast<size_t>(P * N);
  Workspace w;
  w.order = c.take<int32_t>(pn);
  w.reach = c.take<double>(pn);
  w.pred = c.take<int32_t>(pn);
  w.xi.plot = c.take<double>(static_cast<size_t>(P * (N + 1)));
  w.xi.pred_plot = c.take<int32_t>(pn);
  w.xi.pos = c.take<int32_t>(pn);
  w.xi.flags = c.take<uint8_t>(pn);
  w.xi.sda_start = c.take<int32_t>(pn);
  w.xi.sda_end = c.take<int32_t>(pn);
  w.xi.sda_mib = c.take<double>(pn);
  w.xi.u_clusters = c.take<int32_t>(2 * pn);
  w.xi.pos_label = c.take<int32_t>(pn);
  if (bytes) *bytes = c.used;
  return w;
}

}  // namespace

int64_t optics_labels_cuda_max_points(int max_smem_per_block) {
  int64_t n = (static_cast<int64_t>(max_smem_per_block) - 16 - 64 * 12) / 21;
  return std::max<int64_t>(0, std::min<int64_t>(n, 1 << 20));
}

size_t optics_labels_cuda_workspace_bytes(int64_t P, int64_t N) {
  size_t bytes = 0;
  carve(nullptr, P, N, &bytes);
  return bytes;
}

cudaError_t optics_labels_cuda(const double* src, bool src_is_gram, int64_t P, int64_t N, int64_t min_samples,
                               double xi, void* workspace, int64_t* labels, const CudaDeviceLimits& limits,
                               cudaStream_t stream) {
  if (!src || !workspace || !labels || P <= 0 || N <= 0 || P > 0x7fffffffLL || min_samples < 2 || min_samples > N ||
      !(xi > 0.0 && xi < 1.0) || N > optics_labels_cuda_max_points(limits.max_smem_per_block))
    return cudaErrorInvalidValue;
  const Workspace w = carve(workspace, P, N, nullptr);
  const int warps = N <= 512 ? 1 : N <= 1024 ? 2 : N <= 2048 ? 4 : 8;
  const size_t smem = order_smem_bytes(N);
  cudaError_t err = allow_max_dynamic_smem(optics_order_kernel, limits);
  if (err != cudaSuccess) return err;
  HETMM_LAUNCH(optics_order_kernel, cu::dim3_t(static_cast<unsigned>(P)), cu::dim3_t(32 * warps), smem, stream, src,
               src_is_gram, static_cast<int>(N), static_cast<int>(min_samples), w.order, w.reach, w.pred);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int threads = 32;
  HETMM_LAUNCH(optics_xi_kernel, cu::dim3_t(static_cast<unsigned>((P + threads - 1) / threads)), cu::dim3_t(threads),
               0, stream, w.order, w.reach, w.pred, P, static_cast<int>(N), static_cast<int>(min_samples), xi, w.xi,
               labels);
  return cudaGetLastError();
}

}  // namespace hetmm
