// optics_labels: batched OPTICS ordering + xi cluster extraction on precomputed distance matrices.
//
// Semantics (SPEC.md §4 step 1): for every problem p, the labels scikit-learn's
//   OPTICS(metric="precomputed", min_samples=m, xi=xi, max_eps=inf, min_cluster_size=None,
//          predecessor_correction=True).fit(dist[p]).labels_
// would give, numbering included. Written from the definitions (Ankerst et al. 1999, OPTICS; Schubert & Gertz 2018,
// predecessor correction) and the documented behaviour of scikit-learn >= 1.3, verified against scikit-learn 1.9.1:
//   * core[i] = round15(m-th smallest value of row i of dist) (the point itself counts, the diagonal is just a value);
//   * the ordering starts at the unprocessed point of smallest reachability, ties (including +inf) to the smallest
//     index; expanding point q updates every unprocessed j with cand = round15(max(dist[q, j], core[q])) when
//     cand < reach[j] (strict), recording q as predecessor of j; rows are used as given (no symmetry assumed);
//   * round15(x) = nearbyint(x * 1e15) / 1e15 in the default rounding mode, which is numpy's
//     np.around(x, 15) (multiply by the exactly representable 1e15, round half to even, divide);
//   * the reachability plot gets +inf appended; steep up/down points use ratio = plot[i] / plot[i + 1] against 1 - xi
//     and 1 / (1 - xi); steep areas allow at most min_samples consecutive non-steep points; the steep-down-area
//     filter, "mib" bookkeeping, cluster end adjustment, predecessor correction and min_cluster_size = min_samples
//     follow scikit-learn's _xi_cluster; clusters are kept in its order (smaller nested ones first) and a cluster
//     gets the next label only if none of its points is labelled yet.
// Because round15 is non-decreasing it commutes with max() and with order statistics, so the kernels round the
// whole matrix once (R = round15(dist)) and work on R: core[i] = m-th smallest of R[i, :] and
// cand = max(R[q, j], round15(core[q])). The results are bit-for-bit those of the definition above.
//
// Input requirements (scikit-learn rejects anything else): every dist value finite and >= 0, 2 <= min_samples <= N,
// 0 < xi < 1. One deliberate difference: -0.0 is read as +0.0. scikit-learn keeps the sign, and then its result
// depends on which of several equal zeros numpy's partial sort returns as the core distance and on x / -0.0 = -inf
// in the steepness ratio (on random matrices with explicit -0.0 entries about 1 in 6 partitions differ). PTS
// distances, max(0, 1 - g) with 1 - g never -0.0 in round-to-nearest, contain no -0.0.
//
// Complexity per problem: O(N^2) time (rounding, core distances with k-selection, N expansions of one row each),
// O(N) workspace plus the N x N rounded matrix; the xi extraction is O(N) plus O(N) per candidate cluster.
#pragma once

#include <cstdint>
#include <vector>

#include "optics_labels_core.h"

namespace hetmm {

// Reusable per-thread buffers for optics_xi_rounded: after the first problem of a given N nothing is allocated.
struct OpticsWorkspace {
    std::vector<double> core, rcore, work, reach, plot, kbuf, sda_mib;
    std::vector<int64_t> order, pred, pred_plot, pos, pos_label, sda_start, sda_end, u_clusters;
    std::vector<uint8_t> flags;
    void resize(int64_t n);
    OpticsXiScratch<int64_t> xi_scratch();
};

// One problem. R: [N, N] row-major with row stride ld (>= N), R = round15(dist), values in [0, +inf], no -0.0.
// labels: [N] int64 output (-1 = noise, clusters 0, 1, ... numbered as scikit-learn does).
// symmetric: R is symmetric and every row has at least N rounded up to 4 readable values (ld >= that); lets the core
// distances be computed four rows at a time. Same result either way.
void optics_xi_rounded(const double* R, int64_t ld, int64_t N, int64_t min_samples, double xi, OpticsWorkspace& ws,
                       int64_t* labels, bool symmetric = false);

// Batched op. dist: [P, N, N] float64 contiguous; labels: [P, N] int64 contiguous. Problems run in parallel with
// OpenMP (num_threads <= 0: the OpenMP default); each problem is computed by one thread, so the labels do not depend
// on the thread count. Returns -1 when every value was valid, else the smallest flat index p*N*N + i*N + j of a
// value that is negative, NaN or infinite (the labels are then unspecified).
int64_t optics_labels_cpu(const double* dist, int64_t P, int64_t N, int64_t min_samples, double xi, int64_t* labels,
                          int num_threads = 0);

}  // namespace hetmm
