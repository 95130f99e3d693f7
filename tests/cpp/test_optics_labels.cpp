// Torch-free tests of the CPU optics_labels kernel (csrc/optics_labels): known answers and properties.
//
// The expected labels were computed once with scikit-learn 1.9.1,
//   OPTICS(metric="precomputed", min_samples=m, xi=xi).fit(dist).labels_,
// on the very same float64 matrices (built below from small integers or from points on a line, so that C++ and numpy
// produce identical doubles), and the round15 pairs with numpy 2.4 np.around(x, 15).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "optics_labels/optics_labels.h"
#include "test_util.h"

namespace {

using Matrix = std::vector<double>;

Matrix line_distances(const std::vector<double>& points) {
  const size_t n = points.size();
  Matrix d(n * n);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) d[i * n + j] = std::fabs(points[i] - points[j]);
  return d;
}

std::vector<int64_t> run(const Matrix& d, int64_t n, int64_t min_samples, double xi, int threads = 1) {
  std::vector<int64_t> labels(static_cast<size_t>(n), 99);
  const int64_t bad = hetmm::optics_labels_cpu(d.data(), 1, n, min_samples, xi, labels.data(), threads);
  HETMM_CHECK(bad == -1, "valid input rejected at ", bad);
  return labels;
}

std::string show(const std::vector<int64_t>& v) {
  std::string s;
  for (int64_t x : v) s += std::to_string(x) + " ";
  return s;
}

void check_labels(const char* name, const Matrix& d, int64_t min_samples, double xi,
                  const std::vector<int64_t>& want) {
  const auto got = run(d, static_cast<int64_t>(want.size()), min_samples, xi);
  HETMM_CHECK(got == want, name, ": got ", show(got), "want ", show(want));
}

void test_round15_matches_numpy() {
  const double inf = std::numeric_limits<double>::infinity();
  const double pairs[][2] = {
      {0x1.99999999999a8p-4, 0x1.999999999999ap-4},   // 0.1000000000000002 -> 0.1
      {0x1.b05876e5b0120p-50, 0x1.203af9ee75616p-49},  // 1.5e-15 -> 2e-15 (half to even)
      {0x1.6849b86a12b9bp-49, 0x1.203af9ee75616p-49},  // 2.5e-15 -> 2e-15 (half to even)
      {0x1.6666666666669p-1, 0x1.6666666666666p-1},    // 0.7000000000000003 -> 0.7
      {0x1.5555555555555p-2, 0x1.555555555554fp-2},    // 1/3 -> 0.333333333333333
      {0x1.5555555555555p-1, 0x1.5555555555558p-1},    // 2/3 -> 0.666666666666667
      {0x1.cd2b297d889bcp-54, 0.0},                    // 1e-16 -> 0
      {0x1.203af9ee75615p-51, 0.0},                    // 4.999999999999999e-16 -> 0
      {0x1.7e43c8800759cp+996, inf},                   // 1e300: x * 1e15 overflows -> inf
      {0x1.1eff357032711p+974, 0x1.1eff357032711p+974},  // 1.79e293 stays
      {0x1.2099a99493f99p+974, inf},                   // 1.8e293 -> inf
      {0x0.0000000000001p-1022, 0.0},                  // smallest subnormal -> 0
      {0x1.e240c9fcb68cdp+16, 0x1.e240c9fcb68cdp+16},  // 123456.78901234567 stays
      {0x1.3333333333334p-2, 0x1.3333333333333p-2},    // 0.30000000000000004 -> 0.3
      {0x1.203af9ee75615p-50, 0x1.203af9ee75616p-50},  // 9.999999999999999e-16 -> 1e-15
  };
  for (const auto& p : pairs) HETMM_CHECK(hetmm::round15(p[0]) == p[1], "round15(", p[0], ") = ", hetmm::round15(p[0]));
  HETMM_CHECK(hetmm::round15(inf) == inf, "round15(inf)");
}

void test_known_answers() {
  check_labels("two groups on a line", line_distances({0, 1, 2, 3, 4, 30, 31, 32, 33, 34, 35, 80}), 3, 0.05,
               {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1});
  check_labels("three groups of different density",
               line_distances({0, 1, 2, 3, 10, 12, 14, 16, 18, 50, 51, 52, 53, 54, 55, 56, 120}), 3, 0.05,
               {0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2});
  check_labels("nested groups, xi 0.3",
               line_distances({0, 0.5, 1, 1.5, 2, 6, 6.5, 7, 7.5, 8, 40, 41, 42, 43, 44, 45, 46}), 2, 0.3,
               {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2});
  check_labels("all duplicates", Matrix(49, 0.0), 2, 0.05, {0, 0, 0, 0, 0, 0, 0});

  // Differences below 1e-15 vanish in the rounding: ties that scikit-learn sees too.
  const std::vector<double> base = {0.1, 0.1 + 2e-16, 0.1 + 4e-16, 0.7, 0.7 + 3e-16, 0.7 + 1e-16, 0.9, 0.3, 0.3};
  Matrix d(base.size() * base.size());
  for (size_t i = 0; i < base.size(); ++i)
    for (size_t j = 0; j < base.size(); ++j)
      d[i * base.size() + j] = std::fabs(base[i] - base[j]) + 0.25 * (base[i] != base[j]);
  check_labels("sub-1e-15 differences", d, 2, 0.05, {0, 0, 0, 2, 2, 2, 2, 1, 1});

  // Block-structured small-integer matrices: many exact ties, noise points, several clusters.
  const Matrix sym3 = {
      0, 0, 1, 0, 7, 0, 2, 2, 1, 4, 4, 0, 1, 5, 6, 6, 0, 0, 0, 0, 5, 2, 2, 1, 1, 5, 5, 0, 0, 4, 4, 5, 1, 0, 0, 1, 5,
      0, 1, 0, 0, 5, 4, 1, 0, 5, 6, 7, 0, 0, 1, 0, 7, 1, 0, 1, 1, 4, 5, 0, 2, 5, 4, 5, 7, 5, 5, 7, 0, 6, 5, 6, 6, 1,
      4, 4, 4, 0, 2, 6, 0, 2, 0, 1, 6, 0, 0, 0, 0, 5, 5, 2, 0, 4, 7, 4, 2, 2, 1, 0, 5, 0, 0, 0, 0, 4, 8, 0, 0, 4, 6,
      6, 2, 1, 0, 1, 6, 0, 0, 0, 1, 4, 7, 0, 0, 5, 4, 7, 1, 1, 0, 1, 6, 0, 0, 1, 0, 5, 4, 1, 1, 8, 4, 5, 4, 5, 5, 4,
      1, 5, 4, 4, 5, 0, 7, 5, 5, 0, 0, 8, 4, 5, 4, 5, 4, 5, 8, 7, 4, 7, 0, 4, 4, 6, 8, 0, 0, 0, 1, 0, 4, 2, 0, 0, 1,
      5, 4, 0, 0, 8, 4, 5, 1, 0, 0, 2, 4, 0, 0, 0, 1, 5, 4, 0, 0, 4, 5, 4, 5, 4, 5, 5, 0, 4, 4, 5, 8, 0, 6, 8, 4, 0,
      0, 4, 6, 4, 6, 4, 2, 7, 6, 4, 4, 0, 8, 4, 5, 0, 0, 4, 6, 5, 7, 5, 6, 4, 6, 7, 5, 8, 0, 5, 4, 4, 4, 0};
  check_labels("symmetric integer blocks, min_samples 3", sym3, 3, 0.05,
               {0, 0, 0, 0, 1, 0, 0, 0, 0, 1, -1, 0, 0, 1, 1, -1});
  const Matrix sym2 = {
      0, 5, 0, 1, 5, 0, 1, 5, 7, 7, 6, 0, 1, 6, 7, 0, 5, 0, 7, 5, 0, 4, 5, 4, 4, 6, 6, 7, 7, 5, 0, 4, 0, 7, 0, 0, 4,
      1, 1, 5, 5, 4, 6, 1, 0, 4, 4, 0, 1, 5, 0, 0, 8, 2, 1, 4, 7, 4, 7, 0, 1, 5, 5, 0, 5, 0, 4, 8, 0, 6, 4, 4, 5, 6,
      4, 4, 4, 4, 0, 6, 0, 4, 1, 2, 6, 0, 1, 4, 7, 5, 4, 0, 1, 6, 5, 0, 1, 5, 1, 1, 4, 1, 0, 4, 5, 5, 7, 1, 0, 4, 7,
      0, 5, 4, 5, 4, 4, 4, 4, 0, 1, 0, 2, 5, 4, 2, 6, 5, 7, 4, 5, 7, 5, 7, 5, 1, 0, 1, 1, 4, 5, 1, 5, 4, 7, 6, 4, 4,
      6, 5, 5, 0, 1, 0, 1, 7, 4, 1, 5, 4, 6, 6, 6, 7, 4, 4, 7, 2, 1, 1, 0, 4, 6, 0, 5, 4, 0, 7, 1, 0, 4, 0, 1, 5, 4,
      7, 4, 0, 1, 5, 4, 0, 1, 7, 0, 1, 4, 1, 0, 4, 5, 4, 6, 1, 0, 6, 5, 0, 6, 5, 4, 5, 4, 6, 4, 2, 1, 1, 0, 5, 6, 0,
      4, 4, 7, 0, 4, 5, 0, 5, 7, 6, 5, 5, 5, 4, 5, 4, 0, 6, 0, 4, 0, 0, 6, 0, 0, 5, 4, 4, 4, 0, 0, 4, 6, 0};
  check_labels("symmetric integer blocks, min_samples 2", sym2, 2, 0.05,
               {0, 1, 0, 0, 1, 0, 0, 2, -1, 2, 3, 0, 0, 3, 1, 0});
  // Rows are used as given: the core distance of i comes from row i, expansions of q read row q.
  const Matrix asym3 = {
      0, 0, 6, 5, 6, 4, 7, 5, 6, 6, 7, 2, 5, 1, 0, 5, 4, 7, 6, 7, 4, 6, 8, 8, 0, 7, 4, 8, 0, 0, 8, 6, 1, 0, 7, 8, 2,
      5, 4, 5, 5, 2, 0, 5, 8, 0, 2, 7, 7, 0, 4, 5, 4, 6, 6, 7, 0, 2, 5, 6, 0, 2, 7, 7, 1, 5, 5, 6, 6, 2, 0, 4, 4, 2,
      0, 5, 4, 1, 7, 5, 1, 2, 4, 8, 0, 1, 4, 7, 2, 7, 7, 6, 5, 1, 2, 7, 5, 1, 0, 4, 4, 2, 6, 5, 5, 4, 8, 6, 0, 2, 8,
      5, 0, 0, 7, 6, 2, 4, 4, 8, 6, 2, 1, 5, 7, 2, 0, 4, 8, 0, 7, 4, 2, 2, 8, 5, 1, 2, 6, 5, 0, 8, 4, 2, 2, 7, 7, 6,
      6, 5, 4, 5, 7, 8, 0, 5, 4, 8, 7, 7, 2, 1, 8, 7, 1, 2, 5, 5, 0};
  check_labels("asymmetric integer blocks, min_samples 3", asym3, 3, 0.05, {0, 0, -1, 1, 2, 2, 1, -1, 2, 2, 1, 0, 2});
  const Matrix asym2 = {
      0, 2, 0, 2, 4, 1, 0, 1, 0, 5, 5, 2, 0, 2, 0, 1, 2, 4, 2, 0, 0, 0, 7, 4, 2, 2, 1, 1, 0, 2, 8, 2, 0, 1, 1, 6, 6,
      0, 1, 0, 0, 1, 0, 4, 0, 2, 1, 0, 4, 6, 0, 1, 8, 8, 8, 6, 0, 8, 6, 7, 6, 0, 7, 5, 6, 1, 1, 2, 0, 7, 0, 1, 0, 1,
      4, 5, 2, 2, 2, 0, 0, 2, 8, 2, 0, 1, 1, 7, 5, 2, 2, 0, 2, 2, 2, 8, 0, 1, 0, 2, 5, 4, 0, 0, 0, 2, 1, 0, 5, 0, 1,
      0, 0, 7, 6, 2, 1, 7, 4, 4, 4, 0, 5, 5, 6, 4, 0, 5, 4, 8, 8, 5, 4, 4, 4, 7, 7, 7, 7, 5, 0, 8, 8, 1, 0, 0, 2, 8,
      2, 0, 2, 1, 4, 5, 0, 1, 2, 1, 2, 0, 7, 0, 1, 2, 1, 6, 4, 1, 0};
  check_labels("asymmetric integer blocks, min_samples 2", asym2, 2, 0.05, {0, 0, 0, 0, 1, 0, 0, 0, 0, 1, -1, 0, 0});
}

// Random clustered problems of varied size (cosine-like distances in [0, 2]).
std::vector<double> random_problems(int64_t P, int64_t N, uint64_t seed) {
  hetmm_test::Rng rng(seed);
  std::vector<double> d(static_cast<size_t>(P * N * N));
  const int64_t dim = 5;
  for (int64_t p = 0; p < P; ++p) {
    std::vector<double> centres(3 * dim), x(N * dim);
    for (double& v : centres) v = rng.normal();
    for (int64_t i = 0; i < N; ++i) {
      const int64_t c = rng.below(3);
      double norm = 0;
      for (int64_t k = 0; k < dim; ++k) {
        x[i * dim + k] = centres[c * dim + k] + 0.3 * rng.normal();
        norm += x[i * dim + k] * x[i * dim + k];
      }
      for (int64_t k = 0; k < dim; ++k) x[i * dim + k] /= std::sqrt(norm);
    }
    for (int64_t r = 0; r < 3; ++r) {  // exact duplicates
      const int64_t a = rng.below(N), b = rng.below(N);
      for (int64_t k = 0; k < dim; ++k) x[a * dim + k] = x[b * dim + k];
    }
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double g = 0;
        for (int64_t k = 0; k < dim; ++k) g += x[i * dim + k] * x[j * dim + k];
        d[(p * N + i) * N + j] = std::max(0.0, 1.0 - g);
      }
  }
  return d;
}

void test_batched_and_threads() {
  const int64_t P = 48, N = 37, m = 4;
  const auto d = random_problems(P, N, 7);
  std::vector<int64_t> one(P * N), two(P * N), single(N);
  HETMM_CHECK(hetmm::optics_labels_cpu(d.data(), P, N, m, 0.05, one.data(), 1) == -1, "rejected");
  HETMM_CHECK(hetmm::optics_labels_cpu(d.data(), P, N, m, 0.05, two.data(), 2) == -1, "rejected");
  HETMM_CHECK(one == two, "1 and 2 threads differ");
  int clustered = 0;
  for (int64_t p = 0; p < P; ++p) {
    HETMM_CHECK(hetmm::optics_labels_cpu(d.data() + p * N * N, 1, N, m, 0.05, single.data(), 1) == -1, "rejected");
    HETMM_CHECK(std::equal(single.begin(), single.end(), one.begin() + p * N), "problem ", p, " differs in a batch");
    clustered += *std::max_element(single.begin(), single.end()) >= 1;
  }
  HETMM_CHECK(clustered > P / 2, "too few problems with two or more clusters: ", clustered);
}

void test_one_ulp_changes_vanish_in_the_rounding() {
  // Distances in {0.5, 1, 2, 4} with xi = 0.5 make steepness ratios hit 1 - xi = 0.5 exactly; some entries are then
  // moved by one ulp towards 2.0. scikit-learn rounds the ulp away and finds two clusters; a kernel comparing the
  // unrounded values loses the steep areas and calls most points noise ([0 -1 0 -1 -1 0 -1 -1 -1 -1]).
  const int twice[100] = {0, 2, 2, 2, 4, 1, 4, 8, 4, 4, 2, 0, 4, 1, 1, 4, 1, 2, 1, 2, 2, 4, 0, 4, 4, 1, 4, 2, 4, 2,
                          2, 1, 4, 0, 8, 4, 4, 4, 1, 2, 4, 1, 4, 8, 0, 8, 2, 1, 2, 2, 1, 4, 1, 4, 8, 0, 8, 8, 2, 4,
                          4, 1, 4, 4, 2, 8, 0, 8, 4, 4, 8, 2, 2, 4, 1, 8, 8, 0, 2, 1, 4, 1, 4, 1, 2, 2, 4, 2, 0, 2,
                          4, 2, 2, 2, 2, 4, 4, 1, 2, 0};
  const int moved[100] = {0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0, 1, 0, 1, 0, 0,
                          0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 1,
                          0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0,
                          0, 0, 0, 0, 0, 0, 0, 1, 0, 1};
  Matrix d(100);
  for (int k = 0; k < 100; ++k) d[k] = moved[k] ? std::nextafter(twice[k] / 2.0, 2.0) : twice[k] / 2.0;
  check_labels("one-ulp changes", d, 2, 0.5, {0, 1, 0, 1, 1, 0, 1, 1, 1, 1});
}

void test_negative_zero_reads_as_zero() {
  auto d = Matrix(36, 1.0);
  for (int i = 0; i < 6; ++i) d[i * 6 + i] = 0.0;
  d[1] = d[6] = d[2 * 6 + 3] = d[3 * 6 + 2] = 0.0;
  const auto want = run(d, 6, 2, 0.05);
  for (double& v : d)
    if (v == 0.0) v = -0.0;
  HETMM_CHECK(run(d, 6, 2, 0.05) == want, "-0.0 is not read as +0.0");
}

void test_invalid_values_are_reported() {
  const int64_t P = 3, N = 5;
  std::vector<double> d(P * N * N, 0.5);
  std::vector<int64_t> labels(P * N);
  HETMM_CHECK(hetmm::optics_labels_cpu(d.data(), P, N, 2, 0.05, labels.data(), 2) == -1, "valid input rejected");
  d[2 * N * N + 7] = std::numeric_limits<double>::quiet_NaN();
  d[1 * N * N + 13] = -1e-300;
  d[1 * N * N + 20] = std::numeric_limits<double>::infinity();
  HETMM_CHECK(hetmm::optics_labels_cpu(d.data(), P, N, 2, 0.05, labels.data(), 2) == N * N + 13,
              "smallest bad index not reported");
  d[1 * N * N + 13] = 0.5;
  HETMM_CHECK(hetmm::optics_labels_cpu(d.data(), P, N, 2, 0.05, labels.data(), 1) == N * N + 20, "inf not reported");
  d[1 * N * N + 20] = 0.5;
  HETMM_CHECK(hetmm::optics_labels_cpu(d.data(), P, N, 2, 0.05, labels.data(), 1) == 2 * N * N + 7, "NaN not reported");
}

void test_symmetric_path_equals_general_path() {
  // optics_xi_rounded(symmetric=true) takes the core distances four rows at a time; it must change nothing.
  const int64_t N = 43, ld = 48;
  const auto d = random_problems(1, N, 11);
  std::vector<double> R(N * ld, 0.0);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < N; ++j) {
      const double v = std::min(d[i * N + j], d[j * N + i]);  // symmetrised
      R[i * ld + j] = hetmm::round15(std::nearbyint(v * 40) / 40);  // ties
    }
  hetmm::OpticsWorkspace ws;
  for (int64_t m = 2; m <= 12; ++m) {
    std::vector<int64_t> general(N), fast(N);
    hetmm::optics_xi_rounded(R.data(), ld, N, m, 0.05, ws, general.data(), false);
    hetmm::optics_xi_rounded(R.data(), ld, N, m, 0.05, ws, fast.data(), true);
    HETMM_CHECK(general == fast, "min_samples ", m, ": ", show(general), "vs ", show(fast));
  }
}

}  // namespace

int main() {
  test_round15_matches_numpy();
  test_known_answers();
  test_batched_and_threads();
  test_one_ulp_changes_vanish_in_the_rounding();
  test_negative_zero_reads_as_zero();
  test_invalid_values_are_reported();
  test_symmetric_path_equals_general_path();
  return hetmm_test::report("test_optics_labels");
}
