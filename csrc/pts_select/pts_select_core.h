// pts_select core: the PTS choice (SPEC §4 steps 2-4) that the CPU engine (pts_select_cpu.cpp) and the CUDA engine
// (pts_select_cuda.cu, and through it the emulated CUDA tests) both run, as HETMM_HOST_DEVICE functions on raw
// pointers and sizes; torch-free, C++17. The full contract is in pts_select.h.
//
// G is one pixel's N x N Gram matrix (row-major, row stride ld, exactly symmetric), labels its OPTICS labels (-1 =
// noise, clusters 0..N-1). The choice is: bucket the members by cluster in order of first appearance; per cluster
// the prototype, the member with the largest ascending-order similarity sum to its cluster; no cluster: the global
// medoid; then greedily the unchosen point of smallest accumulated similarity to the chosen ones. Every argmax /
// argmin breaks ties to the smallest index (`better`, common/ordering.h).
//
// Shared so that both engines sum in the same order and break ties the same way, hence choose the same indices.
// The bucketing runs whole in both (one thread on the GPU). The prototype search and the greedy fill are loops over
// points that the CPU runs sequentially and the CUDA kernel spreads over a block with a (value, index) reduction, so
// what is shared there is the per-point rule (the sums below and `better`), not the loop.
#pragma once

#include <cstdint>

#include "../common/host_device.h"
#include "../common/ordering.h"

namespace hetmm {

// Clusters ranked by first appearance over i = 0..N-1; the members of the cluster of rank r are
// members[start[r] .. start[r + 1]), in ascending index order. Returns the number of clusters.
// Scratch: rank [N] (indexed by label), cursor [N]; output start [N + 1], members [N].
template <typename Index>
HETMM_HOST_DEVICE inline Index pts_bucket_clusters(const int64_t* labels, Index N, Index* rank, Index* cursor,
                                                   Index* start, Index* members) {
  for (Index i = 0; i < N; ++i) rank[i] = -1;
  Index n_clusters = 0;
  for (Index i = 0; i < N; ++i)
    if (labels[i] >= 0 && rank[labels[i]] < 0) rank[labels[i]] = n_clusters++;
  for (Index r = 0; r <= n_clusters; ++r) start[r] = 0;
  for (Index i = 0; i < N; ++i)
    if (labels[i] >= 0) ++start[rank[labels[i]] + 1];
  for (Index r = 0; r < n_clusters; ++r) {
    start[r + 1] += start[r];
    cursor[r] = start[r];
  }
  for (Index i = 0; i < N; ++i)
    if (labels[i] >= 0) members[cursor[rank[labels[i]]]++] = i;
  return n_clusters;
}

// Prototype score of a cluster member with Gram row `row`: sum over the members k, in ascending order, of row[k].
template <typename Index>
HETMM_HOST_DEVICE inline double pts_cluster_similarity(const double* row, const Index* members, Index size) {
  double s = 0.0;
  for (Index b = 0; b < size; ++b) s += row[members[b]];
  return s;
}

// Medoid score when there is no cluster: sum over k = 0..N-1, in ascending order, of row[k].
template <typename Index>
HETMM_HOST_DEVICE inline double pts_total_similarity(const double* row, Index N) {
  double s = 0.0;
  for (Index k = 0; k < N; ++k) s += row[k];
  return s;
}

// Greedy-fill score of point i after the first n_chosen choices: sum over them, in the order they were chosen, of
// G[chosen[t * stride], i] (G is symmetric, so row chosen[t] is read). Later choices add their row to it in the same
// order, so dp stays exactly this sum.
template <typename Index>
HETMM_HOST_DEVICE inline double pts_chosen_similarity(const double* G, int64_t ld, const Index* chosen, int64_t stride,
                                                      Index n_chosen, Index i) {
  double v = 0.0;
  for (Index t = 0; t < n_chosen; ++t) v += G[static_cast<int64_t>(chosen[t * stride]) * ld + i];
  return v;
}

}  // namespace hetmm
