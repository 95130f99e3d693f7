// optics_labels core: the OPTICS semantic steps that the CPU engine (optics_labels_cpu.cpp) and the CUDA engine
// (optics_labels_cuda.cu, and through it the emulated CUDA tests) both run, as HETMM_HOST_DEVICE functions on raw
// pointers and sizes; torch-free, C++17. SPEC §4 step 1; the full contract is in optics_labels.h.
//
// Shared so that the labels of the two engines are equal by construction: one rounding, one reachability rule, one
// xi extraction (steep areas, region expansion, steep-down filtering, predecessor correction, cluster labels).
// The engines differ only in how they order the points: the CPU engine expands one row per step in a single thread
// (AVX2 where available), the CUDA kernel spreads each expansion over a block and reduces the argmin with
// `better` (common/ordering.h). Both apply optics_candidate per element; the xi extraction is sequential in both
// (one thread per problem on the GPU).
//
// Index is the integer type of the ordering, predecessor and position arrays: int64_t on the CPU, int32_t on the GPU
// (N < 2^31 there).
#pragma once

#include <math.h>

#include <cstdint>

#include "../common/host_device.h"

namespace hetmm {

// np.around(x, 15) as scikit-learn applies it to OPTICS distances: multiply by the exactly representable 1e15, round
// half to even (the default rounding mode), divide (IEEE division; never contracted). Inline so that the CPU rounding
// passes vectorise.
HETMM_HOST_DEVICE inline double round15(double x) { return nearbyint(x * 1e15) / 1e15; }

// PTS distance from a Gram entry: max(0, 1 - g). 1 - g is never -0.0 in round-to-nearest, so no -0.0 comes out.
HETMM_HOST_DEVICE inline double gram_distance(double g) {
  const double d = 1.0 - g;
  return d > 0.0 ? d : 0.0;
}

// Reachability offered to an unprocessed point by the expanded point: max(r, rcore) with r the rounded distance and
// rcore the expanded point's rounded core distance; the point takes it only when it is strictly smaller than its
// current reachability. R holds no -0.0, so max() needs no care about the sign of zero.
HETMM_HOST_DEVICE inline double optics_candidate(double r, double rcore) { return r < rcore ? rcore : r; }

// Steepness bits of plot position k, from ratio = plot[k] / plot[k + 1] exactly as scikit-learn computes them (NaN
// ratios such as inf/inf or 0/0 set no bit).
constexpr uint8_t kXiSteepUp = 1, kXiSteepDown = 2, kXiUp = 4, kXiDown = 8;

HETMM_HOST_DEVICE inline uint8_t xi_flags(double ratio, double xi_complement, double inv_complement) {
  return static_cast<uint8_t>((ratio <= xi_complement ? kXiSteepUp : 0) | (ratio >= inv_complement ? kXiSteepDown : 0) |
                              (ratio < 1.0 ? kXiUp : 0) | (ratio > 1.0 ? kXiDown : 0));
}

// scikit-learn's _extend_region: the last steep index of the area starting at `start`. Extend while points are steep
// in the area's direction, stop at a point going the other way, or after more than min_samples consecutive
// non-steep ones.
template <typename Index>
HETMM_HOST_DEVICE inline Index extend_region(const uint8_t* flags, Index n, uint8_t steep, uint8_t other_way,
                                             Index start, Index min_samples) {
  Index non_steep = 0, end = start;
  for (Index index = start; index < n; ++index) {
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

// scikit-learn's _correct_predecessor (Schubert & Gertz 2018, Algorithm 2): shrink [s, e] from the right until the end
// point's predecessor lies inside the cluster or the start is higher than the end; false when nothing is left.
template <typename Index>
HETMM_HOST_DEVICE inline bool correct_predecessor(const double* plot, const Index* pred_plot, const Index* pos, Index s,
                                                  Index& e) {
  while (s < e) {
    if (plot[s] > plot[e]) return true;
    const Index p = pred_plot[e];
    if (p >= 0 && pos[p] >= s && pos[p] < e) return true;
    --e;
  }
  return false;
}

// Scratch of optics_xi_labels for one problem of N points.
template <typename Index>
struct OpticsXiScratch {
  double* plot;       // N + 1: reachability plot in processing order, +inf appended
  Index* pred_plot;   // N: predecessor of each plot position
  Index* pos;         // N: plot position of each point
  uint8_t* flags;     // N: xi_flags of each plot position
  Index* sda_start;   // N: the live steep-down areas
  Index* sda_end;     // N
  double* sda_mib;    // N
  Index* u_clusters;  // 2 N: (start, end) of the clusters found at the current steep-up area
  Index* pos_label;   // N: label of each plot position
};

// Drop the steep-down areas whose start is not xi-steeper than mib and raise the mib of the others; returns how many
// are left.
template <typename Index>
HETMM_HOST_DEVICE inline Index filter_steep_down(const OpticsXiScratch<Index>& s, Index n_sdas, double mib,
                                                 double xi_complement) {
  if (isinf(mib)) return 0;
  Index kept = 0;
  for (Index t = 0; t < n_sdas; ++t) {
    if (mib <= s.plot[s.sda_start[t]] * xi_complement) {
      s.sda_start[kept] = s.sda_start[t];
      s.sda_end[kept] = s.sda_end[t];
      s.sda_mib[kept] = s.sda_mib[t] < mib ? mib : s.sda_mib[t];
      ++kept;
    }
  }
  return kept;
}

// Xi extraction of one problem (scikit-learn's _xi_cluster with predecessor correction and min_cluster_size =
// min_samples, then _extract_xi_labels) from the OPTICS ordering, the reachability and the predecessor of each point
// (-1: none). labels: [N] int64, -1 = noise, clusters numbered as scikit-learn does. O(N) plus O(N) per candidate.
// Clusters are labelled right after the steep-up area that closes them, smaller (later-found) ones first, which is
// the order of scikit-learn's cluster list; a cluster gets the next label only if none of its points has one yet.
template <typename Index>
HETMM_HOST_DEVICE inline void optics_xi_labels(const Index* order, const double* reach, const Index* pred, Index N,
                                               Index min_samples, double xi, const OpticsXiScratch<Index>& s,
                                               int64_t* labels) {
  double* plot = s.plot;
  for (Index k = 0; k < N; ++k) {
    plot[k] = reach[order[k]];
    s.pred_plot[k] = pred[order[k]];
    s.pos[order[k]] = k;
    s.pos_label[k] = -1;
  }
  plot[N] = INFINITY;  // closes the last cluster, as scikit-learn does
  const double xc = 1.0 - xi;
  const double inv_xc = 1.0 / xc;
  for (Index k = 0; k < N; ++k) s.flags[k] = xi_flags(plot[k] / plot[k + 1], xc, inv_xc);

  Index n_sdas = 0, index = 0, label = 0;
  double mib = 0.0;  // maximum of the plot in between steep areas
  for (Index steep = 0; steep < N; ++steep) {
    if (!(s.flags[steep] & (kXiSteepUp | kXiSteepDown)) || steep < index) continue;
    for (Index k = index; k <= steep; ++k)
      if (plot[k] > mib) mib = plot[k];

    if (s.flags[steep] & kXiSteepDown) {
      n_sdas = filter_steep_down(s, n_sdas, mib, xc);
      const Index d_end = extend_region(s.flags, N, kXiSteepDown, kXiUp, steep, min_samples);
      s.sda_start[n_sdas] = steep;
      s.sda_end[n_sdas] = d_end;
      s.sda_mib[n_sdas] = 0.0;
      ++n_sdas;
      index = d_end + 1;
      mib = plot[index];
      continue;
    }

    n_sdas = filter_steep_down(s, n_sdas, mib, xc);
    const Index u_start = steep;
    const Index u_end = extend_region(s.flags, N, kXiSteepUp, kXiDown, u_start, min_samples);
    index = u_end + 1;
    mib = plot[index];

    Index n_u = 0;
    for (Index t = 0; t < n_sdas; ++t) {
      Index c_start = s.sda_start[t], c_end = u_end;
      const double after = plot[c_end + 1];
      if (after * xc < s.sda_mib[t]) continue;
      const double d_max = plot[s.sda_start[t]];
      if (d_max * xc >= after) {
        // The start is much higher than the end: move the start right to the end's level.
        while (plot[c_start + 1] > after && c_start < s.sda_end[t]) ++c_start;
      } else if (after * xc >= d_max) {
        // The end is much higher than the start: move the end left to the start's level (never reads plot[-1]).
        while (c_end > u_start && plot[c_end - 1] > d_max) --c_end;
      }
      if (!correct_predecessor(plot, s.pred_plot, s.pos, c_start, c_end)) continue;
      if (c_end - c_start + 1 < min_samples) continue;  // min_cluster_size = min_samples
      if (c_start > s.sda_end[t]) continue;
      if (c_end < u_start) continue;
      s.u_clusters[2 * n_u] = c_start;
      s.u_clusters[2 * n_u + 1] = c_end;
      ++n_u;
    }
    // The candidates were found from the outermost steep-down area inwards: smaller ones first.
    for (Index t = n_u - 1; t >= 0; --t) {
      const Index a = s.u_clusters[2 * t], b = s.u_clusters[2 * t + 1];
      bool free = true;
      for (Index k = a; k <= b && free; ++k) free = s.pos_label[k] == -1;
      if (!free) continue;
      for (Index k = a; k <= b; ++k) s.pos_label[k] = label;
      ++label;
    }
  }
  for (Index k = 0; k < N; ++k) labels[order[k]] = s.pos_label[k];
}

}  // namespace hetmm
