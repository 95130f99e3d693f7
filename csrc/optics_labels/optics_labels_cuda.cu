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
// optics_xi_kernel: one thread per problem runs the xi extraction (scikit-learn's _xi_cluster with predecessor
//   correction, then _extract_xi_labels) on the reachability plot; labels are assigned right after each steep-up
//   area, in the order scikit-learn's cluster list would give them. O(N) work per problem plus O(N) per candidate.
#include "optics_labels_cuda.h"

#include <algorithm>

#include "../common/cuda_device.cuh"

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
  if (!from_gram) return v + 0.0;  // -0.0 reads as +0.0, like the CPU engine (optics_labels.h)
  const double d = 1.0 - v;
  return d > 0.0 ? d : 0.0;  // max(0, 1 - g); 1 - g is never -0
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
    if (lane == 0) rcore[i] = cu::round15(cu::round15(core));
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
        const double r = cu::round15(distance(row[j], from_gram));
        const double cand = r < c ? c : r;
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

// Per-problem scratch of the xi extraction (each array [P][len], problem-major).
struct XiScratch {
  double* plot;        // N + 1
  int32_t* pred_plot;  // N
  int32_t* pos;        // N: position of each point in the ordering
  uint8_t* flags;      // N
  int32_t* sda_start;  // N
  int32_t* sda_end;    // N
  double* sda_mib;     // N
  int32_t* u_clusters; // 2 N
  int32_t* pos_label;  // N
};

constexpr uint8_t kSteepUp = 1, kSteepDown = 2, kUp = 4, kDown = 8;

// scikit-learn's _extend_region: last steep index of the area starting at `start`.
__host__ __device__ inline int extend_region(const uint8_t* flags, int n, uint8_t steep, uint8_t other_way, int start,
                                             int min_samples) {
  int non_steep = 0, end = start;
  for (int index = start; index < n; ++index) {
    if (flags[index] & steep) {
      non_steep = 0;
      end = index;
    } else if (!(flags[index] & other_way)) {
      if (++non_steep > min_samples) break;
    } else {
      return end;
    }
  }
  return end;
}

// scikit-learn's _correct_predecessor (Schubert & Gertz 2018): false when the candidate vanishes.
__host__ __device__ inline bool correct_predecessor(const double* plot, const int32_t* pred_plot, const int32_t* pos,
                                                    int s, int& e) {
  while (s < e) {
    if (plot[s] > plot[e]) return true;
    const int p = pred_plot[e];
    if (p >= 0 && pos[p] >= s && pos[p] < e) return true;
    --e;
  }
  return false;
}

// Xi extraction of one problem from its ordering, reachabilities and predecessors (scikit-learn >= 1.3 semantics,
// min_cluster_size = min_samples, predecessor correction on).
__host__ __device__ inline void xi_labels(const int32_t* order, const double* reach, const int32_t* pred, int N,
                                          int min_samples, double xi, const XiScratch& s, int64_t* labels) {
  double* plot = s.plot;
  for (int k = 0; k < N; ++k) {
    plot[k] = reach[order[k]];
    s.pred_plot[k] = pred[order[k]];
    s.pos[order[k]] = k;
    s.pos_label[k] = -1;
  }
  plot[N] = cu::kInfinity;
  const double xc = 1.0 - xi;
  const double inv_xc = 1.0 / xc;
  for (int k = 0; k < N; ++k) {
    const double ratio = plot[k] / plot[k + 1];  // NaN (inf/inf, 0/0) sets no flag
    s.flags[k] = static_cast<uint8_t>((ratio <= xc ? kSteepUp : 0) | (ratio >= inv_xc ? kSteepDown : 0) |
                                      (ratio < 1.0 ? kUp : 0) | (ratio > 1.0 ? kDown : 0));
  }

  int n_sdas = 0, index = 0, label = 0;
  double mib = 0.0;
  auto filter_sdas = [&](double m) {
    if (m == cu::kInfinity) {
      n_sdas = 0;
      return;
    }
    int kept = 0;
    for (int t = 0; t < n_sdas; ++t) {
      if (m <= plot[s.sda_start[t]] * xc) {
        s.sda_start[kept] = s.sda_start[t];
        s.sda_end[kept] = s.sda_end[t];
        s.sda_mib[kept] = s.sda_mib[t] < m ? m : s.sda_mib[t];
        ++kept;
      }
    }
    n_sdas = kept;
  };

  for (int steep = 0; steep < N; ++steep) {
    if (!(s.flags[steep] & (kSteepUp | kSteepDown)) || steep < index) continue;
    for (int k = index; k <= steep; ++k)
      if (plot[k] > mib) mib = plot[k];

    if (s.flags[steep] & kSteepDown) {
      filter_sdas(mib);
      const int d_end = extend_region(s.flags, N, kSteepDown, kUp, steep, min_samples);
      s.sda_start[n_sdas] = steep;
      s.sda_end[n_sdas] = d_end;
      s.sda_mib[n_sdas] = 0.0;
      ++n_sdas;
      index = d_end + 1;
      mib = plot[index];
      continue;
    }

    filter_sdas(mib);
    const int u_start = steep;
    const int u_end = extend_region(s.flags, N, kSteepUp, kDown, u_start, min_samples);
    index = u_end + 1;
    mib = plot[index];

    int n_u = 0;
    for (int t = 0; t < n_sdas; ++t) {
      int c_start = s.sda_start[t], c_end = u_end;
      const double after = plot[c_end + 1];
      if (after * xc < s.sda_mib[t]) continue;
      const double d_max = plot[s.sda_start[t]];
      if (d_max * xc >= after) {
        while (plot[c_start + 1] > after && c_start < s.sda_end[t]) ++c_start;
      } else if (after * xc >= d_max) {
        while (c_end > u_start && plot[c_end - 1] > d_max) --c_end;  // never reads plot[-1]
      }
      if (!correct_predecessor(plot, s.pred_plot, s.pos, c_start, c_end)) continue;
      if (c_end - c_start + 1 < min_samples) continue;
      if (c_start > s.sda_end[t]) continue;
      if (c_end < u_start) continue;
      s.u_clusters[2 * n_u] = c_start;
      s.u_clusters[2 * n_u + 1] = c_end;
      ++n_u;
    }
    // Smaller (later-found) clusters first; a cluster is labelled only if none of its points already is.
    for (int t = n_u - 1; t >= 0; --t) {
      const int a = s.u_clusters[2 * t], b = s.u_clusters[2 * t + 1];
      bool free = true;
      for (int k = a; k <= b && free; ++k) free = s.pos_label[k] == -1;
      if (!free) continue;
      for (int k = a; k <= b; ++k) s.pos_label[k] = label;
      ++label;
    }
  }
  for (int k = 0; k < N; ++k) labels[order[k]] = s.pos_label[k];
}

__global__ void optics_xi_kernel(const int32_t* order, const double* reach, const int32_t* pred, int64_t P, int N,
                                 int min_samples, double xi, XiScratch scratch, int64_t* labels) {
  const int64_t prob = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (prob >= P) return;
  XiScratch s;
  s.plot = scratch.plot + prob * (N + 1);
  s.pred_plot = scratch.pred_plot + prob * N;
  s.pos = scratch.pos + prob * N;
  s.flags = scratch.flags + prob * N;
  s.sda_start = scratch.sda_start + prob * N;
  s.sda_end = scratch.sda_end + prob * N;
  s.sda_mib = scratch.sda_mib + prob * N;
  s.u_clusters = scratch.u_clusters + prob * 2 * N;
  s.pos_label = scratch.pos_label + prob * N;
  xi_labels(order + prob * N, reach + prob * N, pred + prob * N, N, min_samples, xi, s, labels + prob * N);
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
  XiScratch xi;
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
