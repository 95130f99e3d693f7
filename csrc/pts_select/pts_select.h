// pts_select: pixel-level template selection (SPEC.md §4), per pixel independently.
//
// Input: templates T[N, C, H, W] (float or double, any strides: element (i, c, y, x) at
// x[i*sN + c*sC + y*sH + x*sW]), target size K with 1 <= K <= N.
// Output: out[K, H*W] int64 (contiguous), out[k, p] = index into N of the k-th template chosen at pixel p:
// easy normals first (one medoid per OPTICS cluster, clusters in order of first appearance over i = 0..N-1, at most
// K), then hard normals in greedy order.
//
// Per pixel p, with x_i = T[i, :, p] converted to double:
//   1. G[i, j] = sum over c = 0..C-1 in ascending order of x_i[c] * x_j[c], accumulated in double with one rounding
//      per step (fused multiply-add; for float inputs the products are exact, so this is the plain sequential
//      float64 sum). G is exactly symmetric. It is NOT bit-identical to a BLAS product (torch.bmm), whose
//      summation order is unspecified: distances may differ from the reference's in the last bits, which can only
//      change a result when two quantities the algorithm compares are within a few ulps of each other (exact ties,
//      e.g. duplicate templates, are ties here too).
//   2. D = max(0, 1 - G); labels = OPTICS xi (optics_labels.h) with min_samples = max(2, N / K), xi = 0.05.
//   3. Easy normals: for each cluster in order of first appearance, the member j maximising
//      sum_{k in cluster, ascending k} G[j, k] (ties: smallest j); stop once K are taken. No cluster: the global
//      medoid argmax_j sum_{k ascending} G[j, k] (ties: smallest j).
//   4. Hard normals until K are chosen: dp[i] = sum over chosen s, in the order they were chosen, of G[i, s];
//      choose argmin over unchosen i (ties: smallest i), then add column i.
//
// Complexity per pixel: N^2 C / 2 multiply-adds for G (the dominant cost), O(N^2) for OPTICS and the selection.
// Memory: per thread the packed features of one group of pixels (at most 32 MiB, or one cache line of pixels when a
// single pixel needs more) plus about 2 N^2 doubles; nothing is allocated per pixel.
#pragma once

#include <cstdint>
#include <vector>

#include "../optics_labels/optics_labels.h"
#include "pts_select_core.h"

namespace hetmm {

// min_samples rule of SPEC §4.
inline int64_t pts_min_samples(int64_t n, int64_t k) { return n / k < 2 ? 2 : n / k; }

// Leading dimension used for an N-point Gram matrix and the packed features (N rounded up for the register tiles).
int64_t gram_ld(int64_t n);

// G[j*ld + i] for all 0 <= i, j < N from packed features xt[c*ld + i] (c < C, i < N; entries N <= i < ld must be 0).
// G must hold ld*ld doubles. Exactly symmetric; summation as in step 1 above.
void gram_f64(const double* xt, int64_t C, int64_t N, int64_t ld, double* G);

// Reusable per-thread buffers for pts_choose.
struct PtsWorkspace {
    std::vector<double> dp;
    std::vector<int64_t> rank_of_label, cursor, start, members;
    std::vector<uint8_t> taken;
    void resize(int64_t n);
};

// Steps 3-4 for one pixel: G [N, N] with row stride ld (symmetric), labels [N] (-1 = noise, clusters >= 0, < N).
// Writes the K choices to chosen[k * stride]. The sequential loops around the rules of pts_select_core.h.
void pts_choose(const double* G, int64_t ld, int64_t N, const int64_t* labels, int64_t K, PtsWorkspace& ws,
                int64_t* chosen, int64_t stride);

// The whole op. Pixels run in parallel with OpenMP (num_threads <= 0: the OpenMP default); every pixel is computed
// by one thread from its own data only, so the output does not depend on the thread count or the tiling.
// Returns -1, or the smallest pixel index p = y*W + x whose Gram matrix has a non-finite value (NaN/inf inputs;
// its output column is then unspecified).
int64_t pts_select_cpu(const float* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC,
                       int64_t sH, int64_t sW, int64_t K, int64_t* out, int num_threads = 0);
int64_t pts_select_cpu(const double* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC,
                       int64_t sH, int64_t sW, int64_t K, int64_t* out, int num_threads = 0);

// pts_labels: step 2 alone, the OPTICS labels each pixel's selection starts from: labels[N, H*W] int64 (contiguous),
// labels[i, p] = cluster of template i at pixel p (-1 = noise; clusters numbered as optics_labels.h does), with
// min_samples = pts_min_samples(N, K). Same Gram matrices, threading and return value as pts_select_cpu.
int64_t pts_labels_cpu(const float* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC,
                       int64_t sH, int64_t sW, int64_t K, int64_t* labels, int num_threads = 0);
int64_t pts_labels_cpu(const double* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC,
                       int64_t sH, int64_t sW, int64_t K, int64_t* labels, int num_threads = 0);

// gather_sheets: the selected template vectors, out[k, c, y, x] = x[idx[k, y, x], c, y, x] (out contiguous
// [K, C, H, W]; x any strides as above; idx contiguous [K, H, W], every value in [0, N), checked by the caller).
// Elements are copied bit for bit (elem_bytes 2, 4 or 8: float16/bfloat16, float32, float64). OpenMP over (channel,
// block of pixels) tasks; a task copies its N input rows into a private buffer (256 KiB), then writes its K output
// rows from there.
void gather_sheets_cpu(const void* x, int64_t elem_bytes, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN,
                       int64_t sC, int64_t sH, int64_t sW, const int64_t* idx, int64_t K, void* out,
                       int num_threads = 0);

}  // namespace hetmm
