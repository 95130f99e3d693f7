// The CUDA optics_labels and pts_select kernels (csrc/optics_labels/optics_labels_cuda.cu,
// csrc/pts_select/pts_select_cuda.cu), compiled as C++ and run by the emulator of cuda_emulation.h, against the
// CPU engine: identical labels (numbering included) on the same distance matrices, identical labels when the
// distances are formed from Gram matrices on the device, and identical PTS indices from the same templates.
// Problems are clustered point sets with outliers and exact duplicates (ties), of several sizes and min_samples,
// on 1-warp and multi-warp blocks.
#define HETMM_CUDA_EMULATION 1

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "optics_labels/optics_labels_cuda.cu"
#include "pts_select/pts_select_cuda.cu"
#include "pts_select/pts_select.h"
#include "test_util.h"

using hetmm_test::Rng;

namespace {

// n unit vectors in `dim` dims around `clusters` centres with a few outliers and exact duplicates, [n][dim].
std::vector<double> clustered(int64_t n, int64_t dim, int64_t clusters, double spread, Rng& rng) {
  std::vector<double> centres(static_cast<size_t>(std::max<int64_t>(1, clusters) * dim));
  for (auto& v : centres) v = rng.normal();
  std::vector<double> x(static_cast<size_t>(n * dim));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = rng.below(std::max<int64_t>(1, clusters));
    const bool outlier = i < n / 10;
    for (int64_t d = 0; d < dim; ++d)
      x[i * dim + d] = outlier ? 3 * rng.normal() : centres[c * dim + d] + spread * rng.normal();
  }
  for (int t = 0; t < 3; ++t) {
    const int64_t a = rng.below(n), b = rng.below(n);
    std::copy(&x[b * dim], &x[b * dim] + dim, &x[a * dim]);
  }
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t d = 0; d < dim; ++d) s += x[i * dim + d] * x[i * dim + d];
    for (int64_t d = 0; d < dim; ++d) x[i * dim + d] /= std::sqrt(s);
  }
  return x;
}

// Gram matrix [n][n] of x [n][dim] by the CPU engine (gram_f64 on the packed features, zero padding up to ld).
std::vector<double> gram(const std::vector<double>& x, int64_t n, int64_t dim) {
  const int64_t ld = hetmm::gram_ld(n);
  std::vector<double> xt(static_cast<size_t>(dim * ld), 0.0), G(static_cast<size_t>(ld * ld));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d) xt[static_cast<size_t>(d * ld + i)] = x[static_cast<size_t>(i * dim + d)];
  hetmm::gram_f64(xt.data(), dim, n, ld, G.data());
  std::vector<double> g(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) g[static_cast<size_t>(i * n + j)] = G[static_cast<size_t>(i * ld + j)];
  return g;
}

hetmm::CudaDeviceLimits limits() {
  hetmm::CudaDeviceLimits lim;
  lim.sm_count = 132;
  lim.max_smem_per_block = 227 * 1024;
  return lim;
}

std::vector<int64_t> gpu_labels(const std::vector<double>& src, bool is_gram, int64_t P, int64_t N, int64_t ms) {
  const size_t ws_bytes = hetmm::optics_labels_cuda_workspace_bytes(P, N);
  std::vector<char> ws(ws_bytes + 256);
  void* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(ws.data()) + 255) & ~uintptr_t(255));
  hetmm_emu::poison_outside(ws.data(), ws.size(), aligned, ws_bytes);  // AddressSanitizer builds: exact bounds
  std::vector<int64_t> labels(static_cast<size_t>(P * N), 99);
  const cudaError_t err =
      hetmm::optics_labels_cuda(src.data(), is_gram, P, N, ms, 0.05, aligned, labels.data(), limits(), nullptr);
  hetmm_emu::unpoison(ws.data(), ws.size());
  HETMM_CHECK(err == cudaSuccess, "optics_labels_cuda failed for P=", P, " N=", N);
  return labels;
}

// Points drawn from about n / 4 distinct vectors: exact ties everywhere (distances, reachabilities, predecessors).
std::vector<double> duplicated(int64_t n, int64_t dim, Rng& rng) {
  const int64_t distinct = std::max<int64_t>(1, n / 4);
  const auto base = clustered(distinct, dim, 2, 0.2, rng);
  std::vector<double> x(static_cast<size_t>(n * dim));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = rng.below(distinct);
    std::copy(&base[b * dim], &base[b * dim] + dim, &x[i * dim]);
  }
  return x;
}

void check_optics(int64_t P, int64_t N, int64_t ms, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> dist, grams;
  for (int64_t p = 0; p < P; ++p) {
    const int64_t dim = 2 + rng.below(10);
    const auto x =
        p % 3 == 2 ? duplicated(N, dim, rng) : clustered(N, dim, rng.below(5), 0.02 + 0.5 * rng.uniform(), rng);
    const auto g = gram(x, N, dim);
    grams.insert(grams.end(), g.begin(), g.end());
    for (double v : g) dist.push_back(std::max(0.0, 1.0 - v));
    if (p % 2 == 1)  // every zero distance written as -0.0: read as +0.0 by both engines
      for (size_t k = static_cast<size_t>(p * N * N); k < dist.size(); ++k)
        if (dist[k] == 0.0) dist[k] = -0.0;
  }
  std::vector<int64_t> want(static_cast<size_t>(P * N));
  HETMM_CHECK(hetmm::optics_labels_cpu(dist.data(), P, N, ms, 0.05, want.data(), 1) == -1, "cpu rejected input");
  const auto got = gpu_labels(dist, false, P, N, ms);
  const auto got_gram = gpu_labels(grams, true, P, N, ms);
  int bad = 0, bad_gram = 0, clustered_problems = 0;
  for (int64_t p = 0; p < P; ++p) {
    bool same = true, same_gram = true, any = false;
    for (int64_t i = 0; i < N; ++i) {
      same &= got[p * N + i] == want[p * N + i];
      same_gram &= got_gram[p * N + i] == want[p * N + i];
      any |= want[p * N + i] >= 0;
    }
    bad += !same;
    bad_gram += !same_gram;
    clustered_problems += any;
  }
  HETMM_CHECK(bad == 0, bad, " of ", P, " problems differ (N=", N, ", min_samples=", ms, ")");
  HETMM_CHECK(bad_gram == 0, bad_gram, " of ", P, " problems differ from Gram input (N=", N, ", min_samples=", ms, ")");
  HETMM_CHECK(clustered_problems > 0, "no problem had a cluster: the check is vacuous (N=", N, ")");
}

void check_pts(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, uint64_t seed) {
  Rng rng(seed);
  const int64_t P = H * W;
  // templates [N, C, H, W] float, clustered per pixel
  std::vector<float> t(static_cast<size_t>(N * C * P));
  for (int64_t p = 0; p < P; ++p) {
    const auto x = clustered(N, C, 1 + rng.below(4), 0.1 + 0.3 * rng.uniform(), rng);
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < C; ++c) t[static_cast<size_t>((i * C + c) * P + p)] = static_cast<float>(x[i * C + c]);
  }
  std::vector<int64_t> want(static_cast<size_t>(K * P));
  HETMM_CHECK(hetmm::pts_select_cpu(t.data(), N, C, H, W, C * P, P, W, 1, K, want.data(), 1) == -1, "cpu failed");

  std::vector<float> X(static_cast<size_t>(P * N * C));  // [P][N][C]
  for (int64_t p = 0; p < P; ++p)
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < C; ++c)
        X[static_cast<size_t>((p * N + i) * C + c)] = t[static_cast<size_t>((i * C + c) * P + p)];
  std::vector<double> G(static_cast<size_t>(P * N * N), -7.0);
  HETMM_CHECK(hetmm::pts_gram_cuda(X.data(), P, N, C, G.data(), nullptr) == cudaSuccess, "gram failed");
  const int64_t ms = hetmm::pts_min_samples(N, K);
  const auto labels = gpu_labels(G, true, P, N, ms);
  std::vector<int64_t> got(static_cast<size_t>(P * K), -5);
  HETMM_CHECK(hetmm::pts_choose_cuda(G.data(), labels.data(), P, N, K, got.data(), limits(), nullptr) == cudaSuccess,
              "choose failed");
  int bad = 0;
  for (int64_t p = 0; p < P; ++p)
    for (int64_t k = 0; k < K; ++k) bad += got[static_cast<size_t>(p * K + k)] != want[static_cast<size_t>(k * P + p)];
  HETMM_CHECK(bad == 0, bad, " of ", P * K, " choices differ (N=", N, ", C=", C, ", K=", K, ")");
}

}  // namespace

int main() {
  check_optics(40, 5, 2, 1);
  check_optics(30, 37, 3, 2);
  check_optics(20, 60, 4, 3);
  check_optics(8, 130, 6, 4);
  check_optics(3, 600, 5, 5);  // two warps per block
  check_optics(2, 1100, 9, 6);  // four warps per block
  check_pts(24, 6, 3, 4, 4, 10);
  check_pts(17, 5, 2, 3, 5, 11);
  check_pts(30, 70, 2, 2, 2, 12);  // C over several channel chunks
  check_pts(40, 3, 2, 2, 1, 13);
  check_pts(12, 4, 1, 3, 11, 14);
  check_pts(90, 8, 1, 2, 12, 15);  // N over one 64-row tile
  check_pts(150, 8, 1, 1, 150, 16);  // K = N
  return hetmm_test::report("test_pts_cuda_emulated");
}
